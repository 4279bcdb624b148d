"""Trains the embedded transformer: a label-conditional pixel-space DiT of the procedural faces.

ComfyUI's own SD3 classes (``comfy_hspace/host/pixel_dit.py``: MMDiT joint blocks, width 128,
patch 4, so h is 128 × 8 × 8 like the UNet's 96 × 8 × 8 grid), the labels as its text stream (15%
dropped to unconditional), trained as SD3 is: flow matching, x_t = (1 − t)·x0 + t·ε, the model
predicts v = ε − x0 at timestep 1000·t, t logit-normal (SD3's sampling of t). Same machinery as
``train_ddpm.py``: AdamW with warm-up and cosine decay, EMA, and the whole state saved and resumed
(``--state``, ``--max-minutes`` per chunk); the EMA weights go to ``--out`` at every save.

  .venv/bin/python scripts/train_dit.py --steps 9000 --max-minutes 120

``--architecture patch-2-narrow`` trains issue 33's candidate instead (patch 2, width 64, 8 blocks: 16 × 16
tokens, chosen by ``compare_dit_blocks.py``), its state in runs/ and its weights in runs/faces-dit-v2.safetensors
until it meets the model card's targets.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

import torch
import torch.nn.functional as F

import comfy_env
import train_ddpm

comfy_env.setup()
from comfy_hspace.host import pixel_dit  # noqa: E402
from comfy_hspace.host.embedded import DIT_FILE  # noqa: E402


def new_dit(a: argparse.Namespace, config: dict = pixel_dit.DIT_CONFIG) -> torch.nn.Module:
    dm = pixel_dit.build_dit(config).diffusion_model
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
DIT_V2 = train_ddpm.Architecture("DiT v2 (patch 2, width 64)", pixel_dit.DIT_V2_CONFIG,
                                 train_ddpm.REPO / "runs" / "faces-dit-v2.safetensors",
                                 functools.partial(new_dit, config=pixel_dit.DIT_V2_CONFIG), flow_loss,
                                 functools.partial(pixel_dit.save_dit, config=pixel_dit.DIT_V2_CONFIG))
ARCHITECTURES = {"patch-4": DIT, "patch-2-narrow": DIT_V2}

if __name__ == "__main__":
    choice = argparse.ArgumentParser(add_help=False)
    choice.add_argument("--architecture", choices=list(ARCHITECTURES), default="patch-4")
    chosen, rest = choice.parse_known_args()
    sys.argv = [sys.argv[0], *rest]  # the rest is train_ddpm's
    train_ddpm.main(ARCHITECTURES[chosen.architecture], __doc__)
