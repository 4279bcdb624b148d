"""Any schedule, any channel count (issue 30, part 6): a diffusers UNet2DModel folder loads with the
parametrisation its scheduler config names, checked against diffusers' own scheduler arithmetic, and
whatever gates by time reads the schedule's percent, so EDM models are gated too."""
import comfy.sample
import pytest
import torch
from tiny_models import PIXEL_SCHEDULER, PIXEL_UNET, save_pixel_ddpm

import nodes as comfy_nodes  # ComfyUI's nodes.py
from comfy_hspace.attribute import attribute_direction
from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm
from comfy_hspace.host.recording import record_activations
from comfy_hspace.settings import SamplerSettings

EDM = {"_class_name": "EDMEulerScheduler", "sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5,
       "prediction_type": "epsilon"}
CONSISTENCY = {"_class_name": "CMStochasticIterativeScheduler", "sigma_min": 0.002, "sigma_max": 80.0,
               "sigma_data": 0.5}
SCHEDULERS = {
    "ddpm epsilon": PIXEL_SCHEDULER,
    "ddim v": {**PIXEL_SCHEDULER, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"},
    "ddpm sample": {**PIXEL_SCHEDULER, "prediction_type": "sample"},
    "edm epsilon": EDM,
    "edm v": {**EDM, "prediction_type": "v_prediction"},
    "consistency": CONSISTENCY,
}


def diffusers_x0(unet, scheduler: dict, x_ve: torch.Tensor, sigma: float) -> torch.Tensor:
    """x0 as diffusers' own scheduler computes it from the UNet at noise level sigma, for a sample in
    ComfyUI's form x0 + σ·ε."""
    import diffusers

    sched = getattr(diffusers, scheduler["_class_name"]).from_config(scheduler)
    s = torch.tensor(sigma)
    if scheduler["_class_name"].startswith("EDM"):
        out = unet(sched.precondition_inputs(x_ve, s), sched.precondition_noise(s)).sample
        return sched.precondition_outputs(x_ve, out, s)
    if scheduler["_class_name"].startswith("CM"):
        c_skip, c_out = sched.get_scalings_for_boundary_condition(s)
        # scale_model_input's scaling, which diffusers applies at the scheduler's own step index
        t = torch.tensor(sched.sigma_to_t(s.numpy()), dtype=torch.float32).reshape(1)
        out = unet(x_ve / (s ** 2 + sched.config.sigma_data ** 2) ** 0.5, t).sample
        return c_skip * x_ve + c_out * out
    alpha = sched.alphas_cumprod
    t = int((((1 - alpha) / alpha) ** 0.5 - sigma).abs().argmin())  # the discrete timestep at this sigma
    a = alpha[t]
    x_t = x_ve * a ** 0.5  # the variance-preserving sample
    out = unet(x_t, torch.tensor([t])).sample
    kind = scheduler["prediction_type"]
    if kind == "epsilon":
        return (x_t - (1 - a) ** 0.5 * out) / a ** 0.5
    if kind == "v_prediction":
        return a ** 0.5 * x_t - (1 - a) ** 0.5 * out
    return out


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_each_parametrisation_gives_diffusers_x0(name, tmp_path):
    scheduler = SCHEDULERS[name]
    model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "m", scheduler=scheduler))
    ms = model.get_model_object("model_sampling")
    unet = model.model.diffusion_model.unet
    sigmas = [float(ms.sigmas[len(ms.sigmas) // 4]), float(ms.sigmas[len(ms.sigmas) // 2])]
    for sigma in sigmas:
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * (1 + sigma)
        with torch.no_grad():
            ours = model.model.apply_model(x, torch.full((2,), sigma))
            theirs = diffusers_x0(unet, scheduler, x, sigma)
        assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (name, sigma, (ours - theirs).abs().max())


def test_edm_and_consistency_models_sample_with_stock_samplers(tmp_path):
    for scheduler, sampler in ((EDM, "euler"), (CONSISTENCY, "lcm")):
        model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / scheduler["_class_name"], scheduler=scheduler))
        out = comfy_nodes.common_ksampler(model, 1, 4, 1.0, sampler, "karras", [[torch.zeros(1, 1, 1), {}]],
                                          [[torch.zeros(1, 1, 1), {}]],
                                          {"samples": torch.zeros(1, 3, 16, 16)})[0]["samples"]
        assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all() and out.std() > 0


def test_a_grey_model_takes_one_channel_and_decodes_to_rgb(tmp_path):
    model, vae = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "grey", config={**PIXEL_UNET, "in_channels": 1,
                                                                            "out_channels": 1}))
    empty = comfy_nodes.EmptyImage().generate(16, 16, 1)[0]  # a blank RGB image, encoded by the grey VAE
    latent = vae.encode(empty)
    assert latent.shape == (1, 1, 16, 16)
    # ComfyUI's empty 3-channel pixel latent gets the model's one channel, as KSampler gives it
    assert comfy.sample.fix_empty_latent_channels(model, torch.zeros(1, 3, 16, 16)).shape == (1, 1, 16, 16)
    out = comfy_nodes.common_ksampler(model, 1, 3, 1.0, "euler", "normal", [[torch.zeros(1, 1, 1), {}]],
                                      [[torch.zeros(1, 1, 1), {}]], {"samples": torch.zeros(1, 3, 16, 16)})[0]
    assert out["samples"].shape == (1, 1, 16, 16)
    image = vae.decode(out["samples"])
    assert image.shape == (1, 16, 16, 3) and torch.equal(image[..., 0], image[..., 2])


def test_start_percent_gates_an_edm_model_by_the_schedule(tmp_path):
    """EDM's model timesteps are 0.25·ln σ (about −1.6 … 1.1): a gate at (1 − percent)·999 never fired."""
    model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "edm", scheduler=EDM))
    acts, _ = record_activations(model, [[torch.zeros(1, 1, 1), {}]], [[torch.zeros(1, 1, 1), {}]],
                                 {"samples": torch.zeros(1, 3, 16, 16)}, SamplerSettings(3, 8, 1.0, "euler", "karras"),
                                 n_samples=4, batch_size=4, components=0)
    timesteps, percents = acts.timesteps, acts.percents
    assert timesteps.max() < 2 and len(percents) == len(timesteps)
    assert (percents.diff() > 0).all() and percents[0] < 0.05  # high to low noise: percent rises
    negative, _ = record_activations(model, [[torch.zeros(1, 1, 1), {}]], [[torch.zeros(1, 1, 1), {}]],
                                     {"samples": torch.zeros(1, 3, 16, 16)},
                                     SamplerSettings(99, 8, 1.0, "euler", "karras"), n_samples=4, batch_size=4,
                                     components=0)
    w = attribute_direction(acts, negative, start_percent=0.5).vectors[0]
    late = percents >= 0.5
    assert late.any() and not late.all()
    assert w[~late].abs().max() == 0 and (w[late].flatten(1).abs().amax(1) > 0).all()


def test_a_class_label_that_is_not_a_whole_number_is_refused(tmp_path):
    model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "cond", config={**PIXEL_UNET, "num_class_embeds": 4}))
    with pytest.raises(ValueError, match=r"conditioning: class 1.5 is not a whole number"):
        model.model.encode_adm(hspace_class=1.5)
    assert float(model.model.encode_adm(hspace_class=2)) == 2.0
