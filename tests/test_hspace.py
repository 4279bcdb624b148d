"""h-space access on clones of real ComfyUI models: SD1.5- and SDXL-shaped UNets built by
ComfyUI's own classes, and a pixel-space diffusers DDPM loaded through the pack's loader."""
import comfy.sample
import comfy.samplers
import pytest
import torch
from tiny_models import comfy_unet, conditioning, save_pixel_ddpm

from comfy_hspace.directions import TIME_INVARIANT
from comfy_hspace.editing import HSpaceEdit
from comfy_hspace.host.architectures import site_of
from comfy_hspace.host.patch import hspace_clone
from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm
from comfy_hspace.recorder import HSpaceRecorder

KINDS = ["sd15", "sdxl", "pixel"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = save_pixel_ddpm(tmp_path_factory.mktemp("ddpm"))
    return {"sd15": comfy_unet("sd15"), "sdxl": comfy_unet("sdxl"), "pixel": load_pixel_ddpm(folder)[0]}


def latent(kind, batch=2):
    return torch.zeros(batch, 3 if kind == "pixel" else 4, 16, 16)


def sample(model, kind, seed=1, steps=4, cfg=2.0, sampler="euler"):
    lat = latent(kind)
    noise = comfy.sample.prepare_noise(lat, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "normal", conditioning(kind),
                               conditioning(kind, 1), lat, seed=seed, disable_pbar=True)


@pytest.mark.parametrize("kind", KINDS)
def test_recording_clone_sees_every_call_and_changes_nothing(models, kind):
    model = models[kind]
    before = sample(model, kind)
    options_before = repr(model.model_options)
    recorder = HSpaceRecorder()
    recorded = sample(hspace_clone(model, site_of(model), recorder=recorder), kind)
    assert torch.equal(recorded, before)
    h, t, chunks = recorder.stacked()
    # 4 steps × (cond + uncond) × batch 2; h has the bottleneck's shape
    assert h.shape == (16, *site_of(model).h_shape(latent(kind).shape))
    assert sorted(chunks.unique().tolist()) == [0, 1]
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", 4)[:-1]
    assert torch.allclose(t.unique().sort(descending=True).values, ms.timestep(sigmas).float())
    assert repr(model.model_options) == options_before  # the input model got no patch


@pytest.mark.parametrize("kind", KINDS)
def test_edited_clone_changes_output_and_leaves_the_original_alone(models, kind):
    model = models[kind]
    before = sample(model, kind)
    shape = site_of(model).h_shape(latent(kind).shape)
    edit = HSpaceEdit(torch.randn(1, *shape), torch.tensor([TIME_INVARIANT]))
    edited = sample(hspace_clone(model, site_of(model), edit=edit), kind)
    assert (edited - before).abs().mean() > 1e-3
    assert torch.equal(sample(model, kind), before)


def test_apply_to_uncond_does_nothing_when_only_cond_is_computed(models):
    model = models["sd15"]
    shape = site_of(model).h_shape(latent("sd15").shape)
    before = sample(model, "sd15", cfg=1.0)  # cfg 1: ComfyUI computes the cond pass only
    uncond_only = HSpaceEdit(torch.randn(1, *shape), torch.tensor([TIME_INVARIANT]), apply_to="uncond")
    assert torch.equal(sample(hspace_clone(model, site_of(model), edit=uncond_only), "sd15", cfg=1.0), before)
    cond_only = HSpaceEdit(uncond_only.offsets, uncond_only.timesteps, apply_to="cond")
    assert not torch.equal(sample(hspace_clone(model, site_of(model), edit=cond_only), "sd15", cfg=1.0), before)


def test_edit_rows_follow_cond_or_uncond_chunks():
    h = torch.zeros(4, 2, 1, 1)
    edit = HSpaceEdit(torch.ones(1, 2, 1, 1), torch.tensor([TIME_INVARIANT]), apply_to="uncond")
    sig = torch.full((4,), 5.0)
    chunks = torch.tensor([1, 1, 0, 0])  # uncond rows first: order is not guaranteed
    out = edit.apply(h, sig, torch.full((4,), 500.0), chunks)
    assert out[:2].eq(1).all() and out[2:].eq(0).all()


def test_nearest_stored_timestep_and_interval_are_used():
    offsets = torch.stack([torch.full((1, 1, 1), 1.0), torch.full((1, 1, 1), 2.0)])
    edit = HSpaceEdit(offsets, torch.tensor([900.0, 100.0]), sigma_start=10.0, sigma_end=1.0)
    h = torch.zeros(3, 1, 1, 1)
    out = edit.apply(h, torch.tensor([5.0, 5.0, 20.0]), torch.tensor([800.0, 300.0, 990.0]), torch.zeros(3))
    assert out.flatten().tolist() == [1.0, 2.0, 0.0]  # the third row's sigma is outside the interval


def test_pixel_model_schedule_matches_diffusers(tmp_path):
    from diffusers import DDPMScheduler
    from tiny_models import PIXEL_SCHEDULER

    model, vae = load_pixel_ddpm(save_pixel_ddpm(tmp_path))
    ms = model.get_model_object("model_sampling")
    ac = DDPMScheduler.from_config(PIXEL_SCHEDULER).alphas_cumprod
    assert torch.allclose(ms.sigmas.double(), ((1 - ac) / ac).sqrt().double(), rtol=1e-4)
    image = vae.decode(torch.zeros(1, 3, 16, 16))
    assert image.shape == (1, 16, 16, 3) and torch.allclose(image, torch.full_like(image, 0.5))


def test_pixel_model_matches_the_diffusers_unet(tmp_path):
    """ComfyUI's EPS wrapper around our adapter gives x0 = x − σ·ε(x/√(σ²+1), t) of the diffusers UNet."""
    from diffusers import UNet2DModel

    folder = save_pixel_ddpm(tmp_path)
    model, _ = load_pixel_ddpm(folder)
    unet = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True)
    x, sigma = torch.randn(1, 3, 16, 16), torch.tensor([2.0])
    ms = model.get_model_object("model_sampling")
    t = ms.timestep(sigma).float()
    eps = unet(x / (sigma ** 2 + 1).sqrt(), t).sample
    out = model.model.apply_model(x, sigma, c_crossattn=torch.zeros(1, 1, 1))
    assert torch.allclose(out, x - sigma * eps, atol=1e-4)


def test_pixel_loader_refuses_pickled_weights_and_missing_config(tmp_path):
    folder = save_pixel_ddpm(tmp_path / "m")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled .bin weights are not loaded"):
        load_pixel_ddpm(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no unet/config.json"):
        load_pixel_ddpm(tmp_path / "empty")


def test_the_patch_leaves_h_alone_after_a_patch_that_fused_the_skip_connection(models):
    """Newer ComfyUI lets an output-block patch (SUPIR's) fuse the skip connection into h and
    return hsp = None; h is then not the bottleneck's any more and must not be edited."""
    model = models["sd15"]
    edit = HSpaceEdit(torch.ones(1, 64, 2, 2), torch.tensor([TIME_INVARIANT]))
    clone = hspace_clone(model, site_of(model), edit=edit)
    patch = clone.model_options["transformer_options"]["patches"]["output_block_patch"][-1]
    h = torch.zeros(2, 64, 2, 2)
    options = {"block": ("output", 0), "sigmas": torch.tensor([1.0, 1.0]), "cond_or_uncond": [0]}
    edited, hsp = patch(h, torch.zeros(2, 64, 2, 2), options)
    assert torch.equal(edited, torch.ones(2, 64, 2, 2)) and hsp is not None
    fused, none = patch(h, None, options)
    assert fused is h and none is None
