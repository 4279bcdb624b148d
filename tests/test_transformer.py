"""h in diffusion transformers (issue 21): tiny SD3- and Flux-shaped models built by ComfyUI's own
classes, read and edited through ComfyUI's block hooks, against ComfyUI's own samplers."""
import dataclasses

import comfy.sample
import pytest
import torch
from tiny_models import DITS, comfy_dit, comfy_unet, conditioning, tiny_latent

import nodes as comfy_nodes  # ComfyUI's nodes.py (the stock samplers)
from comfy_hspace import directions as D
from comfy_hspace.directions import DirectionsError
from comfy_hspace.host.architectures import BLOCK_OPTION, site_of

KINDS = ["sd3", "flux", "chroma", "qwen", "wan", "hunyuan_video", "auraflow", "ltxv"]
# every family the pack reads (issue 30): the eight above, the classes that share their rows, and the families
# read through a forward hook on the block module (Lumina 2 / Z-Image, HiDream, PixArt, Cosmos, Omnigen2)
ALL_KINDS = list(DITS)
GRID = {kind: (16, 20) if kind == "pixart_sigma" else (8, 6) for kind in ALL_KINDS}
# the residual stream's width in tiny_models' configs
WIDTH = {kind: {"sd3": 128, "zimage": 256, "mochi": 32}.get(kind, 64) for kind in DITS}
LATENT = {"samples": torch.zeros(1, 16, 16, 12)}  # 8 × 6 tokens of 2 × 2: rows and columns told apart
PATCH_ONE = {"samples": torch.zeros(1, 16, 8, 6)}  # 8 × 6 tokens for LTXV, which patchifies at 1 (KSampler makes
# an empty latent [1, 128, 1, 8, 6] of it)


KIND_OF_CONFIG = {config: kind for kind, (config, _) in DITS.items()}


def latent_for(model):
    kind = KIND_OF_CONFIG[type(model.model.model_config).__name__]
    return tiny_latent(kind) if kind not in KINDS else PATCH_ONE if kind == "ltxv" else LATENT


@pytest.fixture(scope="module")
def models():
    return {kind: comfy_dit(kind) for kind in ALL_KINDS}


def stock(model, cond, lat=None, sampler="euler", steps=4):
    lat = latent_for(model) if lat is None else lat
    return comfy_nodes.common_ksampler(model, 5, steps, 1.0, sampler, "simple", cond, cond, lat)[0]["samples"]


def apply_edit(pack, model, directions, strengths="1.0", **kw):
    args = dict(model=model, directions=directions, strengths=strengths, start_percent=0.0, end_percent=1.0,
                apply_to="both")
    return pack.nodes.ApplyHSpaceEdit.execute(**{**args, **kw}).args[0]


