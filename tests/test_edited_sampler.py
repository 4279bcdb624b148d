"""The Edited Sampler node against ComfyUI's own KSampler, in-process on real models."""
import pytest
import torch
from conftest import cancelled_at
from tiny_models import comfy_unet, conditioning, save_pixel_ddpm

import nodes as comfy_nodes  # ComfyUI's nodes.py (the stock KSampler)
from comfy_hspace.directions import TIME_INVARIANT, Directions, DirectionsError
from comfy_hspace.editing import EDIT_OFF, sample_asyrp
from comfy_hspace.host.architectures import site_of
from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm


@pytest.fixture(scope="module")
def sd15():
    return comfy_unet("sd15")


@pytest.fixture(scope="module")
def pixel(tmp_path_factory):
    return load_pixel_ddpm(save_pixel_ddpm(tmp_path_factory.mktemp("ddpm")))[0]


def random_directions(model, lat, k=2, seed=0):
    shape = site_of(model).h_shape(lat["samples"].shape)
    g = torch.Generator().manual_seed(seed)
    return Directions(torch.randn(k, 1, *shape, generator=g), torch.tensor([TIME_INVARIANT]),
                      [f"r{i}" for i in range(k)])


def run(pack, model, kind, lat, directions, **kw):
    args = dict(model=model, positive=conditioning(kind), negative=conditioning(kind, 1), latent_image=lat,
                directions=directions, seed=5, steps=4, cfg=2.0, sampler_name="euler_ancestral", scheduler="normal",
                strengths="1.0", sweep="", start_percent=0.0, end_percent=1.0, apply_to="both", mode="both terms",
                eta=1.0, denoise=1.0)
    args.update(kw)
    return pack.nodes.EditedSampler.execute(**args).args[0]["samples"]


def stock(model, kind, lat, sampler="euler_ancestral", cfg=2.0):
    return comfy_nodes.common_ksampler(model, 5, 4, cfg, sampler, "normal", conditioning(kind),
                                       conditioning(kind, 1), lat)[0]["samples"]


@pytest.mark.parametrize("kind", ["sd15", "pixel"])
def test_strength_zero_is_the_stock_ksampler_bit_for_bit(pack, sd15, pixel, kind):
    model = sd15 if kind == "sd15" else pixel
    lat = {"samples": torch.zeros(2, 4 if kind == "sd15" else 3, 16, 16)}
    d = random_directions(model, lat)
    reference = stock(model, kind, lat)
    assert torch.equal(run(pack, model, kind, lat, d, strengths="0"), reference)
    # in a sweep every member gets the same noise (ancestral noise included): member 0 is unedited
    swept = run(pack, model, kind, lat, d, sweep="0, 1.5")
    assert swept.shape[0] == 4
    assert torch.equal(swept[:2], reference)
    assert (swept[2:] - reference).abs().mean() > 1e-3


def test_sweep_is_ordered_and_linear_in_the_multiplier(pack, pixel):
    lat = {"samples": torch.zeros(1, 3, 16, 16)}
    d = random_directions(pixel, lat)
    swept = run(pack, pixel, "pixel", lat, d, sweep="-1, 0, 1", strengths="0.5, 0.25")
    assert swept.shape[0] == 3
    for member, strengths in enumerate(("-0.5, -0.25", "0", "0.5, 0.25")):
        assert torch.equal(swept[member:member + 1], run(pack, pixel, "pixel", lat, d, strengths=strengths)), member
    assert (swept[0] - swept[1]).abs().mean() > 1e-3 and (swept[2] - swept[1]).abs().mean() > 1e-3


def test_asymmetric_without_edit_is_ddim(pack, pixel):
    """With η = 0 and no edit the asymmetric step is DDIM, which is Euler in sigma space for ε-models."""
    lat = {"samples": torch.zeros(2, 3, 16, 16)}
    d = random_directions(pixel, lat)
    ours = run(pack, pixel, "pixel", lat, d, strengths="0", mode="asymmetric (Asyrp)", eta=0.0, cfg=1.0)
    assert torch.allclose(ours, stock(pixel, "pixel", lat, sampler="euler", cfg=1.0), atol=1e-4)
    edited = run(pack, pixel, "pixel", lat, d, mode="asymmetric (Asyrp)", eta=0.0, cfg=1.0)
    assert (edited - ours).abs().mean() > 1e-3


def test_asyrp_step_takes_x0_from_edited_and_direction_from_unedited_pass():
    def model(x, sigma, model_options=None, seed=None):
        edited = not model_options.get("transformer_options", {}).get(EDIT_OFF, False)
        return x * 0.5 + (1.0 if edited else 0.0)  # x0 prediction; the edit shifts it by 1

    x = torch.randn(1, 3, 4, 4)
    sigmas = torch.tensor([2.0, 1.0])
    out = sample_asyrp(model, x, sigmas, extra_args={"model_options": {}}, eta=0.0)
    eps_plain = (x - x * 0.5) / 2.0
    assert torch.allclose(out, x * 0.5 + 1.0 + 1.0 * eps_plain)


