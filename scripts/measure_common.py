"""What the measurement scripts (scripts/measure_*.py) share, and the benches with them: ComfyUI on
the import path in CPU mode with progress bars off (on import), Markdown tables, the --json report,
Spearman's rank correlation, decoding to IMAGE, and the set-up of a Discovery Trainer run on the
embedded model.

Import it before anything of ComfyUI or of ``comfy_hspace.host``; scripts/ is on the path of every
script run from it (and bench/bench_common.py puts it there for the benches)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import comfy_env
import torch

comfy_env.setup()
import comfy.utils  # noqa: E402

comfy.utils.PROGRESS_BAR_ENABLED = False  # a tqdm bar per sampling call: noise in the output and time

from comfy_hspace.host.architectures import site_of  # noqa: E402
from comfy_hspace import discovery as dv  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.discovery import discovery_schedule, new_discovery_trainer, with_denoiser  # noqa: E402
from comfy_hspace.host.latents import noise_scale  # noqa: E402


def markdown_row(cells: Iterable) -> str:
    """One row of a Markdown table; cells are written as str() writes them."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(header: Sequence, rows: Iterable[Sequence] = ()) -> str:
    """A Markdown table: the header, its rule and the rows. With no rows, the header and rule alone,
    for tables whose rows are printed (markdown_row) as they are measured."""
    return "\n".join([markdown_row(header), markdown_row("---" for _ in header)] + [markdown_row(r) for r in rows])


def write_report(path: Path | None, report: dict) -> None:
    """The --json report, where one was asked for (its folder made if missing); values JSON does not
    know are written as their str()."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, default=str))


def decoded(vae: Any, latent: torch.Tensor) -> torch.Tensor:
    """The pixel VAE's IMAGE [N, H, W, 3] of a LATENT's samples, clamped to 0…1."""
    return vae.decode(latent).clamp(0, 1)


@dataclass
class DiscoveryRun:
    """A Discovery Trainer on the M-step chain of a model: the trainer (seed 0), the latent shape of
    its batch, the chain's sigmas, how many of the chain's steps are shifted, and the scale of the
    starting noise."""
    trainer: dv.Trainer
    latent_shape: tuple[int, ...]
    sigmas: torch.Tensor
    shifted: int
    noise_scale: float

    def with_denoiser(self, model: Any, cfg: float, fn: Callable[[Any, Any], Any]) -> Any:
        """``fn(denoise, device)`` with the model's denoiser, unconditional (the embedded model's null
        label), as the Discovery Trainer node runs it."""
        null = embedded.conditioning("null")
        return with_denoiser(model, site_of(model), null, null, (1, *self.latent_shape[1:]), cfg, fn)


def discovery_run(model: Any, settings: dv.DiscoverySettings, latent_shape: tuple[int, ...], steps: int,
                  tensors: dict[str, torch.Tensor] | None = None) -> DiscoveryRun:
    """A new trainer for ``latent_shape`` (its first dimension the batch) on the model's ``steps``-step
    chain, with the tensors of a saved state (discovery.load_state) loaded into it when given."""
    sigmas, timesteps = discovery_schedule(model, steps)
    trainer = new_discovery_trainer(site_of(model), latent_shape, settings, 0)
    if tensors is not None:
        dv.load_state_tensors(trainer, tensors)
    return DiscoveryRun(trainer, latent_shape, sigmas, dv.shifted_step_count(timesteps, settings.t_edit),
                        noise_scale(model, float(sigmas[0])))
