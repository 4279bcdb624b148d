"""The embedded domain: procedural face-like images with known factors (numpy, seeded).

Global factors: face position (x, y), face size, skin hue, background hue. Local: mouth
(smile ↔ frown), eyes (open ↔ closed). Accessories: glasses, hair colour (dark ↔ blond).
All independent except one deliberate pair: glasses are more frequent with dark hair, so that
disentangling has something to undo. Drawn 4× supersampled and averaged down.
"""
from __future__ import annotations

import colorsys

import numpy as np

SIZE = 32
SUPERSAMPLE = 4
BINARY = ("smile", "eyes_open", "glasses", "blond")
CONTINUOUS = ("x", "y", "size", "skin_hue", "bg_hue")
# The labels the conditional model is trained on: class = smile + 2·glasses + 4·blond; 8 = null.
LABELS = ("smile", "glasses", "blond")
NULL_CLASS = 2 ** len(LABELS)
P_GLASSES = {"dark": 0.7, "blond": 0.3}
RANGES = {"x": (12.0, 20.0), "y": (13.0, 19.0), "size": (7.0, 10.5), "skin_hue": (0.0, 0.12), "bg_hue": (0.3, 0.9)}


def sample_factors(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    f = {k: rng.uniform(*RANGES[k], size=n) for k in CONTINUOUS}
    f["smile"] = rng.random(n) < 0.5
    f["eyes_open"] = rng.random(n) < 0.5
    f["blond"] = rng.random(n) < 0.5
    f["glasses"] = rng.random(n) < np.where(f["blond"], P_GLASSES["blond"], P_GLASSES["dark"])
    return f


def class_index(factors: dict[str, np.ndarray]) -> np.ndarray:
    return sum(factors[k].astype(np.int64) << i for i, k in enumerate(LABELS))


def parse_labels(text: str) -> int:
    """'smile, glasses' → the class with those labels on and the others off; 'null' → NULL_CLASS."""
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if words == ["null"]:
        return NULL_CLASS
    unknown = [w for w in words if w not in LABELS]
    if unknown:
        raise ValueError(f"labels: unknown label(s) {unknown}; expected a comma-separated subset of "
                         f"{list(LABELS)}, an empty string (all off) or 'null' (unconditional)")
    return sum(1 << LABELS.index(w) for w in set(words))


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def background_rgb(bg_hue: float) -> np.ndarray:
    """The background colour for a hue, RGB in 0…1."""
    return _rgb(bg_hue, 0.45, 0.85)


def render_one(f: dict[str, float]) -> np.ndarray:
    """One image [3, SIZE, SIZE] in [-1, 1] from scalar factors."""
    n = SIZE * SUPERSAMPLE
    yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / SUPERSAMPLE
    cx, cy, r = f["x"], f["y"], f["size"]
    img = np.empty((n, n, 3), np.float32)
    img[:] = background_rgb(f["bg_hue"])

    def paint(mask, color):
        img[mask] = color

    hair = _rgb(0.12, 0.55, 0.95) if f["blond"] else _rgb(0.07, 0.6, 0.22)
    paint(((xx - cx) / (1.12 * r)) ** 2 + ((yy - cy + 0.15 * r) / (1.2 * r)) ** 2 < 1, hair)
    face = ((xx - cx) / r) ** 2 + ((yy - cy - 0.1 * r) / (1.05 * r)) ** 2 < 1
    paint(face, _rgb(f["skin_hue"], 0.45, 0.95))

    eye_y = cy - 0.15 * r
    for side in (-1, 1):
        ex = cx + side * 0.38 * r
        if f["eyes_open"]:
            paint(((xx - ex) / (0.14 * r)) ** 2 + ((yy - eye_y) / (0.16 * r)) ** 2 < 1, _rgb(0, 0, 0.08))
        else:
            paint((np.abs(xx - ex) < 0.17 * r) & (np.abs(yy - eye_y) < 0.045 * r), _rgb(0, 0, 0.08))
        if f["glasses"]:
            d = np.hypot(xx - ex, yy - eye_y)
            paint(np.abs(d - 0.27 * r) < 0.06 * r, _rgb(0.6, 0.3, 0.15))
    if f["glasses"]:
        paint((np.abs(xx - cx) < 0.11 * r) & (np.abs(yy - eye_y) < 0.04 * r), _rgb(0.6, 0.3, 0.15))

    # mouth: a parabola through the corners; smile bends down in the middle (image y points down)
    mouth_y, half_w = cy + 0.45 * r, 0.36 * r
    dx = (xx - cx) / half_w
    bend = (0.16 * r) * (1 - dx ** 2) * (1 if f["smile"] else -1)
    paint((np.abs(dx) < 1) & (np.abs(yy - (mouth_y + bend)) < 0.065 * r), _rgb(0.98, 0.7, 0.55))

    small = img.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return small.transpose(2, 0, 1) * 2.0 - 1.0


def render(factors: dict[str, np.ndarray]) -> np.ndarray:
    """Images [N, 3, SIZE, SIZE] in [-1, 1] for a batch of factors."""
    n = len(factors["x"])
    return np.stack([render_one({k: v[i] for k, v in factors.items()}) for i in range(n)]).astype(np.float32)


def dataset(n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    factors = sample_factors(n, rng)
    return render(factors), factors


REGIONS = ("mouth", "eyes", "face")


def region_mask(region: str, x: float, y: float, size: float) -> np.ndarray:
    """A [SIZE, SIZE] 0/1 mask around a part of a face centred at (x, y) with radius ``size``,
    with the geometry ``render_one`` draws it with (margins for the mouth's bend and the eyes)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    if region == "mouth":
        inside = (np.abs(xx - x) < 0.55 * size) & (np.abs(yy - (y + 0.45 * size)) < 0.3 * size)
    elif region == "eyes":
        inside = (np.abs(xx - x) < 0.75 * size) & (np.abs(yy - (y - 0.15 * size)) < 0.35 * size)
    elif region == "face":
        inside = ((xx - x) / size) ** 2 + ((yy - y - 0.1 * size) / (1.05 * size)) ** 2 < 1
    else:
        raise ValueError(f"region: expected one of {list(REGIONS)}, got {region!r}")
    return inside.astype(np.float32)


def parse_settings(text: str) -> dict[str, float]:
    """'smile=1, size=9' → {'smile': 1.0, 'size': 9.0}; names from BINARY and CONTINUOUS."""
    out = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, value = (x.strip() for x in part.partition("="))
        if name not in BINARY + CONTINUOUS or not value:
            raise ValueError(f"factors: {part!r} is not 'name=value' with a name from {list(BINARY + CONTINUOUS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"factors: {value!r} in {part!r} is not a number") from None
        if name in BINARY and out[name] not in (0.0, 1.0):
            raise ValueError(f"factors: {part!r}: {name} is 0 or 1")
        if name in CONTINUOUS and not RANGES[name][0] <= out[name] <= RANGES[name][1]:
            raise ValueError(f"factors: {part!r} is outside {RANGES[name][0]:g} … {RANGES[name][1]:g}, the range the "
                             f"embedded domain draws {name} from")
    return out


def images_with(n: int, seed: int, settings: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n faces [N, 3, SIZE, SIZE] in [-1, 1] with random factors except those in ``settings``:
    the same seed with different settings gives the same faces apart from those factors."""
    factors = sample_factors(n, np.random.default_rng(seed))
    for name, value in settings.items():
        factors[name] = np.full(n, value > 0.5) if name in BINARY else np.full(n, value)
    return render(factors), factors