def random(model, count=1, seed=0):
    return D.random_directions(count, site_of(model).h_shape(latent_for(model)["samples"].shape), seed, 1.0,
                               site_of(model).fingerprint())


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_edit_at_a_block_moves_the_output_and_strength_zero_is_stock(pack, models, kind, tmp_path):
    model, cond = models[kind], conditioning(kind)
    options, weights = repr(model.model_options), {n: p.clone() for n, p in model.model.named_parameters()}
    before = stock(model, cond)
    d = random(model)
    assert d.h_shape == (WIDTH[kind], *GRID[kind])
    zero = pack.nodes.EditedSampler.execute(
        model=model, positive=cond, negative=cond, latent_image=latent_for(model), directions=d, seed=5, steps=4,
        cfg=1.0, sampler_name="euler", scheduler="simple", strengths="0", sweep="", start_percent=0.0, end_percent=1.0,
        apply_to="both", mode="both terms", eta=0.0, denoise=1.0).args[0]["samples"]
    assert torch.equal(zero, before)
    edited = stock(apply_edit(pack, model, d), cond)
    assert (edited - before).abs().mean() > 1e-2
    # another block, chosen with the H-space Block node, is another h
    elsewhere = pack.nodes.HSpaceBlock.execute(model=model, block=3 if kind == "flux" else 0).args[0]
    other = stock(apply_edit(pack, elsewhere, random(elsewhere)), cond)
    assert (other - before).abs().mean() > 1e-2 and not torch.allclose(other, edited)
    assert repr(model.model_options) == options and torch.equal(stock(model, cond), before)
    assert all(torch.equal(p, weights[n]) for n, p in model.model.named_parameters())
    # the file keeps where the direction was found
    D.save_directions(d, tmp_path / "d.safetensors")
    back = D.load_directions(tmp_path / "d.safetensors")
    assert torch.equal(back.vectors, d.vectors) and back.model_fingerprint == d.model_fingerprint
    assert torch.equal(stock(apply_edit(pack, model, back), cond), edited)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_edit_follows_a_split_ksampler_advanced_run(pack, models, kind):
    model, cond = models[kind], conditioning(kind)
    patched = apply_edit(pack, model, random(model), start_percent=0.5)

    def advanced(m, start, end, latent, add_noise, leftover):
        return comfy_nodes.KSamplerAdvanced().sample(m, add_noise, 5, 4, 1.0, "euler", "simple", cond, cond,
                                                     latent, start, end, leftover)[0]

    first = advanced(patched, 0, 2, latent_for(model), "enable", "enable")
    assert torch.equal(first["samples"], advanced(model, 0, 2, latent_for(model), "enable", "enable")["samples"])
    split = advanced(patched, 2, 4, first, "disable", "disable")["samples"]
    whole = stock(patched, cond)
    assert (whole - stock(model, cond)).abs().mean() > 1e-3
    assert torch.allclose(split, whole, atol=1e-4)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_hook_records_the_image_tokens_as_a_grid_and_pca_finds_directions(pack, models, kind):
    model, cond = models[kind], conditioning(kind)
    acts, samples = pack.nodes.HSpaceHook.execute(
        model=model, positive=cond, negative=cond, latent_image=latent_for(model), n_samples=4, batch_size=2,
        components=2,
        seed=5, steps=3, cfg=1.0, sampler_name="euler", scheduler="simple", latent_is_noise=False,
        keep_samples=False).args[:2]
    pcs = pack.nodes.PCADirections.execute(activations=acts, n_components=2).args[0]
    assert pcs.h_shape == site_of(model).h_shape(latent_for(model)["samples"].shape)
    assert pcs.model_fingerprint == site_of(model).fingerprint()
    # recording leaves sampling as it was: sample 0 is KSampler's for the seed
    expected = stock(model, cond, steps=3)  # float rounding grows with the output (the tiny PixArt's reach 10⁴)
    assert torch.allclose(samples["samples"][:1], expected, atol=1e-6 * max(10.0, expected.abs().max().item()))
    assert (stock(apply_edit(pack, model, pcs, strengths="2, 0"), cond) - stock(model, cond)).abs().mean() > 1e-3


@pytest.mark.parametrize("kind", ["flux", "hunyuan_video", "auraflow"])
def test_an_edit_at_the_last_single_stream_block_lands_on_its_image_token(pack, models, kind):
    """Single-stream blocks hold text and image tokens in one sequence: Flux's text first, AuraFlow's
    learnt registers and text first, HunyuanVideo's image first. After the last one each token only
    goes through the per-token output layer, so in one sampling step a direction at grid cell (0, 0)
    changes the top-left 2 × 2 latent patch and nothing else."""
    model, cond = models[kind], conditioning(kind)
    cond = [[torch.randn(1, 64, 32, generator=torch.Generator().manual_seed(3)), cond[0][1]]]
    last = pack.nodes.HSpaceBlock.execute(model=model, block=3).args[0]
    assert str(site_of(last)).endswith("(single-block 1)")
    d = random(last)
    corner = torch.zeros_like(d.vectors)
    corner[..., 0, 0] = 1.0
    d = dataclasses.replace(d, vectors=d.vectors * corner)
    change = (stock(apply_edit(pack, last, d), cond, steps=1) - stock(model, cond, steps=1)).abs()
    change = change.reshape(-1, *change.shape[-2:]).sum(0)  # over batch, channels (and frames)
    assert change[:2, :2].sum() > 0 and change[2:].sum() == 0 and change[:, 2:].sum() == 0


