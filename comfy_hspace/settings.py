"""The settings every sampling function of the pack takes, as values: what KSampler's widgets say
(``SamplerSettings``) and how an edit is applied (``EditSettings``)."""
from __future__ import annotations

from dataclasses import dataclass, replace

APPLY_TO = ("both", "cond", "uncond")
MODES = ("both terms", "asymmetric (Asyrp)")


@dataclass(frozen=True)
class SamplerSettings:
    """What KSampler's widgets say: the seed of the starting noise, the number of steps, the
    guidance scale, ComfyUI's sampler and scheduler names and the fraction of the schedule run."""
    seed: int
    steps: int
    cfg: float
    sampler_name: str = "ddim"
    scheduler: str = "normal"
    denoise: float = 1.0

    def as_dict(self) -> dict:
        """For a direction file's metadata (the sampler under the key ``sampler``, as before)."""
        return {"seed": self.seed, "steps": self.steps, "cfg": self.cfg, "sampler": self.sampler_name,
                "scheduler": self.scheduler}


@dataclass(frozen=True)
class EditSettings:
    """How an h-space edit is applied: one strength per direction (or one for all), the part of the
    schedule it acts in (ComfyUI's percents, start ≤ end), the passes it changes (cond, uncond or
    both) and, for the Edited Sampler, the injection mode and the asymmetric mode's η."""
    strengths: tuple[float, ...] = (1.0,)
    start_percent: float = 0.0
    end_percent: float = 1.0
    apply_to: str = "both"
    mode: str = MODES[0]
    eta: float = 1.0

    def __post_init__(self) -> None:
        if self.apply_to not in APPLY_TO:
            raise ValueError(f"apply_to: expected one of {APPLY_TO}, got {self.apply_to!r}")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError(f"edit interval: expected 0 ≤ start ≤ end ≤ 1, got {self.start_percent} … "
                             f"{self.end_percent}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        object.__setattr__(self, "strengths", tuple(float(s) for s in self.strengths))

    def scaled(self, multiplier: float) -> "EditSettings":
        """The same edit with every strength times ``multiplier`` (a sweep member)."""
        return replace(self, strengths=tuple(s * multiplier for s in self.strengths))
