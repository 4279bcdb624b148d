"""The block study (issue 22): is there an h-space in a transformer? Paper 000's measures, taken at
every joint block of the embedded DiT with the embedded UNet's bottleneck as the first row, under
one protocol for both (unconditional, 20 deterministic steps: DDIM for the UNet, its flow twin
Euler for the DiT; ComfyUI's "ddim" sampler is both):

- PCA: top-5 PCs ÷ random directions of equal norm, total classifier change at 1, 2, 3 σ
  (``measure_unsupervised.measure_pca``);
- attribute directions (the node's default, the regression on all scores) for six attributes:
  the sign and size of each one's change along its own direction, its response Spearman over
  −2 … +2, and the mean |off-diagonal| ÷ mean |diagonal| of the effect matrix;
- sample efficiency, h against x_T (paper 000 Fig. 8a, ``measure_supervised.sample_efficiency``);
- linearity: ‖Δ(2) − 2·Δ(1)‖ ÷ ‖2·Δ(1)‖ of the image change Δ(s) at strength s, mean over the
  attribute directions and 8 seeds;
- homogeneity: mean pairwise cosine of one direction's image change Δ(1) across the 8 seeds, in
  pixels and in the classifier's scores (÷ scale: the change of every known factor);
- transfer: a direction found at block k applied at k − 1 and k + 1, its own attribute's change
  there ÷ at k (the table gives the median over attributes and both sides);
- patch seams: how much more the image change Δ(1) jumps across the DiT's patch borders (4 or 2 pixels) than
  between neighbouring pixels inside a patch (mean |difference|, rows and columns; 1 = no seams).

With --attention, h is the image tokens' attention output inside each block (projected, before its
gate: where FluxSpace edits) instead of the residual stream after it.

Sites of several blocks (``--block-sets 4-5``) are one h, the blocks' grids stacked along the channels, each
block edited by its slice (H-space Block's ``blocks``); they take every measure but the transfer.

Usage: .venv/bin/python scripts/measure_blocks.py [--samples 512] [--edits 32] [--blocks 0 1 …] [--attention]
       [--json FILE] [--picture PNG]; --from-json A.json B.json … prints the merged table of earlier (partial) runs
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from measure_common import decoded, markdown_table, write_report  # first: ComfyUI on the path
import torch

from measure_supervised import Edits, annotated_samples, sample_efficiency  # noqa: E402
from measure_unsupervised import measure_pca  # noqa: E402
from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import directions as D  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.attribute import attribute_direction  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.edited_sampling import edited_sample  # noqa: E402
from comfy_hspace.host.architectures import (ATTENTION, BLOCK_OPTION, RESIDUAL, STREAM_OPTION,  # noqa: E402
                                             parse_blocks, site_of)
from comfy_hspace.report import mean_pairwise_cosine, spearman  # noqa: E402
from comfy_hspace.settings import EditSettings, SamplerSettings  # noqa: E402

ATTRIBUTES = ("glasses", "blond", "smile", "eyes_open", "size", "bg_hue")
SAMPLER = "ddim"  # Euler on a flow model
SWEEP = [-2.0, -1.0, 0.0, 1.0, 2.0]


def at_block(model: Any, block: int | tuple[int, ...], stream: str = RESIDUAL) -> Any:
    clone = model.clone()
    clone.model_options[BLOCK_OPTION] = block
    clone.model_options[STREAM_OPTION] = stream
    return clone


def attribute_directions(activations, scores: torch.Tensor, count: int) -> D.Directions:
    found = [attribute_direction(activations, scores=scores, count=count, name=k, column=C.NAMES.index(k))
             for k in ATTRIBUTES]
    return dataclasses.replace(found[0], vectors=torch.cat([d.vectors for d in found]), names=list(ATTRIBUTES))


def moved_to(model: Any, d: D.Directions) -> D.Directions:
    """The same directions, labelled as found at this model's block (for the transfer measure)."""
    _, _, network = d.model_fingerprint.rpartition("/")
    return dataclasses.replace(d, model_fingerprint=f"{site_of(model)}/{network}")


def effect(edits: Edits, d: D.Directions) -> torch.Tensor:
    """E[i, j]: the mean change of attribute j's score ÷ scale from −1 to +1 along direction i (the
    directions and attributes of ATTRIBUTES, in order)."""
    columns = [C.NAMES.index(k) for k in ATTRIBUTES]
    rows = []
    for i in range(len(d.names)):
        sc = edits.scores(D.select(d, [i]), [1.0], [-1.0, 1.0])
        rows.append((sc[1] - sc[0]).mean(0)[columns])
    return torch.stack(rows)


