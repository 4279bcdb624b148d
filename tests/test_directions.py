"""The HSPACE_DIRECTIONS value and its file format (no ComfyUI needed)."""

import pytest
import torch
from safetensors.torch import save_file

from comfy_hspace import directions as D


def make(k=3, t=2, shape=(8, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return D.Directions(torch.randn(k, t, *shape, generator=g), torch.linspace(999, 0, t),
                        [f"d{i}" for i in range(k)], method="test", model_fingerprint="fp", units="std",
                        parameters={"n": 5})


def test_save_load_roundtrip_keeps_tensors_and_metadata(tmp_path):
    d = make()
    path = D.save_directions(d, tmp_path / "a.safetensors")
    e = D.load_directions(path)
    assert torch.equal(e.vectors, d.vectors) and torch.equal(e.timesteps, d.timesteps)
    assert (e.names, e.method, e.model_fingerprint, e.units, e.parameters) == (d.names, "test", "fp", "std", {"n": 5})
    assert not list(tmp_path.glob("*.partial"))


def test_nan_in_file_is_refused(tmp_path):
    d = make()
    path = D.save_directions(d, tmp_path / "a.safetensors")
    meta = D._metadata(d)
    v = d.vectors.clone()
    v[0, 0, 0, 0, 0] = float("nan")
    save_file({"directions": v, "timesteps": d.timesteps}, str(path), metadata=meta)
    with pytest.raises(D.DirectionsError, match="NaN or inf") as e:
        D.load_directions(path)
    assert str(path) in str(e.value)


def test_missing_truncated_and_foreign_files_name_path_and_reason(tmp_path):
    with pytest.raises(D.DirectionsError, match="no such file"):
        D.load_directions(tmp_path / "nope.safetensors")
    good = D.save_directions(make(), tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(D.DirectionsError, match="truncated.safetensors: not a readable safetensors file"):
        D.load_directions(truncated)
    pickle_like = tmp_path / "model.ckpt"
    pickle_like.write_bytes(b"\x80\x04\x95 not safetensors at all")
    with pytest.raises(D.DirectionsError, match="model.ckpt: not a readable safetensors file"):
        D.load_directions(pickle_like)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(D.DirectionsError, match="not a comfy-hspace direction file"):
        D.load_directions(other)


def test_inconsistent_values_are_refused():
    with pytest.raises(D.DirectionsError, match=r"\[K, T, C, H, W\]"):
        D.Directions(torch.zeros(2, 8, 4, 4), torch.zeros(1), ["a", "b"])
    with pytest.raises(D.DirectionsError, match="names"):
        D.Directions(torch.zeros(2, 1, 8, 4, 4), torch.zeros(1), ["a"])


def test_select_scale_stack_sum():
    d = make()
    assert D.parse_indices("d2, 0", d) == [2, 0]
    assert D.parse_indices("0-1", d) == [0, 1]
    assert D.parse_indices("2-0", d) == [2, 1, 0]  # a reversed range counts down
    with pytest.raises(D.DirectionsError, match="out of range"):
        D.parse_indices("5", d)
    with pytest.raises(D.DirectionsError, match="neither an index nor"):
        D.parse_indices("smile", d)
    s = D.select(d, [2, 0])
    assert s.names == ["d2", "d0"] and torch.equal(s.vectors[1], d.vectors[0])
    sc = D.scale(d, [1.0, -2.0, 0.0])
    assert torch.equal(sc.vectors[1], -2 * d.vectors[1]) and not sc.vectors[2].any()
    st = D.stack(d, make(k=1, seed=1))
    assert st.count == 4 and st.names[-1] == "d0"
    sm = D.weighted_sum(d, make(k=1, seed=1), 1.0, 0.5)
    assert torch.allclose(sm.vectors[2], d.vectors[2] + 0.5 * make(k=1, seed=1).vectors[0])
    with pytest.raises(D.DirectionsError, match="does not match"):
        D.stack(d, make(shape=(16, 4, 4)))


def test_combined_is_the_weighted_sum_per_timestep():
    d = make()
    c = d.combined([1.0, 0.0, -1.0])
    assert torch.allclose(c, d.vectors[0] - d.vectors[2])
    with pytest.raises(D.DirectionsError, match="strengths: expected 3"):
        d.combined([1.0])


def test_nearest_timestep_lookup():
    d = D.Directions(torch.zeros(1, 3, 1, 1, 1), torch.tensor([999.0, 500.0, 0.0]), ["a"])
    assert d.timestep_index(torch.tensor([990.0, 760.0, 740.0, 10.0])).tolist() == [0, 0, 1, 2]


def test_resize_keeps_values_per_position():
    d = D.Directions(torch.full((1, 1, 2, 8, 8), 3.0), torch.zeros(1), ["a"])
    r = D.resize(d, 12, 12)
    assert r.h_shape == (2, 12, 12) and torch.allclose(r.vectors, torch.full_like(r.vectors, 3.0))


def test_random_like_matches_norms_per_direction_and_timestep():
    d = make(k=3, t=4)
    r = D.random_like(d, seed=1)
    assert torch.allclose(r.vectors.flatten(2).norm(dim=2), d.vectors.flatten(2).norm(dim=2), rtol=1e-5)
    assert torch.equal(r.timesteps, d.timesteps) and r.units == d.units and r.method == "random"
    cos = torch.nn.functional.cosine_similarity(r.vectors.flatten(2), d.vectors.flatten(2), dim=2)
    assert cos.abs().max() < 0.5  # a random direction in 128 dimensions is nearly orthogonal
    assert not torch.equal(D.random_like(d, seed=2).vectors, r.vectors)
