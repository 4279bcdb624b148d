"""The Direction Report's measures: what a direction does to the images it edits, judged in a feature
space (a CLIP vision model's embeddings, the embedded classifier's scores, or weight-free pixel
features) from samples of every strength drawn from the same noises, strength 0 being the stock
sampler's. For features F(s) of each sample at strength s and the largest positive strength s⁺:

- effect: mean ‖F(s) − F(0)‖ over the samples, one value per strength;
- consistency: mean pairwise cosine of the samples' changes F(s⁺) − F(0) (1: one change for every
  sample; near 0: a different change for each, e.g. noise);
- preservation: mean cosine of F(s⁺) and F(0), and PSNR and SSIM of the images against strength 0;
- monotonicity: Spearman of strength against each sample's change projected on the mean change;
- linearity: R² of a straight line through the mean projected change against strength;
- CLIP directional similarity, given a text direction in the feature space: mean cosine of the
  samples' changes with it.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .directions import Directions

FEATURE_SPACES = ("clip vision", "face classifier", "pixels")


@dataclass
class Measures:
    name: str
    strengths: list[float]
    effect: list[float]
    consistency: float
    preservation: float
    psnr: float
    ssim: float
    monotonicity: float
    linearity: float
    moves_most: str = ""  # the feature (attribute) changed most at s⁺, where features are named
    clip_directional: float | None = None


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """Weight-free features of IMAGEs [N, H, W, 3]: the image averaged down to 16 × 16 and its horizontal
    and vertical differences there, [N, 3 · (256 + 240 + 240)]."""
    small = F.adaptive_avg_pool2d(images.movedim(-1, 1).float(), 16)
    return torch.cat([small.flatten(1), small.diff(dim=-1).flatten(1), small.diff(dim=-2).flatten(1)], dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image of two IMAGE batches in 0 … 1, in dB (100 where they are equal)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return torch.where(mse > 0, -10 * torch.log10(mse.clamp_min(1e-10)), torch.full_like(mse, 100.0))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image of two IMAGE batches in 0 … 1: SSIM with an 11-pixel Gaussian window (σ 1.5; smaller for
    images under 11 pixels), averaged over the image and its channels."""
    x, y = a.movedim(-1, 1).float(), b.movedim(-1, 1).float()
    size = min(11, x.shape[-1], x.shape[-2]) | 1
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * 1.5 ** 2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(x.shape[1], 1, size, size)

    def blur(t):
        return F.conv2d(t, window, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    score = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return score.flatten(1).mean(1)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation, ties given their mean rank; 0 where either side is constant."""
    def ranks(v: torch.Tensor) -> torch.Tensor:
        values, inverse, counts = torch.unique(v.double(), return_inverse=True, return_counts=True)
        last = counts.cumsum(0).double()
        return ((last - (counts - 1) / 2))[inverse]
    rx, ry = ranks(x.flatten()), ranks(y.flatten())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(rx.norm() * ry.norm())
    return float(rx @ ry) / denominator if denominator > 0 else 0.0


def mean_pairwise_cosine(rows: torch.Tensor) -> float:
    """Mean cosine between every two different rows [N, D]."""
    unit = F.normalize(rows.double(), dim=1)
    off = ~torch.eye(len(rows), dtype=torch.bool)
    return float((unit @ unit.T)[off].mean())


def _r_squared(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    total = float(y @ y)
    return float((x @ y) ** 2 / (x @ x)) / total if total > 0 and float(x @ x) > 0 else 0.0


def measure_direction(name: str, strengths: list[float], features: torch.Tensor, images: torch.Tensor,
                      feature_names: list[str] | None = None, text_direction: torch.Tensor | None = None
                      ) -> Measures:
    """The measures of one direction from the features [S, N, D] and IMAGEs [S, N, H, W, 3] of N samples
    at each of the S strengths (one of them 0), the same noises in every row."""
    if 0.0 not in strengths:
        raise ValueError("strengths: the list needs 0 (the unedited samples everything is measured against)")
    if features.shape[1] < 2:
        raise ValueError(f"samples: consistency compares samples, expected at least 2, got {features.shape[1]}")
    s = torch.tensor(strengths, dtype=torch.float64)
    # the largest positive strength, or the most negative where there is none
    zero, top = strengths.index(0.0), strengths.index(max(strengths) if max(strengths) > 0 else min(strengths))
    change = (features - features[zero]).double()
    top_change = change[top]
    mean_change = top_change.mean(0)
    unit = F.normalize(mean_change, dim=0) * math.copysign(1.0, strengths[top])
    projected = change @ unit  # [S, N]
    measures = Measures(
        name=name, strengths=list(strengths), effect=change.norm(dim=-1).mean(1).tolist(),
        consistency=mean_pairwise_cosine(top_change),
        preservation=float(F.cosine_similarity(features[top].double(), features[zero].double(), dim=1).mean()),
        psnr=float(psnr(images[top], images[zero]).mean()), ssim=float(ssim(images[top], images[zero]).mean()),
        monotonicity=spearman(s[:, None].expand_as(projected), projected),
        linearity=_r_squared(s, projected.mean(1)))
    if feature_names is not None:
        measures.moves_most = feature_names[int(mean_change.abs().argmax())]
    if text_direction is not None:
        measures.clip_directional = float(F.cosine_similarity(top_change, text_direction.double()[None], dim=1)
                                          .mean())
    return measures


def effect_per_unit(m: Measures) -> float:
    """The effect per unit of strength: the least-squares slope of effect against |strength| through 0."""
    pairs = [(abs(s), e) for s, e in zip(m.strengths, m.effect) if s != 0]
    return sum(s * e for s, e in pairs) / sum(s * s for s, _ in pairs)


def calibrated(directions: Directions, measures: list[Measures], effect: float = 0.0) -> Directions:
    """Each direction rescaled so that strength 1 has the measured ``effect`` (0: the median of the set's
    effects at strength 1); the factors go into the directions' parameters."""
    per_unit = [effect_per_unit(m) for m in measures]
    if min(per_unit) <= 0:
        still = [m.name for m, e in zip(measures, per_unit) if e <= 0]
        raise ValueError(f"directions: {', '.join(still)} changed nothing measurable; they cannot be calibrated")
    target = effect if effect > 0 else statistics.median(per_unit)
    scales = torch.tensor([target / e for e in per_unit], dtype=directions.vectors.dtype)
    parameters = {**directions.parameters, "calibration": {"effect_at_strength_1": target,
                                                           "scales": [round(float(x), 6) for x in scales]}}
    return replace(directions, vectors=directions.vectors * scales.view(-1, *[1] * (directions.vectors.dim() - 1)),
                   parameters=parameters)


def report_json(measures: list[Measures], feature_space: str) -> str:
    """The table as JSON: one object per direction (``name``, ``effect`` per strength, ``consistency``,
    ``preservation``, …, and the feature space they were measured in)."""
    return json.dumps([{**asdict(m), "features": feature_space} for m in measures], indent=1)


def report_text(measures: list[Measures], feature_space: str) -> str:
    """The table as text, one line per direction."""
    strengths = ", ".join(f"{s:g}" for s in measures[0].strengths)
    lines = [f"measured in {feature_space} features; effect at strengths {strengths}",
             "direction | effect | consistency | preservation | PSNR | SSIM | monotonicity | linearity"
             + (" | moves most" if measures[0].moves_most else "")
             + (" | CLIP directional" if measures[0].clip_directional is not None else "")]
    for m in measures:
        row = (f"{m.name} | {' '.join(f'{e:.3g}' for e in m.effect)} | {m.consistency:.2f} | {m.preservation:.3f} | "
               f"{m.psnr:.1f} dB | {m.ssim:.3f} | {m.monotonicity:.2f} | {m.linearity:.2f}")
        row += f" | {m.moves_most}" if m.moves_most else ""
        row += f" | {m.clip_directional:.3f}" if m.clip_directional is not None else ""
        lines.append(row)
    return "\n".join(lines)


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
BARS = ("consistency", "preservation", "monotonicity", "linearity")


def report_chart(measures: list[Measures], feature_space: str) -> torch.Tensor:
    """An IMAGE [1, 480, 960, 3]: effect against strength per direction (left) and the other measures as
    bars on −1 … 1 (right), every axis labelled, in type readable at thumbnail size."""
    sheet = Image.new("RGB", (960, 480), "white")
    pen = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(22), ImageFont.load_default(16)
    strengths = measures[0].strengths
    # left panel: effect against strength
    x0, y0, x1, y1 = 80, 60, 450, 400
    top = max(max(m.effect) for m in measures) or 1.0
    lo, hi = min(strengths), max(strengths)

    def at(s: float, e: float) -> tuple[float, float]:
        return x0 + (s - lo) / ((hi - lo) or 1) * (x1 - x0), y1 - e / top * (y1 - y0)

    _axes(pen, (x0, y0, x1, y1), small, [(f"{s:g}", at(s, 0)[0]) for s in strengths],
          [(f"{v:.2g}", at(lo, v)[1]) for v in (0, top / 2, top)])
    pen.text(((x0 + x1) / 2, y1 + 45), "strength", fill="black", font=font, anchor="mm")
    pen.text((x0 - 70, y0 - 40), f"effect: mean change of {feature_space} features", fill="black", font=font)
    for k, m in enumerate(measures):
        points = [at(s, e) for s, e in zip(strengths, m.effect)]
        pen.line(points, fill=COLOURS[k % len(COLOURS)], width=4)
        for x, y in points:
            pen.ellipse((x - 4, y - 4, x + 4, y + 4), fill=COLOURS[k % len(COLOURS)])
    # right panel: the other measures as bars on −1 … 1
    x0, x1 = 540, 940
    zero_y = (y0 + y1) / 2
    group = (x1 - x0) / len(BARS)
    width = group * 0.8 / len(measures)
    _axes(pen, (x0, y0, x1, y1), small, [(name, x0 + (i + 0.5) * group) for i, name in enumerate(BARS)],
          [(f"{v:g}", zero_y - v * (y1 - y0) / 2) for v in (-1, 0, 1)])
    pen.line((x0, zero_y, x1, zero_y), fill="grey")
    pen.text((x0 - 40, y0 - 40), "value (1 = best)", fill="black", font=font)
    for i, bar in enumerate(BARS):
        for k, m in enumerate(measures):
            value = max(-1.0, min(1.0, getattr(m, bar)))
            left = x0 + i * group + group * 0.1 + k * width
            pen.rectangle((left, min(zero_y, zero_y - value * (y1 - y0) / 2), left + width - 2,
                           max(zero_y, zero_y - value * (y1 - y0) / 2)), fill=COLOURS[k % len(COLOURS)])
    # legend: the directions' names in their colours
    x = 80
    for k, m in enumerate(measures[:len(COLOURS)]):
        pen.rectangle((x, 452, x + 16, 468), fill=COLOURS[k])
        pen.text((x + 22, 460), m.name, fill="black", font=small, anchor="lm")
        x += 40 + pen.textlength(m.name, font=small)
    return torch.from_numpy(np.asarray(sheet).astype(np.float32) / 255.0)[None]


def _axes(pen: ImageDraw.ImageDraw, box: tuple[float, float, float, float], font: ImageFont.ImageFont,
          x_ticks: list[tuple[str, float]], y_ticks: list[tuple[str, float]]) -> None:
    x0, y0, x1, y1 = box
    pen.line((x0, y0, x0, y1, x1, y1), fill="black", width=2)
    for label, x in x_ticks:
        pen.line((x, y1, x, y1 + 6), fill="black", width=2)
        pen.text((x, y1 + 18), label, fill="black", font=font, anchor="mm")
    for label, y in y_ticks:
        pen.line((x0 - 6, y, x0, y), fill="black", width=2)
        pen.text((x0 - 10, y), label, fill="black", font=font, anchor="rm")
