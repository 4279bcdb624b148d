"""HSPACE_ACTIVATIONS as files, and the statistics of several recordings merged into those of their union
(issue 32): what the HSpace Hook records (per-timestep counts, means and the streaming PCA state, the mean
starting noise, and with keep_samples every sample's h trajectory and noise) in one safetensors file with
JSON metadata (model fingerprint, h shape, how it was recorded). Counts and sums merge exactly; two PCA
states merge as one more step of the incremental update (Ross et al. 2008, ``pca.StreamingPCA``): the
components scaled by their singular values of both, and the mean-correction row."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .files import read_safetensors, write_safetensors
from .pca import StreamingPCA
from .recorder import HSpaceActivations

FORMAT = "comfy-hspace/activations-v1"


def save_activations(activations: HSpaceActivations, path: str | os.PathLike) -> Path:
    """Writes the recording whole, then renames it into place."""
    activations.finish()
    keys = activations._keys()
    tensors = {"timesteps": torch.tensor(keys, dtype=torch.float64),
               "count": torch.tensor([activations.counts[t] for t in keys], dtype=torch.int64),
               "mean": torch.stack([activations.sums[t] / activations.counts[t] for t in keys]).double()}
    if activations.percents is not None:
        tensors["percents"] = activations.percents.double()
    if activations.noise_sum is not None:
        tensors["noise_mean"] = activations.mean_noise().double()
        tensors["noise_count"] = torch.tensor(activations.noise_count)
    if activations.pcas:
        pcas = [activations.pcas[t] for t in keys]
        tensors.update({"pca.mean": torch.stack([p.mean for p in pcas]).double(),
                        "pca.components": torch.stack([p.components for p in pcas]).double(),
                        "pca.singular_values": torch.stack([p.singular_values for p in pcas]).double(),
                        "pca.count": torch.tensor([p.n_seen for p in pcas], dtype=torch.int64),
                        "pca.total_sq": torch.tensor([p.total_sq for p in pcas], dtype=torch.float64)})
    if activations.kept is not None:
        tensors["trajectories"] = activations.trajectories().half().flatten(2)
        tensors["noises"] = activations.sample_noises()
    metadata = {"format": FORMAT, "h_shape": json.dumps(list(activations.h_shape)),
                "components": str(activations.n_components), "parameters": json.dumps(activations.parameters)}
    return write_safetensors(path, {k: v.contiguous().cpu() for k, v in tensors.items()}, metadata)


def load_activations(path: str | os.PathLike, spill_directory: str | None = None,
                     what: str = "activations") -> HSpaceActivations:
    """A recording as the HSpace Hook gave it (kept trajectories back in a temporary file in
    ``spill_directory``). Broken metadata, missing tensors or a truncated file are refused naming the file."""
    tensors, meta = read_safetensors(path, what, FORMAT, "an h-space activations file")
    try:
        h_shape, components = tuple(json.loads(meta["h_shape"])), int(meta["components"])
        parameters = json.loads(meta["parameters"])
        keys, counts, means = tensors["timesteps"].tolist(), tensors["count"].tolist(), tensors["mean"]
        if len(counts) != len(keys) or means.shape[0] != len(keys) or means[0].numel() != torch.Size(h_shape).numel():
            raise ValueError("per-timestep tensors do not match the timesteps")
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{what} {path}: damaged metadata or tensors ({e})") from None
    a = HSpaceActivations(components, keep_samples="trajectories" in tensors, spill_directory=spill_directory)
    a.h_shape, a.parameters = h_shape, parameters
    for i, t in enumerate(keys):
        a.counts[t], a.sums[t] = int(counts[i]), means[i] * counts[i]
    a.percents = tensors.get("percents")
    if "noise_mean" in tensors:
        a.noise_count = int(tensors["noise_count"])
        a.noise_sum = tensors["noise_mean"] * a.noise_count
    for i, t in enumerate(keys if "pca.components" in tensors else []):
        pca = a.pcas[t] = StreamingPCA(components)
        pca.mean, pca.components = tensors["pca.mean"][i], tensors["pca.components"][i]
        pca.singular_values, pca.n_seen = tensors["pca.singular_values"][i], int(tensors["pca.count"][i])
        pca.total_sq = float(tensors["pca.total_sq"][i])
    if a.kept is not None:
        for i, t in enumerate(keys):
            a.kept.write(t, 0, tensors["trajectories"][:, i], torch.float16)
        a.kept.write("noise", 0, tensors["noises"], torch.float32)
    return a


def merge_activations(recordings: list[HSpaceActivations], spill_directory: str | None = None
                      ) -> HSpaceActivations:
    """The statistics of the union of several recordings of the same model, site and timesteps, in their
    order (kept trajectories and noises one recording after another)."""
    first = recordings[0].finish()
    for k, other in enumerate(recordings[1:], 1):
        other.finish()
        fingerprints = (first.parameters.get("model_fingerprint"), other.parameters.get("model_fingerprint"))
        if fingerprints[0] != fingerprints[1]:
            raise ValueError(f"activations: recording {k + 1} is of another model or site ({fingerprints[1]}, the "
                             f"first of {fingerprints[0]})")
        if other._keys() != first._keys() or other.h_shape != first.h_shape:
            raise ValueError(f"activations: recording {k + 1} has other timesteps or h shape than the first "
                             f"(record them with the same steps, scheduler and latent size)")
        if other.n_components != first.n_components or (other.kept is None) != (first.kept is None):
            raise ValueError(f"activations: recording {k + 1} kept other statistics than the first (components "
                             f"{other.n_components} against {first.n_components}, keep_samples alike)")
    merged = HSpaceActivations(first.n_components, keep_samples=first.kept is not None,
                               spill_directory=spill_directory)
    merged.h_shape, merged.percents = first.h_shape, first.percents
    merged.parameters = {**first.parameters, "n_samples": sum(r.n_samples for r in recordings),
                         "merged_from": [r.parameters.get("seed") for r in recordings]}
    for t in first._keys():
        merged.counts[t] = sum(r.counts[t] for r in recordings)
        merged.sums[t] = sum(r.sums[t] for r in recordings)
        if first.pcas:
            merged.pcas[t] = merged_pca([r.pcas[t] for r in recordings])
    if first.noise_sum is not None:
        merged.noise_sum = sum(r.noise_sum for r in recordings)
        merged.noise_count = sum(r.noise_count for r in recordings)
    if merged.kept is not None:
        start = 0
        for r in recordings:
            trajectories = r.trajectories().flatten(2)  # read once: [samples, T, d]
            for i, t in enumerate(first._keys()):
                merged.kept.write(t, start, trajectories[:, i], torch.float16)
            merged.kept.write("noise", start, r.sample_noises(), torch.float32)
            start += r.n_samples
    return merged


def merged_pca(states: list[StreamingPCA]) -> StreamingPCA:
    """One StreamingPCA of the union of the samples several saw: the first state, with each other one
    merged in (``StreamingPCA.merge``)."""
    first = states[0]
    merged = StreamingPCA(first.n_components)
    merged.n_seen, merged.mean, merged.total_sq = first.n_seen, first.mean.double(), first.total_sq
    merged.components, merged.singular_values = first.components.double(), first.singular_values.double()
    for s in states[1:]:
        merged.merge(s)
    return merged
