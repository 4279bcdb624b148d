"""Which transformer blocks train the embedded DiT best per CPU-second (issue 22): MMDiT joint blocks
(SD3's, the shipped model) or Chroma-Radiance-style blocks (Flux's double- and single-stream blocks,
modulations from Chroma's approximator, a per-patch NeRF head in pixel space), both built by ComfyUI's
own classes at width 128, patch 4, with the labels as the text stream.

Both train by the same flow-matching objective on the same faces and batches (``train_dit.py``'s,
constant learning rate after the warm-up), interleaved step by step in one process, so each sees the
same machine. Each model's own CPU time is counted (one thread's, around its training steps); every
``--every`` seconds of it the model is scored on a fixed validation set: 512 held-out faces, each at
4 fixed t (quartiles of SD3's logit-normal t) with fixed noise, the mean squared error of v.
Chroma's blocks add their residuals in place; they train through the pack's copies of saved tensors
(``host/autograd.in_place_safe``), whose cost is part of its time.

  .venv/bin/python scripts/compare_dit_blocks.py --minutes 20 --json runs/compare-blocks.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import comfy_env
import train_ddpm
import train_dit

comfy_env.setup()
import comfy.ldm.chroma.model  # noqa: E402
import comfy.supported_models  # noqa: E402

from comfy_hspace import faces  # noqa: E402
from comfy_hspace.host import pixel_dit  # noqa: E402
from comfy_hspace.host.architectures import architecture_of  # noqa: E402
from comfy_hspace.host.autograd import in_place_safe  # noqa: E402
from tiny_models import init_weights  # noqa: E402

# Chroma Radiance at the MMDiT's width and head size; 4 double + 6 single blocks come to about the
# MMDiT's parameters (3.46 M). Its NeRF head generates a small MLP per patch from the patch's token;
# at width 16 (Chroma Radiance's own: 64 for a 3072-wide model) it is still most of a step's time.
CHROMA_RADIANCE = {"in_channels": 3, "out_channels": 3, "context_in_dim": pixel_dit.LABEL_WIDTH, "hidden_size": 128,
                   "mlp_ratio": 4.0, "num_heads": 2, "depth": 4, "depth_single_blocks": 6, "axes_dim": [16, 24, 24],
                   "theta": 10000, "patch_size": 4, "qkv_bias": True, "in_dim": 64, "out_dim": 128,
                   "hidden_dim": 128, "n_layers": 2, "nerf_hidden_size": 16, "nerf_mlp_ratio": 2, "nerf_depth": 2,
                   "nerf_max_freqs": 4, "nerf_tile_size": 0, "nerf_final_head_type": "linear",
                   "nerf_embedder_dtype": None}


def mmdit(config: dict = pixel_dit.DIT_CONFIG) -> torch.nn.Module:
    dm = pixel_dit.build_dit(config).diffusion_model
    pixel_dit.init_weights(dm)
    return dm


def chroma_radiance() -> torch.nn.Module:
    dm = comfy.supported_models.ChromaRadiance({"image_model": "chroma_radiance", **CHROMA_RADIANCE}).get_model(
        {}).diffusion_model
    init_weights(dm)  # ComfyUI's layers skip initialisation: torch's defaults, norm scales 1
    return dm


def velocity(dm: torch.nn.Module, xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model's v at x_t, t ∈ [0, 1], for class labels y."""
    if not isinstance(dm, comfy.ldm.chroma.model.Chroma):
        return train_dit.velocity(dm, xt, t, y)
    with in_place_safe(architecture_of(dm)):  # timesteps in [0, 1], no pooled vector, guidance unused
        return dm(xt, t, context=pixel_dit.label_tokens(y), guidance=torch.zeros_like(t))


def flow_loss(a: argparse.Namespace) -> train_ddpm.Loss:
    return train_dit.flow_loss(a, velocity)


# issue 33: the small features (eyes, mouth, glasses) sit inside one 4 × 4 patch; patch 2 at the same
# width, and patch 2 at half the width with more blocks, against the shipped patch 4
PATCH_2 = pixel_dit.dit_config(2, 2, 6)
PATCH_2_NARROW = pixel_dit.DIT_V2_CONFIG
ARCHITECTURES = {
    "MMDiT (SD3)": train_ddpm.Architecture("MMDiT", pixel_dit.DIT_CONFIG, Path("-"), lambda a: mmdit(), flow_loss,
                                           None),
    "MMDiT patch 2": train_ddpm.Architecture("MMDiT patch 2", PATCH_2, Path("-"), lambda a: mmdit(PATCH_2),
                                             flow_loss, None),
    "MMDiT patch 2, width 64": train_ddpm.Architecture("MMDiT patch 2 narrow", PATCH_2_NARROW, Path("-"),
                                                       lambda a: mmdit(PATCH_2_NARROW), flow_loss, None),
    "Chroma Radiance": train_ddpm.Architecture("ChromaRadiance", CHROMA_RADIANCE, Path("-"),
                                               lambda a: chroma_radiance(), flow_loss, None),
}