@pytest.mark.parametrize("kind", ["wan", "hunyuan_video", "ltxv"])
def test_a_video_models_h_stacks_its_frames_and_an_edit_reaches_every_frame(pack, models, kind):
    """A video model's tokens run frame by frame: h is [C, frames × rows, columns]; the Hook records it
    and an edit moves every frame, strength 0 none."""
    model, cond = models[kind], conditioning(kind)
    rows, cols = (4, 3) if kind == "ltxv" else (8, 6)  # LTXV patchifies at 1, the others at 2
    video = {"samples": torch.zeros(1, 16, 3, rows, cols)}  # 3 frames of 4 × 3 tokens
    acts, _ = pack.nodes.HSpaceHook.execute(
        model=model, positive=cond, negative=cond, latent_image=video, n_samples=4, batch_size=2, components=2,
        seed=5, steps=3, cfg=1.0, sampler_name="euler", scheduler="simple", latent_is_noise=False,
        keep_samples=False).args[:2]
    pcs = pack.nodes.PCADirections.execute(activations=acts, n_components=2).args[0]
    assert pcs.h_shape == (WIDTH[kind], 12, 3)
    before = stock(model, cond, video)
    assert torch.equal(stock(apply_edit(pack, model, pcs, strengths="0, 0"), cond, video), before)
    change = (stock(apply_edit(pack, model, pcs, strengths="2, 0"), cond, video) - before).abs().mean((0, 1, 3, 4))
    assert change.shape == (3,) and (change > 1e-3).all()
    longer = {"samples": torch.zeros(1, 16, 5, rows, cols)}
    with pytest.raises(ValueError, match=r"latent_image: a video's h stacks its frames \(5 frames → h \[64, 20, 3\]\)"):
        pack.nodes.ResizeDirections.execute(directions=pcs, model=model, latent_image=longer)


@pytest.mark.parametrize("kind", KINDS)
def test_asymmetric_mode_without_edit_is_the_flow_ddim_step(pack, models, kind):
    """For flow matching, x_next = (1 − σ_next)·x0 + σ_next·ε with ε = (x − (1 − σ)·x0)/σ: with no
    edit that is ComfyUI's Euler step."""
    model, cond = models[kind], conditioning(kind)
    d = random(model)
    args = dict(model=model, positive=cond, negative=cond, latent_image=latent_for(model), directions=d, seed=5,
                steps=4, cfg=1.0, sampler_name="euler", scheduler="simple", sweep="", start_percent=0.0,
                end_percent=1.0, apply_to="both", mode="asymmetric (Asyrp)", eta=0.0, denoise=1.0)
    plain = pack.nodes.EditedSampler.execute(**args, strengths="0").args[0]["samples"]
    assert torch.allclose(plain, stock(model, cond), atol=1e-5)
    edited = pack.nodes.EditedSampler.execute(**args, strengths="1").args[0]["samples"]
    both = pack.nodes.EditedSampler.execute(**{**args, "mode": "both terms"}, strengths="1").args[0]["samples"]
    assert (edited - plain).abs().mean() > 1e-3 and not torch.allclose(edited, both)
    with pytest.raises(ValueError, match="eta: the asymmetric mode samples flow-matching models deterministically"):
        pack.nodes.EditedSampler.execute(**{**args, "eta": 1.0}, strengths="1")


def test_null_conditioning_is_shaped_for_the_model(pack, models):
    several_text_inputs = {"hidream": "HiDream", "hunyuan_dit": "HunyuanDiT", "cosmos_predict2": "Cosmos Predict2",
                           "cosmos": "Cosmos"}
    for kind, model in models.items():
        if kind in several_text_inputs:
            with pytest.raises(ValueError, match=f"model: {several_text_inputs[kind]} takes its text through its own"):
                pack.nodes.NullConditioning.execute(model=model)
            continue
        cond = pack.nodes.NullConditioning.execute(model=model).args[0]
        assert stock(model, cond).isfinite().all(), kind
    assert pack.nodes.NullConditioning.execute().args[0][0][0].shape == (1, 1, 1)
    with pytest.raises(ValueError, match=r"model: UNet \(SD1.x/SD2.x/SDXL\) takes its text through its own"):
        pack.nodes.NullConditioning.execute(model=comfy_unet("sd15"))


