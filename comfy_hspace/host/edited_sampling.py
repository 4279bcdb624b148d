"""The Edited Sampler over ComfyUI's own samplers: h ← h + m·Σ strength_k·direction_k(t)."""
from __future__ import annotations

from typing import Any

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..directions import Directions, DirectionsError
from ..editing import HSpaceEdit, sample_asyrp
from ..settings import EditSettings, SamplerSettings
from .architectures import Site, site_of
from .latents import latent_with, model_latent, sampler_sigmas
from .memory import check_fits, samples_bytes
from .model_info import check_directions_fit, check_site, is_flow
from .patch import hspace_clone


def edited_sample(model: Any, directions: Directions, sampling: SamplerSettings, edit: EditSettings, positive: Any,
                  negative: Any, latent: dict, *, sweep: list[float], noise_latent: dict | None = None,
                  site: Site | None = None) -> dict:
    """Samples ``latent`` once per sweep multiplier m with h ← h + m·Σ strength_k·direction_k(t)
    inside the edit interval (x_T-space directions: x_T ← x_T + m·Σ …). Every member gets the same
    noise (one sampling run each, with the same seed; or ``noise_latent``, e.g. an inverted
    image's), so a member whose edit is zero is exactly the stock KSampler's output.
    Returns a LATENT whose batch is the sweep members one after another."""
    offsets_per_unit = _offsets(directions, edit)
    site = site or site_of(model)  # a node sampling several direction sets resolves it once
    latent_image = model_latent(model, latent)
    check_fits(samples_bytes(len(sweep) * latent_image.shape[0], latent_image.shape),
               comfy.model_management.intermediate_device(),
               f"{len(sweep)} sweep members of {latent_image.shape[0]} samples", "sweep")
    _check_fit(site, directions, latent_image)
    noise = _starting_noise(latent, latent_image, sampling.seed, noise_latent)
    sigma_start, sigma_end = _sigma_interval(model, edit)
    steps = sampling.steps
    pbar = comfy.utils.ProgressBar(steps * len(sweep))

    members = []
    for m, multiplier in enumerate(sweep):
        member_noise, patched = noise, model  # a zero edit: bit-for-bit the stock sampler
        if directions.space != "x_T":
            patched = _edited_clone(model, site, directions, edit.scaled(multiplier))
        elif multiplier != 0 and offsets_per_unit.any():
            member_noise = noise + multiplier * offsets_per_unit[0].to(noise)
        edited = patched is not model

        def callback(step, x0, x, total, m=m):
            pbar.update_absolute(m * steps + step + 1)

        if edit.mode == "both terms":
            samples = comfy.sample.sample(patched, member_noise, steps, sampling.cfg, sampling.sampler_name,
                                          sampling.scheduler, positive, negative, latent_image,
                                          denoise=sampling.denoise, noise_mask=latent.get("noise_mask"),
                                          callback=callback, disable_pbar=True, seed=sampling.seed)
        else:
            interval = (sigma_start, sigma_end) if edited else (-1.0, 0.0)  # no edit: one pass a step
            samples = _sample_asymmetric(patched, member_noise, sampling, positive, negative, latent_image,
                                         noise_mask=latent.get("noise_mask"), eta=edit.eta, interval=interval,
                                         callback=callback)
        members.append(samples)
    return latent_with(latent, torch.cat(members))


def edited_model(model: Any, directions: Directions, edit: EditSettings) -> Any:
    """Apply H-space Edit: a clone of ``model`` whose h gets h ← h + Σ strength_k·direction_k(t)
    inside the edit interval on the chosen passes, for any sampler node (the Edited Sampler's both
    terms mode as a model patch). Clones in a row add their edits; a zero edit is the model itself."""
    return _edited_clone(model, site_of(model), directions, edit)


def _edited_clone(model: Any, site: Site, directions: Directions, edit: EditSettings) -> Any:
    offsets = _offsets(directions, edit)
    if directions.space == "x_T":
        raise DirectionsError("directions: x_T-space directions move the starting noise, not h; use them in the "
                              "Edited Sampler")
    check_site(site, directions)
    channels = site.channels  # the size is checked at the first step
    if directions.h_shape[0] != channels:
        raise DirectionsError(f"directions: h has {directions.h_shape[0]} channels, this model's h has {channels} "
                              f"(directions of another model)")
    if not offsets.any():
        return model
    sigma_start, sigma_end = _sigma_interval(model, edit)
    hspace_edit = HSpaceEdit(offsets, directions.timesteps, sigma_start, sigma_end, edit.apply_to)
    return hspace_clone(model, site, edit=hspace_edit)


def _offsets(directions: Directions, edit: EditSettings) -> torch.Tensor:
    """Σ strength_k·direction_k per timestep."""
    strengths = list(edit.strengths)
    if len(strengths) == 1 and directions.count > 1:
        strengths = strengths * directions.count
    return directions.combined(strengths)  # checks the count


def _sigma_interval(model: Any, edit: EditSettings) -> tuple[float, float]:
    model_sampling = model.get_model_object("model_sampling")
    return model_sampling.percent_to_sigma(edit.start_percent), model_sampling.percent_to_sigma(edit.end_percent)


def _check_fit(site: Site, directions: Directions, latent_image: torch.Tensor) -> None:
    if directions.space != "x_T":
        check_directions_fit(site, directions, latent_image.shape)
    elif tuple(directions.h_shape) != tuple(latent_image.shape[1:]):
        raise DirectionsError(f"directions: x_T shape {list(directions.h_shape)} does not match the latent's "
                              f"{list(latent_image.shape[1:])}")


def _starting_noise(latent: dict, latent_image: torch.Tensor, seed: int, noise_latent: dict | None) -> torch.Tensor:
    """KSampler's noise for ``seed``, or the given noise (e.g. an inverted image's)."""
    if noise_latent is None:
        return comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    noise = noise_latent["samples"]
    if noise.shape != latent_image.shape:
        raise ValueError(f"noise: shape {list(noise.shape)} does not match latent_image {list(latent_image.shape)}"
                         f" (connect an empty latent of the noise's size and batch)")
    return noise


def _sample_asymmetric(model: Any, noise: torch.Tensor, sampling: SamplerSettings, positive: Any, negative: Any,
                       latent_image: torch.Tensor, *, noise_mask: torch.Tensor | None, eta: float,
                       interval: tuple[float, float], callback: Any) -> torch.Tensor:
    """Asyrp's asymmetric sampling (``editing.sample_asyrp``) over the settings' schedule, the
    edit's second pass only inside the sigma interval."""
    sigmas = sampler_sigmas(model, sampling, model.load_device)
    sampler = comfy.samplers.KSAMPLER(sample_asyrp, extra_options={
        "eta": eta, "sigma_start": interval[0], "sigma_end": interval[1], "flow": is_flow(model)})
    return comfy.sample.sample_custom(model, noise, sampling.cfg, sampler, sigmas, positive, negative, latent_image,
                                      noise_mask=noise_mask, callback=callback, disable_pbar=True,
                                      seed=sampling.seed)
