"""How many image pairs a slider needs (issue 31): on the embedded UNet, n pairs of real faces (the same face
with and without the attribute, procedurally drawn), both sets inverted with DDIM, the direction their h's
mean difference (Attribute Direction with a negative, as the image-pair slider templates build it); then 32
fresh samples edited at strength −1 and +1 and scored by the classifier. For n = 1, 2, 3, 5, 10 pairs over
five draws of pairs: the attribute's mean change from −1 to +1 (÷ its scale), the share of samples it moves
up, and how often it is the attribute the direction moves most.

  .venv/bin/python scripts/measure_pairs.py [--attribute smile] [--draws 5] [--json runs/pairs.json]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from measure_common import markdown_table, write_report  # first: ComfyUI on the path
import torch

from measure_supervised import Edits  # noqa: E402
from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.attribute import attribute_direction  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.recording import invert  # noqa: E402
from comfy_hspace.settings import SamplerSettings  # noqa: E402

PAIRS = (1, 2, 3, 5, 10)


def direction_from_pairs(model, vae, null, attribute: str, n: int, seed: int):
    """The attribute's direction from n pairs of faces that differ only in it, as the templates make it."""
    sets = []
    for value in (1.0, 0.0):
        images, _ = faces.images_with(n, seed, {attribute: value})
        _, activations = invert(model, null, null, {"samples": vae.encode(embedded.to_image(images))},
                                SamplerSettings(0, 50, 1.0, "ddim", "ddim_uniform"), batch_size=n)
        sets.append(activations)
    return attribute_direction(sets[0], sets[1], name=attribute)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attribute", default="smile", choices=faces.BINARY)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    model, vae = embedded.load_model()
    null = embedded.conditioning("null")
    edits = Edits(model, vae, null, {"samples": torch.zeros(32, 3, faces.SIZE, faces.SIZE)}, "ddim")
    column = C.NAMES.index(a.attribute)
    report, rows = {"attribute": a.attribute, "draws": a.draws, "pairs": {}}, []
    for n in PAIRS:
        changes, ups, own = [], [], 0
        for draw in range(a.draws):
            d = direction_from_pairs(model, vae, null, a.attribute, n, seed=1000 * draw + n)
            scores = edits.scores(d, [1.0], [-1.0, 1.0])
            change = scores[1] - scores[0]  # [samples, factors], each in its scale's units
            changes.append(change[:, column].mean().item())
            ups.append((change[:, column] > 0).float().mean().item())
            own += int(change.mean(0).abs().argmax()) == column
        mean = torch.tensor(changes)
        report["pairs"][n] = {"change": changes, "up": ups, "own_most": own}
        rows.append([n, f"{mean.mean():+.2f} ± {mean.std():.2f}", f"{100 * sum(ups) / len(ups):.0f}%",
                     f"{own} / {a.draws}"])
        print(rows[-1], flush=True)
        write_report(a.json, report)
    print(markdown_table(["pairs", f"{a.attribute} change −1 → +1 (÷ scale)", "samples moved up",
                          f"{a.attribute} moved most"], rows))


if __name__ == "__main__":
    main()