@pytest.mark.parametrize("kind", ["sd3", "flux", "chroma", "hunyuan_video"])
def test_the_attention_output_stream_reads_and_writes_the_projected_attention_of_the_image_tokens(pack, models,
                                                                                                  kind):
    """With stream "attention output", h is the output of the block's image-attention projection (before
    its gate): the Hook records what a forward hook of this test's own on that module sees, and an edit
    there is what adding the direction in that module's output gives."""
    model, cond = models[kind], conditioning(kind)
    attention = pack.nodes.HSpaceBlock.execute(model=model, block=1, stream="attention output").args[0]
    site = site_of(attention)
    assert str(site).endswith("attention output")
    module = site.attention_module(1)
    seen = []
    own = module.register_forward_hook(lambda m, i, out: seen.append(out[:, :48].clone()))
    try:
        acts = pack.nodes.HSpaceHook.execute(
            model=attention, positive=cond, negative=cond, latent_image=latent_for(model), n_samples=1, batch_size=1,
            components=0, seed=5, steps=2, cfg=1.0, sampler_name="euler", scheduler="simple", latent_is_noise=False,
            keep_samples=False).args[0]
    finally:
        own.remove()
    grid = [t.transpose(1, 2).reshape(1, WIDTH[kind], 8, 6) for t in seen]
    assert len(grid) == 2 and torch.allclose(acts.means().float(), torch.cat(grid), atol=1e-5)
    assert not torch.allclose(acts.means().float(), pack.nodes.HSpaceHook.execute(
        model=model, positive=cond, negative=cond, latent_image=latent_for(model), n_samples=1, batch_size=1,
        components=0,
        seed=5, steps=2, cfg=1.0, sampler_name="euler", scheduler="simple", latent_is_noise=False,
        keep_samples=False).args[0].means().float(), atol=1e-3)
    d = random(attention)
    assert torch.equal(stock(apply_edit(pack, attention, d, strengths="0"), cond), stock(model, cond))
    offset = d.vectors[0].reshape(WIDTH[kind], 48).T
    own = module.register_forward_hook(lambda m, i, out: torch.cat([out[:, :48] + offset, out[:, 48:]], 1))
    try:
        by_hand = stock(model, cond)
    finally:
        own.remove()
    edited = stock(apply_edit(pack, attention, d), cond)
    assert (edited - stock(model, cond)).abs().mean() > 1e-3 and torch.allclose(edited, by_hand, atol=1e-5)
    with pytest.raises(DirectionsError, match=r"found at the .* block 1 .*, but this model's h is at the .* block 1 "
                                              r".* attention output"):
        apply_edit(pack, attention, random(model))


def test_the_attention_output_is_refused_where_the_pack_does_not_reach_it(pack, models):
    with pytest.raises(ValueError, match=r"stream: the attention output is reached in the double-stream \(joint\) "
                                         r"blocks of SD3, Flux, Chroma, HunyuanVideo, Mochi, HunyuanDiT; "
                                         r"Flux block 3 is a single-block"):
        pack.nodes.HSpaceBlock.execute(model=models["flux"], block=3, stream="attention output")
    with pytest.raises(ValueError, match=r"Wan block 0 is a double-block"):
        pack.nodes.HSpaceBlock.execute(model=models["wan"], block=0, stream="attention output")


