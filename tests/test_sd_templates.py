"""The templates for a user's own SD1.5, SDXL and SD3.5 checkpoints (workflows/api/sd/) run in the real
server on tiny random checkpoints of those shapes, written by the tests with ComfyUI's own checkpoint saver
(scripts/tiny_models.py; the test extension tests/tiny_checkpoints lets the loader recognise them).
Each graph runs as shipped except for its size: 64 px images, 4 steps, at most 8 samples; and the Direction
Report measures in pixels, not in a CLIP vision model: ComfyUI 0.3.75's CLIP Vision Loader knows only
full-size configurations (ViT-L and larger, 300 M parameters and up), so no tiny one can be written for it."""
import json

import numpy as np
import pytest
import torch
from comfy_server import REPO, ComfyServer
from PIL import Image
from sd_templates import FAMILIES, PAIRS
from tiny_models import save_tiny_checkpoint

from comfy_hspace import avi
from comfy_hspace import directions as D

SD = REPO / "workflows" / "api" / "sd"
# the prompt-pair graph saves the direction the later ones load
ORDER = ["prompt_pair_slider", "pca_grid", "real_image_edit", "jacobian_mask", "apply_edit_ksampler",
         "apply_edit_hires_fix", "avi", "direction_report", "image_pair_slider"]
