"""Supervised directions (paper 000 §V): an attribute's direction is the mean difference of h
between samples that have it and samples that do not, per timestep, w = mean(h⁺) − mean(h⁻); with
classifier annotation, by default less the part their different starting noises explain
(``noise_corrected_difference``). Disentangle removes from it what it shares with other directions
by projecting it onto the orthogonal complement of their joint span, w₀ − W(WᵀW)⁻¹Wᵀw₀, per timestep.
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


METHODS = ("noise-corrected mean difference", "mean difference (paper)")
MIN_REGRESSION_SAMPLES = 32


def noise_corrected_difference(activations: HSpaceActivations, top: torch.Tensor, bottom: torch.Tensor,
                               chunk: int = 256) -> torch.Tensor:
    """w_t = mean(h⁺) − mean(h⁻) − b_t·(mean(s⁺) − mean(s⁻)) per timestep [T, C, H, W]: positives and
    negatives picked by score also differ in their starting noise, by Δx, and at early, noise-dominated
    steps h mostly encodes that noise, so the plain difference there points along the noise, which pushes
    an edit the wrong way. s = u·x_T is each sample's noise component along u = Δx/‖Δx‖, and b_t the slope
    of h_t on s over all recorded samples (a regression on the one noise direction the two groups differ
    in, so it needs far fewer samples than a regression on the whole x_T)."""
    n = activations.kept_noises
    if n < MIN_REGRESSION_SAMPLES:
        raise ValueError(f"scores: the noise-corrected difference regresses h on the starting noise over all "
                         f"scored samples and needs at least {MIN_REGRESSION_SAMPLES}, got {n}; record more "
                         f"samples or use method '{METHODS[1]}'")
    parts = [list(range(i, min(i + chunk, n))) for i in range(0, n, chunk)]
    dx = (activations.sample_noises(top).double().mean(0) - activations.sample_noises(bottom).double().mean(0))
    u = dx.flatten() / dx.norm().clamp_min(1e-30)
    s = torch.cat([activations.sample_noises(p).double().flatten(1) @ u for p in parts])
    centred = s - s.mean()
    ds = s[top].mean() - s[bottom].mean()
    out = []
    for t in activations.timesteps.tolist():
        covariance = sum(centred[p] @ activations.rows_at(t, p).double().flatten(1) for p in parts)
        slope = covariance / (centred ** 2).sum()
        plain = activations.rows_at(t, top).double().mean(0) - activations.rows_at(t, bottom).double().mean(0)
        out.append(plain - (slope * ds).reshape(plain.shape))
    return torch.stack(out)


def attribute_direction(positive: HSpaceActivations, negative: HSpaceActivations | None = None,
                        scores: torch.Tensor | None = None, count: int = 0, space: str = "h",
                        name: str = "attribute", method: str = METHODS[0]) -> Directions:
    """The direction of one attribute, per timestep (or in x_T, for the paper's comparison):
    with ``scores`` (one per recorded sample), positives and negatives are the ``count``
    highest- and lowest-scored samples of ``positive`` (their h difference noise-corrected, or plain
    as in the paper: ``method``); otherwise they are all samples of ``positive`` and of ``negative``
    (labelled images, or the same seeds under a label pair: same noise, nothing to correct)."""
    if space not in SPACES:
        raise ValueError(f"space: expected one of {SPACES}, got {space!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    timesteps = positive.timesteps
    if scores is not None:
        scores = scores.reshape(-1)
        if positive.kept is None:
            raise ValueError("activations: per-sample noises were not kept; record with keep_samples on")
        if scores.shape[0] != positive.kept_noises:
            raise ValueError(f"scores: {scores.shape[0]} scores for {positive.kept_noises} recorded samples")
        top, bottom = top_and_bottom(scores, count)
        if space == "h" and method == METHODS[0]:
            w = noise_corrected_difference(positive, top, bottom)
        elif space == "h":  # only the chosen samples' trajectories are read back
            w = mean_difference(positive.trajectories(top), positive.trajectories(bottom))
        else:
            w = mean_difference(positive.sample_noises(top), positive.sample_noises(bottom))[None]
        source = {"source": "scores", "count": count, "method": method}
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
