"""Jacobian Directions: power iteration against the exact SVD, on a matrix and on tiny real
UNets sampled through ComfyUI, plus the node's bad-input messages."""
import math

import comfy.sample
import pytest
import torch
from conftest import cancelled_at
from tiny_models import DITS, LATENTS, comfy_dit, comfy_unet, conditioning, save_pixel_ddpm

from comfy_hspace.host.architectures import site_of
from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm
from comfy_hspace.host.trajectory import at_trajectory_steps, jacobian_directions
from comfy_hspace.jacobian import jacobian_maps, top_singular_vectors
from comfy_hspace.settings import SamplerSettings


def test_power_iteration_matches_svd_of_a_matrix():
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(80, 40, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(60, 40, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(1, -1, 40, dtype=torch.float64)
    a = u @ torch.diag(s) @ v.T  # [80, 60], known spectrum
    for batch_size in (6, 2, 1):  # Alg. 1 and the sequential, deflated Alg. 2
        found = top_singular_vectors(lambda x: x @ a.T, lambda y: y @ a, (60,), 6, batch_size=batch_size, tol=1e-8,
                                     max_iters=500)
        assert torch.allclose(found.values, s[:6], rtol=1e-4)
        cos = (found.vectors * v[:, :6].T).sum(1).abs()
        assert cos.min() > 0.9999, batch_size


def explicit_check(point, k=3):
    """Power iteration and the SVD of the Jacobian formed column by column, at the same point."""
    h_shape = tuple(point.h.shape)
    d = math.prod(h_shape)
    jac = torch.autograd.functional.jacobian(lambda z: point.eps(z.reshape(1, *h_shape)).reshape(-1),
                                             torch.zeros(d).to(point.h), vectorize=True)
    _, s, vh = torch.linalg.svd(jac.double(), full_matrices=False)

    def jvp(v):
        return torch.func.jvp(point.eps, (torch.zeros_like(v).to(point.h),), (v.to(point.h),))[1]

    def vjp(u):
        delta = torch.zeros(u.shape[0], *h_shape).to(point.h).requires_grad_(True)
        return torch.autograd.grad(point.eps(delta), delta, u.to(point.h))[0].double()

    # the node's products (from retained graphs; on the SD-shaped UNet through ComfyUI's
    # attention, replaced by PyTorch's while the Jacobian is taken)
    node_jvp, node_vjp = jacobian_maps(point)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, *h_shape, generator=g).to(point.h)
    jv = jvp(v)
    u = torch.randn(jv.shape, generator=g).to(jv)
    for _ in range(2):  # the same product every time it is asked for
        assert torch.allclose(node_jvp(v), jv, rtol=1e-4, atol=1e-5 * jv.abs().max())
    assert torch.allclose(node_vjp(u), vjp(u), rtol=1e-4, atol=1e-5 * vjp(u).abs().max())

    # a block of 2k vectors: the top k then converge at the rate (σ_2k+1 / σ_k)²
    found = top_singular_vectors(jvp, vjp, h_shape, 2 * k, tol=1e-4, max_iters=120)
    gains = (jac.double() @ found.vectors[:k].reshape(k, -1).double().T).norm(dim=0)  # ‖J v_i‖
    return s[:k], vh[:k], found, gains


@pytest.mark.parametrize("kind", ["pixel", "sd15", "sd3", "flux", "qwen", "wan", "hunyuan_video", "auraflow",
                                  "ltxv", "flux attention output", "lumina2", "hidream", "omnigen2",
                                  "cosmos_predict2", "mochi", "hunyuan_dit", "zimage", "cosmos", "wan_vace"])
def test_power_iteration_matches_explicit_jacobian_of_a_tiny_unet(kind, tmp_path):
    """Also on tiny transformers, h at their default block: Flux's blocks add their residuals in
    place, which reverse mode survives only through the pack's copies of saved tensors. Flux's h
    also at its attention output, reached by a forward hook inside the block."""
    if kind == "flux attention output":
        from comfy_hspace.host.architectures import ATTENTION, STREAM_OPTION

        model, latent, cfg = comfy_dit("flux"), torch.zeros(1, 16, 8, 8), 1.0
        model.model_options[STREAM_OPTION], kind = ATTENTION, "flux"
    elif kind == "pixel":
        model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "m"))
        latent, cfg = torch.zeros(1, 3, 8, 8), 1.0
    elif kind in ("sd3", "flux", "qwen", "wan", "hunyuan_video", "auraflow", "ltxv"):
        side = 4 if kind == "ltxv" else 8  # 4 × 4 tokens: LTXV patchifies at 1, the others at 2
        model, latent, cfg = comfy_dit(kind), torch.zeros(1, 16, side, side), 1.0  # channels as the model takes them
    elif kind in DITS:  # issue 30's families with rows of their own (Lumina 2's is Z-Image's): 4 × 4 tokens
        channels, frames, _, _ = LATENTS[kind]
        model, latent, cfg = comfy_dit(kind), torch.zeros(1, channels, *([frames] if frames else []), 8, 8), 1.0
    else:
        model, latent, cfg = comfy_unet("sd15"), torch.zeros(1, 4, 8, 8), 3.0
    cond = conditioning(kind)
    latent = comfy.sample.fix_empty_latent_channels(model, latent)  # Qwen-Image's has a frame axis
    noise = comfy.sample.prepare_noise(latent, 5)
    with torch.inference_mode():  # as the ComfyUI executor runs every prompt
        negative = conditioning(kind, seed=1) if cfg > 1 else cond
        result = at_trajectory_steps(model, site_of(model), cond, negative, latent, noise,
                                     SamplerSettings(5, 10, cfg, "euler", "normal"), wanted=[4], analyse=explicit_check)
    exact_values, exact_vectors, found, gains = result[4]
    assert exact_values[-1] > 1e-3, exact_values  # h reaches ε: a Jacobian that is not zero
    assert torch.allclose(found.values[:3], exact_values, rtol=0.01), (found.values, exact_values)
    assert torch.allclose(gains, exact_values, rtol=0.01), (gains, exact_values)  # each found v is a top one
    if kind != "auraflow":  # tiny AuraFlow's top three values lie within 0.2%: any vector of their span is a top one
        cos = (found.vectors[:3].reshape(3, -1) * exact_vectors).sum(1).abs()
        assert cos.min() >= 0.99, (cos, exact_values)


