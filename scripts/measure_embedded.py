"""Measures the embedded default against its targets (issue 3) and prints a Markdown table:

- the classifier's held-out accuracy (binary factors) and R² (continuous factors) on fresh faces;
- conditional samples: how often the classifier finds each requested label;
- unconditional samples: factor statistics next to the dataset's.

Sampling goes through ComfyUI's own sampler on the shipped model, in-process.
Usage: .venv/bin/python scripts/measure_embedded.py [--samples 256] [--steps 50] [--cfg 2] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

comfy_env.setup()
import comfy.sample  # noqa: E402
import comfy.utils  # noqa: E402

from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.host.pixel_ddpm import CLASS_KEY, load_pixel_ddpm  # noqa: E402

EMBEDDED_DDPM = C.EMBEDDED.parent / "faces-ddpm"


def sample(model, vae, classes: list[int], seed: int, steps: int, cfg: float, batch: int = 64) -> torch.Tensor:
    """Images [N, 32, 32, 3] in 0…1, one per entry of ``classes`` (NULL_CLASS = unconditional)."""
    out = []
    negative = [[torch.zeros(1, 1, 1), {CLASS_KEY: faces.NULL_CLASS}]]
    for start in range(0, len(classes), batch):
        chunk = classes[start:start + batch]
        for label in sorted(set(chunk)):
            n = chunk.count(label)
            latent = torch.zeros(n, 3, faces.SIZE, faces.SIZE)
            noise = comfy.sample.prepare_noise(latent, seed + start + label)
            positive = [[torch.zeros(1, 1, 1), {CLASS_KEY: label}]]
            x = comfy.sample.sample(model, noise, steps, cfg if label != faces.NULL_CLASS else 1.0, "ddpm",
                                    "normal", positive, negative, latent, seed=seed + start + label,
                                    disable_pbar=True)
            out.append(vae.decode(x))
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    comfy.utils.PROGRESS_BAR_ENABLED = False
    clf, _ = C.load_classifier()
    report: dict = {}

    images, factors = faces.dataset(2000, seed=a.seed)
    scores = C.score_images(clf, torch.from_numpy((images.transpose(0, 2, 3, 1) + 1) / 2))
    for j, k in enumerate(C.NAMES):
        truth = torch.as_tensor(factors[k], dtype=torch.float32)
        if k in faces.BINARY:
            report[f"classifier {k} accuracy"] = ((scores[:, j] > 0.5).float() == truth).float().mean().item()
        else:
            report[f"classifier {k} R²"] = (1 - ((scores[:, j] - truth) ** 2).mean() / truth.var()).item()

    model, vae = load_pixel_ddpm(EMBEDDED_DDPM)
    per_class = max(a.samples // faces.NULL_CLASS, 1)
    classes = [c for c in range(faces.NULL_CLASS) for _ in range(per_class)]
    cond_scores = C.score_images(clf, sample(model, vae, classes, a.seed, a.steps, a.cfg))
    cls = torch.tensor(classes)
    for i, k in enumerate(faces.LABELS):
        wanted = ((cls >> i) & 1).bool()
        found = cond_scores[:, C.NAMES.index(k)] > 0.5
        report[f"conditional: label {k} obeyed"] = (found == wanted).float().mean().item()

    uncond = C.score_images(clf, sample(model, vae, [faces.NULL_CLASS] * a.samples, a.seed + 1, a.steps, 1.0))
    stats = {}
    for j, k in enumerate(C.NAMES):
        data = torch.as_tensor(factors[k], dtype=torch.float32)
        gen = (uncond[:, j] > 0.5).float() if k in faces.BINARY else uncond[:, j]
        stats[k] = {"dataset_mean": data.mean().item(), "samples_mean": gen.mean().item(),
                    "dataset_std": data.std().item(), "samples_std": gen.std().item()}
    corr = np.corrcoef((uncond[:, C.NAMES.index("glasses")] > 0.5).float(), (uncond[:, C.NAMES.index("blond")] > 0.5).float())[0, 1]
    data_corr = np.corrcoef(factors["glasses"].astype(float), factors["blond"].astype(float))[0, 1]

    print("| measure | value | target |\n| --- | --- | --- |")
    for k, v in report.items():
        target = "≥ 0.95" if "accuracy" in k else "≥ 0.90"
        print(f"| {k} | {v:.3f} | {target} |")
    print(f"\nUnconditional samples ({a.samples}, {a.steps} ddpm steps) vs the dataset:\n")
    print("| factor | dataset mean ± std | samples mean ± std |\n| --- | --- | --- |")
    for k, s in stats.items():
        print(f"| {k} | {s['dataset_mean']:.3f} ± {s['dataset_std']:.3f} | {s['samples_mean']:.3f} ± {s['samples_std']:.3f} |")
    print(f"| corr(glasses, blond) | {data_corr:.3f} | {corr:.3f} |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"targets": report, "unconditional": stats, "corr_glasses_blond":
                                      {"dataset": data_corr, "samples": float(corr)}, "settings": vars(a)},
                                     indent=1, default=str))


if __name__ == "__main__":
    main()
