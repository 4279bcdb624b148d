"""The Direction Report: its measures against a direct computation, the node on the embedded model (PCA more
consistent than random directions of the same norms and moving the images more, attribute directions moving
their own attribute most), with CLIP vision models (a tiny one of ComfyUI's own class in process, a full-size
one through ComfyUI's CLIP Vision Loader in the real server), and bad input refused with nothing lost."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from tiny_models import init_weights, save_pixel_ddpm

from comfy_hspace import directions as D
from comfy_hspace import report as R
from comfy_hspace.host import embedded
from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm

STRENGTHS = [-2.0, -1.0, 0.0, 1.0, 2.0]


def direct_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two [H, W, 3] images, window by window in plain loops (Gaussian 11, σ 1.5)."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / g.sum() ** 2
    values = []
    for c in range(3):
        for i in range(a.shape[0] - 10):
            for j in range(a.shape[1] - 10):
                x, y = a[i:i + 11, j:j + 11, c], b[i:i + 11, j:j + 11, c]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy = (w * x * x).sum() - mx ** 2, (w * y * y).sum() - my ** 2
                cov = (w * x * y).sum() - mx * my
                values.append(((2 * mx * my + 1e-4) * (2 * cov + 9e-4))
                              / ((mx ** 2 + my ** 2 + 1e-4) * (vx + vy + 9e-4)))
    return float(np.mean(values))


def test_the_measures_equal_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(5, 4, 6, generator=g, dtype=torch.float64)
    images = torch.rand(5, 4, 16, 16, 3, generator=g)
    m = R.measure_direction("d", STRENGTHS, features, images, feature_names=list("abcdef"))
    change = (features - features[2]).numpy()
    assert np.allclose(m.effect, [np.mean([np.linalg.norm(change[s, n]) for n in range(4)]) for s in range(5)])
    top = change[4]
    cosines = [top[i] @ top[j] / np.linalg.norm(top[i]) / np.linalg.norm(top[j])
               for i in range(4) for j in range(4) if i != j]
    assert m.consistency == pytest.approx(np.mean(cosines))
    f = features.numpy()
    cosine = [f[4, n] @ f[2, n] / np.linalg.norm(f[4, n]) / np.linalg.norm(f[2, n]) for n in range(4)]
    assert m.preservation == pytest.approx(np.mean(cosine))
    a, b = images[4].numpy().astype(np.float64), images[2].numpy().astype(np.float64)
    assert m.psnr == pytest.approx(np.mean([10 * np.log10(1 / np.mean((a[n] - b[n]) ** 2)) for n in range(4)]),
                                   rel=1e-5)
    assert m.ssim == pytest.approx(np.mean([direct_ssim(a[n], b[n]) for n in range(4)]), rel=1e-4)
    unit = top.mean(0) / np.linalg.norm(top.mean(0))
    projected = change @ unit
    assert m.monotonicity == pytest.approx(stats.spearmanr(np.repeat(STRENGTHS, 4), projected.reshape(-1))[0])
    assert m.linearity == pytest.approx(stats.linregress(STRENGTHS, projected.mean(1)).rvalue ** 2)
    assert m.moves_most == "abcdef"[int(np.abs(top.mean(0)).argmax())]
    text = torch.randn(6, generator=g, dtype=torch.float64)
    with_text = R.measure_direction("d", STRENGTHS, features, images, text_direction=text)
    assert with_text.clip_directional == pytest.approx(np.mean([t @ text.numpy() / np.linalg.norm(t)
                                                                / np.linalg.norm(text.numpy()) for t in top]))
    same = R.measure_direction("d", STRENGTHS, features[[2, 2, 2, 2, 2]], images[[2, 2, 2, 2, 2]])
    assert same.psnr == 100.0 and same.ssim == pytest.approx(1.0) and same.effect == [0.0] * 5


def test_calibration_gives_every_direction_the_same_effect_at_strength_one():
    d = D.Directions(torch.ones(3, 1, 2, 2, 2), torch.tensor([D.TIME_INVARIANT]), ["a", "b", "c"])
    measures = [R.Measures(n, STRENGTHS, [2 * k, k, 0.0, k, 2 * k], 1, 1, 1, 1, 1, 1)
                for n, k in zip("abc", (1.0, 2.0, 4.0))]
    median = R.calibrated(d, measures)
    assert median.vectors[:, 0, 0, 0, 0].tolist() == [2.0, 1.0, 0.5]
    assert median.parameters["calibration"] == {"effect_at_strength_1": 2.0, "scales": [2.0, 1.0, 0.5]}
    assert R.calibrated(d, measures, effect=1.0).vectors[:, 0, 0, 0, 0].tolist() == [1.0, 0.5, 0.25]
    still = measures[:2] + [R.Measures("c", STRENGTHS, [0.0] * 5, 1, 1, 1, 1, 1, 1)]
    with pytest.raises(ValueError, match="directions: c changed nothing measurable"):
        R.calibrated(d, still)


@pytest.fixture(scope="module")
def faces_model():
    model, vae = embedded.load_model()
    return model, vae, embedded.conditioning("null")


def report(pack, model, vae, cond, directions, **kw):
    args = dict(model=model, positive=cond, negative=cond, latent_image={"samples": torch.zeros(1, 3, 32, 32)},
                vae=vae, directions=directions, seed=0, steps=10, cfg=1.0, sampler_name="ddim",
                scheduler="ddim_uniform", samples=8, strengths="-2, -1, 0, 1, 2", features="auto", mode="both terms",
                calibrate_to=0.0)
    with torch.inference_mode():
        return pack.nodes.DirectionReport.execute(**{**args, **kw})


def test_on_the_embedded_model_pca_is_more_consistent_than_random_and_attributes_move_their_own(pack, faces_model):
    model, vae, null = faces_model
    latent = {"samples": torch.zeros(1, 3, 32, 32)}
    with torch.inference_mode():
        acts = pack.nodes.HSpaceHook.execute(
            model=model, positive=null, negative=null, latent_image=latent, n_samples=64, batch_size=32,
            components=3, seed=0, steps=10, cfg=1.0, sampler_name="ddim", scheduler="ddim_uniform",
            latent_is_noise=False, keep_samples=False).args[0]
    pcs = pack.nodes.PCADirections.execute(activations=acts, n_components=2).args[0]
    random = pack.nodes.RandomDirections.execute(model=model, latent_image=latent, count=2, seed=0, rms=1.0,
                                                 like=pcs).args[0]
    out = report(pack, model, vae, null, pcs, samples=16, steps=20)
    rows = json.loads(out.args[1])
    assert [r["name"] for r in rows] == pcs.names and all(r["features"] == "face classifier" for r in rows)
    assert out.args[0].shape == (1, 480, 960, 3) and "consistency" in out.ui.as_dict()["text"][0]
    random_rows = json.loads(report(pack, model, vae, null, random, samples=16, steps=20).args[1])
    def mean(table, key):
        return sum(r[key][-1] if key == "effect" else r[key] for r in table) / len(table)

    # measured: consistency 0.23, 0.39 against 0.19, 0.12; effect at +2 1.9× random's
    assert mean(rows, "consistency") > mean(random_rows, "consistency")
    assert mean(rows, "effect") > 1.5 * mean(random_rows, "effect")
    with torch.inference_mode():
        acts, samples = pack.nodes.HSpaceHook.execute(
            model=model, positive=null, negative=null, latent_image=latent, n_samples=64, batch_size=32,
            components=0, seed=1, steps=10, cfg=1.0, sampler_name="ddpm", scheduler="ddim_uniform",
            latent_is_noise=False, keep_samples=True).args
    scores = pack.nodes.FaceScores.execute(images=vae.decode(samples["samples"])).args[0]
    attributes = [pack.nodes.AttributeDirection.execute(activations=acts, scores=scores, attribute=name, count=16,
                                                        space="h").args[0] for name in ("smile", "glasses")]
    both = pack.nodes.CombineDirections.execute(a=attributes[0], b=attributes[1], mode="stack", weight_a=1.0,
                                                weight_b=1.0).args[0]
    moved = [r["moves_most"] for r in json.loads(report(pack, model, vae, null, both).args[1])]
    assert moved == ["smile", "glasses"]


def tiny_clip_vision(tmp_path, image_size=32, patch=4):
    """A CLIP vision model of ComfyUI's own class (comfy.clip_vision.ClipVisionModel) at a tiny config."""
    import comfy.clip_vision

    config = {"hidden_act": "quick_gelu", "hidden_size": 32, "image_size": image_size, "intermediate_size": 64,
              "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2,
              "num_channels": 3, "num_hidden_layers": 2, "patch_size": patch, "projection_dim": 16}
    path = tmp_path / "tiny_clip_vision.json"
    path.write_text(json.dumps(config))
    clip_vision = comfy.clip_vision.ClipVisionModel(str(path))
    torch.manual_seed(0)
    init_weights(clip_vision.model)
    return clip_vision