def test_jacobian_directions_leave_the_model_as_it_was(tmp_path):
    with torch.inference_mode():
        model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "m"))
        before = {k: v.clone() for k, v in model.model.state_dict().items()}
        params = [p for p in model.model.parameters()]
        directions = jacobian_directions(model, conditioning("pixel"), conditioning("pixel"),
                                         {"samples": torch.zeros(1, 3, 16, 16)}, SamplerSettings(0, 10, 1.0, "euler"),
                                         step=3, each_step=False, n_directions=4, batch_size=2)
        assert [p for p in model.model.parameters()] == params and all(p.is_inference() for p in params)
        assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())
        assert not model.model_options["transformer_options"].get("patches")
    assert directions.vectors.shape == (4, 1, 32, 8, 8)
    values = directions.parameters["singular_values"][0]
    assert values == sorted(values, reverse=True) and values[-1] > 0


def run_node(pack, model, **kw):
    inputs = dict(model=model, positive=conditioning("pixel"), negative=conditioning("pixel"),
                  latent_image={"samples": torch.zeros(1, 3, 16, 16)}, seed=0, steps=10, cfg=1.0,
                  sampler_name="euler", scheduler="normal", step=3, each_step=False, n_directions=2, batch_size=2,
                  tolerance=1e-3, max_iterations=20, scale_by_singular_value=False)
    return pack.nodes.JacobianDirections.execute(**{**inputs, **kw}).args[0]


def test_node_masks_each_step_and_bad_input(pack, tmp_path):
    model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "m"))
    mask = torch.zeros(1, 16, 16)
    mask[:, 10:14, 4:12] = 1
    with torch.inference_mode():  # the mask made inside inference mode, as in a running prompt
        d = run_node(pack, model, mask=mask.clone(), scale_by_singular_value=True)
    assert d.parameters["masked"] and d.units == "h norm"
    norms = d.vectors.flatten(1).norm(dim=1)
    values = d.parameters["singular_values"][0]
    assert torch.allclose(norms[1] / norms[0], torch.tensor(values[1] / values[0]), rtol=1e-3)
    every = run_node(pack, model, steps=3, each_step=True)
    assert every.vectors.shape[:2] == (2, 3) and torch.all(every.timesteps[:-1] > every.timesteps[1:])

    with pytest.raises(ValueError, match="step: 10 is outside the schedule of 10 steps"):
        run_node(pack, model, step=10)
    with pytest.raises(ValueError, match="mask: 32×32 does not fit the image, which is 16×16"):
        run_node(pack, model, mask=torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match="n_directions: expected 1 … 2048"):
        run_node(pack, model, n_directions=5000)
    with pytest.raises(ValueError, match="one sample, got a batch of 2"):
        run_node(pack, model, latent_image={"samples": torch.zeros(2, 3, 16, 16)})

    options = repr(model.model_options)
    params = list(model.model.parameters())

    with cancelled_at(3), torch.inference_mode():  # inside the power iteration, weights swapped for autograd
        run_node(pack, model)
    assert repr(model.model_options) == options and list(model.model.parameters()) == params
    assert torch.equal(run_node(pack, model, mask=mask, scale_by_singular_value=True).vectors, d.vectors)


def test_autograd_bytes_counts_what_the_backward_pass_keeps():
    """The memory estimates of Jacobian Directions and the Discovery Trainer measure one sample's
    saved tensors: here exactly the Linear's input and the ReLU's output, not the weights."""
    from comfy_hspace.host.memory import autograd_bytes

    layer = torch.nn.Linear(10, 20)
    x = torch.randn(3, 10, requires_grad=True)
    assert autograd_bytes(lambda: layer(x).relu(), layer.parameters()) == (3 * 10 + 3 * 20) * 4
    big = torch.randn(12, 10, requires_grad=True)
    assert autograd_bytes(lambda: layer(big).relu(), layer.parameters()) == 4 * (3 * 10 + 3 * 20) * 4
    # and it keeps none of them (a saved output held by its own grad_fn would leak: scripts/soak.py found it)
    import gc

    def tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor)

    before = tensors()
    for _ in range(5):
        autograd_bytes(lambda: layer(big).sigmoid().exp(), layer.parameters())
    assert tensors() == before
