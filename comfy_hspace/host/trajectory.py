"""Jacobian Directions at points of a sample's own trajectory, inside ComfyUI's sampler."""
from __future__ import annotations

import math
from typing import Any, Callable

import comfy.ldm.modules.attention
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..directions import Directions
from ..editing import DELTA, with_call_options
from ..jacobian import TrajectoryPoint, jacobian_maps, mask_for_latent, top_singular_vectors
from ..settings import SamplerSettings
from .architectures import Site, site_of
from .autograd import autograd_context, in_place_safe
from .latents import model_latent, sampler_sigmas
from .memory import autograd_bytes, check_fits
from .model_info import image_scale
from .patch import hspace_clone


def _traceable_attention(attention: Callable, *args, **kwargs) -> torch.Tensor:
    """PyTorch's attention in place of ComfyUI's choice while the Jacobian is taken: the CPU default,
    sub-quadratic attention, makes torch.func.linearize's trace crash torch (a segfault in baddbmm
    on a broadcast empty tensor). Same product, another kernel."""
    return comfy.ldm.modules.attention.attention_pytorch(*args, **kwargs)


class _StopSampling(Exception):
    """Raised from inside a sampling run once everything it was started for has been measured."""


def at_trajectory_steps(model: Any, site: Site, positive: Any, negative: Any, latent_image: torch.Tensor,
                        noise: torch.Tensor, sampling: SamplerSettings, *, wanted: list[int],
                        analyse: Callable[[TrajectoryPoint], Any]) -> dict[int, Any]:
    """Samples one latent as KSampler would and calls ``analyse`` at each wanted step with the
    point x_i of that very trajectory (same noise, same sampler), in a context where autograd
    works (ComfyUI runs prompts in inference mode); stops sampling after the last one."""
    steps = sampling.steps
    schedule = sampler_sigmas(model, sampling).tolist()
    outside = [i for i in wanted if not 0 <= i < steps]
    if outside:
        raise ValueError(f"step: {outside[0]} is outside the schedule of {steps} steps (expected 0 … {steps - 1})")
    model_sampling = model.get_model_object("model_sampling")
    diffusion_model = site.dm
    results: dict[int, Any] = {}

    class LastH:
        h = None

        def record(self, h, row_timesteps, row_chunks):
            self.h = h.detach()

    last = LastH()
    clone = hspace_clone(model, site, recorder=last, deltas=True)

    def wrapper(executor, x, timestep, model_options, seed):
        sigma = float(timestep.reshape(-1)[0])
        i = min(range(steps), key=lambda j: abs(schedule[j] - sigma))
        if i in wanted and i not in results and abs(schedule[i] - sigma) <= 1e-5 * max(sigma, 1e-3):
            def eps(delta):
                options = with_call_options(model_options, **{DELTA: delta,
                                                             "optimized_attention_override": _traceable_attention})
                xs, sigmas = x0.expand(delta.shape[0], *x0.shape[1:]), sigma0.expand(delta.shape[0])
                with in_place_safe(site.architecture):
                    return (xs - executor(xs, sigmas, options, seed)) / sigmas.reshape(-1, *[1] * (xs.ndim - 1))

            with autograd_context(diffusion_model):
                x0, sigma0 = x[:1].clone(), timestep[:1].clone()
                with torch.no_grad():
                    eps(torch.zeros(1, *site.h_shape(x.shape), device=x.device, dtype=x.dtype))
                point = TrajectoryPoint(i, float(model_sampling.timestep(sigma0).reshape(-1)[0]),
                                        last.h[0].clone(), eps)
                results[i] = analyse(point)
            if len(results) == len(wanted):
                raise _StopSampling
        return executor(x, timestep, model_options, seed)

    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "hspace_trajectory", wrapper)
    try:
        comfy.sample.sample(clone, noise, steps, sampling.cfg, sampling.sampler_name, sampling.scheduler, positive,
                            negative, latent_image, denoise=sampling.denoise, disable_pbar=True, seed=sampling.seed)
    except _StopSampling:
        pass
    if len(results) != len(wanted):
        missing = sorted(set(wanted) - set(results))
        raise ValueError(f"sampler_name: {sampling.sampler_name} never evaluated the model at step {missing[0]} of the "
                         f"schedule; use one that does (euler, ddim, ddpm, dpmpp_2m, …)")
    return results