def supervised(model, vae, null, a, report: dict) -> D.Directions:
    activations, scores = annotated_samples(model, vae, null, a)
    d = attribute_directions(activations, scores, a.count)
    edits = Edits(model, vae, null, {"samples": torch.zeros(a.edits, 3, faces.SIZE, faces.SIZE)}, SAMPLER)
    columns = [C.NAMES.index(k) for k in ATTRIBUTES]
    m = effect(edits, d)
    off = ~torch.eye(len(ATTRIBUTES), dtype=torch.bool)
    report["effect"] = m.tolist()
    report["diagonal"] = m.diagonal().tolist()
    report["off_over_diagonal"] = (m[off].abs().mean() / m.diagonal().abs().mean()).item()
    report["spearman"] = [spearman(torch.tensor(SWEEP), edits.scores(D.select(d, [i]), [1.0], SWEEP)[:, :, c].mean(1))
                          for i, c in enumerate(columns)]
    sample_efficiency(activations, scores, report)
    linearity_homogeneity(model, vae, null, d, report)
    return d


def linearity_homogeneity(model, vae, null, d: D.Directions, report: dict, seeds: int = 8) -> None:
    latent = {"samples": torch.zeros(seeds, 3, faces.SIZE, faces.SIZE)}
    patch = getattr(model.get_model_object("diffusion_model"), "patch_size", 4)  # the UNet's row: 4, as before
    errors, cosines, score_cosines, seams = [], [], [], []
    for i in range(len(d.names)):
        out = edited_sample(model, D.select(d, [i]), SamplerSettings(7000, 20, 1.0, SAMPLER, "ddim_uniform"),
                            EditSettings(), null, null, latent, sweep=[0.0, 1.0, 2.0])
        pixels = decoded(vae, out["samples"])
        images = pixels.reshape(3, seeds, -1)
        one, two = images[1] - images[0], images[2] - images[0]
        errors.append(((two - 2 * one).norm(dim=1) / (2 * one).norm(dim=1).clamp_min(1e-12)).mean().item())
        cosines.append(mean_pairwise_cosine(one))
        seams.append(patch_seams(one.reshape(seeds, 3, faces.SIZE, faces.SIZE), patch))
        scores = (embedded.score(pixels) / C.SCALES).reshape(3, seeds, -1)
        score_cosines.append(mean_pairwise_cosine(scores[1] - scores[0]))
    report["linearity_error"], report["homogeneity"], report["homogeneity_scores"] = errors, cosines, score_cosines
    report["patch_seams"] = seams


def patch_seams(change: torch.Tensor, patch: int) -> float:
    """Mean |difference| of neighbouring pixels of ``change`` [N, C, H, W] across patch borders ÷ inside patches."""
    across, inside = [], []
    for d in (change.diff(dim=-1), change.diff(dim=-2).transpose(-1, -2)):  # columns, then rows
        border = torch.arange(1, d.shape[-1] + 1) % patch == 0  # between pixel j − 1 and j where j % patch == 0
        across.append(d[..., border].abs().mean())
        inside.append(d[..., ~border].abs().mean())
    return (sum(across) / sum(inside)).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=512, help="samples for PCA and for the annotated directions")
    p.add_argument("--edits", type=int, default=32, help="samples each direction is applied to")
    p.add_argument("--count", type=int, default=64, help="top and bottom samples per attribute direction")
    p.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="PCA strengths, in σ")
    p.add_argument("--blocks", type=int, nargs="*", default=None, help="DiT blocks (default: all; none: the UNet only)")
    p.add_argument("--block-sets", nargs="*", default=[], metavar="SET",
                   help="also sites of several blocks edited together, as H-space Block's 'blocks' (e.g. 4-5)")
    p.add_argument("--dit", type=Path, default=embedded.DIT_FILE)
    p.add_argument("--no-unet", action="store_true", help="skip the UNet row")
    p.add_argument("--attention", action="store_true", help="h is the blocks' image-token attention output")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--picture", type=Path, default=None, help="a PNG of the table, cells coloured by target met")
    p.add_argument("--from-json", type=Path, nargs="*", default=None,
                   help="only print the table (and picture) of earlier runs' JSON reports, merged in order")
    a = p.parse_args()
    if a.from_json is not None:
        sites: dict = {}
        for path in a.from_json:  # runs over overlapping blocks: their rows are merged (transfer to either side)
            for name, r in json.loads(path.read_text())["sites"].items():
                sites[name] = {**sites.get(name, {}), **r}
        return show(sites, a)
    a.sampler = SAMPLER  # for annotated_samples
    null = embedded.conditioning("null")
    dit, dit_vae = embedded.load_model(a.dit)
    every = range(len(dit.get_model_object("diffusion_model").joint_blocks))
    blocks = list(every) if a.blocks is None else a.blocks
    sites = [] if a.no_unet else [("UNet bottleneck", *embedded.load_model())]
    stream, suffix = (ATTENTION, " attention") if a.attention else (RESIDUAL, "")
    sites += [(f"DiT block {k}{suffix}", at_block(dit, k, stream), dit_vae) for k in blocks]
    sites += [(f"DiT blocks {s}{suffix}", at_block(dit, parse_blocks(s), stream), dit_vae) for s in a.block_sets]

    report: dict = {"settings": {k: str(v) for k, v in vars(a).items()}, "sites": {}}
    found = {}
    for name, model, vae in sites:
        t = time.monotonic()
        row = report["sites"][name] = {}
        pca = measure_pca(model, vae, null, a)
        row["pca_over_random"] = [sum(r["total"] for r in pca["rows"] if r["strength"] == s)
                                  / sum(r["random_total"] for r in pca["rows"] if r["strength"] == s)
                                  for s in a.strengths]
        found[name] = supervised(model, vae, null, a, row)
        print(f"{name}: {time.monotonic() - t:.0f} s", file=sys.stderr)
        write_report(a.json, report)
    empty = {"samples": torch.zeros(a.edits, 3, faces.SIZE, faces.SIZE)}
    edits_at = {k: Edits(at_block(dit, k, stream), dit_vae, null, empty, SAMPLER) for k in blocks}
    for k in blocks:
        row = report["sites"][f"DiT block {k}{suffix}"]
        for j in (k - 1, k + 1):
            if j in blocks:
                moved = effect(edits_at[j], moved_to(edits_at[j].model, found[f"DiT block {k}{suffix}"])).diagonal()
                row[f"transfer_to_{j}"] = (moved / torch.tensor(row["diagonal"])).tolist()
    write_report(a.json, report)

    show(report["sites"], a)