def test_a_clip_vision_model_is_the_feature_space(pack, faces_model, tmp_path):
    model, vae, null = faces_model
    d = D.random_directions(2, (96, 8, 8), 0, 1.0)
    rows = json.loads(report(pack, model, vae, null, d, clip_vision=tiny_clip_vision(tmp_path)).args[1])
    assert all(r["features"] == "clip vision" and r["moves_most"] == "" for r in rows)
    assert all(r["effect"][2] == 0 and r["effect"][4] > 0 for r in rows)


def test_bad_input_is_refused_and_nothing_is_lost(pack, faces_model, tmp_path):
    model, vae, null = faces_model
    d = D.random_directions(1, (96, 8, 8), 0, 1.0)
    options = repr(model.model_options)
    with pytest.raises(ValueError, match="strengths: the list is empty"):
        report(pack, model, vae, null, d, strengths=" ")
    with pytest.raises(ValueError, match="clip_vision: its 64-pixel input is 32 patches across, more than the "
                                         "16×16 images have pixels"):
        pixel, pixel_vae = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "ddpm"))
        report(pack, pixel, pixel_vae, null, D.random_directions(1, (32, 8, 8), 0, 1.0),
               latent_image={"samples": torch.zeros(1, 3, 16, 16)}, clip_vision=tiny_clip_vision(tmp_path, 64, 2))
    with pytest.raises(D.DirectionsError, match=r"directions: h shape \[32, 8, 8\] does not fit this model"):
        report(pack, model, vae, null, D.random_directions(1, (32, 8, 8), 0, 1.0))
    with pytest.raises(ValueError, match="features: 'clip vision' needs a CLIP vision model"):
        report(pack, model, vae, null, d, features="clip vision")
    with pytest.raises(ValueError, match="samples: consistency compares samples"):
        R.measure_direction("d", STRENGTHS, torch.zeros(5, 1, 3), torch.zeros(5, 1, 8, 8, 3))
    assert repr(model.model_options) == options


