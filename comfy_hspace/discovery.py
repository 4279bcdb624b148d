"""Unsupervised discovery of h-space directions, trained through the whole sampling chain
(paper 001: shift block §4.2, reconstructor §4.1, discriminator §4.3, step-by-step gradient
checkpointing §4.4 and appendix A).

Nothing here knows ComfyUI. The model is a ``denoise(x, sigma, shift) -> x0`` callable in
k-diffusion's sigma space, where ``shift`` (or None) is called at the bottleneck as
``shift(h, row_timesteps) -> Δh``; ``denoise(x, sigma, shift, pair=True)`` returns the plain and the
shifted x0 together (from one model call, whose path up to h the model may run once). A sampling
chain is DDIM (η = 0) over ``sigmas``; inside the shifting interval a step is Asyrp's asymmetric
one: x0 from the shifted pass, ε from the plain one.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .editing import asymmetric_step
from .files import read_safetensors, write_safetensors

Denoiser = Callable[..., "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def _groups(channels: int) -> int:
    # at most 32 groups of at least 4 channels, as UNets have; a group of one channel would erase
    # every per-channel constant (biases, the time embedding) and leave those weights no gradient
    return next((g for g in (32, 16, 8, 4, 2) if channels % g == 0 and channels // g >= 4), 1)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of model timesteps, as in the DDPM UNet."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float().reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ShiftBlock(nn.Module):
    """Asyrp's delta block with K output convolutions (§4.2): f_k(h, t) = out_k(SiLU(norm(in(h))·(1 + a(t)) + b(t))).
    The timestep enters as scale and shift after the norm (ADM's scale-shift norm), where a norm
    cannot remove it. The output convolutions start at zero, so shifted and unshifted samples
    start out identical. With ``limit`` > 0 the unit shift is softly capped at ``limit`` times the
    RMS of h (each sample): f·(1 + rms(f)²/(limit·rms(h))²)^(−1/2), f itself while small."""

    def __init__(self, channels: int, count: int, embed_dim: int = 128, limit: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.limit = limit
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.time = nn.Linear(embed_dim, 2 * channels)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        # the K 1×1 output convolutions, stacked so each sample picks its own
        self.out_weight = nn.Parameter(torch.zeros(count, channels, channels))
        self.out_bias = nn.Parameter(torch.zeros(count, channels))

    @property
    def count(self) -> int:
        return self.out_weight.shape[0]

    def forward(self, h: torch.Tensor, timesteps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        scale, shift = self.time(timestep_embedding(timesteps, self.embed_dim).to(h))[:, :, None, None].chunk(2, dim=1)
        a = F.silu(self.norm(self.conv_in(h)) * (1 + scale) + shift)
        f = torch.einsum("noc,nchw->nohw", self.out_weight[index], a) + self.out_bias[index][:, :, None, None]
        if self.limit <= 0:
            return f
        # unbounded, the learnt shifts grew to 2–17× h and left the data (docs/discovery.md)
        cap = self.limit * h.detach().pow(2).mean((1, 2, 3), keepdim=True).sqrt()
        return f * torch.rsqrt(1 + f.pow(2).mean((1, 2, 3), keepdim=True) / cap.pow(2))


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.norm1, self.conv1 = (nn.GroupNorm(_groups(channels_in), channels_in),
                                  nn.Conv2d(channels_in, channels_out, 3, padding=1))
        self.norm2, self.conv2 = (nn.GroupNorm(_groups(channels_out), channels_out),
                                  nn.Conv2d(channels_out, channels_out, 3, padding=1))
        self.skip = nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(y)))


class Encoder(nn.Module):
    """The down path of a UNet (B.3): input convolution, per level ``layers`` residual blocks and a
    stride-2 downsampling (none after the last level), then norm, SiLU, adaptive average pooling
    and a linear head with ``outputs`` values."""

    def __init__(self, in_channels: int, level_channels: list[int], layers: int, outputs: int):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, level_channels[0], 3, padding=1)]
        c = level_channels[0]
        for i, width in enumerate(level_channels):
            for _ in range(layers):
                blocks.append(ResBlock(c, width))
                c = width
            if i < len(level_channels) - 1:
                blocks.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        blocks += [nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, outputs)]
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1, -3))  # a frame axis (Qwen-Image's, a video's) joins the channels


class Reconstructor(nn.Module):
    """From the pair (unshifted x0, shifted x0) predicts the direction index (K logits) and the
    magnitude (§4.1, as GANLatentDiscovery's reconstructor)."""

    def __init__(self, channels: int, count: int, level_channels: list[int], layers: int):
        super().__init__()
        self.encoder = Encoder(2 * channels, level_channels, layers, count + 1)

    def forward(self, x0: torch.Tensor, x0_shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(torch.cat([x0, x0_shifted], dim=1))
        return out[:, :-1], out[:, -1]


@dataclass
class DiscoverySettings:
    count: int = 16  # K
    magnitude: float = 2.0  # S: ε uniform in [−S, S]
    t_edit: float = 400.0  # the shifting interval is [T, t_edit] in model timesteps
    batch_size: int = 16
    learning_rate: float = 1e-3
    regression_weight: float = 0.1  # magnitude regression loss (paper table 4)
    adversarial_weight: float = 0.1  # fooling the discriminator (paper table 4)
    shift_limit: float = 0.0  # soft cap on the unit shift's RMS ÷ h's RMS; 0: none (the paper)
    flow: bool = False  # the model is flow matching (set from the model, not chosen)
    checkpointed: bool = True  # False: plain backprop through the whole chain (for comparison)


@dataclass
class Batch:
    noise: torch.Tensor  # x_T, already scaled for the first sigma
    index: torch.Tensor  # [n] direction indices
    magnitude: torch.Tensor  # [n] ε


def draw_batch(generator: torch.Generator, shape: tuple[int, ...], count: int, magnitude: float,
               noise_scale: float, *, rank: int = 0, world_size: int = 1) -> Batch:
    """One training batch of ``shape[0]`` samples. Every process draws the whole batch and keeps its
    slice, so data-parallel training sees exactly the batch one process would."""
    n = shape[0]
    noise = torch.randn(shape, generator=generator) * noise_scale
    index = torch.randint(0, count, (n,), generator=generator)
    eps = (torch.rand(n, generator=generator) * 2 - 1) * magnitude
    part = slice(rank * n // world_size, (rank + 1) * n // world_size)
    return Batch(noise[part], index[part], eps[part])


def shift_fn(block: ShiftBlock, index: torch.Tensor, magnitude: torch.Tensor,
             record: list | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The bottleneck callback Δh = ε·f_k(h, t); ComfyUI may stack cond and uncond rows of the same
    samples, so index and magnitude repeat per chunk. ``record`` collects f_k(h, t)."""
    def shift(h: torch.Tensor, row_timesteps: torch.Tensor) -> torch.Tensor:
        chunks = h.shape[0] // index.shape[0]
        k = index.to(h.device).repeat(chunks)
        f = block(h, row_timesteps.to(h.device), k)
        if record is not None:
            record.append(f.detach())
        return magnitude.to(h).repeat(chunks).reshape(-1, 1, 1, 1) * f
    return shift


def chain_step(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
               shift: Callable | None = None, plain: torch.Tensor | None = None, flow: bool = False) -> torch.Tensor:
    """One DDIM (η = 0) step in sigma space; with ``shift``, Asyrp's asymmetric step (eq. 2): x0
    from the shifted pass, ε from the plain one. ``plain``: the unshifted prediction at x, when it is
    already known. ``flow``: a flow-matching model (``editing.asymmetric_step``)."""
    s = sigma.expand(x.shape[0])
    if shift is None:
        x0 = plain = denoise(x, s, None) if plain is None else plain
    elif plain is None:
        plain, x0 = denoise(x, s, shift, pair=True)
    else:
        x0 = denoise(x, s, shift)
    return asymmetric_step(x, x0, plain, sigma, sigma_next, flow)


def run_chain(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, shifted_steps: int,
              shift: Callable | None = None, keep: bool = False, first: torch.Tensor | None = None,
              flow: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """x0 from x_T over ``sigmas``; the first ``shifted_steps`` steps shifted. ``keep``: also every x_i.
    ``first``: the unshifted prediction at x_T, when it is already known."""
    nodes = [x] if keep else []
    for i in range(len(sigmas) - 1):
        x = chain_step(denoise, x, sigmas[i], sigmas[i + 1], shift if i < shifted_steps else None,
                       first if i == 0 else None, flow)
        if keep:
            nodes.append(x)
    return x, nodes


def shifted_step_count(timesteps: torch.Tensor, t_edit: float) -> int:
    """How many of the chain's steps (model timesteps, high → low) lie in the interval [T, t_edit]."""
    lo, hi = float(timesteps[-1]), float(timesteps[0])
    if not lo <= t_edit <= hi:
        raise ValueError(f"t_edit: {t_edit:g} is outside the schedule, whose steps run from timestep "
                         f"{hi:.0f} down to {lo:.0f}")
    return int((timesteps >= t_edit).sum())


@dataclass
class Trainer:
    """The modules and optimisers of one training run, plus its step count."""
    shift: ShiftBlock
    reconstructor: Reconstructor
    discriminator: Encoder
    settings: DiscoverySettings
    step: int = 0
    optimizers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        lr = self.settings.learning_rate
        if not self.optimizers:
            self.optimizers = {
                "generator": torch.optim.Adam(list(self.shift.parameters())
                                              + list(self.reconstructor.parameters()), lr),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr)}

    def modules(self) -> dict[str, nn.Module]:
        return {"shift": self.shift, "reconstructor": self.reconstructor, "discriminator": self.discriminator}


def generator_losses(trainer: Trainer, x0: torch.Tensor, x0_shifted: torch.Tensor,
                     batch: Batch) -> dict[str, torch.Tensor]:
    logits, magnitude = trainer.reconstructor(x0, x0_shifted)
    fake = trainer.discriminator(x0_shifted).reshape(-1)
    losses = {"classification": F.cross_entropy(logits, batch.index.to(logits.device)),
              "regression": (magnitude - batch.magnitude.to(magnitude)).abs().mean(),
              "adversarial": F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))}
    s = trainer.settings
    losses["total"] = losses["classification"] + s.regression_weight * losses["regression"] \
        + s.adversarial_weight * losses["adversarial"]
    losses["accuracy"] = (logits.argmax(1) == batch.index.to(logits.device)).float().mean()
    return losses


def chain_gradients(denoise: Denoiser, trainer: Trainer, batch: Batch, sigmas: torch.Tensor, shifted_steps: int,
                    x0: torch.Tensor, first: torch.Tensor | None = None
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Accumulates the generator loss's gradients into the shift block and the reconstructor and
    returns (losses, shifted x0). Checkpointed (appendix A): the shifted chain up to its last step runs
    once without gradient keeping every x_i, the last step with gradient; then from there back to x_T
    each step is recomputed with gradient and the cached dL/dx_{i+1} is pushed through it, so only
    one step's graph exists at a time.
    ``first``: the unshifted prediction at x_T (the unshifted chain's first), computed once: it
    depends on nothing learnt."""
    shift = shift_fn(trainer.shift, batch.index, batch.magnitude)
    x_t = batch.noise.to(x0)
    if first is None:
        with torch.no_grad():
            first = denoise(x_t, sigmas[0].expand(x_t.shape[0]), None)
    if not trainer.settings.checkpointed:
        x0_shifted, _ = run_chain(denoise, x_t, sigmas, shifted_steps, shift, first=first, flow=trainer.settings.flow)
        losses = generator_losses(trainer, x0, x0_shifted, batch)
        losses["total"].backward()
        return losses, x0_shifted.detach()
    last = len(sigmas) - 2
    with torch.no_grad():
        _, nodes = run_chain(denoise, x_t, sigmas[:-1], shifted_steps, shift, keep=True, first=first,
                             flow=trainer.settings.flow)
    # the last step runs with gradient once, not without and then again with it
    x_i = nodes[last].detach().requires_grad_(last > 0)
    x0_shifted = chain_step(denoise, x_i, sigmas[last], sigmas[last + 1], shift if last < shifted_steps else None,
                            first if last == 0 else None, trainer.settings.flow)
    losses = generator_losses(trainer, x0, x0_shifted, batch)
    losses["total"].backward()
    grad = x_i.grad
    for i in reversed(range(last)):
        x_i = nodes[i].detach().requires_grad_(i > 0)  # x_T is drawn, not learnt
        out = chain_step(denoise, x_i, sigmas[i], sigmas[i + 1], shift if i < shifted_steps else None,
                         first if i == 0 else None, trainer.settings.flow)
        out.backward(grad)
        grad = x_i.grad
    return losses, x0_shifted.detach()


def average_gradients(modules: list[nn.Module]) -> None:
    """Data-parallel training: the mean of every gradient over the torch.distributed processes."""
    import torch.distributed as dist

    world = dist.get_world_size()
    for module in modules:
        for p in module.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world


def train_step(denoise: Denoiser, trainer: Trainer, batch: Batch, sigmas: torch.Tensor, shifted_steps: int,
               distributed: bool = False) -> dict[str, float]:
    """One update of the shift block and reconstructor (to tell the shifts apart and fool the
    discriminator) and of the discriminator (unshifted x0 real, shifted x0 fake)."""
    for optimizer in trainer.optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():  # the unshifted chain never needs gradient
        first = denoise(batch.noise, sigmas[0].expand(batch.noise.shape[0]), None)
        x0, _ = run_chain(denoise, batch.noise, sigmas, 0, first=first)
    losses, x0_shifted = chain_gradients(denoise, trainer, batch, sigmas, shifted_steps, x0, first)
    trainer.discriminator.zero_grad(set_to_none=True)  # drop what the generator's loss left there
    real, fake = trainer.discriminator(x0).reshape(-1), trainer.discriminator(x0_shifted).reshape(-1)
    d_loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) \
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    d_loss.backward()
    if distributed:
        average_gradients(list(trainer.modules().values()))
    for optimizer in trainer.optimizers.values():
        optimizer.step()
    trainer.step += 1
    out = {k: float(v.detach()) for k, v in losses.items()}
    out["discriminator"] = float(d_loss.detach())
    out["d_real"], out["d_fake"] = (float(torch.sigmoid(real.detach()).mean()),
                                    float(torch.sigmoid(fake.detach()).mean()))
    return out


@torch.no_grad()
def mean_shifts(denoise: Denoiser, block: ShiftBlock, noise: torch.Tensor, sigmas: torch.Tensor,
                shifted_steps: int, flow: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per direction the mean unit shift f_k(h, t) over the samples of ``noise`` at every step of the
    chain (zero after the shifting interval), and its time-invariant version: the mean over the
    interval's steps, at each of those steps (§5.4). Both [K, M, C, H, W]."""
    per_step = []
    for k in range(block.count):
        record: list = []
        index = torch.full((noise.shape[0],), k, dtype=torch.long)
        run_chain(denoise, noise, sigmas, shifted_steps, shift_fn(block, index, torch.ones(noise.shape[0]), record),
                  flow=flow)
        per_step.append(torch.stack([f.float().mean(0).cpu() for f in record]))
    shifts = torch.stack(per_step)  # [K, shifted_steps, C, H, W]
    after = sigmas.shape[0] - 1 - shifted_steps
    pad = shifts.new_zeros(shifts.shape[0], after, *shifts.shape[2:])
    global_shift = shifts.mean(1, keepdim=True).expand_as(shifts)
    return torch.cat([shifts, pad], 1), torch.cat([global_shift, pad], 1)


STATE_FORMAT = "comfy-hspace/discovery/1"


def state_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every weight and optimiser moment of a training run, flat, for safetensors."""
    out = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in trainer.modules().items()
           for k, v in m.state_dict().items()}
    for name, optimizer in trainer.optimizers.items():
        for i, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                out[f"optimizer.{name}.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return out


def load_state_tensors(trainer: Trainer, tensors: dict[str, torch.Tensor]) -> None:
    for name, m in trainer.modules().items():
        prefix = f"{name}."
        m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, optimizer in trainer.optimizers.items():
        prefix = f"optimizer.{name}."
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith(prefix):
                i, key = k[len(prefix):].split(".", 1)
                state.setdefault(int(i), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _header(metadata: dict) -> dict[str, str]:
    return {"format": STATE_FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}


def save_state(path: str | Path, trainer: Trainer, metadata: dict) -> None:
    """Writes the whole training state as safetensors next to ``path`` and renames it into place,
    so a cancelled or failed run never leaves a half-written file."""
    write_safetensors(path, state_tensors(trainer), _header(metadata))


def save_networks(path: str | Path, state_path: str | Path) -> None:
    """The three networks of a saved state without the optimisers' moments (a third of the size), to
    ship: training that starts from it starts Adam afresh."""
    tensors, metadata = load_state(state_path)
    write_safetensors(path, {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}, _header(metadata))


def load_state(path: str | Path, what: str = "resume: state file") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a saved training state; never unpickles anything. ``what`` names the
    input in errors."""
    tensors, header = read_safetensors(path, what, STATE_FORMAT, "a Discovery Trainer state")
    metadata = {}
    for key, value in header.items():
        if key != "format":
            try:
                metadata[key] = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"{what} {path}: its {key!r} entry is not JSON ({value[:40]!r}); "
                                 f"the file was not written by this pack") from None
    return tensors, metadata
