"""Memory a run will ask for, estimated from the model's h shape, the latent size and the node's
settings before anything is sampled, against what ComfyUI reports free on that device."""
from __future__ import annotations

import math
import shutil
from typing import Callable, Iterable

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


def samples_bytes(n_samples: int, latent_shape: tuple[int, ...]) -> int:
    """``n_samples`` float32 samples of ``latent_shape``'s size (its first axis the batch): what a node holds of
    the samples it makes (the HSpace Hook's and Invert Image's; the running statistics do not grow with the
    number of samples), or of their decoded images given an image's shape."""
    return n_samples * math.prod(latent_shape[1:]) * 4


def grid_bytes(cells: int, height: int, width: int, cell_size: int) -> int:
    """A labelled grid's decoded images (float32) and its sheet, each cell enlarged by a whole factor to
    ``cell_size`` (0: at least 128 pixels, as ``grid.labelled_grid``)."""
    factor = max(1, (cell_size or 128) // max(height, width))
    return cells * height * width * 3 * 4 * (1 + factor ** 2)


def kept_bytes(n_samples: int, steps: int, h_shape: tuple[int, ...], latent_shape: tuple[int, ...]) -> int:
    """What ``keep_samples`` writes to disk: every sample's h at each step (half precision; ddim_uniform
    may add one step) and its starting noise (float32)."""
    return n_samples * ((steps + 1) * math.prod(h_shape) * 2 + math.prod(latent_shape[1:]) * 4)


def autograd_bytes(forward: Callable[[], object], weights: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the tensors a forward pass keeps for its backward pass (what a retained graph holds),
    measured by running ``forward`` once (e.g. one sample); the model's ``weights`` are not counted."""
    skip = {w.data_ptr() for w in weights}
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> None:
        # keeps nothing: a tensor returned here would be held by its own grad_fn, a cycle gc cannot see
        if t.data_ptr() not in skip:
            saved[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()

    def unpack(_: None) -> torch.Tensor:
        raise RuntimeError("autograd_bytes measures a forward pass; its graph cannot be backpropagated")

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        forward()
    return sum(saved.values())


def phi_training_bytes(height: int, width: int, hidden: int, channels: int, batch_size: int) -> int:
    """The AVI trainer's Φ in training: weights, gradients and Adam's two moments (4 × float32 per
    parameter), and each layer's activations and their gradients for one batch of rows (a row per
    latent channel of each pair)."""
    hidden = hidden or height * width
    n = min(height, width)
    parameters = height * width * hidden + 2 * hidden * hidden + 3 * hidden + 2 * (hidden * n + n)
    activations = batch_size * channels * (height * width + 6 * hidden + 2 * n)
    return 4 * (4 * parameters + 2 * activations)
