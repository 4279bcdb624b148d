"""The sampler settings every sampling function of the pack takes, as one value."""
from __future__ import annotations

from dataclasses import dataclass


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
