"""What a ComfyUI MODEL looks like to h-space methods: where h is and its shape, a fingerprint of
the network, the VAE scale, the down path's levels, checked before anything is sampled."""
from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from ..directions import Directions, DirectionsError
from . import transformer
from .pixel_ddpm import DiffusersUNet

UNET_SITE = "UNet bottleneck"


def unet_levels(model: Any) -> tuple[int, int]:
    """(h channels, how many times the down path halves the latent); raises for models without a UNet
    bottleneck."""
    dm = model.get_model_object("diffusion_model")
    if isinstance(dm, DiffusersUNet):
        return dm.unet.config.block_out_channels[-1], len(dm.unet.config.down_block_types) - 1
    if hasattr(dm, "channel_mult") and hasattr(dm, "model_channels") and dm.middle_block is not None:
        return dm.model_channels * dm.channel_mult[-1], len(dm.channel_mult) - 1
    raise ValueError(f"model: {type(dm).__name__} has no UNet bottleneck (h-space needs an SD1.x/SD2.x/SDXL "
                     f"UNet, a diffusers UNet2DModel or a transformer of the families "
                     f"{', '.join(f.name for f in transformer.FAMILIES.values())})")


def h_site(model: Any) -> str:
    """Where the model's h is: "UNet bottleneck" or a transformer block ("Flux block 9 (double-block 9)");
    raises for models without either."""
    site = transformer.site_of(model)
    if site is not None:
        return str(site)
    unet_levels(model)
    return UNET_SITE


def is_flow(model: Any) -> bool:
    """A flow-matching model (SD3, Flux, …): x_σ = (1 − σ)·x0 + σ·ε, ComfyUI's CONST sampling; False for
    x_σ = x0 + σ·ε (EPS and its kin: v, x0, EDM). Any other parametrisation (Cosmos Predict2's rectified
    flow) is refused: the asymmetric step, inversion and the Discovery chain know only these two."""
    kinds = [c.__name__ for c in type(model.get_model_object("model_sampling")).__mro__]
    if "CONST" in kinds or "EPS" in kinds:
        return "CONST" in kinds
    named = ", ".join(k for k in kinds[1:] if k not in ("Module", "object"))
    raise ValueError(f"model: its sampling ({named}) is neither x0 + σ·ε nor flow matching; the asymmetric mode, "
                     f"Invert Image and the Discovery Trainer do not support it (both-terms edits, the Hook and "
                     f"Jacobian Directions do)")


def h_channels(model: Any) -> int:
    """Channels of h; raises for models without h."""
    if transformer.site_of(model) is not None:
        return transformer.width(model)
    return unet_levels(model)[0]


def bottleneck_shape(model: Any, latent_shape: tuple[int, ...] | torch.Size, what: str = "latent_image"
                     ) -> tuple[int, int, int]:
    """(C, H, W) of h for a latent of ``latent_shape`` [B, C, H, W] (given as the input ``what``); raises for
    models without h and for sizes the UNet cannot take. A transformer's h is its token grid."""
    if transformer.site_of(model) is not None:
        return (transformer.width(model), *transformer.token_grid(model, latent_shape))
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
    """Identifies the network and the place a direction was found at: for a UNet its class and a hash
    of a sample of its middle-block weights; for a transformer "<site>/<class>:<hash of that block>"."""
    dm = model.get_model_object("diffusion_model")
    site = transformer.site_of(model)
    if site is not None:
        middle = site.block_module(dm)
    else:
        middle = dm.unet.mid_block if isinstance(dm, DiffusersUNet) else getattr(dm, "middle_block", None)
    digest = hashlib.sha256(type(dm).__name__.encode())
    if middle is not None:
        for name, p in sorted(middle.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return f"{'' if site is None else f'{site}/'}{type(dm).__name__}:{digest.hexdigest()[:16]}"


def directions_site(directions: Directions) -> str | None:
    """Where directions were found, from their fingerprint; None when they do not say."""
    if not directions.model_fingerprint:
        return None
    site, _, _ = directions.model_fingerprint.rpartition("/")
    return site or UNET_SITE


def check_site(model: Any, directions: Directions) -> None:
    """Directions of a UNet on a transformer, or of another block, fail before sampling."""
    here, there = h_site(model), directions_site(directions)
    if there is not None and there != here:
        raise DirectionsError(f"directions: found at the {there}, but this model's h is at the {here}")


def check_directions_fit(model: Any, directions: Directions, latent_shape: tuple[int, ...]) -> None:
    check_site(model, directions)
    expected = bottleneck_shape(model, latent_shape)
    if tuple(directions.h_shape) != tuple(expected):
        hint = " (use Resize Directions for another resolution)" if directions.h_shape[0] == expected[0] else ""
        raise DirectionsError(f"directions: h shape {list(directions.h_shape)} does not fit this model, whose h "
                              f"is {list(expected)} for a latent of {list(latent_shape[-2:])}{hint}")


# image pixels per latent pixel, by ComfyUI's latent format class; 8 for any other (the SD VAEs' and most)
LATENT_SCALE = {"ChromaRadiance": 1, "Flux2": 16, "Wan22": 16, "HunyuanVideo15": 16, "HunyuanImage21": 32,
                "LTXV": 32}


def image_scale(model: Any) -> int:
    """Image pixels per latent pixel: 1 for pixel-space models (the pixel DDPM, the embedded DiT, Chroma
    Radiance), 16 or 32 for the newer VAEs (Flux 2, Wan 2.2, HunyuanImage 2.1, LTXV), else 8."""
    return next((LATENT_SCALE[c.__name__] for c in type(model.model.latent_format).__mro__
                 if c.__name__ in LATENT_SCALE), 8)


def encoder_levels(model: Any) -> tuple[int, list[int], int]:
    """(latent channels, channels per level, residual blocks per level) of the model's UNet down
    path, which the Discovery Trainer's discriminator and reconstructor copy (paper 001 B.3)."""
    dm = model.get_model_object("diffusion_model")
    if transformer.site_of(model) is not None:  # no down path to copy: a small one of the same kind
        return model.model.latent_format.latent_channels, [64, 128, 256], 1
    if isinstance(dm, DiffusersUNet):
        c = dm.unet.config
        return c.in_channels, list(c.block_out_channels), c.layers_per_block
    blocks = dm.num_res_blocks
    return (dm.in_channels, [dm.model_channels * m for m in dm.channel_mult],
            max(blocks) if isinstance(blocks, (list, tuple)) else blocks)
