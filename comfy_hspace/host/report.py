"""The Direction Report through ComfyUI: each direction alone sampled at every strength from the same
noises (``edited_sample``; the 0 column is the stock sampler's, sampled once), decoded, and measured in
a feature space (``comfy_hspace.report``): the user's CLIP vision model, the embedded classifier, or
weight-free pixel features."""
from __future__ import annotations

import math
from typing import Any, Callable

import comfy.model_management
import torch
import torch.nn.functional as F

from .. import classifier
from .. import directions as D
from ..report import Measures, measure_direction
from ..settings import MODES, EditSettings, SamplerSettings
from . import embedded
from .architectures import site_of
from .edited_sampling import edited_sample
from .latents import model_latent
from .memory import check_fits, samples_bytes
from .model_info import image_scale


def report_cost(directions: D.Directions, strengths: list[float], samples: int, sampling: SamplerSettings,
                edit: EditSettings = EditSettings()) -> int:
    """Model calls the report makes, each on a batch of ``samples``: one sampling run per direction and
    non-zero strength, and one for strength 0 (two calls a step with cfg > 1, twice that in the
    asymmetric mode's edited runs)."""
    per_step = 2 if sampling.cfg > 1 else 1
    edited = directions.count * sum(s != 0 for s in strengths) * (2 if edit.mode != MODES[0] else 1)
    return (1 + edited) * sampling.steps * per_step


def clip_vision_features(clip_vision: Any, image_size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CLIP vision model's projected image embeddings; images too small for its patch grid (one
    image pixel or less per patch) are refused."""
    patch = next(m for m in clip_vision.model.modules() if isinstance(m, torch.nn.Conv2d)).stride[0]  # its patches'
    patches = clip_vision.image_size // patch
    if min(image_size) < patches:
        raise ValueError(f"clip_vision: its {clip_vision.image_size}-pixel input is {patches} patches across, more "
                         f"than the {image_size[1]}×{image_size[0]} images have pixels; use the pixel or face "
                         f"classifier features, or larger images")
    return lambda images: clip_vision.encode_image(images).image_embeds.float().cpu()


def face_classifier_features(images: torch.Tensor) -> torch.Tensor:
    """The embedded classifier's scores, each in units of its attribute's scale."""
    return embedded.score(images) / classifier.SCALES


def text_direction(clip: Any, source: str, target: str, width: int) -> torch.Tensor:
    """CLIP's text direction from ``source`` to ``target`` (unit pooled embeddings' difference), checked to
    live in the image features' space of ``width``."""
    def embed(text: str) -> torch.Tensor:
        _, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        return F.normalize(pooled.float().reshape(-1).cpu(), dim=0)
    direction = embed(target) - embed(source)
    if direction.numel() != width:
        raise ValueError(f"clip: its pooled text embedding has {direction.numel()} values, the CLIP vision model's "
                         f"image embeddings {width}; connect the text encoder of the same CLIP")
    return direction


def direction_report(model: Any, vae: Any, directions: D.Directions, sampling: SamplerSettings, positive: Any,
                     negative: Any, latent: dict, *, samples: int, strengths: list[float],
                     features: Callable[[torch.Tensor], torch.Tensor], feature_names: list[str] | None = None,
                     text: tuple[Any, str, str] | None = None, edit: EditSettings = EditSettings(),
                     progress: Callable[[int, int], None] | None = None) -> list[Measures]:
    """Measures every direction alone at every strength on ``samples`` samples of the latent's size,
    from the seed's noises, edited as ``edit`` says at strength 1 (its mode: Discovery directions are
    asymmetric-mode edits); ``text`` = (CLIP, from, to) adds CLIP directional similarity; ``progress(done,
    runs)`` after each sampling run."""
    if not strengths:
        raise ValueError("strengths: the list is empty; give strengths like '-2, -1, 0, 1, 2'")
    if samples < 2:
        raise ValueError(f"samples: consistency compares samples, expected at least 2, got {samples}")
    strengths = sorted(set(strengths) | {0.0})
    site, one = site_of(model), model_latent(model, latent)[:1]
    images = len(strengths) * samples
    pixels = (1, math.prod(one.shape[2:]) * image_scale(model) ** 2 * 3)  # an image's, as one flat row
    check_fits(samples_bytes(images, one.shape) + samples_bytes(images, pixels),
               comfy.model_management.intermediate_device(),
               f"holding {len(strengths)} strengths × {samples} samples of one direction", "samples")
    batch = {"samples": one.expand(samples, *one.shape[1:]).clone()}
    nonzero = [s for s in strengths if s != 0]
    runs, done = 1 + directions.count * len(nonzero), 0

    def sample(d: D.Directions, sweep: list[float]) -> torch.Tensor:
        nonlocal done
        out = edited_sample(model, d, sampling, edit, positive, negative, batch, sweep=sweep, site=site)["samples"]
        done += len(sweep)
        if progress is not None:
            progress(done, runs)
        images = vae.decode(out)
        return images.reshape(len(sweep), samples, -1, *images.shape[-2:])  # a video's frames stacked

    plain = sample(D.select(directions, [0]), [0.0])[0]
    plain_features = features(plain)
    extra = None if text is None else text_direction(*text, plain_features.shape[-1])
    found = []
    for k, name in enumerate(directions.names):
        images = _with_zero(sample(D.select(directions, [k]), nonzero), plain, strengths)
        stacked = torch.stack([plain_features if s == 0 else features(images[i]) for i, s in enumerate(strengths)])
        found.append(measure_direction(name, strengths, stacked, images, feature_names, extra))
    return found


def _with_zero(edited: torch.Tensor, plain: torch.Tensor, strengths: list[float]) -> torch.Tensor:
    """The images of every strength in order, the plain samples at strength 0."""
    at = strengths.index(0.0)
    return torch.cat([edited[:at], plain[None], edited[at:]])
