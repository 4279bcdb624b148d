"""Supervised directions (paper 000 §V): an attribute's direction is the mean difference of h
between samples that have it and samples that do not, per timestep, w = mean(h⁺) − mean(h⁻), or
(the default here) the part of h that a regression on all classifier scores gives the attribute;
Disentangle removes from it what it shares with other directions by projecting it onto the
orthogonal complement of their joint span, w₀ − W(WᵀW)⁻¹Wᵀw₀, per timestep.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from .directions import SPACES, Directions, check_compatible, resample_timesteps
from .recorder import HSpaceActivations

METHODS = ("regression", "mean difference")


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


def score_regression(read: Callable[[torch.Tensor], torch.Tensor], scores: torch.Tensor, column: int,
                     count: int, chunk: int = 128) -> torch.Tensor:
    """The change of the rows that ``scores[:, column]`` explains with the other scores held fixed:
    least squares rows ≈ c + Σ_j β_j·z_j over all N samples (z: the standardised scores), then
    β_column times the z gap between the ``count`` top and bottom samples, so that strength 1 is
    comparable to their mean difference. ``read(indices)`` returns those samples' rows [n, ...]."""
    n, k = scores.shape
    if n < k + 2:
        raise ValueError(f"scores: a regression on {k} scores needs at least {k + 2} samples, got {n}")
    z = scores.double()
    spread = z.std(0)
    if not spread[column] > 0:
        raise ValueError(f"scores: column {column} is the same for every sample, there is nothing to regress on")
    z = (z - z.mean(0)) / spread.clamp_min(1e-12)
    design = torch.cat([torch.ones(n, 1, dtype=torch.float64), z[:, spread > 0]], 1)
    position = 1 + int((spread[:column] > 0).sum())
    top, bottom = top_and_bottom(z[:, column], count)
    gap = z[top, column].mean() - z[bottom, column].mean()
    singular = torch.linalg.svdvals(design)
    if singular[-1] < 1e-6 * singular[0]:
        raise ValueError("scores: some scores are linear combinations of others (a copied or complementary "
                         "column?), so the regression cannot tell their parts apart; use method 'mean difference' "
                         "or drop the duplicate")
    # the row of (XᵀX)⁻¹Xᵀ that gives β_column, applied to the rows chunk by chunk (they live on disk)
    weights = torch.linalg.solve(design.T @ design, design.T)[position]
    out = None
    for start in range(0, n, chunk):
        index = torch.arange(start, min(n, start + chunk))
        rows = read(index).double()
        part = torch.tensordot(weights[index], rows, dims=1)
        out = part if out is None else out + part
    return out * gap


def disentangle(primary: torch.Tensor, others: torch.Tensor, tolerance: float = 1e-6) -> torch.Tensor:
    """primary [T, d] minus its projection onto span(others[:, t]) for each t, jointly over all
    others [K, T, d] (least squares, not one after another); zero where the primary is zero.
    Raises if nothing is left."""
    if others.shape[1:] != primary.shape:
        raise ValueError(f"others: per-direction shape {list(others.shape[1:])} does not match the primary's "
                         f"{list(primary.shape)}")
    p, w = primary.double(), others.double()
    out = torch.empty_like(p)
    for t in range(p.shape[0]):
        if not p[t].abs().max() > 0:  # a direction that does not act at this timestep (start_percent)
            out[t] = 0
            continue
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
                        name: str = "attribute", column: int = 0, method: str = "regression",
                        start_percent: float = 0.0) -> Directions:
    """The direction of one attribute, per timestep (or in x_T, for the paper's comparison): from
    ``scores`` of the recorded samples (``scored_difference``), or from two sets of activations
    (``set_difference``), gated to act from ``start_percent`` of the schedule on.

    An h direction is zero before ``start_percent`` of the schedule (ComfyUI's percent, read from the
    activations' ``percents``, so the same on DDPM, EDM and flow models): an edit in the early,
    noisy steps changes which sample the model settles on, and the model then fills in the
    attributes that come with the edited one in its data (glasses bring dark hair), while the
    same edit later changes the attribute alone, if it is not already decided."""
    if space not in SPACES:
        raise ValueError(f"space: expected one of {SPACES}, got {space!r}")
    if not 0.0 <= start_percent < 1.0:
        raise ValueError(f"start_percent: expected 0 ≤ start_percent < 1, got {start_percent}")
    if scores is not None:
        w, source = scored_difference(positive, scores, count, space, column, method)
    elif negative is not None:
        w, source = set_difference(positive, negative, space)
    else:
        raise ValueError("negative / scores: connect scores (classifier annotation of the positives' samples) or "
                         "negative activations (labelled images, or the same seeds under the other label)")
    if not w.abs().max() > 0:
        raise ValueError(f"positive / negative: their mean {space} is identical, there is no direction (in x_T, "
                         f"a label pair sampled from the same seeds starts from the same noise)")
    timesteps = positive.timesteps
    if space == "h" and start_percent > 0:
        w = _from_percent(w, positive, start_percent)
    return Directions(w.float()[None], timesteps if space == "h" else timesteps[:1], [name], method="attribute",
                      model_fingerprint=positive.parameters.get("model_fingerprint", ""), units="mean difference",
                      parameters={**source, "steps": positive.parameters.get("steps"),
                                  "start_percent": start_percent if space == "h" else 0.0}, space=space)


