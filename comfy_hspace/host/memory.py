"""Memory a run will ask for, estimated from the model's h shape, the latent size and the node's
settings before anything is sampled, against what ComfyUI reports free on that device."""
from __future__ import annotations

import math
import shutil

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


def check_disk(needed: int, directory: str, what: str, lower: str, other: str = "") -> None:
    """As ``check_fits``, for what a run writes to files in ``directory``."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise ValueError(f"{lower}: {what} needs about {needed / GIB:.1f} GiB on disk in {directory}, "
                         f"{free / GIB:.1f} GiB are free there; lower {lower}{other}")


def recording_bytes(n_samples: int, latent_shape: tuple[int, ...]) -> int:
    """What the HSpace Hook and Invert Image hold in memory per run: every sample (float32); the
    running statistics do not grow with the number of samples."""
    return n_samples * math.prod(latent_shape[1:]) * 4


def kept_bytes(n_samples: int, steps: int, h_shape: tuple[int, ...], latent_shape: tuple[int, ...]) -> int:
    """What ``keep_samples`` writes to disk: every sample's h at each step (half precision; ddim_uniform
    may add one step) and its starting noise (float32)."""
    return n_samples * ((steps + 1) * math.prod(h_shape) * 2 + math.prod(latent_shape[1:]) * 4)
