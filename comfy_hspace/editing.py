"""The h-space edit (paper 000 §III, Asyrp): ``HSpaceEdit``, what the patch at h adds, and the keys
of one model call that the pack's samplers and trainers pass to that patch (``EDIT_OFF``, ``DELTA``).

Both-terms injection needs no sampler of its own: the edited h changes the one noise
prediction, so every stock sampler applies it (one UNet pass per step). The asymmetric
reverse process of Asyrp predicts x0 from the edited pass and keeps the direction term of the
unedited pass, which needs a step of its own: ``sample_asyrp``, written like a k-diffusion
sampler over ``model(x, sigma)`` returning the denoised x0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .settings import APPLY_TO

# transformer_options key: a model call made with it set to True runs without the edit
# (the asymmetric sampler's unedited pass).
EDIT_OFF = "hspace_edit_off"
# transformer_options key: an offset [n, C, H, W] added to h of each of the n samples in this one
# model call (every chunk), e.g. the point at which Jacobian Directions differentiates; or a
# callable (h, row_timesteps) -> offset for all rows, e.g. the Discovery Trainer's shift block.
DELTA = "hspace_delta"
# transformer_options key: n, when each chunk of this model call's rows is n samples twice over (a plain
# and a shifted pass at the same x, as the Discovery Trainer's pair); a model that can runs their shared
# path up to h once (``pixel_ddpm.DiffusersUNet``), any other computes both halves.
PAIRED_ROWS = "hspace_paired_rows"


@dataclass
class HSpaceEdit:
    """h ← h + offsets[t] for the rows selected by ``apply_to``, while sigma_end ≤ σ ≤ sigma_start."""
    offsets: torch.Tensor  # [T, C, H, W]
    timesteps: torch.Tensor  # [T] model timesteps
    sigma_start: float = float("inf")
    sigma_end: float = 0.0
    apply_to: str = "both"
    _on_device: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.apply_to not in APPLY_TO:
            raise ValueError(f"apply_to: expected one of {APPLY_TO}, got {self.apply_to!r}")

    def part(self, index: int, count: int, weight: float) -> HSpaceEdit:
        """The edit of one of ``count`` blocks whose h are stacked along the channels: its slice, times
        ``weight``."""
        offsets = self.offsets.chunk(count, dim=1)[index] * weight
        return HSpaceEdit(offsets, self.timesteps, self.sigma_start, self.sigma_end, self.apply_to)

    def offsets_like(self, h: torch.Tensor) -> torch.Tensor:
        key = (h.device, h.dtype)
        if key not in self._on_device:
            self._on_device[key] = self.offsets.to(h.device, h.dtype)
        return self._on_device[key]

    def apply(self, h: torch.Tensor, row_sigmas: torch.Tensor, row_timesteps: torch.Tensor,
              row_chunks: torch.Tensor) -> torch.Tensor:
        if tuple(h.shape[1:]) != tuple(self.offsets.shape[1:]):
            raise ValueError(f"directions: h shape {list(self.offsets.shape[1:])} does not fit this model's h "
                             f"{list(h.shape[1:])} at this latent size (use Resize Directions for another "
                             f"resolution)")
        rows = (row_sigmas <= self.sigma_start) & (row_sigmas >= self.sigma_end)
        if self.apply_to != "both":
            rows &= row_chunks == (0 if self.apply_to == "cond" else 1)
        if not rows.any():
            return h
        offsets = self.offsets_like(h)
        if offsets.shape[0] > 1:
            idx = (row_timesteps.reshape(-1, 1) - self.timesteps.reshape(1, -1).to(row_timesteps)).abs().argmin(1)
            offsets = offsets[idx.to(h.device)]
        if bool(rows.all()):
            return h + offsets
        # rows outside the edit stay bit-for-bit as they were
        return torch.where(rows.to(h.device).reshape(-1, 1, 1, 1), h + offsets, h)


def with_call_options(model_options: dict, **keys) -> dict:
    """A copy of ComfyUI's model_options whose transformer_options also carry keys of one model call
    (``EDIT_OFF``, ``DELTA``), read by the patch at h; the input is not changed."""
    options = dict(model_options)
    options["transformer_options"] = {**options.get("transformer_options", {}), **keys}
    return options


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): DDIM with η in sigma space (η = 0 deterministic, η = 1 DDPM-like)."""
    if eta == 0 or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    return (sigma_next ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def asymmetric_step(x: torch.Tensor, x0: torch.Tensor, x0_plain: torch.Tensor, sigma, sigma_next,
                    flow: bool = False) -> torch.Tensor:
    """Asyrp's deterministic step (eq. 2) from σ to σ': x0 from the edited pass, the noise from the
    plain one. For ε-models in sigma space, x = x0 + σ·ε: x0 + σ'·(x − x0_plain)/σ. For flow matching,
    x = (1 − σ)·x0 + σ·ε: (1 − σ')·x0 + σ'·(x − (1 − σ)·x0_plain)/σ. With x0 = x0_plain either is
    Euler's step."""
    if flow:
        return (1 - sigma_next) * x0 + sigma_next * ((x - (1 - sigma) * x0_plain) / sigma)
    return x0 + (x - x0_plain) / sigma * sigma_next


def _without_edit(extra_args: dict) -> dict:
    return {**extra_args, "model_options": with_call_options(extra_args.get("model_options", {}), **{EDIT_OFF: True})}


@torch.no_grad()
def sample_asyrp(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                 callback: Callable | None = None, disable: bool | None = None, eta: float = 1.0,
                 sigma_start: float = float("inf"), sigma_end: float = 0.0, flow: bool = False) -> torch.Tensor:
    """x_{t-1} = x0(edited h) + σ_down·ε(unedited h) + σ_up·z inside the edit interval
    [sigma_end, sigma_start]; outside it, a plain DDIM(η) step on the unedited pass. ``flow``: a
    flow-matching model (``asymmetric_step``; deterministic only)."""
    if flow and eta > 0:
        raise ValueError(f"eta: the asymmetric mode samples flow-matching models deterministically; use eta 0, "
                         f"got {eta:g}")
    extra_args = extra_args or {}
    plain_args = _without_edit(extra_args)
    generator = torch.Generator(device=x.device).manual_seed(int(extra_args.get("seed", 0)))
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised_plain = model(x, sigmas[i] * s_in, **plain_args)
        if sigma_end <= sigma <= sigma_start:
            denoised = model(x, sigmas[i] * s_in, **extra_args)
        else:
            denoised = denoised_plain
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)  # flow: η = 0, so σ_down = σ_next
        x = asymmetric_step(x, denoised, denoised_plain, sigma, sigma_down, flow)
        if sigma_up > 0:
            x = x + torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sigma_up
    return x
