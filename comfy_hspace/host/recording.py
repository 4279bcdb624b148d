"""The HSpace Hook's sampling and Invert Image's DDIM inversion, both streaming h into an
``HSpaceActivations`` recorder."""
from __future__ import annotations

import os
from typing import Any

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ..recorder import HSpaceActivations
from ..settings import SamplerSettings
from .architectures import site_of
from .latents import model_latent, noise_scale, sampler_sigmas, schedule_percents, seed_noise
from .memory import check_disk, check_fits, kept_bytes, samples_bytes
from .patch import hspace_clone


def record_activations(model: Any, positive: Any, negative: Any, latent: dict, sampling: SamplerSettings, *,
                       n_samples: int, batch_size: int, components: int, latent_is_noise: bool = False,
                       keep_samples: bool = False) -> tuple[HSpaceActivations, torch.Tensor]:
    """HSpace Hook (paper 000 §III): samples and streams the h of every UNet call into running
    statistics per model timestep (``HSpaceActivations``). Sample i starts from the noise
    KSampler draws for seed + i alone; with ``latent_is_noise`` the latent's rows are the
    starting noises instead (e.g. inverted images) and n_samples is their number.
    Returns the activations and the samples [N, C, H, W]."""
    site = site_of(model)  # a model without h is the first thing to say
    latent_image = model_latent(model, latent)
    channels, height, width = site.h_shape(latent_image.shape)
    if latent_is_noise:
        n_samples = latent_image.shape[0]
    if components > n_samples:
        raise ValueError(f"components: {components} is more than the {n_samples} samples")
    if components > channels * height * width:
        raise ValueError(f"components: {components} is more than the h dimension {channels * height * width}")
    _check_recording_fits(n_samples, sampling.steps, (channels, height, width), latent_image.shape, keep_samples,
                          "n_samples")
    activations = HSpaceActivations(components, min_batch=batch_size, keep_samples=keep_samples,
                                    storage_device=comfy.model_management.intermediate_device(),
                                    compute_device=model.load_device,
                                    spill_directory=spill_directory() if keep_samples else None)
    patched = hspace_clone(model, site, recorder=activations)
    seed, steps = sampling.seed, sampling.steps
    starts = list(range(0, n_samples, batch_size))
    pbar = comfy.utils.ProgressBar(len(starts) * steps)
    samples = []
    for b, start in enumerate(starts):
        n = min(batch_size, n_samples - start)
        if latent_is_noise:
            noise, empty = latent_image[start:start + n], torch.zeros_like(latent_image[start:start + n])
        else:
            empty = torch.zeros((n, *latent_image.shape[1:]), dtype=latent_image.dtype)
            noise = seed_noise(empty, seed + start)
        activations.begin_batch(start, noise)
        samples.append(comfy.sample.sample(
            patched, noise, steps, sampling.cfg, sampling.sampler_name, sampling.scheduler, positive, negative, empty,
            callback=lambda step, x0, x, total, b=b: pbar.update_absolute(b * steps + step + 1),
            disable_pbar=True, seed=seed + start).to(comfy.model_management.intermediate_device()))
    activations.finish()
    activations.percents = schedule_percents(model, activations.timesteps)
    activations.parameters = {"n_samples": n_samples, **sampling.as_dict(), "seed": None if latent_is_noise else seed,
                              "model_fingerprint": site.fingerprint()}
    return activations, torch.cat(samples)


def invert(model: Any, positive: Any, negative: Any, latent: dict, sampling: SamplerSettings, *,
           batch_size: int = 16, components: int = 0, keep_samples: bool = False
           ) -> tuple[torch.Tensor, HSpaceActivations]:
    """Deterministic DDIM inversion of a LATENT (an encoded image) over the schedule of the
    settings' steps and scheduler (its seed and sampler are not used), recording h on the way up.
    Returns the starting noise in the form ComfyUI's samplers take it (unit variance; sampling it
    with the ddim sampler, the same steps and scheduler and a zero edit gives the image back) and
    the recorded activations."""
    from ..inversion import sample_ddim_inversion

    site = site_of(model)
    latent_image = model_latent(model, latent, "images")
    _check_recording_fits(latent_image.shape[0], sampling.steps, site.h_shape(latent_image.shape, "images"),
                          latent_image.shape, keep_samples, "images")
    steps = sampling.steps
    sigmas = sampler_sigmas(model, SamplerSettings(0, steps, sampling.cfg, "ddim", sampling.scheduler))
    to_noise = noise_scale(model, float(sigmas[0]))
    activations = HSpaceActivations(components, min_batch=batch_size, keep_samples=keep_samples,
                                    storage_device=comfy.model_management.intermediate_device(),
                                    compute_device=model.load_device,
                                    spill_directory=spill_directory() if keep_samples else None)
    patched = hspace_clone(model, site, recorder=activations)
    top = {}

    def inversion(*args, **kwargs):
        # x at the top, as the sampler has it: sample_custom would then undo the noise scaling,
        # which for flow matching divides by 1 − σ = 0
        top["x"] = sample_ddim_inversion(*args, **kwargs)
        return top["x"]

    sampler = comfy.samplers.KSAMPLER(inversion)
    n = latent_image.shape[0]
    starts = list(range(0, n, batch_size))
    pbar = comfy.utils.ProgressBar(len(starts) * steps)
    noises = []
    for b, start in enumerate(starts):
        part = latent_image[start:start + batch_size]
        activations.begin_batch(start)
        comfy.sample.sample_custom(
            patched, torch.zeros_like(part), sampling.cfg, sampler, sigmas.flip(0), positive, negative, part,
            callback=lambda step, x0, x, total, b=b: pbar.update_absolute(b * steps + step + 1),
            disable_pbar=True, seed=0)
        noise = top["x"].to(part) / to_noise
        activations.add_noise(noise)
        noises.append(noise.to(comfy.model_management.intermediate_device()))
    activations.finish()
    activations.percents = schedule_percents(model, activations.timesteps)
    activations.parameters = {"n_samples": n, **sampling.as_dict(), "sampler": "ddim inversion", "seed": None,
                              "model_fingerprint": site.fingerprint()}
    return torch.cat(noises), activations


def spill_directory() -> str:
    """Where ``keep_samples`` writes the h trajectories: ComfyUI's temp directory (emptied at start-up)."""
    directory = folder_paths.get_temp_directory()
    os.makedirs(directory, exist_ok=True)
    return directory


def _check_recording_fits(n: int, steps: int, h_shape: tuple[int, ...], latent_shape: tuple[int, ...],
                          keep_samples: bool, count_input: str) -> None:
    if keep_samples:
        check_disk(kept_bytes(n, steps, h_shape, latent_shape), spill_directory(),
                   f"keeping every sample's h trajectory ({n} samples × {steps} steps)", count_input,
                   " or turn keep_samples off")
    check_fits(samples_bytes(n, latent_shape), comfy.model_management.intermediate_device(),
               f"keeping {n} samples", count_input)
