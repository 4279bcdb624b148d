"""AVI (paper 003) groundwork: the singular-vector integration of Algorithm 1 and the Grassmann
distance, on random latents of the SD (4-channel) and embedded pixel (3-channel) shapes."""
import math

import pytest
import torch
from conftest import cancel_in_inference_mode

from comfy_hspace import avi


@pytest.mark.parametrize("shape", [(4, 8, 8), (2, 3, 32, 32), (3, 12, 16)])
def test_no_integration_gives_x_back(shape):
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    n = min(shape[-2:])
    assert torch.allclose(avi.merge(x, z, n // 2, 0.0), x, atol=1e-5)


def test_full_integration_puts_z_top_vectors_reversed_after_x():
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
    u_hat, vh_hat, _, _ = avi.integrate(x, z, 4, 1.0)
    ux, _, vhx = avi.channel_svd(x)
    uz, _, vhz = avi.channel_svd(z)
    assert torch.equal(u_hat[..., :4], ux[..., :4]) and torch.equal(vh_hat[..., :4, :], vhx[..., :4, :])
    # column 4 is z's fourth vector, column 7 z's first (largest)
    assert torch.allclose(u_hat[..., 4], uz[..., 3]) and torch.allclose(u_hat[..., 7], uz[..., 0])
    assert torch.allclose(vh_hat[..., 4, :], vhz[..., 3, :]) and torch.allclose(vh_hat[..., 7, :], vhz[..., 0, :])
    # a merge with z's singular values differs from x and keeps the shape
    y = avi.merge(x, z, 4, 1.0, avi.channel_svd(z)[1])
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-2)


def test_bad_input_names_the_input():
    x = torch.randn(4, 8, 8)
    with pytest.raises(ValueError, match=r"z: shape \[4, 8, 16\] differs"):
        avi.merge(x, torch.randn(4, 8, 16), 4, 0.5)
    for k in (0, 8):
        with pytest.raises(ValueError, match=r"k: expected 1 … 7"):
            avi.merge(x, x, k, 0.5)
    with pytest.raises(ValueError, match=r"rho: expected a value in \[0, 1\]"):
        avi.merge(x, x, 4, 1.5)


def test_grassmann_distance():
    g = torch.Generator().manual_seed(2)
    q = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    a = (q[:, :2] * torch.tensor([3.0, 2.0])) @ torch.randn(2, 8, generator=g)
    b = (q[:, 2:4] * torch.tensor([3.0, 2.0])) @ torch.randn(2, 8, generator=g)
    assert avi.grassmann_distance(a[None], a[None], 2).item() == pytest.approx(0.0, abs=1e-6)
    assert avi.grassmann_distance(a[None], b[None], 2).item() == pytest.approx(math.pi / 2 * math.sqrt(2), rel=1e-4)


def pairs(n=64, shape=(3, 8, 8), seed=3):
    """Stand-in pairs with a shared structure: z is x's seed plus a fixed pattern, at another noise level."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randn(shape, generator=g)
    clean = torch.randn(n, *shape, generator=g)
    return (clean * 0.3 + torch.randn(n, *shape, generator=g) * 5.0,
            clean + pattern + torch.randn(n, *shape, generator=g))


def test_phi_training_lowers_the_loss_and_is_repeatable():
    x, z = pairs()
    first = avi.train_phi(x, z, 4, epochs=1, batch_size=16, seed=0)[1][0]
    phi, history = avi.train_phi(x, z, 4, epochs=30, batch_size=16, seed=0)
    assert history[0] == first  # same seed, same first epoch
    # the singular-value terms dominate at the start (Φ begins near S = 0); ‖ŷ − z‖², ‖ỹ − x‖² trade off
    for term in ("values", "correction", "loss"):
        assert history[-1][term] < 0.2 * history[0][term], term
    s, ds = phi(avi.unit_rms(x[:2])[0])
    assert s.shape == ds.shape == (2, 3, 8)
    # Φ's values bring the merge closer to z than x's own values do (the purpose of ‖ŷ − z‖²)
    xn, zn = avi.unit_rms(x)[0], avi.unit_rms(z)[0]
    plain = (avi.merge(xn, zn, 4, 1.0) - zn).pow(2).mean()
    with_phi = (avi.merge(xn, zn, 4, 1.0, phi(xn)[0]) - zn).pow(2).mean()
    assert with_phi < plain


def test_merge_latents_keeps_x_noise_level_and_gives_x_back_at_rho_0():
    x, z = pairs(n=4)
    assert torch.allclose(avi.merge_latents(x, z, 4, 0.0), x, atol=1e-4)
    y = avi.merge_latents(x, z, 4, 1.0)
    assert torch.allclose(avi.unit_rms(y)[1], avi.unit_rms(x)[1], rtol=0.05)
    assert not torch.allclose(y, x, atol=0.1)


def test_keep_noise_adds_back_what_the_merge_takes_from_x():
    x, z = pairs(n=4)
    plain, kept = avi.merge_latents(x, z, 4, 1.0), avi.merge_latents(x, z, 4, 1.0, keep_noise=True)
    xn = avi.unit_rms(x)[0]
    expected = avi.unit_rms(avi.unit_rms(avi.unit_rms(plain)[0])[0] + avi.trailing_part(xn, 4))[0] * avi.unit_rms(x)[1]
    assert torch.allclose(kept, expected, atol=1e-5)
    # x's trailing part is x minus its rank-4 approximation, orthogonal to it per channel
    rest = avi.trailing_part(xn, 4)
    assert (((xn - rest) * rest).sum((-2, -1)).abs() < 1e-3).all()
    def cos(a, b):
        return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()

    assert cos(kept, x) > cos(plain, x) + 0.03
    assert torch.allclose(avi.unit_rms(kept)[1], avi.unit_rms(x)[1], rtol=1e-4)
    assert torch.allclose(avi.merge_latents(x, z, 4, 0.0, keep_noise=True), x, atol=1e-4)


def test_merge_of_chosen_channels_leaves_the_others_as_x():
    x, z = pairs(n=4)
    every, some = avi.merge_latents(x, z, 4, 1.0), avi.merge_latents(x, z, 4, 1.0, channels=[1])
    assert torch.equal(some[:, [0, 2]], x[:, [0, 2]])
    assert torch.allclose(some[:, 1], every[:, 1]) and not torch.allclose(some[:, 1], x[:, 1], atol=0.1)
    with pytest.raises(ValueError, match=r"channels: expected indices 0 … 2 of the latent's channels, got \[3\]"):
        avi.merge_latents(x, z, 4, 1.0, channels=[3])


def test_phi_save_load_round_trip_and_refusals(tmp_path):
    x, z = pairs(n=16)
    phi, _ = avi.train_phi(x, z, 4, epochs=1, batch_size=8, hidden=32)
    path = avi.save_phi(phi, tmp_path / "phi.safetensors", {"pairs": 16})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phi.safetensors"]
    loaded = avi.load_phi(path)
    assert loaded.hidden == 32 and all(torch.equal(a, b) for a, b in zip(phi.state_dict().values(),
                                                                       loaded.state_dict().values()))
    assert torch.equal(avi.merge_latents(x, z, 4, 0.5, phi), avi.merge_latents(x, z, 4, 0.5, loaded))
    with pytest.raises(ValueError, match=r"phi: trained for 8×8 latents, but x is 16×8"):
        avi.merge_latents(torch.randn(1, 3, 8, 16), torch.randn(1, 3, 8, 16), 4, 0.5, loaded)
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an AVI Φ"):
        avi.load_phi(tmp_path / "other.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        avi.load_phi(tmp_path / "pickle.safetensors")
    bad = {k: v.clone() for k, v in phi.state_dict().items()}
    bad["values.bias"][0] = float("nan")
    from safetensors.torch import load_file
    meta_path = tmp_path / "nan.safetensors"
    avi.save_phi(phi, meta_path)
    tensors = load_file(str(meta_path))
    tensors["values.bias"] = bad["values.bias"]
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file(tensors, str(meta_path), metadata=meta)
    with pytest.raises(ValueError, match="NaN or inf"):
        avi.load_phi(meta_path)


def test_phi_training_refuses_bad_pairs():
    x, z = pairs(n=4)
    with pytest.raises(ValueError, match=r"z: shape"):
        avi.train_phi(x, z[:3], 4)
    with pytest.raises(ValueError, match=r"k: expected 1 … 7"):
        avi.train_phi(x, z, 8)


def test_scale_singular_values():
    x = torch.randn(2, 3, 8, 12)
    assert torch.allclose(avi.scale_singular_values(x, [0, 3], 1.0), x, atol=1e-5)
    y = avi.scale_singular_values(x, [0], 2.0)
    sx, sy = avi.channel_svd(x)[1], avi.channel_svd(y)[1]
    assert torch.allclose(sy[..., 0], 2 * sx[..., 0], rtol=1e-4) and torch.allclose(sy[..., 1:], sx[..., 1:], rtol=1e-4)
    with pytest.raises(ValueError, match=r"indices: \[8\] outside 0 … 7"):
        avi.scale_singular_values(x, [8], 2.0)


# --- the nodes, in-process ---------------------------------------------------------------------

def run_graph(pack, prompt: dict, replace: dict) -> dict:
    """Executes an API-format workflow node by node, in dependency order; ``replace`` maps a
    class_type to a function(inputs, node_id) → outputs for the parts the test provides itself."""
    import nodes as comfy_nodes

    ours = {n.define_schema().node_id: n for n in pack.nodes.NODES}
    done: dict[str, tuple] = {}

    def value(v):
        return done[v[0]][v[1]] if isinstance(v, list) else v

    def run(node_id):
        if node_id in done:
            return
        spec = prompt[node_id]
        for v in spec["inputs"].values():
            if isinstance(v, list):
                run(v[0])
        inputs = {k: value(v) for k, v in spec["inputs"].items()}
        kind = spec["class_type"]
        if kind in replace:
            done[node_id] = replace[kind](inputs, node_id)
        elif kind in ours:
            done[node_id] = tuple(ours[kind].execute(**inputs).args)
        else:
            node = comfy_nodes.NODE_CLASS_MAPPINGS[kind]
            done[node_id] = tuple(getattr(node(), node.FUNCTION)(**inputs))

    for node_id in prompt:
        run(node_id)
    return done


def test_nodes_refuse_bad_input_naming_it(pack):
    x = {"samples": torch.randn(2, 3, 16, 16)}
    merge = pack.nodes.AVILatentMerge.execute
    with pytest.raises(ValueError, match=r"z: shape \[2, 3, 16, 8\] differs"):
        merge(x=x, z={"samples": torch.randn(2, 3, 16, 8)}, k=0, rho="1")
    with pytest.raises(ValueError, match=r"k: expected 1 … 15"):
        merge(x=x, z=x, k=16, rho="1")
    with pytest.raises(ValueError, match=r"rho: expected a value in \[0, 1\], got 1.5"):
        merge(x=x, z=x, k=0, rho="0, 1.5")
    with pytest.raises(ValueError, match=r"rho: 'a' is not a number"):
        merge(x=x, z=x, k=0, rho="a")
    phi, _ = avi.train_phi(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), 4, epochs=1, hidden=8)
    with pytest.raises(ValueError, match=r"phi: trained for 8×8 latents, but x is 16×16"):
        merge(x=x, z=x, k=0, rho="1", phi=phi)
    scale = pack.nodes.LatentSingularValues.execute
    with pytest.raises(ValueError, match=r"indices: \[16\] outside 0 … 15"):
        scale(latent=x, indices="16", scales="1")
    with pytest.raises(ValueError, match=r"indices: 'first' is not a list"):
        scale(latent=x, indices="first", scales="1")
    edited = scale(latent=x, indices="0", scales="0.5, 1, 2").args[0]["samples"]
    assert edited.shape == (6, 3, 16, 16) and torch.allclose(edited[2:4], x["samples"], atol=1e-4)


def test_cancelled_training_writes_nothing(pack, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "hspace_avi", ([str(tmp_path)], {".safetensors"}))
    x, z = pairs(n=32)
    args = dict(x={"samples": x}, z={"samples": z}, k=0, epochs=4, batch_size=8, learning_rate=1e-3,
                target_weight=3.0, original_weight=10.0, values_weight=10.0, correction_weight=10.0, hidden=16,
                seed=0, name="run")

    cancel_in_inference_mode(pack.nodes.AVITrainer, args, at_step=3)
    assert list(tmp_path.iterdir()) == []
    with torch.inference_mode():
        phi, losses = pack.nodes.AVITrainer.execute(**args).args
    assert [p.name for p in tmp_path.iterdir()] == ["run.safetensors"] and losses.count("epoch") == 4
    loaded = pack.nodes.LoadAVIPhi.execute(filename="run.safetensors").args[0]
    assert torch.equal(loaded.values.weight, phi.values.weight)
