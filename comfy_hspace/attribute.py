"""Supervised directions (paper 000 §V): an attribute's direction is the mean difference of h
between samples that have it and samples that do not, per timestep, w = mean(h⁺) − mean(h⁻);
Disentangle removes from it what it shares with other directions by projecting it onto the
orthogonal complement of their joint span, w₀ − W(WᵀW)⁻¹Wᵀw₀, per timestep.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .directions import SPACES, Directions, check_compatible, resample_timesteps
from .recorder import HSpaceActivations


def top_and_bottom(scores: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``count`` highest and the ``count`` lowest scores (positives, negatives)."""
    n = scores.shape[0]
    if count < 2 or 2 * count > n:
        raise ValueError(f"count: expected 2 … {n // 2} (at least two positives and two negatives, at most half "
                         f"of the {n} scored samples), got {count}")
    order = scores.argsort(descending=True)
    return order[:count], order[-count:]


def mean_difference(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """w = mean(h⁺) − mean(h⁻) over dim 0 (samples); any trailing shape, e.g. [N, T, C, H, W]."""
    if positive.shape[0] == 0 or negative.shape[0] == 0:
        raise ValueError(f"{'positive' if positive.shape[0] == 0 else 'negative'}: the set is empty, a mean "
                         f"difference needs at least one sample on each side")
    if positive.shape[1:] != negative.shape[1:]:
        raise ValueError(f"negative: shape {list(negative.shape[1:])} does not match the positives' "
                         f"{list(positive.shape[1:])}")
    return positive.double().mean(0) - negative.double().mean(0)


def disentangle(primary: torch.Tensor, others: torch.Tensor, tolerance: float = 1e-6) -> torch.Tensor:
    """primary [T, d] minus its projection onto span(others[:, t]) for each t, jointly over all
    others [K, T, d] (least squares, not one after another). Raises if nothing is left."""
    if others.shape[1:] != primary.shape:
        raise ValueError(f"others: per-direction shape {list(others.shape[1:])} does not match the primary's "
                         f"{list(primary.shape)}")
    p, w = primary.double(), others.double()
    out = torch.empty_like(p)
    for t in range(p.shape[0]):
        basis = w[:, t].T  # [d, K]
        coefficients = torch.linalg.pinv(basis, rtol=1e-10) @ p[t]
        out[t] = p[t] - basis @ coefficients
        left = out[t].norm() / p[t].norm().clamp_min(1e-30)
        if left < tolerance:
            raise ValueError(f"primary: at timestep index {t} it lies inside the span of the other directions "
                             f"(‖projected‖/‖primary‖ = {left:.1e}); nothing is left after disentangling")
    return out.to(primary.dtype)


def attribute_direction(positive: HSpaceActivations, negative: HSpaceActivations | None = None,
                        scores: torch.Tensor | None = None, count: int = 0, space: str = "h",
                        name: str = "attribute") -> Directions:
    """The direction of one attribute, per timestep (or in x_T, for the paper's comparison):
    with ``scores`` (one per recorded sample), positives and negatives are the ``count``
    highest- and lowest-scored samples of ``positive``; otherwise they are all samples of
    ``positive`` and of ``negative`` (labelled images, or the same seeds under a label pair)."""
    if space not in SPACES:
        raise ValueError(f"space: expected one of {SPACES}, got {space!r}")
    timesteps = positive.timesteps
    if scores is not None:
        scores = scores.reshape(-1)
        if scores.shape[0] != positive.kept_noises:
            raise ValueError(f"scores: {scores.shape[0]} scores for {positive.kept_noises} recorded samples")
        top, bottom = top_and_bottom(scores, count)
        if space == "h":  # only the chosen samples' trajectories are read back
            w = mean_difference(positive.trajectories(top), positive.trajectories(bottom))
        else:
            w = mean_difference(positive.sample_noises(top), positive.sample_noises(bottom))[None]
        source = {"source": "scores", "count": count}
    elif negative is not None:
        if positive.h_shape != negative.h_shape:
            raise ValueError(f"negative: h shape {list(negative.h_shape)} does not match the positives' "
                             f"{list(positive.h_shape)} (images of different sizes?)")
        if space == "h":
            nearest = (timesteps[:, None] - negative.timesteps[None]).abs().argmin(1)
            w = positive.means() - negative.means()[nearest]
        else:
            w = (positive.mean_noise() - negative.mean_noise())[None]
        source = {"source": "two sets", "n_positive": positive.n_samples, "n_negative": negative.n_samples}
        if negative.parameters.get("model_fingerprint") != positive.parameters.get("model_fingerprint"):
            raise ValueError("negative: recorded on another model than the positives")
    else:
        raise ValueError("negative / scores: connect scores (classifier annotation of the positives' samples) or "
                         "negative activations (labelled images, or the same seeds under the other label)")
    if not w.abs().max() > 0:
        raise ValueError(f"positive / negative: their mean {space} is identical, there is no direction (in x_T, "
                         f"a label pair sampled from the same seeds starts from the same noise)")
    return Directions(w.float()[None], timesteps if space == "h" else timesteps[:1], [name], method="attribute",
                      model_fingerprint=positive.parameters.get("model_fingerprint", ""), units="mean difference",
                      parameters={**source, "steps": positive.parameters.get("steps")}, space=space)


def disentangle_directions(primary: Directions, others: Directions) -> Directions:
    """Each direction of ``primary`` with what it shares with all of ``others`` removed, per
    timestep (``others`` looked up at the primary's timesteps)."""
    check_compatible(primary, others, "others")
    other_vectors = resample_timesteps(others, primary.timesteps).flatten(2)  # [K, T, d]
    out = []
    for k in range(primary.count):
        try:
            out.append(disentangle(primary.vectors[k].flatten(1), other_vectors).reshape(primary.vectors[k].shape))
        except ValueError as e:
            raise ValueError(f"primary: direction {primary.names[k]!r}: {str(e).split(': ', 1)[1]}") from None
    names = [f"{n} ⊥ {', '.join(others.names)}" for n in primary.names]
    return replace(primary, vectors=torch.stack(out), names=names,
                   parameters={**primary.parameters, "disentangled_from": others.names})
