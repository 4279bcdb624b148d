"""Activation files and merged statistics (issue 32): merge equals one pass over all samples on fixed inputs,
files round-trip, bad files are refused naming them; annotation under torchrun on the embedded model (two
gloo processes give the file one process gives, a run killed after its first shard resumes to the same file);
Save → Load → PCA Directions and Attribute Direction in the real server."""

import json
import subprocess
import sys

import pytest
import torch
from comfy_env import REPO
from comfy_server import ComfyServer

from comfy_hspace import activation_files as F
from comfy_hspace.pca import pca_directions
from comfy_hspace.recorder import HSpaceActivations

TIMESTEPS = torch.tensor([900.0, 500.0, 100.0])


def recording(rows: torch.Tensor, components: int, keep: bool = False, first: int = 0) -> HSpaceActivations:
    """rows [n, T, d]: samples first … first + n − 1, their h at each timestep, recorded two samples at a time
    as the Hook does (with their starting noises)."""
    a = HSpaceActivations(components, min_batch=4, keep_samples=keep)
    for start in range(0, len(rows), 2):
        noise = torch.randn(len(rows[start:start + 2]), 1, 2, 3, generator=torch.Generator().manual_seed(first + start))
        a.begin_batch(start, noise)
        for i, t in enumerate(TIMESTEPS):
            h = rows[start:start + 2, i].reshape(-1, rows.shape[-1], 1, 1).float()
            a.record(h, torch.full((len(h),), float(t)), torch.zeros(len(h), dtype=torch.long))
    a.parameters = {"model_fingerprint": "unet:abc", "seed": first, "n_samples": len(rows)}
    return a.finish()


def test_merged_statistics_equal_one_pass_over_all_samples():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(40, 3, 6, generator=g, dtype=torch.float64) * torch.linspace(3, 0.5, 6, dtype=torch.float64)
    whole = recording(rows, components=6)  # as many components as h has dimensions: no truncation, exact
    merged = F.merge_activations([recording(rows[:16], 6), recording(rows[16:30], 6, first=16),
                                  recording(rows[30:], 6, first=30)])
    assert merged.counts == whole.counts and merged.n_samples == 40
    assert torch.allclose(merged.means(), whole.means(), rtol=1e-12)
    assert torch.allclose(merged.mean_noise(), whole.mean_noise().double(), rtol=1e-6)
    for t in whole.pcas:
        a, b = merged.pcas[t], whole.pcas[t]
        assert torch.allclose(a.singular_values, b.singular_values, rtol=1e-9)
        assert torch.allclose((a.components.T @ a.components), (b.components.T @ b.components), atol=1e-9)
        assert a.total_sq == pytest.approx(b.total_sq, rel=1e-12) and a.n_seen == b.n_seen


def test_a_file_round_trips_and_gives_the_same_directions(tmp_path):
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(12, 3, 6, generator=g, dtype=torch.float64)
    a = recording(rows, components=3, keep=True)
    a.percents = torch.tensor([0.1, 0.5, 0.9])
    path = F.save_activations(a, tmp_path / "a.safetensors")
    b = F.load_activations(path)
    assert b.counts == a.counts and torch.equal(b.means(), a.means()) and b.parameters == a.parameters
    assert torch.equal(b.percents, a.percents.double()) and b.n_samples == 12
    assert torch.equal(pca_directions(b, 3).vectors, pca_directions(a, 3).vectors)
    assert torch.equal(b.trajectories(), a.trajectories()) and torch.equal(b.sample_noises(), a.sample_noises())
    tensors = F.read_safetensors(path, "activations", F.FORMAT, "")[0]
    assert "mean" in tensors and "count" in tensors and tensors["count"].tolist() == [12, 12, 12]