def test_edit_interval_limits_the_edit(pack, pixel):
    lat = {"samples": torch.zeros(1, 3, 16, 16)}
    d = random_directions(pixel, lat)
    full = run(pack, pixel, "pixel", lat, d)
    late = run(pack, pixel, "pixel", lat, d, start_percent=0.6)
    none = run(pack, pixel, "pixel", lat, d, start_percent=1.0, end_percent=1.0)
    reference = stock(pixel, "pixel", lat)
    assert torch.equal(none, reference)
    assert 0 < (late - reference).abs().mean() < (full - reference).abs().mean()


def test_wrong_h_shape_fails_before_sampling_naming_both_shapes(pack, sd15):
    lat = {"samples": torch.zeros(1, 4, 16, 16)}
    before = stock(sd15, "sd15", lat)
    options = repr(sd15.model_options)
    big = Directions(torch.randn(1, 1, 1280, 8, 8), torch.tensor([TIME_INVARIANT]), ["sdxl-ish"])
    with pytest.raises(DirectionsError,
                       match=r"h shape \[1280, 8, 8\] does not fit this model, whose h is \[64, 8, 8\]"):
        run(pack, sd15, "sd15", lat, big)
    assert repr(sd15.model_options) == options
    assert torch.equal(stock(sd15, "sd15", lat), before)


def test_bad_strength_lists_name_the_input(pack, sd15):
    lat = {"samples": torch.zeros(1, 4, 16, 16)}
    d = random_directions(sd15, lat)
    with pytest.raises(ValueError, match="strengths: expected 1 or 2 values"):
        run(pack, sd15, "sd15", lat, d, strengths="1, 2, 3")
    with pytest.raises(ValueError, match="sweep: 'x' is not a number"):
        run(pack, sd15, "sd15", lat, d, sweep="1, x")
    with pytest.raises(ValueError, match="edit interval"):
        run(pack, sd15, "sd15", lat, d, start_percent=0.8, end_percent=0.2)


def test_cancel_mid_sweep_leaves_the_input_model_as_it_was(pack, pixel):
    lat = {"samples": torch.zeros(1, 3, 16, 16)}
    d = random_directions(pixel, lat)
    before = stock(pixel, "pixel", lat)
    options = repr(pixel.model_options)
    calls = []
    with cancelled_at(6, calls):  # in the second sweep member: its patched clone is in use
        run(pack, pixel, "pixel", lat, d, sweep="1, 2")
    assert calls[-1] == 6 and calls[0] <= 1
    assert repr(pixel.model_options) == options
    assert torch.equal(stock(pixel, "pixel", lat), before)


def test_sweep_grid_rows_are_directions_and_columns_strengths(pack, tmp_path):
    model, vae = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "ddpm"))
    lat = {"samples": torch.zeros(2, 3, 16, 16)}
    d = random_directions(model, lat, k=3)
    grid = pack.nodes.DirectionSweepGrid.execute(
        model=model, vae=vae, positive=conditioning("pixel"), negative=conditioning("pixel", 1), latent_image=lat,
        directions=d, seed=5, steps=4, cfg=2.0, sampler_name="euler_ancestral", scheduler="normal",
        strengths="-1, 0, 1", mode="both terms", start_percent=0.0, end_percent=1.0, cell_size=32).args[0]
    assert grid.shape[0] == 1 and grid.shape[-1] == 3
    # 6 rows (3 directions × 2 samples) and 3 columns of 32-px cells with 2-px gaps, labels left and on top
    height, width = grid.shape[1:3]
    top, left = height - (6 * 34 - 2), width - (3 * 34 - 2)
    assert top > 10 and left > 10
    assert (grid[0, :top, left:] < 0.5).any() and (grid[0, top:, :left] < 0.5).any()  # text is drawn
    cell = lambda r, c: grid[0, top + r * 34: top + r * 34 + 32: 2, left + c * 34: left + c * 34 + 32: 2]  # noqa: E731
    plain = vae.decode(stock(model, "pixel", lat))
    for r in range(6):  # the zero column of every row is the stock sampler's image of that row's sample
        assert torch.allclose(cell(r, 1), plain[r % 2], atol=1 / 255)
    assert not torch.allclose(cell(0, 0), cell(0, 2), atol=0.05)
    with pytest.raises(ValueError, match="strengths: 'x' is not a number"):
        pack.nodes.DirectionSweepGrid.execute(
            model=model, vae=vae, positive=conditioning("pixel"), negative=conditioning("pixel", 1), latent_image=lat,
            directions=d, seed=5, steps=4, cfg=2.0, sampler_name="euler_ancestral", scheduler="normal",
            strengths="x", mode="both terms", start_percent=0.0, end_percent=1.0, cell_size=32)


