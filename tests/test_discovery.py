"""Discovery Trainer (paper 001): checkpointed training through the chain against plain backprop,
on tiny real UNets run through ComfyUI; memory independence of M is in bench/discovery.py."""
import pytest
import torch
from comfy.sample import fix_empty_latent_channels
from conftest import cancel_in_inference_mode
from tiny_models import DITS, comfy_dit, comfy_unet, conditioning, save_pixel_ddpm, tiny_latent

from comfy_hspace import discovery
from comfy_hspace.host.architectures import site_of
from comfy_hspace.host.discovery import discovery_schedule, new_discovery_trainer, with_denoiser
from comfy_hspace.host.latents import noise_scale
from comfy_hspace.host.model_info import is_flow
from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory):
    model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path_factory.mktemp("ddpm")))
    return model


def gradients(model, cond, latent_shape, checkpointed, cfg=1.0, shift_limit=0.0):
    sigmas, timesteps = discovery_schedule(model, 5)
    # half way down in the model's own timesteps (0 … 999 for a DDPM, 0 … 1 for Flux)
    t_edit = float(timesteps[0]) / 2
    settings = discovery.DiscoverySettings(count=3, magnitude=2.0, t_edit=t_edit, batch_size=latent_shape[0],
                                           checkpointed=checkpointed, shift_limit=shift_limit, flow=is_flow(model))
    shifted = discovery.shifted_step_count(timesteps, settings.t_edit)
    trainer = new_discovery_trainer(site_of(model), latent_shape, settings, seed=1)
    with torch.no_grad():  # away from the zero start, so every shift-block weight gets a gradient
        trainer.shift.out_weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
    batch = discovery.draw_batch(torch.Generator().manual_seed(3), latent_shape, 3, 2.0,
                                 noise_scale(model, float(sigmas[0])))

    def run(denoise, device):
        with torch.no_grad():
            x0, _ = discovery.run_chain(denoise, batch.noise, sigmas, 0)
        losses, _ = discovery.chain_gradients(denoise, trainer, batch, sigmas, shifted, x0)
        return {f"{m}.{n}": p.grad.clone() for m in ("shift", "reconstructor")
                for n, p in trainer.modules()[m].named_parameters()}, losses

    return with_denoiser(model, site_of(model), cond, cond, latent_shape, cfg, run), shifted


# every transformer whose sampling the Discovery chain knows (Cosmos Predict2's is refused, below)
FLOW_DITS = [kind for kind in DITS if kind != "cosmos_predict2"]


@pytest.mark.parametrize("kind, shift_limit", [("pixel", 0.0), ("pixel", 0.1), ("sd15", 0.0),
                                               *((kind, 0.5) for kind in FLOW_DITS)])
def test_checkpointed_gradients_equal_plain_backprop(kind, shift_limit, pixel_model):
    """Also through every transformer family, with the flow step; Flux's, HunyuanVideo's and LTXV's blocks add
    their residuals in place; Lumina 2, HiDream, PixArt, Omnigen2 are read through a forward hook."""
    if kind == "pixel":
        model, shape, cfg = pixel_model, (2, 3, 16, 16), 1.0
    elif kind in DITS:
        model, cfg = comfy_dit(kind), 1.0
        shape = tuple(fix_empty_latent_channels(model, tiny_latent(kind, 2)["samples"]).shape)
    else:
        model, shape, cfg = comfy_unet("sd15"), (2, 4, 16, 16), 2.0
    cond = conditioning(kind)
    (checkpointed, losses_c), shifted = gradients(model, cond, shape, True, cfg, shift_limit)
    (plain, losses_p), _ = gradients(model, cond, shape, False, cfg, shift_limit)
    assert 0 < shifted < 5
    assert torch.allclose(losses_c["total"], losses_p["total"], rtol=1e-5)
    for name, g in plain.items():
        assert g.abs().sum() > 0, name  # a real gradient, not zeros on both sides
        rel = (checkpointed[name] - g).norm() / g.norm()
        assert rel <= 1e-4, (name, rel.item())


