"""Latents, noise and schedules as ComfyUI's samplers make them."""
from __future__ import annotations

import math
from typing import Any

import comfy.sample
import comfy.samplers
import torch

from ..settings import SamplerSettings
from .model_info import is_flow


def latent_with(latent: dict, samples: torch.Tensor) -> dict:
    """A LATENT like ``latent`` holding other samples (a new batch: per-sample keys are dropped)."""
    out = {k: v for k, v in latent.items() if k not in ("samples", "batch_index", "noise_mask")}
    out["samples"] = samples
    return out


def model_latent(model: Any, latent: dict, what: str = "latent_image") -> torch.Tensor:
    """The LATENT's samples as the model takes them (an empty latent gets the model's channels, as
    KSampler gives it), checked to be a batch with the model's latent channels."""
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    expected = model.model.latent_format.latent_channels
    frames = samples.ndim == 5 and model.model.latent_format.latent_dimensions == 3  # Wan's, Qwen-Image's
    if (samples.ndim != 4 and not frames) or samples.shape[1] != expected:
        raise ValueError(f"{what}: expected latents [N, {expected}, H, W] for this model, got shape "
                         f"{list(samples.shape)} (a latent of another model family?)")
    return samples


def seed_noise(latent_image: torch.Tensor, first_seed: int) -> torch.Tensor:
    """Noise for each row i of ``latent_image`` as KSampler draws it for seed first_seed + i alone,
    so any sample of a large run can be reproduced by itself."""
    return torch.cat([comfy.sample.prepare_noise(latent_image[i:i + 1], first_seed + i)
                      for i in range(latent_image.shape[0])])


def noise_scale(model: Any, first_sigma: float) -> float:
    """What sampling multiplies unit noise by at the first sigma (ComfyUI's noise_scaling with
    max_denoise): √(1 + σ²) at the top of a variance-preserving schedule, σ elsewhere and for flow
    matching, whose noise_scaling is σ·noise + (1 − σ)·latent."""
    sigma_max = float(model.get_model_object("model_sampling").sigma_max)
    full = math.isclose(first_sigma, sigma_max, rel_tol=1e-5) or first_sigma > sigma_max
    return (1 + first_sigma ** 2) ** 0.5 if full and not is_flow(model) else first_sigma


def sampler_sigmas(model: Any, sampling: SamplerSettings, device: str | torch.device = "cpu") -> torch.Tensor:
    """The sigmas KSampler runs for these settings (``steps`` + 1 values, the last 0)."""
    return comfy.samplers.KSampler(model, steps=sampling.steps, device=device, sampler=sampling.sampler_name,
                                   scheduler=sampling.scheduler, denoise=sampling.denoise).sigmas


def schedule_percents(model: Any, timesteps: torch.Tensor) -> torch.Tensor:
    """ComfyUI's schedule percent (0 at the noisiest sigma, 1 at sigma 0) of each model timestep, by
    bisection on the model sampling's own ``percent_to_sigma``: right for every parametrisation
    (discrete 0 … 999, EDM's 0.25·ln σ, flow's σ·1000), where a timestep constant is not."""
    model_sampling = model.get_model_object("model_sampling")
    percents = []
    for t in timesteps.reshape(-1).tolist():
        sigma = float(model_sampling.sigma(torch.tensor(t, dtype=torch.float64)))
        low, high = 0.0, 1.0  # percent_to_sigma falls from low to high
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if float(model_sampling.percent_to_sigma(middle)) > sigma else (low, middle)
        percents.append((low + high) / 2)
    return torch.tensor(percents, dtype=torch.float64)
