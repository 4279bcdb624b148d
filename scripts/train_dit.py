"""Trains the embedded transformer: a label-conditional pixel-space DiT of the procedural faces.

ComfyUI's own SD3 classes (``comfy_hspace/host/pixel_dit.py``: MMDiT joint blocks, width 128,
patch 4, so h is 128 × 8 × 8 like the UNet's 96 × 8 × 8 grid), the labels as its text stream (15%
dropped to unconditional), trained as SD3 is: flow matching, x_t = (1 − t)·x0 + t·ε, the model
predicts v = ε − x0 at timestep 1000·t, t logit-normal (SD3's sampling of t). Same machinery as
``train_ddpm.py``: AdamW with warm-up and cosine decay, EMA, and the whole state saved and resumed
(``--state``, ``--max-minutes`` per chunk); the EMA weights go to ``--out`` at every save.

  .venv/bin/python scripts/train_dit.py --steps 9000 --max-minutes 120
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F

import comfy_env
import train_ddpm

comfy_env.setup()
from comfy_hspace.host import pixel_dit  # noqa: E402
from comfy_hspace.host.embedded import DIT_FILE  # noqa: E402


def new_dit(a: argparse.Namespace) -> torch.nn.Module:
    dm = pixel_dit.build_dit().diffusion_model
    if a.init is not None:
        dm.load_state_dict(pixel_dit.load_pixel_dit(a.init)[0].model.diffusion_model.state_dict())
    else:
        pixel_dit.init_weights(dm)
    return dm


def velocity(dm: torch.nn.Module, xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The DiT's v at x_t, t ∈ [0, 1], for class labels y."""
    tokens = pixel_dit.label_tokens(y.cpu()).to(xt.device)
    return dm(xt, t * pixel_dit.SAMPLING["multiplier"], context=tokens, y=tokens.sum(1))


def flow_loss(a: argparse.Namespace, velocity: Callable = velocity) -> train_ddpm.Loss:
    def loss(dm, x0, y, g):
        t = torch.sigmoid(torch.randn(len(x0), device=a.device, generator=g))
        noise = torch.randn(x0.shape, device=a.device, generator=g)
        xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
        per_sample = F.mse_loss(velocity(dm, xt, t, y), noise - x0, reduction="none").mean((1, 2, 3))
        return per_sample.mean(), per_sample
    return loss


DIT = train_ddpm.Architecture("DiT", pixel_dit.DIT_CONFIG, DIT_FILE, new_dit, flow_loss, pixel_dit.save_dit)

if __name__ == "__main__":
    train_ddpm.main(DIT, __doc__)
