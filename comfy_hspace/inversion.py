"""Deterministic DDIM inversion (paper 000 SM-F, paper 001 §5.3): a real image's latent is run
up the schedule to the noise it would be sampled from, written like a k-diffusion sampler over
``model(x, sigma)`` returning the denoised x0. In sigma space DDIM is x' = x0 + σ'·ε, so going
up is the same step with σ' > σ, taking ε where the sample is now.
"""
from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def sample_ddim_inversion(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                          callback: Callable | None = None, disable: bool | None = None) -> torch.Tensor:
    """``sigmas`` ascending (from 0 or σ_min to σ_max); returns x at the last sigma. At σ = 0
    ε is undefined, so the first step takes it at its target sigma."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        at = sigma if sigma > 0 else sigma_next
        denoised = model(x, at * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": at, "denoised": denoised})
        x = x + (sigma_next - sigma) * (x - denoised) / at
    return x
