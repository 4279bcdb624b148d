"""The bad-input catalogue: every input a node of this pack refuses today, one row per case.

Read ``CASES`` top to bottom. It is grouped by node, in the order of README's Nodes table. Each row
gives the node, the inputs that differ from that node's valid base inputs (``BASE``, built on the tiny
models of scripts/tiny_models.py and the embedded faces model), and a regular expression the error
message must contain. Messages start with the name of the input they refuse ("strengths: …"), or of
the setting made of several inputs ("edit interval: …" for start_percent and end_percent,
"conditioning: …" for positive and negative); for a bad file they name the file, the value of the
``filename``, ``name`` or ``folder`` input. Every row runs the node in inference mode, as ComfyUI
does, and expects a ValueError or RuntimeError (``DirectionsError`` is a ValueError). No row is
skipped. After the error, every MODEL among the inputs must still have the model_options it had
before.

Files go to temporary folders registered in ComfyUI's folder_paths (hspace_directions, hspace_avi,
hspace_discovery, diffusers). ``test_every_base_is_accepted`` runs each node once on its base inputs,
so each row's error comes from its override and not from the base. ``test_every_node_is_catalogued``
fails when a node has no rows, so a new node adds its refusals here.
"""
from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path

import folder_paths
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import PIXEL_SCHEDULER, PIXEL_UNET, comfy_dit, comfy_unet, conditioning, save_pixel_ddpm

from comfy_hspace import avi
from comfy_hspace import directions as D
from comfy_hspace.discovery import STATE_FORMAT
from comfy_hspace.files import read_safetensors, write_safetensors
from comfy_hspace.host.architectures import site_of
from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm

# Nodes without inputs: nothing to refuse.
NO_INPUTS = {"NullConditioning"}
PICKLE = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."  # pickle.dumps(1): never unpickled
ZIP = b"PK\x03\x04 a torch.save zip, not safetensors"


def use(name: str):
    """An override value taken from the test world: ``use("pixel_dirs")``."""
    return lambda w: getattr(w, name)


def bad(node: str, overrides: dict, message: str, id: str):
    return pytest.param(node, overrides, message, id=f"{node}-{id}")


def latent(*shape: int, fill: str = "zeros") -> dict:
    """A LATENT of zeros (an empty latent) or of seeded Gaussian values (``fill="randn"``)."""
    if fill == "randn":
        return {"samples": torch.randn(*shape, generator=torch.Generator().manual_seed(0))}
    return {"samples": torch.zeros(*shape)}


CLASS_12 = [[torch.zeros(1, 1, 1), {"hspace_class": 12}]]  # a label the embedded faces model does not have
FLAT = {"model": use("flat")}  # a MODEL whose network has no UNet bottleneck
NO_BOTTLENECK = r"model: Conv2d has no h this pack reads"

