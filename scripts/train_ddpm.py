"""Trains the embedded default: a tiny label-conditional pixel-space DDPM on procedural faces.

diffusers UNet2DModel (block channels 32/64/96, one layer per block, attention at 8×8 only,
9 class embeddings = 3 binary labels + null, 15% label dropout), 1000-step linear β schedule,
ε-prediction. Recipe: AdamW, linear warm-up then cosine decay of the learning rate to zero at
``--steps``, min-SNR-γ loss weighting (Hang et al. 2023; γ = 5), EMA of the weights.

Resumable: the whole state (weights, EMA, optimiser moments, step, the data and noise generators'
state, the recipe) is saved to ``--state`` every ``--save-every`` steps, written whole and then
renamed, so a run can go in chunks (``--max-minutes`` each); the next call with the same
``--state`` carries on where the last save was. The EMA weights go to ``--out`` in the diffusers
folder layout that the Pixel DDPM Loader reads, at every save.

  .venv/bin/python scripts/train_ddpm.py --state runs/ddpm.safetensors --steps 6000 --max-minutes 60
  .venv/bin/python scripts/train_ddpm.py --state runs/ddpm.safetensors --init comfy_hspace/embedded/faces-ddpm
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script; imported (bench/bench_common.py), the importer's order stands
    sys.path.insert(0, str(REPO))
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.files import read_safetensors, write_safetensors  # noqa: E402

DEFAULT_OUT = REPO / "comfy_hspace" / "embedded" / "faces-ddpm"
STATE_FORMAT = "comfy-hspace/ddpm-training/1"
UNET_CONFIG = {
    "_class_name": "UNet2DModel", "sample_size": faces.SIZE, "in_channels": 3, "out_channels": 3,
    "block_out_channels": [32, 64, 96], "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 8, "attention_head_dim": 8, "num_class_embeds": faces.NULL_CLASS + 1,
}
SCHEDULER_CONFIG = {"_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02,
                    "beta_schedule": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
                    "clip_sample": True}
# settings that must not change between the chunks of one run
RECIPE = ("steps", "batch", "lr", "warmup", "min_snr", "images", "label_dropout", "ema", "seed")
# loss(model, clean images, class labels with dropout applied, generator) → (loss to minimise, per-sample MSE)
Loss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Architecture:
    """What differs between the embedded models this machinery trains (the faces DDPM here, the
    faces DiT in train_dit.py): the architecture's config, a new model, its objective, its export."""
    name: str
    config: dict
    default_out: Path
    new_model: Callable[[argparse.Namespace], torch.nn.Module]  # random, or from --init
    loss: Callable[[argparse.Namespace], Loss]
    save_model: Callable[[torch.nn.Module, Path, dict], None]


def save_model(unet: torch.nn.Module, out: Path, info: dict) -> None:
    """The EMA weights as a diffusers folder (config + safetensors)."""
    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    (out / "unet" / "config.json").write_text(json.dumps(UNET_CONFIG, indent=1))
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=1))
    write_safetensors(out / "unet" / "diffusion_pytorch_model.safetensors",
                      {k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()},
                      {"training": json.dumps(info)})


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def loss_weights(alphas_cumprod: torch.Tensor, gamma: float) -> torch.Tensor:
    """min-SNR-γ weights for ε-prediction, min(SNR, γ) / SNR per timestep (1 everywhere when γ = 0)."""
    if gamma <= 0:
        return torch.ones_like(alphas_cumprod)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    return snr.clamp(max=gamma) / snr


def state_tensors(model, ema, opt, generator: torch.Generator) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optimizer.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    out["generator"] = generator.get_state()
    return out


