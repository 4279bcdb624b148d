"""The HSPACE_DIRECTIONS value: K named h-space directions, one tensor per timestep.

Stored as ``.safetensors``: tensors ``directions`` [K, T, C, H, W] and ``timesteps`` [T], the
rest as JSON strings in the header. Loading never unpickles anything.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .files import read_safetensors, write_safetensors

FORMAT = "comfy-hspace/directions/1"
# The one stored timestep of a time-invariant direction (T = 1). Any value would do: at edit
# time every step looks up its nearest stored timestep.
TIME_INVARIANT = 500.0
SPACES = ("h", "x_T")


class DirectionsError(ValueError):
    """Bad direction input; the message names the input and what was expected."""


@dataclass(frozen=True)
class Directions:
    vectors: torch.Tensor  # [K, T, C, H, W] float32 on the CPU
    timesteps: torch.Tensor  # [T] model timesteps (0 … 999 for a 1000-step DDPM)
    names: list[str]
    method: str = "unknown"
    model_fingerprint: str = ""
    units: str = "raw"  # what strength 1 means: "std" (one standard deviation), "unit", "raw"
    parameters: dict = field(default_factory=dict)
    space: str = "h"  # "h": added to the bottleneck; "x_T": added to the starting noise [K, 1, C, H, W]

    def __post_init__(self) -> None:
        v, t = self.vectors, self.timesteps
        if v.dim() != 5:
            raise DirectionsError(f"directions: expected a [K, T, C, H, W] tensor, got shape {list(v.shape)}")
        if t.dim() != 1 or t.shape[0] != v.shape[1]:
            raise DirectionsError(
                f"directions: {v.shape[1]} timestep slices but timesteps has shape {list(t.shape)}")
        if len(self.names) != v.shape[0]:
            raise DirectionsError(f"directions: {v.shape[0]} directions but {len(self.names)} names")
        if not torch.isfinite(v).all():
            raise DirectionsError("directions: the tensor contains NaN or inf values")
        if self.space not in SPACES:
            raise DirectionsError(f"directions: space {self.space!r} is not one of {SPACES}")

    @property
    def count(self) -> int:
        return self.vectors.shape[0]

    @property
    def h_shape(self) -> tuple[int, int, int]:
        return tuple(self.vectors.shape[2:])

    def timestep_index(self, t: torch.Tensor) -> torch.Tensor:
        """Index of the nearest stored timestep for each entry of ``t``."""
        return (t.reshape(-1, 1).float().cpu() - self.timesteps.reshape(1, -1).float()).abs().argmin(dim=1)

    def combined(self, strengths: torch.Tensor | list[float]) -> torch.Tensor:
        """Σ_k strength_k · direction_k, per timestep: [T, C, H, W]."""
        s = torch.as_tensor(strengths, dtype=torch.float32)
        if s.shape != (self.count,):
            raise DirectionsError(f"strengths: expected {self.count} values (one per direction), got {s.numel()}")
        return torch.einsum("k,ktchw->tchw", s, self.vectors.float())


def _metadata(d: Directions) -> dict[str, str]:
    return {
        "format": FORMAT,
        "names": json.dumps(d.names),
        "method": d.method,
        "model_fingerprint": d.model_fingerprint,
        "units": d.units,
        "h_shape": json.dumps(list(d.h_shape)),
        "parameters": json.dumps(d.parameters),
        "space": d.space,
    }


def save_directions(d: Directions, path: str | os.PathLike) -> Path:
    tensors = {"directions": d.vectors.contiguous().float().cpu(), "timesteps": d.timesteps.float().cpu()}
    return write_safetensors(path, tensors, _metadata(d))


def load_directions(path: str | os.PathLike) -> Directions:
    tensors, meta = read_safetensors(path, "direction file", FORMAT, "a comfy-hspace direction file",
                                     DirectionsError)
    if "directions" not in tensors or "timesteps" not in tensors:
        raise DirectionsError(f"direction file {path}: safetensors, but not a comfy-hspace direction file "
                              f"(no tensors 'directions' and 'timesteps')")
    try:
        return Directions(
            vectors=tensors["directions"].float(),
            timesteps=tensors["timesteps"].float(),
            names=json.loads(meta["names"]),
            method=meta.get("method", "unknown"),
            model_fingerprint=meta.get("model_fingerprint", ""),
            units=meta.get("units", "raw"),
            parameters=json.loads(meta.get("parameters", "{}")),
            space=meta.get("space", "h"),
        )
    except (KeyError, json.JSONDecodeError) as e:
        raise DirectionsError(f"direction file {path}: damaged metadata ({e})") from None
    except DirectionsError as e:
        raise DirectionsError(f"direction file {path}: {e}") from None


def parse_indices(text: str, d: Directions) -> list[int]:
    """'0, 2' or 'pc1, pc3' or '1-3' (or '3-1', reversed) → indices into ``d``."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in d.names:
            out.append(d.names.index(part))
        elif "-" in part[1:] and all(x.strip().isdigit() for x in part.split("-", 1)):
            a, b = (int(x) for x in part.split("-", 1))
            out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))  # '3-1': 3, 2, 1
        elif part.lstrip("-").isdigit():
            out.append(int(part))
        else:
            raise DirectionsError(f"indices: {part!r} is neither an index nor one of the names {d.names}")
    if not out:
        raise DirectionsError("indices: empty; expected e.g. '0, 2' or a direction name")
    for i in out:
        if not -d.count <= i < d.count:
            raise DirectionsError(f"indices: {i} is out of range for {d.count} directions")
    return out