def jacobian_directions(model: Any, positive: Any, negative: Any, latent: dict, sampling: SamplerSettings, *,
                        step: int, each_step: bool, n_directions: int, batch_size: int, tolerance: float = 1e-3,
                        max_iterations: int = 50, mask: torch.Tensor | None = None,
                        scale_by_singular_value: bool = False) -> Directions:
    """Paper 000 §IV-B: the top right singular vectors of J = ∂ε/∂h for one sample at the given
    step of its own trajectory, or at each step. ε is ComfyUI's guided noise prediction; with a
    mask, the masked one (eq. 9–10). Each direction is a unit vector times ‖h‖ at that step
    (strength 0.1 moves h by a tenth of its norm), optionally times σ_k/σ_1. Found at one step,
    a direction applies at every step (T = 1)."""
    site = site_of(model)
    latent_image = model_latent(model, latent)
    if latent_image.shape[0] != 1:
        raise ValueError(f"latent_image: Jacobian directions are for one sample, "
                         f"got a batch of {latent_image.shape[0]}")
    h_shape = site.h_shape(latent_image.shape)
    if not 1 <= n_directions <= math.prod(h_shape):
        raise ValueError(f"n_directions: expected 1 … {math.prod(h_shape)} (the h dimension), got {n_directions}")
    weight = None if mask is None else mask_for_latent(mask, latent_image.shape, image_scale(model))
    seed = sampling.seed
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    wanted = list(range(sampling.steps)) if each_step else [step]
    blocks = math.ceil(n_directions / max(1, min(batch_size, n_directions)))
    pbar = comfy.utils.ProgressBar(len(wanted) * blocks * max_iterations)

    def analyse(point: TrajectoryPoint):
        if point.step == wanted[0]:  # the estimate is the same at every step: once is enough
            _check_jacobian_fits(model, point, min(batch_size, n_directions))
        jvp, vjp = jacobian_maps(point, weight)
        found = top_singular_vectors(jvp, vjp, h_shape, n_directions, batch_size=batch_size, tol=tolerance,
                                     max_iters=max_iterations, seed=seed, progress=pbar.update)
        return found, float(point.h.norm()), point.timestep

    found = at_trajectory_steps(model, site, positive, negative, latent_image, noise, sampling, wanted=wanted,
                                analyse=analyse)
    per_step, previous = [], None
    for i in wanted:
        vectors, h_norm, _ = found[i]
        v = vectors.vectors.reshape(n_directions, -1)
        if previous is not None:  # signs consistent along the schedule
            signs = torch.sign((v * previous).sum(1))
            v = v * torch.where(signs == 0, 1.0, signs)[:, None]
        previous = v
        relative = vectors.values / vectors.values[0] if scale_by_singular_value else torch.ones(n_directions)
        per_step.append((v * (h_norm * relative)[:, None].to(v)).reshape(n_directions, *h_shape))
    return Directions(torch.stack(per_step, 1).float(), torch.tensor([found[i][2] for i in wanted]),
                      [f"jacobian{k + 1}" for k in range(n_directions)], method="jacobian",
                      model_fingerprint=site.fingerprint(), units="h norm",
                      parameters={**sampling.as_dict(), "step": None if each_step else step,
                                  "masked": mask is not None, "scale_by_singular_value": scale_by_singular_value,
                                  "singular_values": [[round(s, 6) for s in found[i][0].values.tolist()]
                                                      for i in wanted],
                                  "iterations": [found[i][0].iterations for i in wanted]})


def _check_jacobian_fits(model: Any, point: TrajectoryPoint, batch: int) -> None:
    """Before the power iteration: the two retained graphs of the products (the forward's, and the
    backward's that gives Jv) hold about batch × what they hold for one row, measured on one row."""
    weights = list(model.get_model_object("diffusion_model").parameters())
    delta = torch.zeros(1, *point.h.shape, device=point.h.device, dtype=point.h.dtype, requires_grad=True)
    forward = autograd_bytes(lambda: point.eps(delta), weights)
    out = point.eps(delta)
    u = torch.zeros_like(out, requires_grad=True)
    backward = autograd_bytes(lambda: torch.autograd.grad(out, delta, u, create_graph=True), weights)
    check_fits(batch * (forward + backward), point.h.device, f"the Jacobian's products, {batch} directions at a time",
               "batch_size")