def load_training_state(path: Path, model, ema, opt, generator: torch.Generator, recipe: dict,
                        config: dict = UNET_CONFIG) -> int:
    """Restores a state written by this script into the given modules; returns its step. A file of
    another architecture or recipe, or a damaged one, is refused with a message naming it."""
    tensors, meta = read_safetensors(path, "--state", STATE_FORMAT, "a DDPM training state")
    try:
        saved_config, saved_recipe, step = (json.loads(meta.get("model_config") or meta["unet_config"]),
                                            json.loads(meta["recipe"]), int(meta["step"]))
    except (KeyError, ValueError) as e:
        raise ValueError(f"--state: {path} has damaged metadata ({e})") from None
    if saved_config != config:
        raise ValueError(f"--state: {path} was trained with another architecture ({saved_config}); "
                         f"this script trains {config}")
    changed = {k: (saved_recipe.get(k), recipe[k]) for k in RECIPE if saved_recipe.get(k) != recipe[k]}
    if changed:
        raise ValueError(f"--state: {path} was trained with other settings (saved, given): {changed}; "
                         "resume with the saved ones or start a new --state")
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        moments: dict = {}
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                i, key = k[len("optimizer."):].split(".", 1)
                moments.setdefault(int(i), {})[key] = v
        opt.load_state_dict({"state": moments, "param_groups": opt.state_dict()["param_groups"]})
        generator.set_state(tensors["generator"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"--state: {path} does not hold a whole training state ({e})") from None
    return step


def arguments(arch: Architecture, doc: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6000, help="total steps of the run (the cosine ends here)")
    p.add_argument("--max-minutes", type=float, default=90.0, help="stop this chunk after so many minutes")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-4, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--min-snr", type=float, default=5.0,
                   help="γ of the min-SNR loss weighting (0 = plain MSE; DDPM only)")
    p.add_argument("--images", type=int, default=50000, help="size of the rendered training set")
    p.add_argument("--label-dropout", type=float, default=0.15)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=1, help="seed of the data set and of the training noise")
    p.add_argument("--init", type=Path, default=None,
                   help="start a new run from the weights of an earlier model (what --out holds)")
    p.add_argument("--state", type=Path, default=None,
                   help="training state (.safetensors), resumed if it exists "
                        "(default: runs/<out folder>-training.safetensors)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=arch.default_out)
    a = p.parse_args()
    a.state = a.state or REPO / "runs" / f"{a.out.stem}-training.safetensors"
    return a


@dataclass
class Training:
    """What a run trains and carries from chunk to chunk: the model, its EMA, the optimiser, the
    generator of the batches and noise, the step reached and the recipe."""
    arch: Architecture
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    generator: torch.Generator
    step: int
    recipe: dict

    def save(self, a: argparse.Namespace, losses: list[float], minutes: float) -> None:
        meta = {"format": STATE_FORMAT, "step": str(self.step), "model_config": json.dumps(self.arch.config),
                "recipe": json.dumps(self.recipe)}
        write_safetensors(a.state, state_tensors(self.model, self.ema, self.opt, self.generator), meta)
        self.arch.save_model(self.ema, a.out, {**self.recipe, "step": self.step,
                                               "loss_last_50": float(np.mean(losses[-50:] or [0]))})
        print(f"saved step {self.step} ({minutes:.1f} min this chunk)", flush=True)


def new_unet(a: argparse.Namespace) -> torch.nn.Module:
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_config(UNET_CONFIG)
    if a.init is not None:
        unet = UNet2DModel.from_pretrained(a.init, subfolder="unet")
        if dict(unet.config).get("block_out_channels") != UNET_CONFIG["block_out_channels"]:
            raise ValueError(f"--init: {a.init} has another architecture than {UNET_CONFIG}")
    return unet


def start_training(arch: Architecture, a: argparse.Namespace) -> Training:
    """A new run (random or --init weights), or the one saved in --state, resumed."""
    recipe = {k: getattr(a, k) for k in RECIPE}
    torch.manual_seed(a.seed)
    model = arch.new_model(a).to(a.device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    g = torch.Generator(device=a.device).manual_seed(a.seed)
    step = 0
    if a.state.exists():
        step = load_training_state(a.state, model, ema, opt, g, recipe, arch.config)
        print(f"resumed {a.state} at step {step}", flush=True)
    elif a.init is not None:
        recipe["init"] = str(a.init)
    return Training(arch, model, ema, opt, g, step, recipe)


def ddpm_loss(a: argparse.Namespace) -> Loss:
    """ε-prediction on the 1000-step linear schedule, min-SNR-γ weighted."""
    from diffusers import DDPMScheduler

    alphas = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod.to(a.device)
    weights = loss_weights(alphas, a.min_snr)

    def loss(unet, x0, y, g):
        t = torch.randint(0, 1000, (len(x0),), device=a.device, generator=g)
        noise = torch.randn(x0.shape, device=a.device, generator=g)
        ab = alphas[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        per_sample = F.mse_loss(unet(xt, t, class_labels=y).sample, noise, reduction="none").mean((1, 2, 3))
        return (weights[t] * per_sample).mean(), per_sample
    return loss


UNET = Architecture("UNet", UNET_CONFIG, DEFAULT_OUT, new_unet, ddpm_loss, save_model)


def train_step(run: Training, a: argparse.Namespace, data: torch.Tensor, labels: torch.Tensor, loss_of: Loss) -> float:
    """One update of the model and its EMA on a random batch; the batch's mean (unweighted) MSE."""
    g, model, opt = run.generator, run.model, run.opt
    for group in opt.param_groups:
        group["lr"] = learning_rate(run.step, a.lr, a.warmup, a.steps)
    idx = torch.randint(0, len(data), (a.batch,), device=a.device, generator=g)
    x0, y = data[idx], labels[idx].clone()
    y[torch.rand(a.batch, device=a.device, generator=g) < a.label_dropout] = faces.NULL_CLASS
    loss, per_sample = loss_of(model, x0, y, g)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    run.step += 1
    decay = min(a.ema, (1 + run.step) / (10 + run.step))
    with torch.no_grad():
        for pe, pm in zip(run.ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)
    return per_sample.mean().item()


def main(arch: Architecture = UNET, doc: str = __doc__) -> None:
    a = arguments(arch, doc)
    run = start_training(arch, a)
    t0 = time.monotonic()
    images, factors = faces.dataset(a.images, seed=a.seed)
    data = torch.from_numpy(images).to(a.device)
    labels = torch.from_numpy(faces.class_index(factors)).to(a.device)
    print(f"rendered {a.images} images in {time.monotonic() - t0:.0f} s; "
          f"{arch.name} parameters: {sum(q.numel() for q in run.model.parameters()) / 1e6:.2f} M", flush=True)
    loss_of = arch.loss(a)

    start, losses = time.monotonic(), []
    while run.step < a.steps:
        losses.append(train_step(run, a, data, labels, loss_of))
        minutes = (time.monotonic() - start) / 60
        if run.step % 50 == 0:
            print(f"step {run.step} mse {np.mean(losses[-50:]):.4f} lr {run.opt.param_groups[0]['lr']:.2e} "
                  f"{minutes:.1f} min", flush=True)
        if run.step % a.save_every == 0 or run.step == a.steps or minutes >= a.max_minutes:
            run.save(a, losses, minutes)
            if minutes >= a.max_minutes:
                break
    print(f"stopped at step {run.step} of {a.steps} after {(time.monotonic() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