def test_the_discovery_trainer_refuses_sd3s_attention_output_and_writes_nothing(pack, models, tmp_path, monkeypatch):
    """SD3 recomputes its blocks in the backward pass, after the attention output's hook is gone: reverse-mode
    gradients there would be silently wrong, so they are refused (Flux's, not recomputed, are checked against
    the explicit Jacobian in test_jacobian)."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "hspace_discovery", ([str(tmp_path)], {".safetensors"}))
    attention = pack.nodes.HSpaceBlock.execute(model=models["sd3"], block=1, stream="attention output").args[0]
    with torch.inference_mode(), pytest.raises(ValueError, match=r"stream: SD3 block 1 .* attention output takes no "
                                                                 r"reverse-mode gradients .* SD3 recomputes its "
                                                                 r"blocks in the backward pass"):
        pack.nodes.DiscoveryTrainer.execute(
            model=attention, positive=conditioning("sd3"), negative=conditioning("sd3"), latent_image=LATENT, count=2,
            magnitude=1.0, steps=3, t_edit=500.0, batch_size=2, training_steps=2, learning_rate=1e-2, seed=0, cfg=1.0,
            name="run", resume=True, save_every=1, regression_weight=0.1, adversarial_weight=0.1,
            direction_samples=1, checkpointed=True)
    assert list(tmp_path.iterdir()) == []


def test_the_hooks_memory_estimate_counts_a_transformers_h(pack, models):
    """Keeping every h trajectory costs the token grid × the stream's width per step: on the tiny Flux at a
    128 × 128 latent, h is 64 channels × 64 × 64 tokens (Flux at 1024² has 3072 × 64 × 64), so a million
    samples of 20 steps (21 with the kept start) need 10⁶ · (21 · 64³ · 2 + 16 · 128² · 4) bytes."""
    big = {"samples": torch.zeros(1, 16, 128, 128)}
    expected = 10 ** 6 * (21 * 64 ** 3 * 2 + 16 * 128 ** 2 * 4) / 2 ** 30
    with pytest.raises(ValueError, match=rf"n_samples: keeping every sample's h trajectory \(1000000 samples × 20 "
                                         rf"steps\) needs about {expected:.1f} GiB on disk"):
        pack.nodes.HSpaceHook.execute(
            model=models["flux"], positive=conditioning("flux"), negative=conditioning("flux"), latent_image=big,
            n_samples=1_000_000, batch_size=2, components=0, seed=5, steps=20, cfg=1.0, sampler_name="euler",
            scheduler="simple", latent_is_noise=False, keep_samples=True)


def test_directions_of_another_block_family_or_unet_fail_before_sampling(pack, models):
    """Directions of another block, family or a UNet are refused before sampling; Jacobian Directions,
    which backpropagates through Flux's in-place blocks, records its site."""
    flux, sd3, unet = models["flux"], models["sd3"], comfy_unet("sd15")
    single = pack.nodes.HSpaceBlock.execute(model=flux, block=3).args[0]
    with pytest.raises(DirectionsError, match=r"found at the Flux block 1 \(double-block 1\), but this model's h "
                                              r"is at the Flux block 3 \(single-block 1\)"):
        apply_edit(pack, single, random(flux))
    with pytest.raises(DirectionsError, match=r"found at the SD3 block 1 .* this model's h is at the Flux block 1"):
        apply_edit(pack, flux, random(sd3))
    unet_dirs = D.random_directions(1, (64, 4, 4), 0, 1.0, site_of(unet).fingerprint())
    with pytest.raises(DirectionsError, match=r"found at the UNet bottleneck, but this model's h is at the Flux"):
        apply_edit(pack, flux, unet_dirs)
    with pytest.raises(DirectionsError, match=r"found at the Flux block 1 .* this model's h is at the UNet bottleneck"):
        apply_edit(pack, unet, random(flux))
    with pytest.raises(ValueError, match=r"block: 4 is outside this Flux model's blocks 0 … 3 \(2 double-block, "
                                         r"2 single-block\)"):
        pack.nodes.HSpaceBlock.execute(model=flux, block=4)
    with pytest.raises(ValueError, match="model: UNetModel is not a transformer"):
        pack.nodes.HSpaceBlock.execute(model=unet, block=0)
    jacobian = pack.nodes.JacobianDirections.execute(
        model=flux, positive=conditioning("flux"), negative=conditioning("flux"), latent_image=LATENT, seed=0,
        steps=3, cfg=1.0, sampler_name="euler", scheduler="simple", step=1, each_step=False, n_directions=2,
        batch_size=2, tolerance=1e-3, max_iterations=3, scale_by_singular_value=False).args[0]
    assert jacobian.h_shape == (64, 8, 6) and jacobian.model_fingerprint == site_of(flux).fingerprint()
    assert BLOCK_OPTION not in flux.model_options