def test_the_text_direction_is_the_difference_of_unit_pooled_embeddings():
    """CLIP's pooled text embeddings (ComfyUI's own CLIP of the tiny SD1.5 checkpoint's text encoder): the
    direction from one prompt to another, refused where its width is not the image features'."""
    import comfy.sd
    from tiny_models import register_tiny_checkpoints

    from comfy_hspace.host.report import text_direction

    config = register_tiny_checkpoints()["sd15"]({})
    clip = comfy.sd.CLIP(config.clip_target())
    init_weights(clip.cond_stage_model)

    def unit(text):
        _, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        return torch.nn.functional.normalize(pooled.float().reshape(-1), dim=0)

    width = unit("a face").numel()
    direction = text_direction(clip, "a face", "a smiling face", width)
    assert torch.allclose(direction, unit("a smiling face") - unit("a face")) and direction.norm() > 0
    with pytest.raises(ValueError, match=f"clip: its pooled text embedding has {width} values, the CLIP vision "
                                         f"model's image embeddings {width + 1}"):
        text_direction(clip, "a face", "a smiling face", width + 1)


def test_the_report_runs_in_the_real_server_on_a_clip_vision_model_from_its_loader(tmp_path):
    """ComfyUI 0.3.75's CLIP Vision Loader recognises only full-size models (ViT-L and larger), so the test
    writes a ViT-L/14 of random weights (304 M parameters, half precision) with ComfyUI's own class; the
    report measures in it through the loader's CLIP_VISION, in the real server."""
    import comfy.clip_vision
    from comfy_server import ComfyServer
    from safetensors.torch import save_file

    config = Path(comfy.clip_vision.__file__).parent / "clip_vision_config_vitl.json"
    vision = comfy.clip_vision.ClipVisionModel(str(config))
    torch.manual_seed(0)
    init_weights(vision.model)
    (tmp_path / "models" / "clip_vision").mkdir(parents=True)
    save_file({k: v.half().contiguous() for k, v in vision.model.state_dict().items()},
              str(tmp_path / "models" / "clip_vision" / "random_vit_l.safetensors"))
    del vision
    prompt = {"1": {"class_type": "HSpaceEmbeddedFacesModel", "inputs": {"architecture": "unet"}},
              "2": {"class_type": "HSpaceFaceLabels", "inputs": {"labels": "null"}},
              "3": {"class_type": "EmptyChromaRadianceLatentImage", "inputs": {"width": 32, "height": 32,
                                                                               "batch_size": 1}},
              "4": {"class_type": "HSpaceRandomDirections", "inputs": {"model": ["1", 0], "latent_image": ["3", 0],
                                                                       "count": 1, "seed": 0, "rms": 1.0}},
              "5": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "random_vit_l.safetensors"}},
              "6": {"class_type": "HSpaceDirectionReport", "inputs": {
                  "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0],
                  "vae": ["1", 1], "directions": ["4", 0], "seed": 0, "steps": 4, "cfg": 1.0, "sampler_name": "ddim",
                  "scheduler": "ddim_uniform", "samples": 2, "strengths": "-1, 0, 1", "features": "auto",
                  "mode": "both terms", "calibrate_to": 0.0, "clip_vision": ["5", 0]}},
              "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 1]}}}
    with ComfyServer(tmp_path) as server:
        entry = server.run(prompt)
    [row] = json.loads(entry["outputs"]["7"]["text"][0])
    assert row["features"] == "clip vision" and row["effect"][1] == 0 and row["effect"][2] > 0
