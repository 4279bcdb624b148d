"""The Discovery Trainer (paper 001) through ComfyUI's denoiser: the chain's schedule, the
networks sized from the model, and the training loop with its saved state."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import comfy.model_management
import comfy.sample
import comfy.samplers
import torch

from .. import discovery as dv
from ..directions import Directions
from ..editing import DELTA, PAIRED_ROWS, with_call_options
from ..settings import SamplerSettings
from .architectures import Site, site_of
from .autograd import autograd_context, in_place_safe
from .latents import model_latent, noise_scale, sampler_sigmas
from .memory import autograd_bytes, check_fits
from .model_info import is_flow
from .patch import half_of_pairs, hspace_clone


def with_denoiser(model: Any, site: Site, positive: Any, negative: Any, latent_shape: tuple[int, ...], cfg: float,
                  fn: Callable[[Callable, torch.device], Any]) -> Any:
    """Calls ``fn(denoise, device)`` from inside one ComfyUI sampling run, where the model is loaded
    and the conditioning prepared, with autograd working. ``denoise(x, sigma, shift)`` is ComfyUI's
    guided x0 prediction (cfg included) with the bottleneck callback ``shift`` (or None); with
    ``pair=True`` it returns the plain and the shifted prediction from one model call of
    ``PAIRED_ROWS``. Returns what ``fn`` returns; the model is left as it was."""
    clone = hspace_clone(model, site, deltas=True)
    result: dict = {}

    def sampler_function(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}

        def call(x, sigma, **keys):
            options = with_call_options(extra_args.get("model_options", {}), **keys)
            with in_place_safe(site.architecture):  # reverse mode through Flux's in-place blocks
                return model_fn(x, sigma, **{**extra_args, "model_options": options})

        def denoise(x, sigma, shift=None, pair=False):
            if not pair:
                return call(x, sigma) if shift is None else call(x, sigma, **{DELTA: shift})
            n = x.shape[0]
            both = call(torch.cat([x, x]), torch.cat([sigma, sigma]),
                        **{DELTA: _on_second_of_pairs(shift, n), PAIRED_ROWS: n})
            return both[:n], both[n:]

        with autograd_context(site.dm):
            result["value"] = fn(denoise, x.device)
        return x

    latent = torch.zeros(latent_shape)
    sigmas = sampler_sigmas(model, chain_settings(1))
    comfy.sample.sample_custom(clone, latent, cfg, comfy.samplers.KSAMPLER(sampler_function), sigmas, positive,
                               negative, latent, disable_pbar=True, seed=0)
    return result["value"]


def _on_second_of_pairs(shift: Callable, n: int) -> Callable:
    """``shift`` for rows laid out as ``PAIRED_ROWS``: called on each pair's second rows, zero on the first."""
    def delta(h: torch.Tensor, row_timesteps: torch.Tensor) -> torch.Tensor:
        moved = shift(half_of_pairs(h, n, 1), half_of_pairs(row_timesteps, n, 1)).unflatten(0, (-1, n))
        return torch.stack([torch.zeros_like(moved), moved], 1).flatten(0, 2)
    return delta


def chain_settings(steps: int) -> SamplerSettings:
    """The Discovery chain's schedule: DDIM over a uniform stride of the model's timesteps."""
    return SamplerSettings(seed=0, steps=steps, cfg=1.0, sampler_name="ddim", scheduler="ddim_uniform")