def select(d: Directions, indices: list[int]) -> Directions:
    return replace(d, vectors=d.vectors[indices].clone(), names=[d.names[i] for i in indices])


def scale(d: Directions, factors: list[float]) -> Directions:
    f = torch.as_tensor(factors, dtype=torch.float32)
    if f.numel() == 1:
        f = f.expand(d.count)
    if f.shape != (d.count,):
        raise DirectionsError(f"factors: expected 1 or {d.count} values, got {f.numel()}")
    return replace(d, vectors=d.vectors * f.view(-1, 1, 1, 1, 1))


def resample_timesteps(d: Directions, timesteps: torch.Tensor) -> torch.Tensor:
    """Vectors of ``d`` looked up at the nearest stored timestep for each of ``timesteps``."""
    return d.vectors[:, d.timestep_index(timesteps)]


def check_compatible(a: Directions, b: Directions, what: str = "directions b") -> None:
    """``b`` can be combined with ``a``: same space, same shape, and found on the same model."""
    if a.space != b.space:
        raise DirectionsError(f"{what}: lives in {b.space}, the others in {a.space}")
    if a.model_fingerprint and b.model_fingerprint and a.model_fingerprint != b.model_fingerprint:
        raise DirectionsError(f"{what}: found on another model ({b.model_fingerprint}, the others on "
                              f"{a.model_fingerprint})")
    if a.h_shape != b.h_shape:
        raise DirectionsError(f"{what}: h shape {list(b.h_shape)} does not match the others' {list(a.h_shape)}")


def stack(a: Directions, b: Directions) -> Directions:
    """All directions of ``a`` followed by those of ``b`` (b looked up on a's timesteps)."""
    check_compatible(a, b)
    vb = resample_timesteps(b, a.timesteps)
    return replace(a, vectors=torch.cat([a.vectors, vb]), names=a.names + b.names,
                   method=a.method if a.method == b.method else "combined")


def weighted_sum(a: Directions, b: Directions, weight_a: float, weight_b: float) -> Directions:
    """Direction k = weight_a·a_k + weight_b·b_k (one side may hold a single direction)."""
    check_compatible(a, b)
    if a.count != b.count and 1 not in (a.count, b.count):
        raise DirectionsError(f"directions: a has {a.count} and b {b.count}; a sum needs equal counts or one of 1")
    vb = resample_timesteps(b, a.timesteps)
    vectors = weight_a * a.vectors + weight_b * vb
    names = [f"{weight_a:g}*{na}+{weight_b:g}*{nb}" for na, nb in
             zip(a.names * (vectors.shape[0] // a.count), b.names * (vectors.shape[0] // b.count))]
    return replace(a, vectors=vectors, names=names, method="combined")


def resize(d: Directions, height: int, width: int) -> Directions:
    """Bilinear resize of every direction to another h resolution (e.g. found at 512 px, used
    at 768 px). Values per position are kept, so a strength has the same local effect."""
    if height < 1 or width < 1:
        raise DirectionsError(f"size: expected positive height and width, got {height}×{width}")
    k, t, c, h, w = d.vectors.shape
    flat = d.vectors.reshape(k * t, c, h, w)
    out = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return replace(d, vectors=out.reshape(k, t, c, height, width))


def random_directions(count: int, h_shape: tuple[int, int, int], seed: int, rms: float = 1.0,
                      model_fingerprint: str = "") -> Directions:
    """``count`` random Gaussian time-invariant directions of h shape ``h_shape``, each with
    root-mean-square ``rms`` per element: the baseline a found direction should beat."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn((count, 1, *h_shape), generator=g)
    v = v * (rms / v.pow(2).mean(dim=(1, 2, 3, 4), keepdim=True).sqrt())
    return Directions(v, torch.tensor([TIME_INVARIANT]), [f"random{i}" for i in range(count)], method="random",
                      model_fingerprint=model_fingerprint, units="raw", parameters={"seed": seed, "rms": rms})


def random_like(d: Directions, seed: int) -> Directions:
    """The baseline for ``d`` (paper 000 Fig. 4): per direction one random Gaussian direction,
    scaled at every timestep to the norm ``d`` has there, so an edit of equal strength moves h
    equally far, only not along a found direction."""
    g = torch.Generator().manual_seed(seed)
    unit = torch.randn((d.count, 1, *d.h_shape), generator=g)
    unit = unit / unit.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1, 1)
    norms = d.vectors.flatten(2).norm(dim=2)[:, :, None, None, None]
    return Directions(unit * norms, d.timesteps.clone(), [f"random{i + 1}" for i in range(d.count)], method="random",
                      model_fingerprint=d.model_fingerprint, units=d.units,
                      parameters={"seed": seed, "norms_of": d.method})