CASES = [
    # ---- Edited Sampler (h-space): sd15-shaped UNet, 2 directions, latent 4×16×16 (h 64×8×8) ----
    bad("EditedSampler", {"strengths": "1, 2, 3"}, r"strengths: expected 1 or 2 values .*got 3", "strengths-count"),
    bad("EditedSampler", {"strengths": ""}, r"strengths: expected 1 or 2 values .*got 0", "strengths-empty"),
    bad("EditedSampler", {"strengths": "1, x"}, r"strengths: 'x' is not a number", "strengths-word"),
    bad("EditedSampler", {"strengths": "nan"}, r"strengths: 'nan' is not a finite number", "strengths-nan"),
    bad("EditedSampler", {"sweep": "-1, x"}, r"sweep: 'x' is not a number", "sweep-word"),
    bad("EditedSampler", {"sweep": "0, inf"}, r"sweep: 'inf' is not a finite number", "sweep-inf"),
    bad("EditedSampler", {"start_percent": 0.8, "end_percent": 0.2}, r"edit interval: expected 0 ≤ start ≤ end ≤ 1",
        "interval-reversed"),
    bad("EditedSampler", {"end_percent": 1.5}, r"edit interval: expected 0 ≤ start ≤ end ≤ 1", "interval-past-1"),
    bad("EditedSampler", {"apply_to": "neither"}, r"apply_to: expected one of", "apply_to"),
    bad("EditedSampler", {"mode": "fast"}, r"mode: expected one of", "mode"),
    bad("EditedSampler", {"directions": use("pixel_dirs"), "strengths": "1"},
        r"directions: h shape \[32, 8, 8\] does not fit this model, whose h is \[64, 8, 8\]", "directions-other-model"),
    bad("EditedSampler", {"directions": use("sd15_dirs_24px")},
        r"directions: h shape \[64, 12, 12\] does not fit .*\(use Resize Directions", "directions-other-size"),
    bad("EditedSampler", {"directions": use("x_t_dirs"), "strengths": "1"},
        r"directions: x_T shape \[3, 16, 16\] does not match the latent's \[4, 16, 16\]", "directions-x_T-shape"),
    bad("EditedSampler", {"noise": latent(2, 4, 16, 16)}, r"noise: shape \[2, 4, 16, 16\] does not match latent_image",
        "noise-shape"),
    bad("EditedSampler", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),
    bad("EditedSampler", {"latent_image": latent(1, 4, 512, 512), "sweep": ", ".join(["1"] * 10000)},
        r"sweep: 10000 sweep members of 1 samples needs about [\d.]+ GiB on cpu, [\d.]+ GiB are free; lower sweep",
        "sweep-over-memory"),
    bad("EditedSampler", {"model": use("faces_model"), "positive": CLASS_12, "negative": CLASS_12,
                          "latent_image": latent(1, 3, 32, 32), "directions": use("faces_dirs"), "strengths": "1"},
        r"conditioning: class 12 is outside this model's 9 classes", "positive-class-outside"),

    # ---- Apply H-space Edit: sd15-shaped UNet, 2 directions ----
    bad("ApplyHSpaceEdit", {"directions": use("pixel_dirs"), "strengths": "1"},
        r"directions: h has 32 channels, this model's h has 64 \(directions of another model\)",
        "directions-other-model"),
    bad("ApplyHSpaceEdit", {"directions": use("x_t_dirs"), "strengths": "1"},
        r"directions: x_T-space directions move the starting noise", "directions-x_T"),
    bad("ApplyHSpaceEdit", {"strengths": "1, 2, 3"}, r"strengths: expected 1 or 2 values", "strengths-count"),
    bad("ApplyHSpaceEdit", {"strengths": "one"}, r"strengths: 'one' is not a number", "strengths-word"),
    bad("ApplyHSpaceEdit", {"start_percent": 0.9, "end_percent": 0.1}, r"edit interval: expected 0 ≤ start ≤ end ≤ 1",
        "interval-reversed"),
    bad("ApplyHSpaceEdit", {"apply_to": "all"}, r"apply_to: expected one of", "apply_to"),
    bad("ApplyHSpaceEdit", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),

    # ---- Direction Sweep Grid (h-space): tiny pixel DDPM, 3 directions, latent 3×16×16 (h 32×8×8) ----
    bad("DirectionSweepGrid", {"strengths": ""}, r"strengths: empty", "strengths-empty"),
    bad("DirectionSweepGrid", {"strengths": "-1, x"}, r"strengths: 'x' is not a number", "strengths-word"),
    bad("DirectionSweepGrid", {"directions": use("sd15_dirs")},
        r"directions: h shape \[64, 8, 8\] does not fit this model, whose h is \[32, 8, 8\]", "directions-other-model"),
    bad("DirectionSweepGrid", {"start_percent": 0.7, "end_percent": 0.3}, r"edit interval: expected 0 ≤ start ≤ end",
        "interval-reversed"),
    bad("DirectionSweepGrid", {"mode": "fast"}, r"mode: expected one of", "mode"),
    bad("DirectionSweepGrid", {"strengths": ", ".join(["1"] * 200), "cell_size": 4096},
        r"strengths: the grid's images needs about [\d.]+ GiB on cpu, [\d.]+ GiB are free; lower strengths or the "
        r"directions, the batch or cell_size", "grid-over-memory"),

    # ---- Direction Report (h-space): tiny pixel DDPM, 3 directions, 2 samples, latent 3×16×16 ----
    bad("DirectionReport", {"strengths": " "}, r"strengths: the list is empty", "strengths-empty"),
    bad("DirectionReport", {"strengths": "1, x"}, r"strengths: 'x' is not a number", "strengths-word"),
    bad("DirectionReport", {"directions": use("sd15_dirs")},
        r"directions: h shape \[64, 8, 8\] does not fit this model, whose h is \[32, 8, 8\]", "directions-other-model"),
    bad("DirectionReport", {"features": "clip vision"}, r"features: 'clip vision' needs a CLIP vision model",
        "clip-vision-missing"),
    bad("DirectionReport", {"samples": 1}, r"samples: consistency compares samples, expected at least 2, got 1",
        "one-sample"),
    bad("DirectionReport", {"latent_image": latent(1, 3, 1024, 1024), "samples": 256,
                            "strengths": ", ".join(str(s) for s in range(-40, 41))},
        r"samples: holding 81 strengths × 256 samples of one direction needs about [\d.]+ GiB on cpu", "over-memory"),
    bad("DirectionReport", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),

    # ---- HSpace Hook: tiny pixel DDPM, 2 samples ----
    bad("HSpaceHook", {"components": 3}, r"components: 3 is more than the 2 samples", "components-over-samples"),
    bad("HSpaceHook", {"latent_image": latent(1, 3, 2, 2), "n_samples": 100, "components": 50},
        r"components: 50 is more than the h dimension 32", "components-over-h-dimension"),
    bad("HSpaceHook", {"latent_image": latent(1, 3, 16, 16, fill="randn"), "latent_is_noise": True, "components": 2},
        r"components: 2 is more than the 1 samples", "components-over-given-noises"),
    bad("HSpaceHook", {"components": -1}, r"components: expected ≥ 0, got -1", "components-negative"),
    bad("HSpaceHook", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),
    bad("HSpaceHook", {"latent_image": latent(1, 3, 15, 15)},
        r"latent_image: 15×15 does not go through this UNet, whose down path halves it 1× .* a multiple of 2",
        "latent-odd-size"),
    bad("HSpaceHook", {"latent_image": latent(1, 4, 16, 16, fill="randn")},
        r"latent_image: expected latents \[N, 3, H, W\] for this model, got shape \[1, 4, 16, 16\]",
        "latent-other-channels"),
    bad("HSpaceHook", {"latent_image": latent(1, 3, 256, 256), "n_samples": 1_000_000, "keep_samples": True},
        r"n_samples: keeping every sample's h trajectory \(1000000 samples × \d+ steps\) needs about [\d.]+ GiB on "
        r"disk in .+; lower n_samples or turn keep_samples off", "keep-samples-over-disk"),
    bad("HSpaceHook", {"latent_image": latent(1, 3, 256, 256), "n_samples": 1_000_000},
        r"n_samples: keeping 1000000 samples needs about [\d.]+ GiB on cpu, [\d.]+ GiB are free; lower n_samples",
        "samples-over-memory"),
    bad("HSpaceHook", {"model": use("flux"), "latent_image": latent(1, 16, 256, 256), "n_samples": 1_000_000,
                       "keep_samples": True},  # h: 64 channels × 128 × 128 tokens
        r"n_samples: keeping every sample's h trajectory \(1000000 samples × \d+ steps\) needs about [\d.]+ GiB on "
        r"disk", "transformer-keep-samples-over-disk"),

    # ---- PCA Directions (h-space): activations with 2 components kept ----
    bad("PCADirections", {"n_components": 3}, r"n_components: expected 1 … 2 \(the HSpace Hook kept 2",
        "n_components-over-kept"),
    bad("PCADirections", {"n_components": 0}, r"n_components: expected 1 … 2", "n_components-zero"),
    bad("PCADirections", {"activations": use("activations_means_only")},
        r"activations: the HSpace Hook kept no principal components \(its components is 0\); set components to at "
        r"least 2", "hook-kept-no-components"),

    # ---- Jacobian Directions (h-space): tiny pixel DDPM, 3 steps, image 16×16 ----
    bad("JacobianDirections", {"step": 3}, r"step: 3 is outside the schedule of 3 steps \(expected 0 … 2\)",
        "step-outside-schedule"),
    bad("JacobianDirections", {"n_directions": 5000}, r"n_directions: expected 1 … 2048 \(the h dimension\)",
        "n_directions-over-h-dimension"),
    bad("JacobianDirections", {"latent_image": latent(2, 3, 16, 16)},
        r"latent_image: Jacobian directions are for one sample, got a batch of 2", "latent-batch"),
    bad("JacobianDirections", {"mask": torch.ones(1, 32, 32)},
        r"mask: 32×32 does not fit the image, which is 16×16", "mask-size"),
    bad("JacobianDirections", {"mask": torch.zeros(1, 16, 16)}, r"mask: the mask is empty", "mask-empty"),
    bad("JacobianDirections", {"mask": torch.ones(2, 16, 16)}, r"mask: expected one mask \[H, W\], got shape \[2, 16",
        "mask-batch"),
    bad("JacobianDirections", {"tolerance": 0.0}, r"tolerance / max_iterations: expected > 0", "tolerance-zero"),
    bad("JacobianDirections", {"sampler_name": "dpm_fast", "step": 1},
        r"sampler_name: dpm_fast never evaluated the model at step 1", "sampler-skips-step"),
    bad("JacobianDirections", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),

    # ---- Attribute Direction (h-space): 4 recorded samples (keep_samples) and scores for smile, glasses ----
    bad("AttributeDirection", {"attribute": "moustache"}, r"attribute: 'moustache' is not among the scores",
        "attribute-unknown"),
    bad("AttributeDirection", {"count": 3}, r"count: expected 2 … 2 \(at least two positives and two negatives, at "
        r"most half of the 4 scored samples\), got 3", "count-over-half"),
    bad("AttributeDirection", {"count": 1}, r"count: expected 2 … 2 \(at least two positives", "count-one"),
    bad("AttributeDirection", {"scores": use("scores_for_3")}, r"scores: 3 scores for 4 recorded samples",
        "scores-count"),
    bad("AttributeDirection", {"activations": use("activations_means_only")},
        r"activations: per-sample noises were not kept; record with keep_samples on", "activations-not-kept"),
    bad("AttributeDirection", {"scores": None}, r"negative / scores: connect scores", "neither-scores-nor-negative"),
    bad("AttributeDirection", {"scores": None, "negative": use("activations_8px")},
        r"negative: h shape \[32, 4, 4\] does not match the positives' \[32, 8, 8\]", "negative-other-size"),
    bad("AttributeDirection", {"scores": None, "negative": use("activations_other_model")},
        r"negative: recorded on another model than the positives", "negative-other-model"),
    bad("AttributeDirection", {"space": "z"}, r"space: expected one of", "space"),
    bad("AttributeDirection", {"method": "svm"}, r"method: expected one of \('regression', 'mean difference'\)",
        "method"),
    bad("AttributeDirection", {"scores": use("scores_collinear")}, r"scores: some scores are linear combinations",
        "scores-collinear"),
    bad("AttributeDirection", {"scores": use("scores_wide")}, r"scores: a regression on 3 scores needs at least 5 "
        r"samples, got 4", "regression-too-few-samples"),
    bad("AttributeDirection", {"scores": None, "negative": use("activations_kept"), "space": "x_T"},
        r"positive / negative: their mean x_T is identical", "same-noise-in-x_T"),

    # ---- Disentangle (h-space): 1 primary and 2 other directions of the tiny pixel DDPM ----
    bad("Disentangle", {"others": use("other_model_dirs")}, r"others: found on another model", "others-other-model"),
    bad("Disentangle", {"others": use("x_t_dirs")}, r"others: lives in x_T, the others in h", "others-x_T"),
    bad("Disentangle", {"others": use("pixel_dirs_24px")},
        r"others: h shape \[32, 12, 12\] does not match the others' \[32, 8, 8\]", "others-other-size"),
    bad("Disentangle", {"primary": use("inside_span")},
        r"primary: direction 'inside': at timestep index 0 it lies inside the span", "primary-inside-span"),

    # ---- Discovery Trainer (h-space): tiny pixel DDPM, 2-step chain, state file <name> in hspace_discovery ----
    bad("DiscoveryTrainer", {"count": 1}, r"count: expected K ≥ 2", "count-1"),
    bad("DiscoveryTrainer", {"magnitude": 0.0}, r"magnitude: expected S > 0", "magnitude-zero"),
    bad("DiscoveryTrainer", {"magnitude": -1.0}, r"magnitude: expected S > 0", "magnitude-negative"),
    bad("DiscoveryTrainer", {"t_edit": 1500.0}, r"t_edit: 1500 is outside the schedule, whose steps run from timestep",
        "t_edit-above"),
    bad("DiscoveryTrainer", {"t_edit": 0.0}, r"t_edit: 0 is outside the schedule", "t_edit-below"),
    bad("DiscoveryTrainer", {"steps": 0}, r"steps: expected at least 1 sampling step", "steps-zero"),
    bad("DiscoveryTrainer", {"name": "..."}, r"name: '...' has no usable characters", "name-unusable"),
    bad("DiscoveryTrainer", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),
    bad("DiscoveryTrainer", {"latent_image": latent(1, 3, 64, 64), "batch_size": 4096, "steps": 1000,
                             "checkpointed": False},
        r"batch_size: a training step \(4096 samples × \d+ passes held for backprop\) needs about [\d.]+ GiB on "
        r"cpu, [\d.]+ GiB are free; lower batch_size or turn checkpointed on", "vanilla-over-memory"),
    bad("DiscoveryTrainer", {"name": lambda w: w.discovery_state("junk", ZIP)},
        r"resume: state file .*junk\.safetensors: not a readable safetensors file", "resume-unreadable"),
    bad("DiscoveryTrainer", {"name": lambda w: w.discovery_state("pickled", PICKLE)},
        r"resume: state file .*pickled\.safetensors: not a readable safetensors file", "resume-pickle"),
    bad("DiscoveryTrainer", {"name": lambda w: w.discovery_state("foreign", "foreign")},
        r"resume: state file .*foreign\.safetensors: safetensors, but not a Discovery Trainer state",
        "resume-foreign"),
    bad("DiscoveryTrainer", {"name": lambda w: w.discovery_state("elsewhere", "other model")},
        r"resume: elsewhere\.safetensors was trained with model_fingerprint other:0", "resume-other-model"),
    bad("DiscoveryTrainer", {"name": lambda w: w.discovery_state("broken", "broken metadata")},
        r"resume: state file .*broken\.safetensors: its 'count' entry is not JSON", "resume-broken-metadata"),
    bad("DiscoveryTrainer", {"name": lambda w: w.discovery_state("five", "count 5")},
        r"resume: five\.safetensors was trained with count 5, this run has 2", "resume-other-count"),
    bad("DiscoveryTrainer", {"start_from": lambda w: w.discovery_state("five", "count 5") + ".safetensors"},
        r"start_from: five\.safetensors was trained with count 5, this run has 2", "start_from-other-count"),
    bad("DiscoveryTrainer", {"start_from": "missing.safetensors"},
        r"start_from: 'missing\.safetensors' is not a state in models/hspace_discovery", "start_from-missing"),
    bad("DiscoveryTrainer", {"shift_limit": -0.5}, r"shift_limit: expected ≥ 0", "shift_limit-negative"),

    # ---- H-space Block (transformer): the tiny Flux, 2 double- and 2 single-stream blocks ----
    bad("HSpaceBlock", {"block": 4}, r"block: 4 is outside this Flux model's blocks 0 … 3", "block-out-of-range"),
    bad("HSpaceBlock", {"model": use("sd15")}, r"model: UNetModel is not a transformer", "unet"),
    bad("HSpaceBlock", {"block": 3, "stream": "attention output"}, r"stream: the attention output is reached in the "
        r"double-stream \(joint\) blocks of .*; Flux block 3 is a single-block", "attention-in-single-block"),
    bad("ApplyHSpaceEdit", {"model": use("flux")}, r"directions: found at the UNet bottleneck, but this model's h is "
        r"at the Flux block 1", "unet-directions-on-transformer"),

    # ---- AVI Latent Merge (h-space): x and z 1×3×16×16 ----
    bad("AVILatentMerge", {"z": latent(1, 3, 16, 8)}, r"z: shape \[1, 3, 16, 8\] differs from x's \[1, 3, 16, 16\]",
        "z-shape"),
    bad("AVILatentMerge", {"k": 16}, r"k: expected 1 … 15 .*got 16", "k-too-large"),
    bad("AVILatentMerge", {"rho": "0, 1.5"}, r"rho: expected a value in \[0, 1\], got 1.5", "rho-above-1"),
    bad("AVILatentMerge", {"rho": "-0.5"}, r"rho: expected a value in \[0, 1\], got -0.5", "rho-negative"),
    bad("AVILatentMerge", {"rho": "a"}, r"rho: 'a' is not a number", "rho-word"),
    bad("AVILatentMerge", {"x": latent(4, 4, 1024, 1024), "z": latent(4, 4, 1024, 1024),
                           "rho": ", ".join(["1"] * 1000)},
        r"rho: 1000 merges of 4 latents needs about [\d.]+ GiB on cpu, [\d.]+ GiB are free; lower rho",
        "rho-over-memory"),
    bad("AVILatentMerge", {"rho": " "}, r"rho: empty", "rho-empty"),
    bad("AVILatentMerge", {"phi": use("phi_8px")}, r"phi: trained for 8×8 latents, but x is 16×16", "phi-other-size"),
    bad("AVILatentMerge", {"x": latent(16, 16), "z": latent(16, 16)}, r"x: expected a latent \[\.\.\., C, H, W\]",
        "x-without-channels"),

    # ---- AVI Singular Value Trainer: 4 pairs of 3×8×8 ----
    bad("AVITrainer", {"z": latent(3, 3, 8, 8)}, r"z: shape \[3, 3, 8, 8\] differs from x's \[4, 3, 8, 8\]",
        "z-shape"),
    bad("AVITrainer", {"k": 8}, r"k: expected 1 … 7", "k-too-large"),
    bad("AVITrainer", {"x": latent(3, 8, 8), "z": latent(3, 8, 8)}, r"x: expected a batch of latents \[N, C, H, W\]",
        "x-not-a-batch"),
    bad("AVITrainer", {"epochs": 0}, r"epochs and batch_size: expected ≥ 1", "epochs-zero"),
    bad("AVITrainer", {"name": "///"}, r"name: '///' has no usable characters", "name-unusable"),
    bad("AVITrainer", {"x": latent(2, 4, 1024, 1024), "z": latent(2, 4, 1024, 1024), "hidden": 65536},
        r"hidden: training Φ of width 65536 on 1024×1024 latents, batch 2 needs about [\d.]+ GiB on cpu, [\d.]+ GiB "
        r"are free; lower hidden \(0 means 1048576\) or batch_size", "phi-over-memory"),

    # ---- Load AVI Singular Value Net: files in hspace_avi ----
    bad("LoadAVIPhi", {"filename": "absent.safetensors"}, r"filename: 'absent\.safetensors' is not in", "absent"),
    bad("LoadAVIPhi", {"filename": lambda w: w.phi_file("pickled.safetensors", PICKLE)},
        r"pickled\.safetensors: not a readable safetensors file", "pickle"),
    bad("LoadAVIPhi", {"filename": lambda w: w.phi_file("truncated.safetensors", "truncated")},
        r"truncated\.safetensors: not a readable safetensors file", "truncated"),
    bad("LoadAVIPhi", {"filename": lambda w: w.phi_file("foreign.safetensors", "foreign")},
        r"foreign\.safetensors: safetensors, but not an AVI Φ", "foreign"),
    bad("LoadAVIPhi", {"filename": lambda w: w.phi_file("damaged.safetensors", "damaged")},
        r"damaged\.safetensors: damaged", "damaged-metadata"),
    bad("LoadAVIPhi", {"filename": lambda w: w.phi_file("nan.safetensors", "nan")},
        r"nan\.safetensors: contains NaN or inf weights", "nan-weights"),

    # ---- Latent Singular Value Scale (h-space): latent 1×3×16×16 ----
    bad("LatentSingularValues", {"indices": "16"}, r"indices: \[16\] outside 0 … 15", "indices-too-large"),
    bad("LatentSingularValues", {"indices": "-1"}, r"indices: \[-1\] outside 0 … 15", "indices-negative"),
    bad("LatentSingularValues", {"indices": "first"}, r"indices: 'first' is not a list of whole numbers",
        "indices-word"),
    bad("LatentSingularValues", {"indices": ""}, r"indices: empty", "indices-empty"),
    bad("LatentSingularValues", {"scales": ""}, r"scales: empty", "scales-empty"),
    bad("LatentSingularValues", {"scales": "1, x"}, r"scales: 'x' is not a number", "scales-word"),
    bad("LatentSingularValues", {"scales": "inf"}, r"scales: 'inf' is not a finite number", "scales-inf"),

    # ---- Invert Image (h-space): tiny pixel DDPM ----
    bad("InvertImage", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),

    # ---- Face Images ----
    bad("FaceImages", {"factors": "hat=1"}, r"factors: 'hat=1' is not 'name=value' with a name from", "factors-name"),
    bad("FaceImages", {"factors": "smile"}, r"factors: 'smile' is not 'name=value'", "factors-no-value"),
    bad("FaceImages", {"factors": "smile=yes"}, r"factors: 'yes' in 'smile=yes' is not a number", "factors-value"),
    bad("FaceImages", {"factors": "smile=2"}, r"factors: 'smile=2': smile is 0 or 1", "factors-binary-2"),
    bad("FaceImages", {"factors": "size=-5"}, r"factors: 'size=-5' is outside 7 … 10.5, the range the embedded domain",
        "factors-size-negative"),

    # ---- Face Region Mask: one embedded-domain face ----
    bad("FaceRegionMask", {"image": use("two_faces")}, r"image: expected one image, got a batch of 2", "image-batch"),
    bad("FaceRegionMask", {"image": torch.rand(1, 64, 64, 3)},
        r"image: expected one 32×32 RGB image \[1, 32, 32, 3\], got shape \[1, 64, 64, 3\]", "image-size"),
    bad("FaceRegionMask", {"image": torch.full((1, 32, 32, 3), 0.5)}, r"image: no face found", "image-faceless"),
    bad("FaceRegionMask", {"region": "nose"}, r"region: expected one of \['mouth', 'eyes', 'face'\]", "region"),

    # ---- Save Directions: into hspace_directions ----
    bad("SaveDirections", {"filename": "..."}, r"filename: '\.\.\.' has no usable characters", "filename-dots"),
    bad("SaveDirections", {"filename": " "}, r"filename: ' ' has no usable characters", "filename-blank"),

    # ---- Load Directions: files in hspace_directions ----
    bad("LoadDirections", {"filename": "absent.safetensors"}, r"filename: 'absent\.safetensors' is not in", "absent"),

    # ---- Save / Load / Merge Activations: the tiny pixel DDPM's recording, files in hspace_activations ----
    bad("SaveActivations", {"filename": "..."}, r"filename: '\.\.\.' has no usable characters", "filename-dots"),
    bad("LoadActivations", {"filename": "absent.safetensors"}, r"filename: 'absent\.safetensors' is not in",
        "absent"),
    bad("LoadActivations", {"filename": lambda w: w.activations_file("cut.safetensors", "truncated")},
        r"filename .*cut\.safetensors: not a readable safetensors file", "truncated"),
    bad("LoadActivations", {"filename": lambda w: w.activations_file("bad.safetensors", "damaged")},
        r"filename .*bad\.safetensors: damaged metadata or tensors", "damaged"),
    bad("LoadActivations", {"filename": lambda w: w.activations_file("dirs.safetensors", "directions")},
        r"filename .*dirs\.safetensors: safetensors, but not an h-space activations file", "a-directions-file"),
    bad("LoadActivations", {"model": use("sd15")},
        r"filename: acts\.safetensors was recorded on DiffusersUNet:.*, but this model's h is UNetModel:",
        "another-model"),
    bad("MergeActivations", {"b": use("activations_means_only")}, r"activations: recording 2 kept other statistics",
        "other-statistics"),
    bad("MergeActivations", {"b": use("activations_other_model")}, r"activations: recording 2 is of another model",
        "other-model"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("junk.safetensors", ZIP)},
        r"junk\.safetensors: not a readable safetensors file", "zip"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("pickled.safetensors", PICKLE)},
        r"pickled\.safetensors: not a readable safetensors file", "pickle"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("truncated.safetensors", "truncated")},
        r"truncated\.safetensors: not a readable safetensors file", "truncated"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("foreign.safetensors", "foreign")},
        r"foreign\.safetensors: safetensors, but not a comfy-hspace direction file", "foreign"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("nan.safetensors", "nan")},
        r"nan\.safetensors: directions: the tensor contains NaN or inf", "nan"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("unnamed.safetensors", "no names")},
        r"unnamed\.safetensors: damaged metadata", "damaged-metadata"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("names.safetensors", "one name")},
        r"names\.safetensors: directions: 3 directions but 1 names", "names-count"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("tensors.safetensors", "no tensors")},
        r"tensors\.safetensors: safetensors, but not a comfy-hspace direction file \(no tensors", "tensors-missing"),
    bad("LoadDirections", {"filename": lambda w: w.directions_file("space.safetensors", "space z")},
        r"space\.safetensors: directions: space 'z' is not one of", "space-unknown"),

    # ---- Select Directions: 3 directions random0 … random2 ----
    bad("SelectDirections", {"indices": "pc9"}, r"indices: 'pc9' is neither an index nor one of the names",
        "indices-name"),
    bad("SelectDirections", {"indices": "0, 7"}, r"indices: 7 is out of range for 3 directions", "indices-too-large"),
    bad("SelectDirections", {"indices": "-4"}, r"indices: -4 is out of range for 3 directions", "indices-negative"),
    bad("SelectDirections", {"indices": "1-9"}, r"indices: 3 is out of range for 3 directions", "indices-range"),
    bad("SelectDirections", {"indices": " , "}, r"indices: empty", "indices-empty"),

    # ---- Scale Directions: 3 directions ----
    bad("ScaleDirections", {"factors": "1, 2"}, r"factors: expected 1 or 3 values, got 2", "factors-count"),
    bad("ScaleDirections", {"factors": ""}, r"factors: expected 1 or 3 values, got 0", "factors-empty"),
    bad("ScaleDirections", {"factors": "x"}, r"factors: 'x' is not a number", "factors-word"),
    bad("ScaleDirections", {"factors": "-inf"}, r"factors: '-inf' is not a finite number", "factors-inf"),

    # ---- Combine Directions: a and b, 3 directions each of the tiny pixel DDPM ----
    bad("CombineDirections", {"b": use("other_model_dirs")}, r"directions b: found on another model", "b-other-model"),
    bad("CombineDirections", {"b": use("x_t_dirs")}, r"directions b: lives in x_T, the others in h", "b-x_T"),
    bad("CombineDirections", {"b": use("pixel_dirs_24px")},
        r"directions b: h shape \[32, 12, 12\] does not match the others' \[32, 8, 8\]", "b-other-size"),
    bad("CombineDirections", {"b": use("two_pixel_dirs"), "mode": "sum"},
        r"directions: a has 3 and b 2; a sum needs equal counts or one of 1", "sum-counts"),

    # ---- Resize Directions: to a 24×24 latent of the tiny pixel DDPM ----
    bad("ResizeDirections", {"directions": use("sd15_dirs")},
        r"directions: 64 channels, but this model's h has 32", "directions-other-model"),
    bad("ResizeDirections", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),
    bad("ResizeDirections",
        {"model": use("wan"), "directions": use("wan_dirs"), "latent_image": latent(1, 16, 5, 8, 6)},
        r"latent_image: a video's h stacks its frames \(5 frames → h \[64, 20, 3\]\), which resizing would mix",
        "video-other-length"),

    # ---- Random Directions ----
    bad("RandomDirections", FLAT, NO_BOTTLENECK, "model-without-bottleneck"),

    # ---- Pixel DDPM Loader (diffusers): folders in a temporary models/diffusers ----
    bad("PixelDDPMLoader", {"folder": "absent"}, r"folder: 'absent' is not in", "absent"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("bin-only", "bin weights")},
        r"model folder .*bin-only/unet: no diffusion_pytorch_model\.safetensors .*pickled \.bin weights are not loaded",
        "pickled-weights"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("no-config", "no config")},
        r"model folder .*no-config: no unet/config\.json", "no-config"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("not-json", "config not json")},
        r"UNet config .*not-json/unet/config\.json: cannot be read as JSON", "config-not-json"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("sd-unet", "conditional unet")},
        r"UNet config .*sd-unet/unet/config\.json: expected a UNet2DModel, got UNet2DConditionModel", "config-class"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("latent", "4 channels")},
        r"UNet config .*latent/unet/config\.json: 4 input and 4 output channels; expected a grey \(1\) or RGB \(3\)",
        "config-channels"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("variance", "learnt variance")},
        r"UNet config .*variance/unet/config\.json: 3 input and 6 output channels; .*predicts as many channels as it "
        r"takes", "config-learnt-variance"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("score-sde", "score sde")},
        r"scheduler config .*score-sde/scheduler/scheduler_config\.json: ScoreSdeVeScheduler is not supported: "
        r"expected a scheduler of the discrete DDPM schedule", "scheduler-class"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("edm-x0", "edm sample")},
        r"scheduler config .*edm-x0/scheduler/scheduler_config\.json: EDMEulerScheduler with prediction_type 'sample' "
        r"is not supported", "edm-prediction_type"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("cosine", "cosine schedule")},
        r"scheduler config .*cosine/scheduler/scheduler_config\.json: beta_schedule 'cosine' is not supported",
        "beta_schedule"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("x0", "flow prediction")},
        r"scheduler config .*x0/scheduler/scheduler_config\.json: prediction_type 'flow_prediction' is not supported",
        "prediction_type"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("truncated", "truncated weights")},
        r"UNet weights .*truncated/unet/diffusion_pytorch_model\.safetensors: not a readable safetensors file",
        "weights-truncated"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("mismatch", "other weights")},
        r"UNet weights .*mismatch/unet/diffusion_pytorch_model\.safetensors: do not fit .*config\.json",
        "weights-other-config"),
    bad("PixelDDPMLoader", {"folder": lambda w: w.ddpm_folder("wider", "wider config")},
        r"UNet weights .*wider/unet/diffusion_pytorch_model\.safetensors: do not fit .*config\.json \(\['size mismatch",
        "weights-other-shapes"),

    # ---- Embedded Faces Model ----
    bad("EmbeddedFacesModel", {"architecture": "vit"}, r"architecture: expected one of \['unet', 'dit'\], got 'vit'",
        "architecture-unknown"),

    # ---- Face Labels ----
    bad("FaceLabels", {"labels": "smile, hat"}, r"labels: unknown label\(s\) \['hat'\]", "labels-unknown"),
    bad("FaceLabels", {"labels": "null, smile"}, r"labels: unknown label\(s\) \['null'\]", "labels-null-with-others"),

    # ---- Face Attribute Scores ----
    bad("FaceScores", {"images": torch.rand(2, 64, 64, 3)},
        r"images: expected a batch of 32×32 RGB images .*got shape \[2, 64, 64, 3\]", "images-size"),
    bad("FaceScores", {"images": torch.rand(2, 32, 32, 4)}, r"images: expected .*got shape \[2, 32, 32, 4\]",
        "images-rgba"),
    bad("FaceScores", {"images": torch.rand(32, 32, 3)}, r"images: expected .*got shape \[32, 32, 3\]",
        "images-not-a-batch"),
]