def test_bad_files_and_recordings_that_do_not_merge_are_refused(tmp_path):
    rows = torch.randn(8, 3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    path = F.save_activations(recording(rows, 2), tmp_path / "a.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"activations .*cut.safetensors: not a readable safetensors file"):
        F.load_activations(tmp_path / "cut.safetensors")
    tensors, meta = F.read_safetensors(path, "activations", F.FORMAT, "")
    F.write_safetensors(tmp_path / "meta.safetensors", tensors, {**meta, "h_shape": "[7, 1, 1]"})
    with pytest.raises(ValueError, match=r"activations .*meta.safetensors: damaged metadata or tensors"):
        F.load_activations(tmp_path / "meta.safetensors")
    F.write_safetensors(tmp_path / "other.safetensors", tensors, {**meta, "format": "something else"})
    with pytest.raises(ValueError, match=r"not an h-space activations file"):
        F.load_activations(tmp_path / "other.safetensors")
    other = recording(rows, 2)
    other.parameters["model_fingerprint"] = "unet:def"
    with pytest.raises(ValueError, match=r"activations: recording 2 is of another model or site \(unet:def"):
        F.merge_activations([recording(rows, 2), other])
    with pytest.raises(ValueError, match=r"recording 2 kept other statistics"):
        F.merge_activations([recording(rows, 2), recording(rows, 3)])


def annotate(out, processes=1, samples=8):
    """scripts/annotate.py on the embedded UNet, under torchrun (its own free port) with several processes."""
    args = ["--model", "embedded", "--samples", str(samples), "--steps", "4", "--components", "2",
            "--shard-size", "2", "--out", str(out)]
    launch = ([str(REPO / ".venv" / "bin" / "torchrun"), "--standalone", "--nproc-per-node", str(processes)]
              if processes > 1 else [sys.executable])
    r = subprocess.run([*launch, str(REPO / "scripts" / "annotate.py"), *args], capture_output=True, text=True,
                       timeout=600, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def principal_angle_degrees(a, b):
    """The largest principal angle between the row spaces of two orthonormal [k, d] bases."""
    cosines = torch.linalg.svdvals(a.double() @ b.double().T).clamp(max=1.0)
    return float(torch.rad2deg(torch.arccos(cosines.min())))


def test_two_gloo_processes_give_the_file_one_gives_and_a_killed_run_resumes(tmp_path):
    one, two = tmp_path / "one" / "a.safetensors", tmp_path / "two" / "a.safetensors"
    assert "8 samples" in annotate(one)
    annotate(two, processes=2)
    a, b = F.load_activations(one), F.load_activations(two)
    assert a.counts == b.counts and a.n_samples == 8
    assert torch.allclose(a.means(), b.means(), rtol=1e-5)
    assert all(principal_angle_degrees(a.pcas[t].components, b.pcas[t].components) < 1.0 for t in a.pcas)
    # killed after its first shard: the later shards and the merged file never written
    for shard in sorted((tmp_path / "one" / "a.shards").glob("shard-*.safetensors"))[1:]:
        shard.unlink()
    one.unlink()
    assert "process 0 of 1: 6 samples" in annotate(one)  # the first shard's 2 samples are not sampled again
    again = F.load_activations(one)
    assert torch.equal(again.means(), a.means()) and again.counts == a.counts
    assert all(torch.equal(again.pcas[t].components, a.pcas[t].components) for t in a.pcas)


def test_save_load_round_trips_into_pca_and_attribute_directions_in_the_real_server(tmp_path):
    """Two Hooks (smile / no smile labels) saved, loaded and turned into PCA Directions and Attribute Direction give
    the directions the same graph gives straight from the Hooks; a file of another model is refused."""
    def hook(labels):
        return {"class_type": "HSpaceHook", "inputs": {
            "model": ["1", 0], "positive": [labels, 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "n_samples": 4, "batch_size": 4, "components": 2, "seed": 0, "steps": 4, "cfg": 1.0,
            "sampler_name": "ddim", "scheduler": "ddim_uniform", "latent_is_noise": False, "keep_samples": False}}

    def save_directions(source, name):
        return {"class_type": "HSpaceSaveDirections", "inputs": {"directions": source, "filename": name,
                                                                  "overwrite": True}}

    base = {"1": {"class_type": "HSpaceEmbeddedFacesModel", "inputs": {"architecture": "unet"}},
            "2": {"class_type": "HSpaceFaceLabels", "inputs": {"labels": "smile"}},
            "3": {"class_type": "HSpaceFaceLabels", "inputs": {"labels": "null"}},
            "4": {"class_type": "EmptyChromaRadianceLatentImage", "inputs": {"width": 32, "height": 32,
                                                                             "batch_size": 1}}}

    def directions_from(smiling, plain, suffix):
        return {f"pca{suffix}": {"class_type": "HSpacePCADirections",
                                 "inputs": {"activations": smiling, "n_components": 2}},
                f"attr{suffix}": {"class_type": "HSpaceAttributeDirection",
                                  "inputs": {"activations": smiling, "negative": plain, "attribute": "smile",
                                             "count": 1, "space": "h"}},
                f"savepca{suffix}": save_directions([f"pca{suffix}", 0], f"pca{suffix}"),
                f"saveattr{suffix}": save_directions([f"attr{suffix}", 0], f"attr{suffix}")}

    first = {**base, "5": hook("2"), "6": hook("3"),
             "7": {"class_type": "HSpaceSaveActivations", "inputs": {"activations": ["5", 0],
                                                                     "filename": "smiling", "overwrite": True}},
             "8": {"class_type": "HSpaceSaveActivations", "inputs": {"activations": ["6", 0],
                                                                     "filename": "plain", "overwrite": True}},
             **directions_from(["5", 0], ["6", 0], "_direct")}
    loaded = {**base, "9": {"class_type": "HSpaceLoadActivations", "inputs": {"filename": "smiling.safetensors",
                                                                             "model": ["1", 0]}},
              "10": {"class_type": "HSpaceLoadActivations", "inputs": {"filename": "plain.safetensors"}},
              **directions_from(["9", 0], ["10", 0], "_loaded")}
    with ComfyServer(tmp_path / "comfy") as server:
        server.run(first)
        server.run(loaded)
        other = {**loaded, "1": {"class_type": "HSpaceEmbeddedFacesModel", "inputs": {"architecture": "dit"}}}
        with pytest.raises(RuntimeError, match=r"filename: smiling.safetensors was recorded on DiffusersUNet:.*, but "
                                               r"this model's h is SD3 block 5"):
            server.run(other)
    folder = tmp_path / "comfy" / "models" / "hspace_directions"
    from comfy_hspace import directions as D

    for name in ("pca", "attr"):
        direct, via_file = (D.load_directions(folder / f"{name}_{how}.safetensors") for how in ("direct", "loaded"))
        assert torch.equal(direct.vectors, via_file.vectors) and direct.vectors.abs().sum() > 0, name
    meta = json.loads(F.read_safetensors(tmp_path / "comfy" / "models" / "hspace_activations" / "smiling.safetensors",
                                         "activations", F.FORMAT, "")[1]["parameters"])
    assert meta["n_samples"] == 4 and meta["model_fingerprint"].startswith("DiffusersUNet:")