@torch.no_grad()
def validation_loss(dm: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, noise: torch.Tensor,
                    ts: torch.Tensor) -> float:
    total = 0.0
    for t, n in zip(ts, noise):
        for s in range(0, len(x0), 128):
            tt = torch.full((len(x0[s:s + 128]),), float(t))
            xt = (1 - t) * x0[s:s + 128] + t * n[s:s + 128]
            total += F.mse_loss(velocity(dm, xt, tt, y[s:s + 128]), n[s:s + 128] - x0[s:s + 128],
                                reduction="sum").item()
    return total / (len(ts) * x0.numel())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training CPU minutes for each architecture")
    p.add_argument("--every", type=float, default=120.0, help="seconds of a model's CPU time between validations")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES),
                   metavar="NAME", help=f"which to compare, of: {', '.join(ARCHITECTURES)}")
    a = p.parse_args()
    chosen = {name: ARCHITECTURES[name] for name in a.architectures}
    # train_ddpm's recipe (batch 64, AdamW 4e-4, warm-up 200, EMA unused here); no cosine: the run's length is time
    a.batch, a.lr, a.warmup, a.steps, a.label_dropout, a.ema, a.seed = 64, 4e-4, 200, 10 ** 9, 0.15, 0.999, 1
    a.images, a.min_snr, a.init, a.device, a.state = 50000, 0.0, None, "cpu", Path("/nonexistent")
    images, factors = faces.dataset(a.images, seed=a.seed)
    data, labels = torch.from_numpy(images), torch.from_numpy(faces.class_index(factors))
    held_out, held_factors = faces.dataset(512, seed=12345)
    g = torch.Generator().manual_seed(0)
    val_x0, val_y = torch.from_numpy(held_out), torch.from_numpy(faces.class_index(held_factors))
    ts = torch.sigmoid(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([0.125, 0.375, 0.625, 0.875])))
    val_noise = torch.randn(len(ts), *val_x0.shape, generator=g)

    torch.set_num_threads(1)  # CPU time is then the one thread's time
    runs = {name: train_ddpm.start_training(arch, a) for name, arch in chosen.items()}
    losses = {name: arch.loss(a) for name, arch in chosen.items()}
    report = {"settings": {"minutes": a.minutes, "batch": a.batch, "lr": a.lr, "threads": torch.get_num_threads()},
              "parameters": {name: sum(q.numel() for q in r.model.parameters()) for name, r in runs.items()},
              "curves": {name: [] for name in runs}}
    spent = dict.fromkeys(runs, 0.0)
    checked = dict.fromkeys(runs, -1.0)
    budget = 60 * a.minutes
    while any(s < budget for s in spent.values()):
        for name, run in runs.items():
            if spent[name] >= budget:
                continue
            start = time.thread_time()
            train_ddpm.train_step(run, a, data, labels, losses[name])
            spent[name] += time.thread_time() - start
            if spent[name] >= checked[name] + a.every or spent[name] >= budget:
                checked[name] = spent[name]
                loss = validation_loss(run.model, val_x0, val_y, val_noise, ts)
                report["curves"][name].append({"cpu_s": round(spent[name], 1), "step": run.step, "val_mse": loss})
                print(f"{name}: {spent[name]:.0f} CPU-s, step {run.step}, validation MSE {loss:.4f}", flush=True)
                if a.json:
                    a.json.parent.mkdir(parents=True, exist_ok=True)
                    a.json.write_text(json.dumps(report, indent=1))
    for name, curve in report["curves"].items():
        last = curve[-1]
        print(f"{name}: {report['parameters'][name] / 1e6:.2f} M parameters, {last['step']} steps in "
              f"{last['cpu_s'] / 60:.1f} CPU-min ({last['cpu_s'] / last['step']:.2f} s/step), "
              f"validation MSE {last['val_mse']:.4f}")


if __name__ == "__main__":
    main()