def test_a_tiny_sd3_goes_through_unet_loader_in_the_real_server(tmp_path):
    """ComfyUI's own loader detects SD3 from the state dict (width 64 × depth); in the real server
    Null Conditioning shapes its conditioning, a Hook finds PCA directions at its default block,
    and Apply H-space Edit moves a stock KSampler's sample."""
    from comfy_server import ComfyServer
    from safetensors.torch import load_file
    from tiny_models import save_tiny_sd3

    save_tiny_sd3(tmp_path / "models" / "diffusion_models" / "tiny_sd3.safetensors")
    sampler = {"seed": 5, "steps": 3, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple"}
    cond = {"positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0]}
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_sd3.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "HSpaceNullConditioning", "inputs": {"model": ["1", 0]}},
        "3": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "4": {"class_type": "HSpaceHook", "inputs": {"model": ["1", 0], **cond, "n_samples": 4, "batch_size": 2,
                                                     "components": 2, **sampler, "latent_is_noise": False,
                                                     "keep_samples": False}},
        "5": {"class_type": "HSpacePCADirections", "inputs": {"activations": ["4", 0], "n_components": 2}},
        "6": {"class_type": "HSpaceSaveDirections",
              "inputs": {"directions": ["5", 0], "filename": "sd3_pcs", "overwrite": True}},
        "7": {"class_type": "HSpaceApplyEdit", "inputs": {"model": ["1", 0], "directions": ["5", 0], "strengths": "3",
                                                          "start_percent": 0.0, "end_percent": 1.0,
                                                          "apply_to": "both"}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["7", 0], **cond, **sampler, "denoise": 1.0}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["1", 0], **cond, **sampler, "denoise": 1.0}},
        "10": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "latents/edited"}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "latents/stock"}},
    }
    with ComfyServer(tmp_path) as server:
        server.run(prompt)
    found = sorted((tmp_path / "output" / "latents").iterdir())
    latents = {p.name.split("_")[0]: load_file(p)["latent_tensor"] for p in found}
    assert set(latents) == {"edited", "stock"}, [p.name for p in found]
    assert latents["edited"].shape == latents["stock"].shape == (1, 16, 6, 8)
    assert latents["stock"].isfinite().all() and (latents["edited"] - latents["stock"]).abs().mean() > 1e-3
    saved = D.load_directions(tmp_path / "models" / "hspace_directions" / "sd3_pcs.safetensors")
    assert saved.model_fingerprint.startswith("SD3 block 1 (double-block 1)/") and saved.h_shape == (128, 3, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_inversion_runs_the_flow_ode_up_and_sampling_brings_the_latent_back(models, kind):
    """Flow matching's deterministic step, x' = x + (σ' − σ)·(x − x0)/σ, taken upwards from the
    latent to σ = 1; sampling that noise with ddim returns the latent."""
    from comfy_hspace.host.recording import invert
    from comfy_hspace.settings import SamplerSettings

    model, cond = models[kind], conditioning(kind)
    channels = model.model.latent_format.latent_channels
    latent = torch.randn(1, channels, 16, 12, generator=torch.Generator().manual_seed(0)) * 0.5
    latent = comfy.sample.fix_empty_latent_channels(model, latent)  # Qwen-Image's: [1, 16, 1, 16, 12]
    noise, activations = invert(model, cond, cond, {"samples": latent}, SamplerSettings(0, 30, 1.0, "ddim", "simple"),
                                batch_size=1)
    assert noise.isfinite().all() and activations.parameters["sampler"] == "ddim inversion"

    def sample(start):
        empty = torch.zeros_like(latent)
        return comfy.sample.sample(model, start, 30, 1.0, "ddim", "simple", cond, cond, empty, seed=0)

    back, unrelated = sample(noise), sample(torch.randn(noise.shape, generator=torch.Generator().manual_seed(1)))
    assert (back - latent).abs().mean() < 0.1 * (unrelated - latent).abs().mean()


@pytest.mark.parametrize("kind", ["sd3", "flux", "qwen", "wan", "auraflow", "ltxv"])
def test_discovery_trainer_trains_on_a_transformer(pack, models, kind, tmp_path, monkeypatch):
    """Through the flow chain and, for Flux, reverse mode through its in-place blocks: the shift block
    moves away from its zero start and the directions have the block's grid (Wan: two frames)."""
    import folder_paths

    from comfy_hspace import discovery

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "hspace_discovery", ([str(tmp_path)], {".safetensors"}))
    model, cond = models[kind], conditioning(kind)
    latent = {"samples": torch.zeros(1, 16, 2, 8, 6)} if kind == "wan" else latent_for(model)
    top = float(model.get_model_object("model_sampling").timestep(torch.tensor(1.0)))  # 1000 for SD3, 1 for Flux
    with torch.inference_mode():
        per_step, _ = pack.nodes.DiscoveryTrainer.execute(
            model=model, positive=cond, negative=cond, latent_image=latent, count=2, magnitude=1.0, steps=3,
            t_edit=top / 2, batch_size=2, training_steps=2, learning_rate=1e-2, seed=0, cfg=1.0, name="run",
            resume=True, save_every=1, regression_weight=0.1, adversarial_weight=0.1, direction_samples=1,
            checkpointed=True).args
    tensors, meta = discovery.load_state(tmp_path / "run.safetensors")
    assert meta["step"] == 2 and meta["settings"]["flow"] is True
    assert tensors["shift.out_weight"].abs().sum() > 0
    assert per_step.h_shape == site_of(model).h_shape(latent["samples"].shape)
    assert per_step.model_fingerprint == site_of(model).fingerprint() and per_step.vectors.abs().sum() > 0