class World:
    """What the base inputs and the rows are made of: tiny models, directions, activations and Φ,
    each made once per module when a test first asks for it (outside inference mode, so that they
    are ordinary tensors), and the temporary model folders of the running test."""

    def __init__(self, pack, tmp: Path):
        self.pack, self.tmp = pack, tmp
        self.folders: dict[str, Path] = {}

    # -- models --
    @cached_property
    def sd15(self):
        return comfy_unet("sd15")

    @cached_property
    def flux(self):
        return comfy_dit("flux")

    @cached_property
    def wan(self):
        return comfy_dit("wan")

    @cached_property
    def _pixel(self):
        return load_pixel_ddpm(save_pixel_ddpm(self.tmp / "pixel"))

    @property
    def pixel(self):
        return self._pixel[0]

    @property
    def pixel_vae(self):
        return self._pixel[1]

    @cached_property
    def other_pixel(self):
        return load_pixel_ddpm(save_pixel_ddpm(self.tmp / "other", seed=9))[0]

    @cached_property
    def flat(self):
        """A MODEL whose network has no UNet bottleneck."""
        model = comfy_unet("sd15")
        model.model.diffusion_model = torch.nn.Conv2d(4, 4, 1)
        return model

    @cached_property
    def faces_model(self):
        from comfy_hspace.host import embedded

        return embedded.load_model()[0]

    # -- directions --
    def random(self, model, size: int, count: int, channels: int):
        return self.pack.nodes.RandomDirections.execute(model=model, latent_image=latent(1, channels, size, size),
                                                        count=count, seed=1, rms=1.0).args[0]

    @cached_property
    def sd15_dirs(self):
        return self.random(self.sd15, 16, 2, 4)

    @cached_property
    def sd15_dirs_24px(self):
        return self.random(self.sd15, 24, 2, 4)

    @cached_property
    def wan_dirs(self):  # 3 frames of 8 × 6 latent pixels: h [64, 12, 3]
        return self.pack.nodes.RandomDirections.execute(model=self.wan, latent_image=latent(1, 16, 3, 8, 6), count=1,
                                                        seed=1, rms=1.0).args[0]

    @cached_property
    def pixel_dirs(self):
        return self.random(self.pixel, 16, 3, 3)

    @cached_property
    def pixel_dirs_24px(self):
        return self.random(self.pixel, 24, 3, 3)

    @cached_property
    def other_model_dirs(self):
        return self.random(self.other_pixel, 16, 3, 3)

    @cached_property
    def faces_dirs(self):
        return self.random(self.faces_model, 32, 1, 3)

    @cached_property
    def two_pixel_dirs(self):
        return D.select(self.pixel_dirs, [0, 1])

    @cached_property
    def x_t_dirs(self):
        return D.Directions(torch.randn(1, 1, 3, 16, 16), torch.tensor([D.TIME_INVARIANT]), ["x"], space="x_T",
                            model_fingerprint=self.pixel_dirs.model_fingerprint)

    @cached_property
    def primary(self):
        return D.select(self.pixel_dirs, [0])

    @cached_property
    def others(self):
        return D.select(self.pixel_dirs, [1, 2])

    @cached_property
    def inside_span(self):
        v = self.pixel_dirs.vectors
        return dataclasses.replace(self.primary, vectors=(v[1] - 2 * v[2])[None], names=["inside"])

    # -- activations and scores --
    def hook(self, model, size: int, n: int, components: int, keep: bool):
        c = conditioning("pixel")
        return self.pack.nodes.HSpaceHook.execute(
            model=model, positive=c, negative=c, latent_image=latent(1, 3, size, size), n_samples=n, batch_size=n,
            components=components, seed=0, steps=2, cfg=1.0, sampler_name="euler", scheduler="normal",
            latent_is_noise=False, keep_samples=keep).args[0]

    @cached_property
    def activations_kept(self):
        return self.hook(self.pixel, 16, 4, 2, True)

    @cached_property
    def activations_means_only(self):
        return self.hook(self.pixel, 16, 2, 0, False)

    @cached_property
    def activations_8px(self):
        return self.hook(self.pixel, 8, 2, 0, False)

    @cached_property
    def activations_other_model(self):
        return self.hook(self.other_pixel, 16, 2, 0, False)

    @property
    def scores(self):
        return {"names": ["smile", "glasses"], "values": torch.tensor([[0.1, 0.9], [0.8, 0.7], [0.3, 0.2],
                                                                       [0.9, 0.4]])}

    @property
    def scores_collinear(self):
        return {"names": ["smile", "glasses"], "values": torch.linspace(0, 1, 8).reshape(4, 2)}

    @property
    def scores_wide(self):
        return {"names": ["smile", "glasses", "blond"], "values": torch.rand(4, 3)}

    @property
    def scores_for_3(self):
        return {"names": ["smile", "glasses"], "values": torch.rand(3, 2)}

    # -- Φ and images --
    @cached_property
    def phi_8px(self):
        g = torch.Generator().manual_seed(0)
        x, z = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
        return avi.train_phi(x, z, 4, epochs=1, hidden=8)[0]

    @cached_property
    def faces(self):
        return self.pack.nodes.FaceImages.execute(count=2, seed=3, factors="smile=1").args[0]

    @property
    def one_face(self):
        return self.faces[:1]

    @property
    def two_faces(self):
        return self.faces

    # -- files in the test's folders --
    def directions_file(self, name: str, kind: bytes | str = "valid") -> str:
        path = self.folders["hspace_directions"] / name
        d = self.pixel_dirs
        tensors = {"directions": d.vectors, "timesteps": d.timesteps}
        meta = D._metadata(d)
        if isinstance(kind, bytes):
            path.write_bytes(kind)
            return name
        if kind == "nan":
            tensors["directions"] = d.vectors.clone()
            tensors["directions"][0, 0, 0, 0, 0] = float("nan")
        elif kind == "foreign":
            meta = {"format": "pt"}
        elif kind == "no names":
            del meta["names"]
        elif kind == "one name":
            meta["names"] = json.dumps(["only"])
        elif kind == "no tensors":
            tensors = {"weights": d.vectors}
        elif kind == "space z":
            meta["space"] = "z"
        save_file(tensors, str(path), metadata=meta)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:200])
        return name

    def activations_file(self, name: str, kind: str = "valid") -> str:
        """An activations file of the tiny pixel DDPM's recording: valid, truncated or with damaged metadata."""
        from comfy_hspace.activation_files import FORMAT, save_activations

        path = save_activations(self.activations_kept, self.folders["hspace_activations"] / name)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:300])
        elif kind == "damaged":
            tensors, meta = read_safetensors(path, "activations", FORMAT, "")
            write_safetensors(path, tensors, {**meta, "h_shape": "[1, 2]"})
        elif kind == "directions":
            D.save_directions(self.pixel_dirs, path)
        return name

    def phi_file(self, name: str, kind: bytes | str = "valid") -> str:
        path = self.folders["hspace_avi"] / name
        if isinstance(kind, bytes):
            path.write_bytes(kind)
            return name
        avi.save_phi(self.phi_8px, path)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:120])
        elif kind != "valid":
            tensors = {k: v.clone() for k, v in self.phi_8px.state_dict().items()}
            meta = {"format": avi.PHI_FORMAT, "height": "8", "width": "8", "hidden": "8"}
            if kind == "foreign":
                meta = {}
            elif kind == "damaged":
                del meta["height"]
            elif kind == "nan":
                tensors["values.bias"][0] = float("nan")
            save_file(tensors, str(path), metadata=meta)
        return name

    def discovery_state(self, name: str, kind: bytes | str) -> str:
        """A file where the Discovery Trainer looks for the state to resume ``name`` from."""
        path = self.folders["hspace_discovery"] / f"{name}.safetensors"
        if isinstance(kind, bytes):
            path.write_bytes(kind)
            return name
        meta = {"format": STATE_FORMAT, "model_fingerprint": json.dumps(site_of(self.pixel).fingerprint()),
                "count": json.dumps(5), "step": json.dumps(1)}
        if kind == "foreign":
            meta = {"format": "pt"}
        elif kind == "other model":
            meta["model_fingerprint"] = json.dumps("other:0")
        elif kind == "broken metadata":
            meta["count"] = "{five"
        write_safetensors(path, {"shift.weight": torch.zeros(1)}, meta)
        return name

    def ddpm_folder(self, name: str, kind: str = "valid") -> str:
        """A pixel DDPM folder in the test's models/diffusers, valid or broken in one way."""
        folder = self.folders["diffusers"] / name
        save_pixel_ddpm(folder)
        unet = folder / "unet"
        weights = unet / "diffusion_pytorch_model.safetensors"
        scheduler = folder / "scheduler" / "scheduler_config.json"
        if kind == "bin weights":
            weights.rename(unet / "diffusion_pytorch_model.bin")
        elif kind == "no config":
            (unet / "config.json").unlink()
        elif kind == "config not json":
            (unet / "config.json").write_text("{'not': json")
        elif kind == "conditional unet":
            (unet / "config.json").write_text(json.dumps({**PIXEL_UNET, "_class_name": "UNet2DConditionModel"}))
        elif kind == "4 channels":
            (unet / "config.json").write_text(json.dumps({**PIXEL_UNET, "in_channels": 4, "out_channels": 4}))
        elif kind == "cosine schedule":
            scheduler.write_text(json.dumps({**PIXEL_SCHEDULER, "beta_schedule": "cosine"}))
        elif kind == "flow prediction":
            scheduler.write_text(json.dumps({**PIXEL_SCHEDULER, "prediction_type": "flow_prediction"}))
        elif kind == "learnt variance":
            (unet / "config.json").write_text(json.dumps({**PIXEL_UNET, "out_channels": 6}))
        elif kind == "score sde":
            scheduler.write_text(json.dumps({"_class_name": "ScoreSdeVeScheduler", "sigma_max": 1348.0}))
        elif kind == "edm sample":
            scheduler.write_text(json.dumps({"_class_name": "EDMEulerScheduler", "prediction_type": "sample"}))
        elif kind == "truncated weights":
            weights.write_bytes(weights.read_bytes()[:300])
        elif kind == "other weights":
            save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, str(weights))
        elif kind == "wider config":  # the same layer names, other shapes
            (unet / "config.json").write_text(json.dumps({**PIXEL_UNET, "block_out_channels": [32, 64]}))
        return name


