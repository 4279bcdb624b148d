"""Trains the embedded default: a tiny label-conditional pixel-space DDPM on procedural faces.

diffusers UNet2DModel (block channels 32/64/96, one layer per block, attention at 8×8 only,
9 class embeddings = 3 binary labels + null, 15% label dropout), 1000-step linear β schedule,
ε-prediction, AdamW, EMA. Writes the EMA weights in the diffusers folder layout that the Pixel
DDPM Loader reads, checkpointing as it goes, so a run stopped early still leaves a model.
Usage: .venv/bin/python scripts/train_ddpm.py [--steps 6000] [--max-minutes 90] [--out DIR]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from comfy_hspace import faces  # noqa: E402

DEFAULT_OUT = REPO / "comfy_hspace" / "embedded" / "faces-ddpm"
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


def save(unet: torch.nn.Module, out: Path, info: dict) -> None:
    from safetensors.torch import save_file

    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    (out / "unet" / "config.json").write_text(json.dumps(UNET_CONFIG, indent=1))
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=1))
    tmp = out / "unet" / "diffusion_pytorch_model.safetensors.partial"
    save_file({k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()}, str(tmp),
              metadata={"training": json.dumps(info)})
    os.replace(tmp, out / "unet" / "diffusion_pytorch_model.safetensors")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--max-minutes", type=float, default=90.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--label-dropout", type=float, default=0.15)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args()

    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(a.seed)
    t0 = time.monotonic()
    images, factors = faces.dataset(a.images, seed=a.seed)
    data = torch.from_numpy(images).to(a.device)
    labels = torch.from_numpy(faces.class_index(factors)).to(a.device)
    print(f"rendered {a.images} images in {time.monotonic() - t0:.0f} s", flush=True)

    unet = UNet2DModel.from_config(UNET_CONFIG).to(a.device)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    print(f"UNet parameters: {sum(q.numel() for q in unet.parameters()) / 1e6:.2f} M", flush=True)
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    alphas = scheduler.alphas_cumprod.to(a.device)
    opt = torch.optim.AdamW(unet.parameters(), lr=a.lr, weight_decay=0.0)
    g = torch.Generator(device=a.device).manual_seed(a.seed)

    start, losses = time.monotonic(), []
    step = 0
    for step in range(1, a.steps + 1):
        idx = torch.randint(0, len(data), (a.batch,), device=a.device, generator=g)
        x0, y = data[idx], labels[idx].clone()
        y[torch.rand(a.batch, device=a.device, generator=g) < a.label_dropout] = faces.NULL_CLASS
        t = torch.randint(0, 1000, (a.batch,), device=a.device, generator=g)
        noise = torch.randn(x0.shape, device=a.device, generator=g)
        ab = alphas[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        loss = F.mse_loss(unet(xt, t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        minutes = (time.monotonic() - start) / 60
        if step % 50 == 0:
            print(f"step {step} loss {np.mean(losses[-50:]):.4f} {minutes:.1f} min", flush=True)
        done = step == a.steps or minutes >= a.max_minutes
        if step % a.save_every == 0 or done:
            save(ema, a.out, {"step": step, "minutes": round(minutes, 1), "batch": a.batch, "lr": a.lr,
                              "loss_last_50": float(np.mean(losses[-50:])), "seed": a.seed})
        if done:
            break
    print(f"saved {a.out} after {step} steps, {(time.monotonic() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
