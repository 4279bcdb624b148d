"""The embedded domain, as nodes, scripts, benches and tests use it: where its model and
classifier live, loading them, label conditioning, faces ↔ ComfyUI IMAGE, and scoring."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import classifier, faces
from .pixel_ddpm import CLASS_KEY, load_pixel_ddpm
from .pixel_dit import load_pixel_dit

FOLDER = Path(__file__).resolve().parent.parent / "embedded"
DDPM_FOLDER = FOLDER / "faces-ddpm"
DIT_FILE = FOLDER / "faces-dit.safetensors"  # the embedded transformer (scripts/train_dit.py)
CLASSIFIER_FILE = classifier.EMBEDDED
DISCOVERY_FOLDER = FOLDER / "discovery"  # Discovery Trainer states for the faces DDPM


ARCHITECTURES = {"unet": DDPM_FOLDER, "dit": DIT_FILE}  # the embedded models, by architecture


def load_model(path: str | Path = DDPM_FOLDER) -> tuple[Any, Any]:
    """(MODEL, VAE) of the shipped faces DDPM (a diffusers folder) or DiT (a .safetensors file), or
    of another folder or file of the same layout."""
    path = Path(path)
    return load_pixel_dit(path) if path.suffix == ".safetensors" else load_pixel_ddpm(path)


def conditioning(labels: str | int = "null") -> list:
    """CONDITIONING for the label-conditional faces DDPM: 'smile, glasses' (those labels on, the
    others off), 'null' (unconditional) or a class index."""
    label = labels if isinstance(labels, int) else faces.parse_labels(labels)
    return [[torch.zeros(1, 1, 1), {CLASS_KEY: label}]]


def to_image(faces_nchw: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Faces [N, 3, H, W] in −1…1 (the generator's and the model's range) → IMAGE [N, H, W, 3] in 0…1."""
    x = torch.as_tensor(faces_nchw).float()
    return (x.permute(0, 2, 3, 1) + 1) / 2


@lru_cache(maxsize=1)
def _classifier() -> classifier.FaceClassifier:
    return classifier.load_classifier(CLASSIFIER_FILE)[0]


def score(images: torch.Tensor) -> torch.Tensor:
    """The shipped classifier's scores [N, len(classifier.NAMES)] of an IMAGE [N, 32, 32, 3]
    (probabilities of the binary factors, values of the continuous ones)."""
    return classifier.score_images(_classifier(), images)


def face_found(images: torch.Tensor) -> torch.Tensor:
    """Per image of an IMAGE batch, whether it shows a face (``classifier.face_found``)."""
    return classifier.face_found(_classifier(), images)