@pytest.mark.parametrize("kind", ["pixel", "sd15", "flux"])
def test_paired_passes_equal_two_calls(kind, pixel_model):
    """The plain and shifted predictions of one paired call (the embedded kind of UNet runs its down path once
    for both, the others the two halves) equal two calls, and so do their gradients, also with cfg's two
    chunks."""
    if kind == "pixel":
        model, shape = pixel_model, (2, 3, 16, 16)
    elif kind == "flux":
        model = comfy_dit(kind)
        shape = tuple(fix_empty_latent_channels(model, tiny_latent(kind, 2)["samples"]).shape)
    else:
        model, shape = comfy_unet("sd15"), (2, 4, 16, 16)
    sigmas, _ = discovery_schedule(model, 5)
    settings = discovery.DiscoverySettings(count=3, batch_size=2, flow=is_flow(model))
    trainer = new_discovery_trainer(site_of(model), shape, settings, seed=1)
    with torch.no_grad():
        trainer.shift.out_weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
    shift = discovery.shift_fn(trainer.shift, torch.tensor([0, 2]), torch.tensor([1.5, -2.0]))
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * float(sigmas[1])
    weights = torch.randn(2, *shape, generator=torch.Generator().manual_seed(4))

    rows = []  # the rows of each call's down path, in the embedded kind of UNet
    seen = model.model.diffusion_model.unet.conv_in.register_forward_hook(
        lambda m, args, out: rows.append(out.shape[0])) if kind == "pixel" else None

    def run(denoise, device):
        out = []
        for pair in (True, False):
            x = x0.clone().requires_grad_(True)
            s = sigmas[1].expand(2)
            plain, shifted = denoise(x, s, shift, pair=True) if pair else (denoise(x, s), denoise(x, s, shift))
            (plain * weights[0] + shifted * weights[1]).sum().backward()
            out.append((plain.detach(), shifted.detach(), x.grad, trainer.shift.out_weight.grad.clone()))
            trainer.shift.zero_grad()
        return out

    paired, separate = with_denoiser(model, site_of(model), conditioning(kind), conditioning(kind), shape, 2.0, run)
    if seen is not None:
        seen.remove()
        assert rows[:3] == [4, 4, 4]  # cond and uncond of 2 samples: once for the pair, once per separate call
    assert (paired[1] - paired[0]).abs().max() > 1e-3  # the shift moved the prediction
    for a, b in zip(paired, separate):
        assert (a - b).norm() / b.norm() <= 1e-5, ((a - b).norm() / b.norm()).item()


def test_shift_limit_caps_large_shifts_and_keeps_small_ones():
    h = torch.randn(4, 8, 2, 2, generator=torch.Generator().manual_seed(0))
    h = h * torch.tensor([0.5, 1, 2, 4]).reshape(4, 1, 1, 1)  # samples of different sizes
    t, k = torch.tensor([900.0, 700, 500, 300]), torch.tensor([0, 1, 0, 1])
    free, capped = discovery.ShiftBlock(8, 2), discovery.ShiftBlock(8, 2, limit=0.2)
    capped.load_state_dict(free.state_dict())

    def rms(x):
        return x.pow(2).mean((1, 2, 3)).sqrt()

    with torch.no_grad():
        for scale, small in ((1e-4, True), (1e3, False)):
            for block in (free, capped):
                block.out_weight.normal_(0, scale, generator=torch.Generator().manual_seed(1))
            f, g = free(h, t, k), capped(h, t, k)
            ratio = rms(g) / rms(h)
            assert (ratio <= 0.2 + 1e-6).all()
            if small:  # far below the cap: the block's own shift
                assert torch.allclose(g, f, rtol=1e-3, atol=0)
            else:  # far above it: the cap, in the block's own direction
                assert torch.allclose(ratio, torch.full((4,), 0.2), rtol=1e-4)
                assert torch.allclose(g / rms(g).reshape(-1, 1, 1, 1), f / rms(f).reshape(-1, 1, 1, 1), atol=1e-5)


