"""Memory a run will ask for, estimated from the model's h shape, the latent size and the node's
settings before anything is sampled, against what ComfyUI reports free on that device."""
from __future__ import annotations

import math

import comfy.model_management
import torch

GIB = 2 ** 30


def check_fits(needed: int, device: torch.device | str, what: str, lower: str, other: str = "") -> None:
    """Refuses a run that would need more than the device has free, naming the estimate, what is
    free and the input to lower (``lower`` starts the message, e.g. "n_samples"; ``other`` adds
    another way out)."""
    device = torch.device(device)
    free = comfy.model_management.get_free_memory(device)
    if needed > free:
        raise ValueError(f"{lower}: {what} needs about {needed / GIB:.1f} GiB on {device.type}, "
                         f"{free / GIB:.1f} GiB are free; lower {lower}{other}")


def recording_bytes(n_samples: int, steps: int, h_shape: tuple[int, ...], latent_shape: tuple[int, ...],
                    keep_samples: bool) -> int:
    """What the HSpace Hook and Invert Image keep per run: every sample (float32), and with
    ``keep_samples`` every sample's h at each step and its starting noise."""
    latent = math.prod(latent_shape[1:]) * 4
    per_sample = latent + (steps * math.prod(h_shape) * 4 + latent if keep_samples else 0)
    return n_samples * per_sample
