"""The embedded domain's attribute classifier (paper 000 §V's domain-specific classifier):
a tiny CNN giving a probability for each binary factor and a value for each continuous one.
It is also the measuring instrument for every method's claim on the embedded domain."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import faces

EMBEDDED = Path(__file__).resolve().parent / "embedded" / "faces-classifier.safetensors"
NAMES = faces.BINARY + faces.CONTINUOUS
# what a score change is measured against: 1 for the binary probabilities, the generator's range otherwise
SCALES = torch.tensor([1.0 if k in faces.BINARY else faces.RANGES[k][1] - faces.RANGES[k][0] for k in NAMES])


class FaceClassifier(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1, stride=2), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.SiLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1, stride=2), nn.SiLU(),
        )
        self.head = nn.Linear(4 * w * 4 * 4, len(NAMES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, 32, 32] in [-1, 1] → raw outputs [N, len(NAMES)] (logits, then values in 0…1)."""
        return self.head(self.features(x).flatten(1))


def scores_from_outputs(out: torch.Tensor) -> torch.Tensor:
    """Raw outputs → probabilities for binary factors, factor units for continuous ones."""
    nb = len(faces.BINARY)
    lo = torch.tensor([faces.RANGES[k][0] for k in faces.CONTINUOUS], device=out.device)
    hi = torch.tensor([faces.RANGES[k][1] for k in faces.CONTINUOUS], device=out.device)
    return torch.cat([torch.sigmoid(out[:, :nb]), lo + out[:, nb:] * (hi - lo)], dim=1)


def targets_from_factors(factors: dict) -> torch.Tensor:
    cols = [torch.as_tensor(factors[k], dtype=torch.float32) for k in faces.BINARY]
    for k in faces.CONTINUOUS:
        lo, hi = faces.RANGES[k]
        cols.append((torch.as_tensor(factors[k], dtype=torch.float32) - lo) / (hi - lo))
    return torch.stack(cols, dim=1)


def loss(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    nb = len(faces.BINARY)
    return (F.binary_cross_entropy_with_logits(out[:, :nb], targets[:, :nb])
            + 10 * F.mse_loss(out[:, nb:], targets[:, nb:]))


def load_classifier(path: str | Path = EMBEDDED) -> tuple[FaceClassifier, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    model = FaceClassifier(int(meta.get("width", 32)))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), json.loads(meta.get("metrics", "{}"))


@torch.no_grad()
def score_images(model: FaceClassifier, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """ComfyUI IMAGE [N, H, W, 3] in 0…1 → scores [N, len(NAMES)]."""
    if images.dim() != 4 or images.shape[-1] != 3 or tuple(images.shape[1:3]) != (faces.SIZE, faces.SIZE):
        raise ValueError(f"images: expected a batch of {faces.SIZE}×{faces.SIZE} RGB images [N, {faces.SIZE}, "
                         f"{faces.SIZE}, 3], got shape {list(images.shape)}")
    device = next(model.parameters()).device
    x = images.permute(0, 3, 1, 2).float() * 2 - 1
    out = [scores_from_outputs(model(x[i:i + batch].to(device))).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out)


@torch.no_grad()
def redrawn(model: FaceClassifier, images: torch.Tensor) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """The factors the classifier reads in each image (IMAGE [N, H, W, 3] in 0…1), binary ones
    thresholded and continuous ones clamped to the generator's ranges, and the faces drawn from
    them as an IMAGE."""
    scores = score_images(model, images)
    factors = {k: ((scores[:, j] > 0.5) if k in faces.BINARY else scores[:, j].clamp(*faces.RANGES[k])).numpy()
               for j, k in enumerate(NAMES)}
    return factors, (torch.from_numpy(faces.render(factors)).permute(0, 2, 3, 1) + 1) / 2


@torch.no_grad()
def rerender_psnr(model: FaceClassifier, images: torch.Tensor) -> torch.Tensor:
    """Analysis by synthesis: PSNR [N] (dB) between each image (IMAGE [N, H, W, 3] in 0…1) and the face
    drawn from the factors the classifier reads in it. A face whose factors are all readable and
    valid comes back close; a faceless or broken sample does not."""
    _, drawn = redrawn(model, images)
    mse = ((drawn - images.float().cpu()) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return -10 * torch.log10(mse)


@torch.no_grad()
def face_found(model: FaceClassifier, images: torch.Tensor) -> torch.Tensor:
    """Per image (IMAGE [N, H, W, 3] in 0…1), whether it shows a face: inside the face disk that
    the classifier reads, the image is closer to the face drawn from the classifier's reading than
    to the plain background of the hue it reads. A faceless sample fails either way: the drawn
    face lands on background, or on a blot that is no face."""
    factors, drawn = redrawn(model, images)
    found = []
    for i, image in enumerate(images.float().cpu()):
        disk = torch.from_numpy(faces.region_mask("face", *(float(factors[k][i]) for k in ("x", "y", "size")))) > 0
        background = torch.from_numpy(faces.background_rgb(float(factors["bg_hue"][i])))
        to_face = ((image - drawn[i]) ** 2)[disk].mean()
        to_background = ((image - background) ** 2)[disk].mean()
        found.append(bool(to_face < to_background))
    return torch.tensor(found)