def discovery_schedule(model: Any, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chain's sigmas (DDIM, uniform stride, M steps) and the model timestep of each step."""
    if steps < 1:
        raise ValueError(f"steps: expected at least 1 sampling step, got {steps}")
    sigmas = sampler_sigmas(model, chain_settings(steps))
    return sigmas, model.get_model_object("model_sampling").timestep(sigmas[:-1]).float()


def new_discovery_trainer(site: Site, latent_shape: tuple[int, ...], settings: dv.DiscoverySettings,
                          seed: int) -> dv.Trainer:
    channels = site.h_shape(latent_shape)[0]
    in_channels, levels, layers = site.down_path(latent_shape[1])
    if len(latent_shape) == 5:  # a video's frames join the channels at the networks' input (dv.Encoder)
        in_channels *= latent_shape[2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dv.Trainer(dv.ShiftBlock(channels, settings.count, limit=settings.shift_limit),
                          dv.Reconstructor(in_channels, settings.count, levels, layers),
                          dv.Encoder(in_channels, levels, layers, 1), settings)


def _step_generator(seed: int, step: int) -> torch.Generator:
    # one generator per training step, so a resumed run draws what an uninterrupted one would
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _check_settings(site: Site, settings: dv.DiscoverySettings, world_size: int) -> None:
    if len(site.blocks) > 1:  # the shift block sees one h and moves it; several blocks' h are not one point
        raise ValueError(f"block: the Discovery Trainer learns its shift at one block; this model's h is at {site}")
    if settings.count < 2:
        raise ValueError(f"count: expected K ≥ 2 directions to tell apart, got {settings.count}")
    if not settings.magnitude > 0:
        raise ValueError(f"magnitude: expected S > 0 (ε is drawn from [−S, S]), got {settings.magnitude}")
    if not settings.shift_limit >= 0:
        raise ValueError(f"shift_limit: expected ≥ 0 (0: no limit), got {settings.shift_limit}")
    if settings.batch_size % world_size:
        raise ValueError(f"batch_size: {settings.batch_size} does not split over {world_size} processes")


# what states saved before a key was recorded had: no shift limit
BEFORE_KEYS = {"shift_limit": 0.0}
# a start_from state may have had another shift limit: its networks go on under this run's (the limit
# annealed in steps); resume keeps every setting
CHANGEABLE_FROM_START = {"shift_limit"}


def _saved_state(state_path: Path | None, start_from: Path | None, meta: dict) -> tuple[dict[str, torch.Tensor], int]:
    """(tensors, step) to go on from: the run's own state if it exists, else ``start_from``, else
    none. A state of another model, K, h or latent shape is refused, and to resume, of another shift limit."""
    own = state_path is not None and state_path.exists()
    path, what = (state_path, "resume") if own else (start_from, "start_from")
    if path is None:
        return {}, 0
    tensors, saved = dv.load_state(path, f"{what}: state file")
    for key, value in meta.items():
        was = saved.get(key, BEFORE_KEYS.get(key))
        if was != value and not (what == "start_from" and key in CHANGEABLE_FROM_START):
            raise ValueError(f"{what}: {path.name} was trained with {key} {was}, this run has {value}; "
                             f"use another {'name or turn resume off' if what == 'resume' else 'state'}")
    return tensors, int(saved["step"])


# ComfyUI runs nodes in inference mode; the trainer's networks, their state and the schedule must
# be ordinary tensors for autograd.
@torch.inference_mode(False)
def train_discovery(model: Any, positive: Any, negative: Any, latent_shape: tuple[int, ...],
                    settings: dv.DiscoverySettings, *, steps: int, training_steps: int, seed: int, cfg: float,
                    state_path: Path | None = None, start_from: Path | None = None,
                    resume: bool = False, save_every: int = 50, direction_samples: int = 16,
                    progress: Callable[[int, int, dict], None] | None = None, rank: int = 0, world_size: int = 1
                    ) -> tuple[Directions, Directions, list[dict]]:
    """Discovery Trainer (paper 001): trains shift block, reconstructor and discriminator through
    the M-step chain for ``training_steps`` updates of ``settings.batch_size`` samples (split over
    ``world_size`` torch.distributed processes), saving the state to ``state_path`` every
    ``save_every`` steps and at the end (rank 0; written whole, never half). Goes on from the saved
    state when ``resume`` finds one, else from the state ``start_from`` if given. Returns the per-step
    and the time-invariant directions (mean unit shift over ``direction_samples`` samples) and the
    loss history."""
    site = site_of(model)
    _check_settings(site, settings, world_size)
    settings = dataclasses.replace(settings, flow=is_flow(model))
    one = model_latent(model, {"samples": torch.zeros(1, *latent_shape[1:])})  # as KSampler shapes it
    latent_shape = (settings.batch_size, *one.shape[1:])
    sigmas, timesteps = discovery_schedule(model, steps)
    shifted = dv.shifted_step_count(timesteps, settings.t_edit)
    trainer = new_discovery_trainer(site, latent_shape, settings, seed)
    meta = {"model_fingerprint": site.fingerprint(), "count": settings.count,
            "h_shape": list(site.h_shape(latent_shape)), "latent_shape": list(latent_shape[1:]),
            "shift_limit": settings.shift_limit}
    resumed, trainer.step = _saved_state(state_path if resume else None, start_from, meta)
    scale = noise_scale(model, float(sigmas[0]))
    history: list[dict] = []

    def run(denoise, device):
        for m in trainer.modules().values():
            m.to(device)
        if resumed:  # after the move, so Adam puts the saved moments on their parameters' device
            dv.load_state_tensors(trainer, resumed)
        chain = sigmas.to(device)
        _check_training_fits(model, denoise, settings, latent_shape, chain, shifted, device)
        while trainer.step < training_steps:
            comfy.model_management.throw_exception_if_processing_interrupted()
            batch = dv.draw_batch(_step_generator(seed, trainer.step), latent_shape, settings.count,
                                  settings.magnitude, scale, rank=rank, world_size=world_size)
            batch = dv.Batch(batch.noise.to(device), batch.index.to(device), batch.magnitude.to(device))
            losses = dv.train_step(denoise, trainer, batch, chain, shifted, distributed=world_size > 1)
            history.append({"step": trainer.step, **losses})
            at_save = trainer.step % save_every == 0 or trainer.step == training_steps
            if state_path is not None and rank == 0 and at_save:
                dv.save_state(state_path, trainer, {**meta, "step": trainer.step, "settings": vars(settings),
                                                    "steps": steps, "seed": seed, "cfg": cfg})
            if progress is not None:
                progress(trainer.step, training_steps, losses)
        g = torch.Generator().manual_seed(seed + 7)
        noise = (torch.randn((direction_samples, *latent_shape[1:]), generator=g) * scale).to(device)
        return dv.mean_shifts(denoise, trainer.shift, noise, chain, shifted, settings.flow)

    found = with_denoiser(model, site, positive, negative, (1, *latent_shape[1:]), cfg, run)
    parameters = {"settings": vars(settings), "steps": steps, "training_steps": training_steps, "seed": seed,
                  "cfg": cfg, "shifted_steps": shifted, "state": state_path.name if state_path else None}
    per_step, time_invariant = (
        Directions(vectors.float().cpu(), timesteps.cpu(), [f"discovered {k}" for k in range(settings.count)],
                   method=f"discovery ({kind})", model_fingerprint=meta["model_fingerprint"], units="shift ε",
                   parameters=parameters) for vectors, kind in zip(found, ("per timestep", "time-invariant")))
    return per_step, time_invariant, history


def _check_training_fits(model: Any, denoise: Callable, settings: dv.DiscoverySettings,
                         latent_shape: tuple[int, ...], chain: torch.Tensor, shifted: int, device: torch.device
                         ) -> None:
    """Before training: a step keeps one model call's saved tensors per sample for each pass of the chain
    it backpropagates through at once (a shifted step has two, the plain and the shifted: all of the chain's
    without checkpointing, one step's with it), measured on one sample."""
    x = torch.zeros((1, *latent_shape[1:]), device=device, requires_grad=True)
    per_call = autograd_bytes(lambda: denoise(x, chain[:1]), model.get_model_object("diffusion_model").parameters())
    calls = (2 if shifted else 1) if settings.checkpointed else len(chain) - 1 + shifted
    check_fits(calls * settings.batch_size * per_call, device,
               f"a training step ({settings.batch_size} samples × {calls} passes held for backprop)",
               "batch_size", "" if settings.checkpointed else " or turn checkpointed on")