def test_training_saves_resumes_and_gives_directions(pixel_model, tmp_path):
    from comfy_hspace.host.discovery import train_discovery

    cond = conditioning("pixel")
    settings = discovery.DiscoverySettings(count=3, magnitude=1.0, t_edit=600, batch_size=2)
    state = tmp_path / "run.safetensors"
    seen = []
    per_step, time_invariant, history = train_discovery(
        pixel_model, cond, cond, (1, 3, 16, 16), settings, steps=4, training_steps=2, seed=5, cfg=1.0,
        state_path=state, save_every=1, direction_samples=2, progress=lambda i, n, losses: seen.append(i))
    assert seen == [1, 2] and len(history) == 2 and state.exists()
    assert per_step.vectors.shape == (3, 4, 32, 8, 8) and per_step.units == "shift ε"
    shifted = discovery.shifted_step_count(per_step.timesteps, 600)
    assert per_step.vectors[:, :shifted].abs().sum() > 0 and per_step.vectors[:, shifted:].abs().sum() == 0
    # the time-invariant version is the same vector at every step of the interval
    assert torch.allclose(time_invariant.vectors[:, 0], per_step.vectors[:, :shifted].mean(1), atol=1e-6)

    # two more steps resumed from the file = four steps in one go
    _, _, resumed = train_discovery(pixel_model, cond, cond, (1, 3, 16, 16), settings, steps=4, training_steps=4,
                                    seed=5, cfg=1.0, state_path=state, resume=True, direction_samples=2)
    _, _, straight = train_discovery(pixel_model, cond, cond, (1, 3, 16, 16), settings, steps=4, training_steps=4,
                                     seed=5, cfg=1.0, direction_samples=2)
    assert [h["step"] for h in resumed] == [3, 4]
    assert resumed[-1]["total"] == pytest.approx(straight[-1]["total"], rel=1e-5)

    other = discovery.DiscoverySettings(count=4, magnitude=1.0, t_edit=600, batch_size=2)
    with pytest.raises(ValueError, match="resume: run.safetensors was trained with count 3"):
        train_discovery(pixel_model, cond, cond, (1, 3, 16, 16), other, steps=4, training_steps=5, seed=5,
                        cfg=1.0, state_path=state, resume=True)


