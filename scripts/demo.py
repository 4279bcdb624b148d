"""Runs the API-format workflows in workflows/api/ on the embedded faces model through a real
ComfyUI server (by default a representative subset that takes about two minutes on a 2-core CPU;
``--all`` for every workflow, as ``--thumbnails`` does, or the workflows named, e.g. ``avi_smile``)
and writes each saved image batch as one grid PNG to out/demo/ (an edit strip: one row per sweep
multiplier, one column per sample). With --thumbnails it also writes each workflow's template
thumbnail, workflows/<name>.jpg (its first picture)."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from comfy_server import ComfyServer  # noqa: E402


def grid(files: list[Path], columns: int) -> Image.Image:
    tiles = [Image.open(f).convert("RGB") for f in files]
    columns = min(columns, len(tiles))
    w, h = tiles[0].size
    scale = 4 if w <= 64 else 1  # 32-px samples are enlarged; a labelled grid already is
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (w + 1) - 1, rows * (h + 1) - 1), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * (w + 1), (i // columns) * (h + 1)))
    return sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)


def batch_upstream(prompt: dict, node_id: str) -> int:
    """The batch_size of the first empty latent found walking up the graph from ``node_id``."""
    inputs = prompt[node_id]["inputs"]
    if "batch_size" in inputs and "width" in inputs:
        return inputs["batch_size"]
    for key in ("latent_image", "latent", "x", "samples"):
        if isinstance(inputs.get(key), list):
            return batch_upstream(prompt, inputs[key][0])
    return 8


def columns_for(prompt: dict, save_node: str) -> int:
    """Edit strips: one column per sample of the batch (rows are the sweep), or one row for a
    single sample's sweep; otherwise 8."""
    for node_id, node in prompt.items():
        if node["class_type"] == "HSpaceEditedSampler":
            batch = prompt[node["inputs"]["latent_image"][0]]["inputs"].get("batch_size", 8)
            return batch if batch > 1 else len(node["inputs"]["sweep"].split(","))
        if node["class_type"] in ("HSpaceAVILatentMerge", "HSpaceLatentSingularValues"):
            return batch_upstream(prompt, node_id)
    return 8


# one workflow per node family, the quick ones; pca_strip and avi_smile (≈ 45 s each) need --all
DEFAULT = ("embedded_samples", "random_direction_strip", "apply_edit_ksampler", "attribute_disentangle_strip",
           "real_image_edit", "jacobian_mouth_strip", "discovery_strip", "singular_value_sweep", "dit_pca_strip",
           "dit_attribute_slider", "direction_report")
THUMBNAIL = (512, 384)  # the frontend's template cards show <name>.jpg


def thumbnail(picture: Image.Image) -> Image.Image:
    """The picture fitted into a white 4:3 card."""
    card = Image.new("RGB", THUMBNAIL, "white")
    picture = picture.copy()
    picture.thumbnail(THUMBNAIL, Image.NEAREST)
    card.paste(picture, ((THUMBNAIL[0] - picture.width) // 2, (THUMBNAIL[1] - picture.height) // 2))
    return card


def text_card(lines: list[str]) -> Image.Image:
    """A thumbnail for a workflow the demo cannot run (it needs the user's checkpoint)."""
    card = Image.new("RGB", THUMBNAIL, (236, 240, 246))
    draw = ImageDraw.Draw(card)
    for i, line in enumerate(lines):
        font = ImageFont.load_default(34 if i == 0 else 22)
        draw.text((THUMBNAIL[0] // 2, 130 + 60 * i), line, fill="black", font=font, anchor="mm")
    return card


def checkpoint_cards(examples: Path) -> None:
    """Cards for the graphs in workflows/api/sd/ (<family>_<graph>): what they do and which checkpoint they need."""
    from sd_templates import FAMILIES

    for workflow in sorted((REPO / "workflows" / "api" / "sd").glob("*.api.json")):
        name = workflow.name.replace(".api.json", "")
        family, graph = name.split("_", 1)
        f = FAMILIES[family]
        text_card([f"{f['title']} checkpoint", graph.replace("_", " "), f"loads {f['ckpt']}: pick yours"]
                  ).save(examples / f"{name}.jpg", quality=90)


def main() -> None:
    make_thumbnails = "--thumbnails" in sys.argv[1:]
    named = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    run_all = make_thumbnails or "--all" in sys.argv[1:]
    examples = REPO / "workflows"
    out = REPO / "out" / "demo"
    base = REPO / "out" / "server"
    shutil.rmtree(base, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with ComfyServer(base) as server:
        print(f"ComfyUI up in {time.monotonic() - start:.1f} s at {server.url}")
        for workflow in sorted((REPO / "workflows" / "api").glob("*.api.json")):
            stem = workflow.name.replace(".api.json", "")
            if (named and stem not in named) or (not named and not run_all and stem not in DEFAULT):
                continue
            t = time.monotonic()
            prompt = json.loads(workflow.read_text())
            entry = server.run(prompt)
            pictures = []
            for node_id, node_output in sorted(entry["outputs"].items(), key=lambda item: int(item[0])):
                files = [base / "output" / i.get("subfolder", "") / i["filename"]
                         for i in node_output.get("images", [])]
                if files:
                    name = prompt[node_id]["inputs"].get("filename_prefix", node_id)
                    pictures.append(grid(files, columns_for(prompt, node_id)))
                    pictures[-1].save(out / f"{name}.png")
                    print(f"  {out / (name + '.png')}: {len(files)} images")
            if make_thumbnails:
                thumbnail(pictures[0]).save(examples / workflow.name.replace(".api.json", ".jpg"), quality=90)
            print(f"{workflow.name}: {time.monotonic() - t:.1f} s")
    if make_thumbnails:
        checkpoint_cards(examples)
        print(f"thumbnails written to {examples}")
    print(f"demo done in {time.monotonic() - start:.1f} s; images in {out}")


if __name__ == "__main__":
    main()
