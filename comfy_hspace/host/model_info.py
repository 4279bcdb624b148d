"""What a ComfyUI MODEL's sampling and latents are to h-space methods, and whether directions fit its h
(where h is, its shape and fingerprint: ``architectures.Site``)."""
from __future__ import annotations

from typing import Any

from ..directions import Directions, DirectionsError
from .architectures import UNET_SITE, Site


def is_flow(model: Any) -> bool:
    """A flow-matching model (SD3, Flux, …): x_σ = (1 − σ)·x0 + σ·ε, ComfyUI's CONST sampling; False for
    x_σ = x0 + σ·ε (EPS and its kin: v, x0, EDM). Any other parametrisation (Cosmos Predict2's rectified
    flow) is refused: the asymmetric step, inversion and the Discovery chain know only these two."""
    return sampling_is_flow(type(model.get_model_object("model_sampling")))


def sampling_is_flow(sampling_class: type) -> bool:
    """``is_flow`` for a ComfyUI model sampling class."""
    kinds = [c.__name__ for c in sampling_class.__mro__]
    if "CONST" in kinds or "EPS" in kinds:
        return "CONST" in kinds
    named = ", ".join(k for k in kinds[1:] if k not in ("Module", "object"))
    raise ValueError(f"model: its sampling ({named}) is neither x0 + σ·ε nor flow matching; the asymmetric mode, "
                     f"Invert Image and the Discovery Trainer do not support it (both-terms edits, the Hook and "
                     f"Jacobian Directions do)")


def directions_site(directions: Directions) -> str | None:
    """Where directions were found, from their fingerprint; None when they do not say."""
    if not directions.model_fingerprint:
        return None
    site, _, _ = directions.model_fingerprint.rpartition("/")
    return site or UNET_SITE


def check_site(site: Site, directions: Directions) -> None:
    """Directions of a UNet on a transformer, or of another block, fail before sampling."""
    here, there = str(site), directions_site(directions)
    if there is not None and there != here:
        raise DirectionsError(f"directions: found at the {there}, but this model's h is at the {here}")


def check_directions_fit(site: Site, directions: Directions, latent_shape: tuple[int, ...]) -> None:
    check_site(site, directions)
    expected = site.h_shape(latent_shape)
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


def check_recorded_at(site: Site, fingerprint: str | None, filename: str) -> None:
    """An activations file recorded on another model or block is refused, naming both."""
    if fingerprint != (here := site.fingerprint()):
        raise ValueError(f"filename: {filename} was recorded on {fingerprint}, but this model's h is {here}")