def hook(pack, model, kind, n_samples=2, components=0):
    return pack.nodes.HSpaceHook.execute(
        model=model, positive=conditioning(kind), negative=conditioning(kind), latent_image=latent_for(model),
        n_samples=n_samples, batch_size=2, components=components, seed=5, steps=2, cfg=1.0, sampler_name="euler",
        scheduler="simple", latent_is_noise=False, keep_samples=False).args[0]


# ComfyUI's block hook (Flux: a double- and a single-stream block), a forward hook on the block (Z-Image)
@pytest.mark.parametrize("kind, first_block", [("flux", 1), ("zimage", 0)])
def test_several_blocks_are_one_h_each_edited_by_its_slice_and_weight(pack, models, kind, first_block):
    """H-space Block with two blocks: h is their grids stacked along the channels (the Hook's means are the
    single blocks' side by side), and an edit there with weights 1 and 0.5 is the same as editing the first
    block by the first half and the second by half the second."""
    model, cond = models[kind], conditioning(kind)
    blocks = f"{first_block}-{first_block + 1}"
    both = pack.nodes.HSpaceBlock.execute(model=model, block=-1, blocks=blocks, weights="1, 0.5").args[0]
    one, two = (pack.nodes.HSpaceBlock.execute(model=model, block=b).args[0] for b in (first_block, first_block + 1))
    site = site_of(both)
    assert str(site) == f"{site.architecture.name} blocks {blocks}" and site.weights == (1.0, 0.5)
    width = WIDTH[kind]
    assert site.h_shape(latent_for(model)["samples"].shape) == (2 * width, *GRID[kind])
    assert torch.equal(hook(pack, both, kind).means(), torch.cat([hook(pack, one, kind).means(),
                                                                   hook(pack, two, kind).means()], dim=1))
    d = random(both)
    first = dataclasses.replace(d, vectors=d.vectors[:, :, :width], model_fingerprint=site_of(one).fingerprint())
    second = dataclasses.replace(d, vectors=d.vectors[:, :, width:], model_fingerprint=site_of(two).fingerprint())
    at_two = pack.nodes.HSpaceBlock.execute(model=apply_edit(pack, one, first), block=first_block + 1).args[0]
    chained = apply_edit(pack, at_two, second, strengths="0.5")
    together = stock(apply_edit(pack, both, d), cond)
    assert (together - stock(model, cond)).abs().mean() > 1e-3
    assert torch.allclose(together, stock(chained, cond), atol=1e-5)
    with pytest.raises(ValueError, match="weights: 3 weights for 2 blocks"):
        pack.nodes.HSpaceBlock.execute(model=model, block=-1, blocks=blocks, weights="1, 1, 1")
    with pytest.raises(ValueError, match="blocks: expected block indices like '10-14' or '3, 7', got '1-x'"):
        pack.nodes.HSpaceBlock.execute(model=model, block=-1, blocks="1-x")
    with pytest.raises(ValueError, match=r"block: 9 is outside this"):
        pack.nodes.HSpaceBlock.execute(model=model, block=-1, blocks="1, 9")
    with pytest.raises(DirectionsError, match=rf"found at the .* blocks {blocks}, but this model.s h is at the"):
        apply_edit(pack, one, d)