# ---- valid base inputs, one builder per node ----

def sampler(**kw):
    return {"seed": 0, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", **kw}


def pixel_conditioning(w):
    c = conditioning("pixel")
    return {"positive": c, "negative": c}


def edit_interval():
    return {"start_percent": 0.0, "end_percent": 1.0}


BASE = {
    "EditedSampler": lambda w: dict(
        model=w.sd15, positive=conditioning("sd15"), negative=conditioning("sd15", 1),
        latent_image=latent(1, 4, 16, 16), directions=w.sd15_dirs, **sampler(), strengths="1.0, -0.5", sweep="",
        **edit_interval(), apply_to="both", mode="both terms", eta=1.0, denoise=1.0),
    "ApplyHSpaceEdit": lambda w: dict(model=w.sd15, directions=w.sd15_dirs, strengths="1.0", **edit_interval(),
                                      apply_to="both"),
    "DirectionSweepGrid": lambda w: dict(
        model=w.pixel, vae=w.pixel_vae, **pixel_conditioning(w), latent_image=latent(1, 3, 16, 16),
        directions=w.pixel_dirs, **sampler(), strengths="-1, 0, 1", mode="both terms", **edit_interval(),
        cell_size=16),
    "HSpaceHook": lambda w: dict(model=w.pixel, **pixel_conditioning(w), latent_image=latent(1, 3, 16, 16),
                                 n_samples=2, batch_size=2, components=1, **sampler(), latent_is_noise=False,
                                 keep_samples=False),
    "PCADirections": lambda w: dict(activations=w.activations_kept, n_components=2),
    "JacobianDirections": lambda w: dict(
        model=w.pixel, **pixel_conditioning(w), latent_image=latent(1, 3, 16, 16), **sampler(steps=3), step=0,
        each_step=False, n_directions=1, batch_size=1, tolerance=1e-3, max_iterations=2,
        scale_by_singular_value=False),
    "AttributeDirection": lambda w: dict(activations=w.activations_kept, scores=w.scores, attribute="smile", count=2,
                                         space="h"),
    "Disentangle": lambda w: dict(primary=w.primary, others=w.others),
    "DiscoveryTrainer": lambda w: dict(
        model=w.pixel, **pixel_conditioning(w), latent_image=latent(1, 3, 16, 16), count=2, magnitude=1.0, steps=2,
        t_edit=500.0, batch_size=1, training_steps=0, learning_rate=1e-3, seed=0, cfg=1.0, name="run", resume=True,
        save_every=1, regression_weight=0.1, adversarial_weight=0.1, direction_samples=1, checkpointed=True),
    "AVILatentMerge": lambda w: dict(x=latent(1, 3, 16, 16, fill="randn"), z=latent(1, 3, 16, 16, fill="randn"), k=0,
                                     rho="0, 1"),
    "AVITrainer": lambda w: dict(
        x=latent(4, 3, 8, 8, fill="randn"), z=latent(4, 3, 8, 8, fill="randn"), k=0, epochs=1, batch_size=4,
        learning_rate=1e-3, target_weight=3.0, original_weight=10.0, values_weight=10.0, correction_weight=10.0,
        hidden=8, seed=0, name="phi"),
    "LoadAVIPhi": lambda w: dict(filename=w.phi_file("phi.safetensors")),
    "HSpaceBlock": lambda w: dict(model=w.flux, block=-1),
    "LatentSingularValues": lambda w: dict(latent=latent(1, 3, 16, 16, fill="randn"), indices="0", scales="0.5, 1"),
    "InvertImage": lambda w: dict(model=w.pixel, vae=w.pixel_vae, images=torch.rand(1, 16, 16, 3),
                                  **pixel_conditioning(w), steps=2, cfg=1.0, scheduler="normal", batch_size=1,
                                  keep_samples=False),
    "FaceImages": lambda w: dict(count=1, seed=0, factors="smile=1, size=9"),
    "FaceRegionMask": lambda w: dict(image=w.one_face, region="mouth"),
    "SaveDirections": lambda w: dict(directions=w.pixel_dirs, filename="dirs", overwrite=False),
    "SaveActivations": lambda w: dict(activations=w.activations_kept, filename="acts", overwrite=False),
    "LoadActivations": lambda w: dict(filename=w.activations_file("acts.safetensors"), model=w.pixel),
    "MergeActivations": lambda w: dict(a=w.activations_kept, b=w.activations_kept),
    "LoadDirections": lambda w: dict(filename=w.directions_file("dirs.safetensors")),
    "SelectDirections": lambda w: dict(directions=w.pixel_dirs, indices="random2, 0"),
    "ScaleDirections": lambda w: dict(directions=w.pixel_dirs, factors="2"),
    "CombineDirections": lambda w: dict(a=w.pixel_dirs, b=w.pixel_dirs, mode="stack", weight_a=1.0, weight_b=1.0),
    "ResizeDirections": lambda w: dict(directions=w.pixel_dirs, model=w.pixel, latent_image=latent(1, 3, 24, 24)),
    "RandomDirections": lambda w: dict(model=w.pixel, latent_image=latent(1, 3, 16, 16), count=2, seed=0, rms=1.0),
    "PixelDDPMLoader": lambda w: dict(folder=w.ddpm_folder("ddpm")),
    "EmbeddedFacesModel": lambda w: dict(architecture="unet"),
    "FaceLabels": lambda w: dict(labels="smile, glasses"),
    "FaceScores": lambda w: dict(images=w.faces),
    "DirectionReport": lambda w: dict(
        model=w.pixel, vae=w.pixel_vae, **pixel_conditioning(w), latent_image=latent(1, 3, 16, 16),
        directions=w.pixel_dirs, **sampler(), samples=2, strengths="-1, 0, 1", features="auto", mode="both terms",
        calibrate_to=0.0),
}


@pytest.fixture(scope="module")
def world(pack, tmp_path_factory):
    return World(pack, tmp_path_factory.mktemp("bad_input"))


@pytest.fixture()
def w(world, tmp_path, monkeypatch):
    """The world with this test's empty model folders registered in ComfyUI's folder_paths."""
    world.folders = {}
    for name in ("hspace_directions", "hspace_avi", "hspace_discovery", "hspace_activations", "diffusers"):
        folder = tmp_path / name
        folder.mkdir()
        extensions = ["folder"] if name == "diffusers" else {".safetensors"}
        monkeypatch.setitem(folder_paths.folder_names_and_paths, name, ([str(folder)], extensions))
        folder_paths.filename_list_cache.pop(name, None)
        world.folders[name] = folder
    yield world
    for name in world.folders:
        folder_paths.filename_list_cache.pop(name, None)
    world.folders = {}


def inputs_for(w, node: str, overrides: dict) -> dict:
    """The node's base inputs with the overrides applied; callables are evaluated on the world,
    ``None`` removes an optional input."""
    inputs = {**BASE[node](w), **{k: v(w) if callable(v) else v for k, v in overrides.items()}}
    return {k: v for k, v in inputs.items() if v is not None}


def models_in(inputs: dict) -> list:
    return [v for v in inputs.values() if hasattr(v, "model_options")]


@pytest.mark.parametrize("node, overrides, message", CASES)
def test_bad_input_is_refused_naming_it(pack, w, node, overrides, message):
    inputs = inputs_for(w, node, overrides)
    before = [(m, repr(m.model_options)) for m in models_in(inputs)]
    with pytest.raises((ValueError, RuntimeError), match=message), torch.inference_mode():
        getattr(pack.nodes, node).execute(**inputs)
    for model, options in before:
        assert repr(model.model_options) == options, f"{node}: the input model was changed"


@pytest.mark.parametrize("node", sorted(BASE))
def test_every_base_is_accepted(pack, w, node):
    """The base inputs every row starts from are valid, so a row's error is its override's."""
    with torch.inference_mode():
        out = getattr(pack.nodes, node).execute(**inputs_for(w, node, {}))
    assert out.args and out.args[0] is not None


def test_every_node_is_catalogued(pack):
    names = {node.__name__ for node in pack.nodes.NODES}
    catalogued = {case.values[0] for case in CASES}
    assert names - NO_INPUTS == catalogued == set(BASE), (names - NO_INPUTS) ^ catalogued
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)