SIZE, STEPS = 64, 4
TINY = ["sd15", "sdxl", "sd35"]  # families with a tiny checkpoint (Flux's loaders take three separate files)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-sd")
    for family in TINY:
        save_tiny_checkpoint(family, base / "models" / "checkpoints" / FAMILIES[family]["ckpt"])
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "tiny_checkpoints").symlink_to(REPO / "tests" / "tiny_checkpoints")
    # the photo to invert, with a mask painted in the mask editor: transparent (masked) over the lower middle
    rgba = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[40:56, 16:48, 3] = 0
    (base / "input").mkdir()
    Image.fromarray(rgba, "RGBA").save(base / "input" / "example.png")
    for i, (with_it, without) in enumerate(PAIRS):  # the image-pair slider's pairs: a bright patch or not
        photo = np.random.default_rng(i + 1).integers(0, 200, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(photo).save(base / "input" / without)
        photo[16:48, 16:48] = 255
        Image.fromarray(photo).save(base / "input" / with_it)
    with ComfyServer(base) as s:
        yield s


def shrunk(prompt: dict) -> dict:
    """The graph at 64 px, 4 steps and at most 8 samples; split points and the Jacobian's step scaled alike."""
    for spec in prompt.values():
        inputs = spec["inputs"]
        for key in ("width", "height"):
            if isinstance(inputs.get(key), int):
                inputs[key] = SIZE
        for key in ("start_at_step", "end_at_step", "step"):
            if isinstance(inputs.get(key), int) and inputs[key] < 10000:
                inputs[key] = inputs[key] * STEPS // inputs["steps"]
        if "steps" in inputs:
            inputs["steps"] = STEPS
        if isinstance(inputs.get("n_samples"), int):
            inputs["n_samples"] = min(inputs["n_samples"], 8)
        if isinstance(inputs.get("batch_size"), int):
            inputs["batch_size"] = min(inputs["batch_size"], 4)
        if spec["class_type"] == "HSpaceAVITrainer":
            inputs["epochs"] = 2
        if spec["class_type"] == "HSpaceJacobianDirections":
            inputs["max_iterations"] = 5
        if spec["class_type"] == "HSpaceDirectionReport":
            for key in ("clip_vision", "clip", "text_from", "text_to"):
                inputs.pop(key, None)
            inputs.update(features="pixels", samples=4)
    return {node: spec for node, spec in prompt.items() if spec["class_type"] != "CLIPVisionLoader"}


def images(server, entry: dict, node_id: str) -> list[np.ndarray]:
    out = []
    for image in entry["outputs"][node_id]["images"]:
        with Image.open(server.base / "output" / image.get("subfolder", "") / image["filename"]) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.float32))
    return out


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_every_template_runs_on_a_tiny_checkpoint_of_its_family(server, family):
    paths = {name: SD / f"{family}_{name}.api.json" for name in ORDER}
    shipped = sorted(p.name for p in SD.glob(f"{family}_*.api.json"))
    assert shipped == sorted(p.name for p in paths.values() if p.exists())
    ran = {}
    for name, path in paths.items():
        if not path.exists():
            continue
        prompt = shrunk(json.loads(path.read_text()))
        ran[name] = (prompt, server.run(prompt))
        assert server.output_files(ran[name][1]), f"{path.name} saved no image"

    h_channels = 64  # the tiny UNets' bottleneck: model_channels 32 × channel_mult 2
    smiling = D.load_directions(server.base / "models" / "hspace_directions" / f"{family}_smiling.safetensors")
    assert smiling.h_shape == (h_channels, 4, 4) and smiling.names == ["smiling"]
    assert smiling.vectors.abs().sum() > 0  # the two prompts gave different h

    prompt, entry = ran["apply_edit_ksampler"]
    stock, edited = images(server, entry, "13")
    assert stock.shape == edited.shape == (SIZE, SIZE, 3)
    assert np.abs(stock - edited).mean() > 0  # the patch reached the stock KSampler

    prompt, entry = ran["apply_edit_hires_fix"]
    [hires] = images(server, entry, "14")
    assert hires.shape == (SIZE * 3 // 2, SIZE * 3 // 2, 3)  # the resized direction fitted the 1.5× latent

    prompt, entry = ran["real_image_edit"]
    assert len(images(server, entry, "12")) == 3  # sweep 0, 0.5, 1

    for name, rows in (("pca_grid", 4), ("jacobian_mask", 3), ("prompt_pair_slider", 1)):
        prompt, entry = ran[name]
        [grid] = images(server, entry, max(entry["outputs"], key=int))
        assert grid.shape[0] >= rows * SIZE and grid.shape[1] >= 5 * SIZE  # rows × five strengths
        assert grid.std() > 0

    prompt, entry = ran["direction_report"]
    [chart] = images(server, entry, "17")
    table = json.loads(entry["outputs"]["18"]["text"][0])
    assert chart.shape == (480, 960, 3) and [row["name"] for row in table] == ["smiling", "pc1", "pc2", "random1"]
    assert all(row["features"] == "pixels" and len(row["effect"]) == 5 for row in table)
    folder = server.base / "models" / "hspace_directions"
    calibrated = D.load_directions(folder / f"{family}_report_calibrated.safetensors")
    assert len(calibrated.parameters["calibration"]["scales"]) == 4

    prompt, entry = ran["image_pair_slider"]
    pairs = D.load_directions(folder / f"{family}_smiling_from_pairs.safetensors")
    assert pairs.h_shape == (h_channels, 4, 4) and pairs.vectors.abs().sum() > 0
    plain, edited = images(server, entry, "50")
    assert np.abs(plain - edited).mean() > 0
    assert [row["name"] for row in json.loads(entry["outputs"]["53"]["text"][0])] == ["smiling"]

    if "avi" in ran:
        prompt, entry = ran["avi"]
        assert len(images(server, entry, "15")) == 3  # ρ = 0, 0.5, 1
        assert avi.load_phi(server.base / "models" / "hspace_avi" / "avi_sd_smiling.safetensors").height == SIZE // 8


def test_the_sd35_prompt_pair_slider_runs_on_a_tiny_sd35_checkpoint(server):
    """Two Hooks under the two prompts at the middle joint block, the direction saved with the block's
    token grid, applied by Apply H-space Edit in front of a stock KSampler, and the sweep grid."""
    prompt = shrunk(json.loads((SD / "sd35_prompt_pair_slider.api.json").read_text()))
    entry = server.run(prompt)
    smiling = D.load_directions(server.base / "models" / "hspace_directions" / "sd35_smiling.safetensors")
    assert smiling.h_shape == (128, 4, 4) and smiling.model_fingerprint.startswith("SD3 block 1 ")  # 64 px: 4 × 4
    stock, edited = images(server, entry, "18")
    assert stock.shape == edited.shape == (SIZE, SIZE, 3) and np.abs(stock - edited).mean() > 0
    [grid] = images(server, entry, "11")
    assert grid.shape[1] >= 5 * SIZE and grid.std() > 0


def test_a_direction_for_another_image_size_stops_the_ksampler_with_the_input_named(server):
    """Apply H-space Edit in front of a stock KSampler: a direction found at 64 px used at 96 px
    (without Resize Directions) fails at the first step with a message that says what to do."""
    other = D.Directions(torch.randn(1, 1, 64, 4, 4), torch.tensor([D.TIME_INVARIANT]), ["other"])
    D.save_directions(other, server.base / "models" / "hspace_directions" / "other_size.safetensors")
    prompt = shrunk(json.loads((SD / "sd15_apply_edit_ksampler.api.json").read_text()))
    prompt["6"]["inputs"]["filename"] = "other_size.safetensors"
    prompt["5"]["inputs"].update(width=96, height=96)
    with pytest.raises(RuntimeError, match=r"directions: h shape \[64, 4, 4\] does not fit this model's h"):
        server.run(prompt)