def show(sites: dict, a: argparse.Namespace) -> None:
    cells = {name: summary(r, a.strengths) for name, r in sites.items()}
    header = ["site", *next(iter(cells.values()))]
    print(markdown_table(header, [[name, *(text for text, _ in row.values())] for name, row in cells.items()]))
    if a.picture:
        picture(cells, a.picture)


def summary(r: dict, strengths: list[float]) -> dict[str, tuple[str, bool | None]]:
    """One site's measures as (text, target met; None where issue 22 sets no target)."""
    transfer = [v for k, vs in r.items() if k.startswith("transfer_to_") for v in vs]
    h, x_t = r["sample_efficiency"]["h"][3], r["sample_efficiency"]["x_T"][3]  # n = 10 pairs
    linearity, homogeneity, semantic = (sum(r[k]) / len(r[k]) for k in ("linearity_error", "homogeneity",
                                                                       "homogeneity_scores"))
    positive = sum(v > 0 for v in r["diagonal"])
    return {**{f"PCA ÷ random {s:g}σ": (f"{v:.1f}×", v >= 5) for s, v in zip(strengths, r["pca_over_random"])},
            "diagonal > 0": (f"{positive} of {len(r['diagonal'])}", positive == len(r["diagonal"])),
            "min Spearman": (f"{min(r['spearman']):.2f}", round(min(r["spearman"]), 9) >= 0.9),  # 0.8999…
            "off ÷ diagonal": (f"{r['off_over_diagonal']:.2f}", None),
            "cos h / x_T, 10 pairs": (f"{h:.2f} / {x_t:.2f}", h > x_t),
            "linearity error": (f"{linearity:.2f}", linearity <= 0.2),
            "homogeneity, pixels": (f"{homogeneity:.2f}", homogeneity >= 0.7),
            "homogeneity, scores": (f"{semantic:.2f}", None),
            "transfer k ± 1": (f"{torch.tensor(transfer).median():.2f}" if transfer else "—", None),
            "patch seams": (f"{sum(r['patch_seams']) / len(r['patch_seams']):.2f}" if "patch_seams" in r else "—",
                            None)}


def picture(cells: dict, path: Path) -> None:
    """Sites × measures, each cell green where issue 22's target is met, red where not, grey where
    it sets none."""
    from PIL import Image, ImageDraw, ImageFont

    columns = list(next(iter(cells.values())))
    font = ImageFont.load_default(13)
    plain = str.maketrans({"÷": "/", "×": "x", "σ": "s", "—": "-"})  # glyphs the default font lacks
    first, width, height = 130, 112, 26
    image = Image.new("RGB", (first + width * len(columns), height * (len(cells) + 2)), "white")
    draw = ImageDraw.Draw(image)
    for j, column in enumerate(columns):
        words = column.translate(plain).split(" ")
        half = (len(words) + 1) // 2
        for line, text in enumerate((" ".join(words[:half]), " ".join(words[half:]))):
            draw.text((first + j * width + width // 2, 14 + 18 * line), text, fill="black", font=font, anchor="mm")
    colours = {True: (190, 230, 190), False: (240, 190, 190), None: (225, 225, 225)}
    for i, (name, row) in enumerate(cells.items()):
        y = height * (i + 2)
        draw.text((6, y + height // 2), name, fill="black", font=font, anchor="lm")
        for j, (text, met) in enumerate(row.values()):
            x = first + j * width
            draw.rectangle((x + 1, y + 1, x + width - 2, y + height - 2), fill=colours[met])
            draw.text((x + width // 2, y + height // 2), text.translate(plain), fill="black", font=font,
                      anchor="mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)

if __name__ == "__main__":
    main()