@pytest.mark.parametrize("kind", ["flux", "zimage"])
def test_two_edits_on_one_block_add_up(pack, models, kind):
    model, cond = models[kind], conditioning(kind)
    a, b = random(model, seed=1), random(model, seed=2)
    summed = dataclasses.replace(a, vectors=a.vectors + b.vectors)
    twice = stock(apply_edit(pack, apply_edit(pack, model, a), b), cond)
    assert (twice - stock(apply_edit(pack, model, a), cond)).abs().mean() > 1e-3
    assert torch.allclose(twice, stock(apply_edit(pack, model, summed), cond), atol=1e-5)


# the reference's tokens come before the image's in every block: HunyuanVideo's image-to-video ref_latent, Wan
# Fun's reference image (a model with its ref_conv); the last block is followed only by the per-token head
REFERENCES = {"hunyuan_video": (3, {"ref_latent": torch.randn(1, 16, 1, 16, 12)}),
              "wan_reference": (1, {"reference_latents": [torch.randn(1, 16, 1, 16, 12)]})}


@pytest.mark.parametrize("kind", list(REFERENCES))
def test_the_image_tokens_are_read_after_a_reference_latents(pack, models, kind):
    """A direction at grid cell (0, 0) of the last block changes only the top-left patch, also when a
    reference image's tokens come first."""
    model, cond = models[kind], conditioning(kind)
    block, reference = REFERENCES[kind]
    cond = [[cond[0][0], {**cond[0][1], **reference}]]
    last = pack.nodes.HSpaceBlock.execute(model=model, block=block).args[0]
    d = random(last)
    corner = torch.zeros_like(d.vectors)
    corner[..., 0, 0] = 1.0
    d = dataclasses.replace(d, vectors=d.vectors * corner)
    change = (stock(apply_edit(pack, last, d), cond, steps=1) - stock(model, cond, steps=1)).abs()
    change = change.reshape(-1, *change.shape[-2:]).sum(0)
    assert change[:2, :2].sum() > 0 and change[2:].sum() == 0 and change[:, 2:].sum() == 0


def test_disentangle_and_resize_directions_work_on_a_transformer(pack, models):
    model, cond = models["flux"], conditioning("flux")
    pcs = pack.nodes.PCADirections.execute(activations=hook(pack, model, "flux", n_samples=4, components=2),
                                           n_components=2).args[0]
    primary = pack.nodes.SelectDirections.execute(directions=pcs, indices="0").args[0]
    others = random(model, seed=3)
    clean = pack.nodes.Disentangle.execute(primary=primary, others=others).args[0]
    assert clean.model_fingerprint == pcs.model_fingerprint and clean.h_shape == pcs.h_shape
    for t in range(clean.vectors.shape[1]):
        assert abs(float(clean.vectors[0, t].flatten() @ others.vectors[0, 0].flatten())) < 1e-3
    assert (stock(apply_edit(pack, model, clean, strengths="2"), cond) - stock(model, cond)).abs().mean() > 1e-3
    bigger = {"samples": torch.zeros(1, 16, 24, 16)}
    resized = pack.nodes.ResizeDirections.execute(directions=clean, model=model, latent_image=bigger).args[0]
    assert resized.h_shape == (64, 12, 8)
    moved = stock(apply_edit(pack, model, resized, strengths="2"), cond, bigger) - stock(model, cond, bigger)
    assert moved.abs().mean() > 1e-3


def test_every_model_comfyui_runs_is_read_or_refused_and_the_readme_table_says_so(models):
    """Every model of ComfyUI 0.3.75's supported_models builds a diffusion model class that the one table reads
    or refuses with a reason; every transformer row is one of the tiny models here; the README's table is the
    one scripts/architectures_table.py generates."""
    import architectures_table

    from comfy_hspace.host.architectures import TRANSFORMERS, Architecture, read_or_refused

    unknown = [(name, cls.__name__) for name, classes, _ in architectures_table.supported_models() for cls in classes
               if not read_or_refused(cls)]
    assert unknown == []
    built = {read_or_refused(type(m.get_model_object("diffusion_model"))) for m in models.values()}
    assert all(isinstance(row, Architecture) for row in built)
    assert [row.name for row in TRANSFORMERS if row not in built] == []
    readme = architectures_table.README.read_text()
    assert architectures_table.readme_with(readme, architectures_table.table()) == readme, \
        "README's table is stale: run scripts/architectures_table.py"