def apply_edit(pack, model, directions, **kw):
    args = dict(model=model, directions=directions, strengths="1.0", start_percent=0.0, end_percent=1.0,
                apply_to="both")
    return pack.nodes.ApplyHSpaceEdit.execute(**{**args, **kw}).args[0]


@pytest.mark.parametrize("kind", ["sd15", "pixel"])
def test_apply_edit_with_the_stock_ksampler_is_the_edited_sampler(pack, sd15, pixel, kind):
    """Apply H-space Edit in front of KSampler gives the Edited Sampler's both-terms result bit for
    bit, also with an edit interval and on one pass only; the input model is left as it was."""
    model = sd15 if kind == "sd15" else pixel
    lat = {"samples": torch.zeros(2, 4 if kind == "sd15" else 3, 16, 16)}
    d = random_directions(model, lat)
    before, options = stock(model, kind, lat), repr(model.model_options)
    for settings in ({"strengths": "1.0, -0.5"}, {"start_percent": 0.3, "end_percent": 0.8, "apply_to": "cond"}):
        edited = stock(apply_edit(pack, model, d, **settings), kind, lat)
        assert torch.equal(edited, run(pack, model, kind, lat, d, **settings)), settings
        assert (edited - before).abs().mean() > 1e-3
    assert apply_edit(pack, model, d, strengths="0") is model  # strength 0: the stock model itself
    assert repr(model.model_options) == options and torch.equal(stock(model, kind, lat), before)


def test_apply_edit_follows_a_split_ksampler_advanced_run_and_adds_up(pack, pixel):
    """With KSamplerAdvanced split at step 2 of 4 the edit interval is still a part of the whole
    schedule: an edit from 50% on leaves the first half stock and equals the Edited Sampler's. Two
    Apply nodes in a row add their edits."""
    lat = {"samples": torch.zeros(1, 3, 16, 16)}
    d = random_directions(pixel, lat)
    cond = conditioning("pixel")
    patched = apply_edit(pack, pixel, d, start_percent=0.5, strengths="30")  # late steps have small sigmas

    def advanced(model, start, end, latent, add_noise, leftover):
        return comfy_nodes.KSamplerAdvanced().sample(model, add_noise, 5, 4, 1.0, "euler", "normal", cond, cond,
                                                     latent, start, end, leftover)[0]

    first = advanced(patched, 0, 2, lat, "enable", "enable")
    assert torch.equal(first["samples"], advanced(pixel, 0, 2, lat, "enable", "enable")["samples"])
    split = advanced(patched, 2, 4, first, "disable", "disable")["samples"]
    whole = run(pack, pixel, "pixel", lat, d, start_percent=0.5, cfg=1.0, sampler_name="euler", strengths="30")
    moved = (whole - stock(pixel, "pixel", lat, sampler="euler", cfg=1.0)).abs().mean()
    assert (split - whole).abs().max() < 1e-3 * moved, ((split - whole).abs().max(), moved)

    twice = stock(apply_edit(pack, apply_edit(pack, pixel, d, strengths="0.5"), d, strengths="0.25"), "pixel", lat)
    once = stock(apply_edit(pack, pixel, d, strengths="0.75"), "pixel", lat)
    moved = (once - stock(pixel, "pixel", lat)).abs().mean()
    assert (twice - once).abs().max() < 1e-3 * moved and moved > 1e-3, ((twice - once).abs().max(), moved)


def test_apply_edit_refuses_bad_input_before_sampling(pack, sd15, pixel):
    lat = {"samples": torch.zeros(1, 4, 16, 16)}
    d = random_directions(sd15, lat)
    with pytest.raises(DirectionsError, match="directions: h has 64 channels, this model's h has 32"):
        apply_edit(pack, pixel, d)
    with pytest.raises(ValueError, match="strengths: expected 1 or 2 values"):
        apply_edit(pack, sd15, d, strengths="1, 2, 3")
    with pytest.raises(ValueError, match="edit interval: expected 0 ≤ start ≤ end ≤ 1"):
        apply_edit(pack, sd15, d, start_percent=0.8, end_percent=0.2)
    x_t = Directions(torch.randn(1, 1, 4, 16, 16), torch.tensor([TIME_INVARIANT]), ["x"], space="x_T")
    with pytest.raises(DirectionsError, match="x_T-space directions move the starting noise"):
        apply_edit(pack, sd15, x_t)


def test_apply_edit_names_directions_of_another_resolution_at_the_first_step(pack, pixel):
    """The Apply node does not know the latent size; directions found at another resolution are
    refused at the first UNet call, naming the input and the way out."""
    d = random_directions(pixel, {"samples": torch.zeros(1, 3, 24, 24)})
    with pytest.raises(ValueError, match=r"directions: h shape \[32, 12, 12\] does not fit this model's h "
                                         r"\[32, 8, 8\] at this latent size \(use Resize Directions"):
        stock(apply_edit(pack, pixel, d), "pixel", {"samples": torch.zeros(1, 3, 16, 16)})