def scored_difference(activations: HSpaceActivations, scores: torch.Tensor, count: int, space: str, column: int,
                      method: str) -> tuple[torch.Tensor, dict]:
    """(w [T, C, H, W] or [1, …] in x_T, how it was made) from ``scores`` ([N] or [N, J], one row per
    recorded sample; ``column`` is the attribute's): ``method`` "mean difference" is the paper's, the
    ``count`` highest- minus the ``count`` lowest-scored samples' mean; "regression" holds the other
    columns fixed (``score_regression``), so an attribute that comes with others in the samples, or
    that the classifier reads worse next to another (eyes behind glasses), does not carry them along."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    scores = scores.reshape(scores.shape[0], -1)
    if scores.shape[0] != activations.kept_noises:
        raise ValueError(f"scores: {scores.shape[0]} scores for {activations.kept_noises} recorded samples")
    read = activations.trajectories if space == "h" else activations.sample_noises
    if method == "regression":
        w = score_regression(read, scores, column, count)
    else:  # only the chosen samples' rows are read back
        top, bottom = top_and_bottom(scores[:, column], count)
        w = mean_difference(read(top), read(bottom))
    return (w[None] if space == "x_T" else w), {"source": "scores", "count": count, "method": method}


def set_difference(positive: HSpaceActivations, negative: HSpaceActivations, space: str
                   ) -> tuple[torch.Tensor, dict]:
    """(w, how it was made): all samples of ``positive`` minus all of ``negative`` (labelled images, or
    the same seeds under a label pair), per timestep of the positives."""
    if positive.h_shape != negative.h_shape:
        raise ValueError(f"negative: h shape {list(negative.h_shape)} does not match the positives' "
                         f"{list(positive.h_shape)} (images of different sizes?)")
    if negative.parameters.get("model_fingerprint") != positive.parameters.get("model_fingerprint"):
        raise ValueError("negative: recorded on another model than the positives")
    if space == "h":
        nearest = (positive.timesteps[:, None] - negative.timesteps[None]).abs().argmin(1)
        w = positive.means() - negative.means()[nearest]
    else:
        w = (positive.mean_noise() - negative.mean_noise())[None]
    return w, {"source": "two sets", "n_positive": positive.n_samples, "n_negative": negative.n_samples}


def _from_percent(w: torch.Tensor, activations: HSpaceActivations, start_percent: float) -> torch.Tensor:
    """w with its timesteps before ``start_percent`` of the schedule set to zero."""
    if activations.percents is None:
        raise ValueError("start_percent: these activations do not say where their timesteps lie in the "
                         "schedule; record them with the HSpace Hook or Invert Image")
    w = w * (activations.percents >= start_percent - 1e-9).to(w)[:, None, None, None]
    if not w.abs().max() > 0:
        raise ValueError(f"start_percent: no recorded timestep lies after {start_percent} of the schedule "
                         f"(the latest is at {activations.percents.max().item():.4g})")
    return w


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