def test_bad_input_names_the_input(pixel_model, tmp_path):
    from comfy_hspace.host.discovery import train_discovery

    cond = conditioning("pixel")

    def train(model=pixel_model, **settings):
        args = {"count": 3, "magnitude": 1.0, "t_edit": 600, "batch_size": 2, **settings}
        train_discovery(model, cond, cond, (1, 3, 16, 16), discovery.DiscoverySettings(**args), steps=4,
                        training_steps=1, seed=0, cfg=1.0, state_path=tmp_path / "s.safetensors", resume=True,
                        direction_samples=1)

    with pytest.raises(ValueError, match="count: expected K ≥ 2"):
        train(count=1)
    with pytest.raises(ValueError, match=r"magnitude: expected S > 0"):
        train(magnitude=0.0)
    with pytest.raises(ValueError, match="t_edit: 1500 is outside the schedule"):
        train(t_edit=1500)
    flat = comfy_unet("sd15")
    flat.model.diffusion_model = torch.nn.Conv2d(4, 4, 1)  # a model with no UNet bottleneck
    with pytest.raises(ValueError, match="model: Conv2d has no h this pack reads"):
        train(model=flat)
    with pytest.raises(ValueError, match=r"model: its sampling \(.*COSMOS_RFLOW\) is neither x0 \+ σ·ε nor flow"):
        train_discovery(comfy_dit("cosmos_predict2"), conditioning("cosmos_predict2"), conditioning("cosmos_predict2"),
                        (1, 16, 1, 16, 12), discovery.DiscoverySettings(count=2, magnitude=1.0, t_edit=0.5,
                                                                       batch_size=2), steps=4, training_steps=1,
                        seed=0, cfg=1.0, state_path=tmp_path / "cosmos.safetensors", direction_samples=1)
    assert not (tmp_path / "cosmos.safetensors").exists()
    train()  # writes s.safetensors
    other, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "other", seed=9))
    with pytest.raises(ValueError, match="resume: s.safetensors was trained with model_fingerprint"):
        train(model=other)
    (tmp_path / "s.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="resume: state file .*: not a readable safetensors file"):
        train()


def test_two_gloo_processes_train_what_one_process_trains(tmp_path):
    """torchrun with two CPU processes (gloo), half the batch each, against one process with the
    whole batch: after one step both runs hold the same gradient. Adam's first moment after one
    step is exactly (1 − β1)·g of the reduced gradient, so the saved states compare the gradients
    themselves; the parameters are not compared, since Adam's first step is about lr·sign(g) and
    turns rounding in near-zero gradients into full-size differences."""
    import os
    import subprocess
    import sys

    from comfy_env import REPO

    from comfy_hspace.discovery import load_state

    folder = save_pixel_ddpm(tmp_path / "ddpm")
    common = [str(REPO / "scripts" / "train_discovery.py"), "--model", str(folder), "--count", "3", "--steps", "3",
              "--t-edit", "600", "--batch-size", "4", "--training-steps", "1", "--direction-samples", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *common, "--state", str(tmp_path / "one.safetensors")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", *common, "--state", str(tmp_path / "two.safetensors")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    again = subprocess.run([sys.executable, *common, "--state", str(tmp_path / "one.safetensors")], env=env,
                           capture_output=True, text=True, timeout=600)  # --training-steps is the total: 1 is done
    assert again.returncode == 0 and "nothing trained: --training-steps 1 is the run's total" in again.stderr
    a, meta_a = load_state(tmp_path / "one.safetensors")
    b, meta_b = load_state(tmp_path / "two.safetensors")
    assert meta_a["step"] == meta_b["step"] == 1 and a.keys() == b.keys()
    first_moments = [k for k in a if k.endswith(".exp_avg")]
    assert len(first_moments) == sum(1 for k in a if k.split(".")[0] in ("shift", "reconstructor", "discriminator"))
    moved = 0
    for k in first_moments:
        g_one, g_two = a[k].double(), b[k].double()
        # the shift block's inner layers get no gradient through its zero-initialised output yet
        if g_one.norm() == 0:
            assert g_two.norm() == 0, k
            continue
        moved += 1
        rel = ((g_one - g_two).norm() / g_one.norm()).item()
        assert rel <= 1e-4, (k, rel)  # float32 sums in another order; a wrong split or mean is O(1)
    assert moved > len(first_moments) // 2
    # and the step did move the zero-initialised output convolutions
    assert a["shift.out_weight"].abs().sum() > 0


def node_args(model, **changes) -> dict:
    """The Discovery Trainer node's inputs for the tiny pixel model, K = 3 over a 3-step chain."""
    cond = conditioning("pixel")
    return {**dict(model=model, positive=cond, negative=cond, latent_image={"samples": torch.zeros(1, 3, 16, 16)},
                   count=3, magnitude=1.0, steps=3, t_edit=600.0, batch_size=2, training_steps=1, learning_rate=1e-3,
                   seed=0, cfg=1.0, name="run", resume=True, save_every=1, regression_weight=0.1,
                   adversarial_weight=0.1, direction_samples=1, checkpointed=True), **changes}


def test_cancel_keeps_the_last_saved_state_and_the_model(pack, pixel_model, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "hspace_discovery", ([str(tmp_path)], {".safetensors"}))
    options, params = repr(pixel_model.model_options), dict(pixel_model.model.named_parameters())
    weights = {n: p.detach().clone() for n, p in params.items()}
    flags = {n: p.requires_grad for n, p in params.items()}
    args = node_args(pixel_model, training_steps=10, save_every=2)

    cancel_in_inference_mode(pack.nodes.DiscoveryTrainer, args, at_step=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]  # nothing half-written
    assert discovery.load_state(tmp_path / "run.safetensors")[1]["step"] == 2
    assert repr(pixel_model.model_options) == options
    assert all(p is params[n] and torch.equal(p, weights[n]) and p.requires_grad == flags[n] and p.grad is None
               for n, p in pixel_model.model.named_parameters())
    # resuming picks up at step 2 and finishes
    with torch.inference_mode():
        out = pack.nodes.DiscoveryTrainer.execute(**{**args, "training_steps": 4})
    assert out.args[0].count == 3 and discovery.load_state(tmp_path / "run.safetensors")[1]["step"] == 4


def test_start_from_a_saved_state_without_training(pack, pixel_model, tmp_path, monkeypatch):
    """A state saved by one run, as start_from of a run under another name with no further steps: the
    directions that state gives, and no new file."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "hspace_discovery", ([str(tmp_path)], {".safetensors"}))
    args = node_args(pixel_model, training_steps=2, learning_rate=1e-2, name="trained", direction_samples=2,
                     shift_limit=0.2)
    with torch.inference_mode():
        trained = pack.nodes.DiscoveryTrainer.execute(**args).args[0]
        again = pack.nodes.DiscoveryTrainer.execute(**{**args, "name": "other", "training_steps": 0,
                                                       "start_from": "trained.safetensors"}).args[0]
    assert trained.vectors.abs().sum() > 0
    assert torch.equal(again.vectors, trained.vectors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trained.safetensors"]
    # the networks alone, as the pack ships a state: the same directions, and training goes on from them
    discovery.save_networks(tmp_path / "shipped.safetensors", tmp_path / "trained.safetensors")
    assert not any(k.startswith("optimizer.") for k in discovery.load_state(tmp_path / "shipped.safetensors")[0])
    with torch.inference_mode():
        shipped = pack.nodes.DiscoveryTrainer.execute(**{**args, "name": "other", "training_steps": 0,
                                                         "start_from": "shipped.safetensors"}).args[0]
        pack.nodes.DiscoveryTrainer.execute(**{**args, "name": "more", "training_steps": 3,
                                               "start_from": "shipped.safetensors"})
        # another shift limit from a start: the limit annealed in a step (to resume, it is refused)
        pack.nodes.DiscoveryTrainer.execute(**{**args, "name": "wider", "training_steps": 3, "shift_limit": 0.4,
                                               "start_from": "shipped.safetensors"})
    assert torch.equal(shipped.vectors, trained.vectors)
    assert discovery.load_state(tmp_path / "more.safetensors")[1]["step"] == 3
    assert [discovery.load_state(tmp_path / "wider.safetensors")[1][k] for k in ("step", "shift_limit")] == [3, 0.4]


def test_a_state_saved_before_shift_limits_resumes_as_unlimited(pack, pixel_model, tmp_path, monkeypatch):
    import json

    import folder_paths
    from safetensors import safe_open
    from safetensors.torch import save_file

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "hspace_discovery", ([str(tmp_path)], {".safetensors"}))
    args = node_args(pixel_model, name="old", shift_limit=0.0)
    with torch.inference_mode():
        pack.nodes.DiscoveryTrainer.execute(**args)
    path = tmp_path / "old.safetensors"
    with safe_open(str(path), "pt") as f:  # as states were written before the key existed
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    del meta["shift_limit"]
    save_file(tensors, str(path), metadata=meta)
    refused = r"resume: old\.safetensors was trained with shift_limit 0\.0, this run has 0\.5"
    with pytest.raises(ValueError, match=refused):
        with torch.inference_mode():
            pack.nodes.DiscoveryTrainer.execute(**{**args, "shift_limit": 0.5, "training_steps": 2})
    with torch.inference_mode():
        pack.nodes.DiscoveryTrainer.execute(**{**args, "training_steps": 2})
    assert json.loads(safe_open(str(path), "pt").metadata()["step"]) == 2
