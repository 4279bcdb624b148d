"""What a ComfyUI MODEL looks like to h-space methods: h's shape, a fingerprint of the UNet, the
VAE scale, the down path's levels, checked before anything is sampled."""
from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from ..directions import Directions, DirectionsError
from .pixel_ddpm import DiffusersUNet, PixelDDPM


def unet_levels(model: Any) -> tuple[int, int]:
    """(h channels, how many times the down path halves the latent); raises for models without a UNet
    bottleneck."""
    dm = model.get_model_object("diffusion_model")
    if isinstance(dm, DiffusersUNet):
        return dm.unet.config.block_out_channels[-1], len(dm.unet.config.down_block_types) - 1
    if hasattr(dm, "channel_mult") and hasattr(dm, "model_channels") and dm.middle_block is not None:
        return dm.model_channels * dm.channel_mult[-1], len(dm.channel_mult) - 1
    raise ValueError(f"model: {type(dm).__name__} has no UNet bottleneck (h-space needs an SD1.x/SD2.x/SDXL "
                     f"UNet or a diffusers UNet2DModel)")


def bottleneck_shape(model: Any, latent_shape: tuple[int, ...] | torch.Size, what: str = "latent_image"
                     ) -> tuple[int, int, int]:
    """(C, H, W) of h for a latent of ``latent_shape`` [B, C, H, W] (given as the input ``what``); raises for
    models without a UNet bottleneck and for sizes the UNet cannot take."""
    channels, downs = unet_levels(model)
    dm = model.get_model_object("diffusion_model")
    height, width = latent_shape[-2:]
    if isinstance(dm, DiffusersUNet) and (height % 2 ** downs or width % 2 ** downs):
        # ComfyUI's own UNets upsample to the skip connection's size; diffusers' double it
        raise ValueError(f"{what}: {height}×{width} does not go through this UNet, whose down path halves it {downs}× "
                         f"and its up path doubles it back: use a size that is a multiple of {2 ** downs}")
    for _ in range(downs):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return channels, height, width


def model_fingerprint(model: Any) -> str:
    """Identifies the UNet a direction was found on: its class, h channels and a hash of a
    sample of its middle-block weights."""
    dm = model.get_model_object("diffusion_model")
    middle = dm.unet.mid_block if isinstance(dm, DiffusersUNet) else getattr(dm, "middle_block", None)
    digest = hashlib.sha256(type(dm).__name__.encode())
    if middle is not None:
        for name, p in sorted(middle.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return f"{type(dm).__name__}:{digest.hexdigest()[:16]}"


def check_directions_fit(model: Any, directions: Directions, latent_shape: tuple[int, ...]) -> None:
    expected = bottleneck_shape(model, latent_shape)
    if tuple(directions.h_shape) != tuple(expected):
        hint = " (use Resize Directions for another resolution)" if directions.h_shape[0] == expected[0] else ""
        raise DirectionsError(f"directions: h shape {list(directions.h_shape)} does not fit this model, whose h "
                              f"is {list(expected)} for a latent of {list(latent_shape[-2:])}{hint}")


def image_scale(model: Any) -> int:
    """Image pixels per latent pixel: 1 for pixel-space DDPMs, 8 for the SD1.x/SD2.x/SDXL VAEs."""
    return 1 if isinstance(model.model, PixelDDPM) else 8


def encoder_levels(model: Any) -> tuple[int, list[int], int]:
    """(latent channels, channels per level, residual blocks per level) of the model's UNet down
    path, which the Discovery Trainer's discriminator and reconstructor copy (paper 001 B.3)."""
    dm = model.get_model_object("diffusion_model")
    if isinstance(dm, DiffusersUNet):
        c = dm.unet.config
        return c.in_channels, list(c.block_out_channels), c.layers_per_block
    blocks = dm.num_res_blocks
    return (dm.in_channels, [dm.model_channels * m for m in dm.channel_mult],
            max(blocks) if isinstance(blocks, (list, tuple)) else blocks)
