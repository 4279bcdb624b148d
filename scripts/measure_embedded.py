"""Measures the embedded default against its targets (issue 3) and prints a Markdown table:

- the classifier's held-out accuracy (binary factors) and R² (continuous factors) on fresh faces;
- conditional samples: how often the classifier finds each requested label;
- unconditional samples: how many show no face (``classifier.face_found``), and their factor
  statistics next to the dataset's, each with the issue-15 target (binary frequency within 0.05,
  continuous mean within 0.15 data-std and std within 20%, corr(glasses, blond) within 0.1).

Sampling goes through ComfyUI's own sampler on the shipped model, in-process.
Usage: .venv/bin/python scripts/measure_embedded.py [--samples 256] [--steps 50] [--cfg 2] [--json FILE]
       [--model PATH]   (another diffusers folder of the same layout, e.g. an earlier model, or a DiT file)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from measure_common import markdown_table, write_report  # first: ComfyUI on the path
import comfy.sample  # noqa: E402
import numpy as np
import torch

from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.host import embedded, model_info  # noqa: E402


def sampler_of(model) -> str:
    """DDPM ancestral sampling for the UNet (ε); Euler for the flow-matching DiT."""
    return "euler" if model_info.is_flow(model) else "ddpm"


def sample(model, vae, classes: list[int], seed: int, steps: int, cfg: float, batch: int = 64) -> torch.Tensor:
    """Images [N, 32, 32, 3] in 0…1, one per entry of ``classes`` (NULL_CLASS = unconditional)."""
    out = []
    negative = embedded.conditioning(faces.NULL_CLASS)
    for start in range(0, len(classes), batch):
        chunk = classes[start:start + batch]
        for label in sorted(set(chunk)):
            n = chunk.count(label)
            latent = torch.zeros(n, 3, faces.SIZE, faces.SIZE)
            noise = comfy.sample.prepare_noise(latent, seed + start + label)
            x = comfy.sample.sample(model, noise, steps, cfg if label != faces.NULL_CLASS else 1.0, sampler_of(model),
                                    "normal", embedded.conditioning(label), negative, latent,
                                    seed=seed + start + label, disable_pbar=True)
            out.append(vae.decode(x))
    return torch.cat(out)


def classifier_targets(images: np.ndarray, factors: dict) -> dict:
    """The classifier's accuracy (binary factors) and R² (continuous ones) on dataset faces."""
    report = {}
    scores = embedded.score(embedded.to_image(images))
    for j, k in enumerate(C.NAMES):
        truth = torch.as_tensor(factors[k], dtype=torch.float32)
        if k in faces.BINARY:
            report[f"classifier {k} accuracy"] = ((scores[:, j] > 0.5).float() == truth).float().mean().item()
        else:
            report[f"classifier {k} R²"] = (1 - ((scores[:, j] - truth) ** 2).mean() / truth.var()).item()
    return report


def conditional_targets(model, vae, a) -> dict:
    """How often the classifier finds each label as the class asked for it (on or off)."""
    per_class = max(a.samples // faces.NULL_CLASS, 1)
    classes = [c for c in range(faces.NULL_CLASS) for _ in range(per_class)]
    cond_scores = embedded.score(sample(model, vae, classes, a.seed, a.steps, a.cfg))
    cls = torch.tensor(classes)
    report = {}
    for i, k in enumerate(faces.LABELS):
        wanted = ((cls >> i) & 1).bool()
        found = cond_scores[:, C.NAMES.index(k)] > 0.5
        report[f"conditional: label {k} obeyed"] = (found == wanted).float().mean().item()
    return report


def target_met(k: str, s: dict) -> bool:
    """Issue 15's targets for unconditional samples against the dataset."""
    if k in faces.BINARY:
        return abs(s["samples_mean"] - s["dataset_mean"]) <= 0.05
    return (abs(s["samples_mean"] - s["dataset_mean"]) <= 0.15 * s["dataset_std"]
            and abs(s["samples_std"] / s["dataset_std"] - 1) <= 0.2)


def unconditional_statistics(model, vae, factors: dict, a) -> tuple[dict, float, float, int]:
    """Per factor, mean and std of unconditional samples and of the dataset; corr(glasses, blond)
    of the samples and of the dataset; how many samples show no face."""
    images = sample(model, vae, [faces.NULL_CLASS] * a.samples, a.seed + 1, a.steps, 1.0)
    faceless = int((~embedded.face_found(images)).sum())
    uncond = embedded.score(images)
    stats = {}
    for j, k in enumerate(C.NAMES):
        data = torch.as_tensor(factors[k], dtype=torch.float32)
        gen = (uncond[:, j] > 0.5).float() if k in faces.BINARY else uncond[:, j]
        stats[k] = {"dataset_mean": data.mean().item(), "samples_mean": gen.mean().item(),
                    "dataset_std": data.std().item(), "samples_std": gen.std().item()}
    glasses, blond = ((uncond[:, C.NAMES.index(k)] > 0.5).float() for k in ("glasses", "blond"))
    corr = np.corrcoef(glasses, blond)[0, 1]
    data_corr = np.corrcoef(factors["glasses"].astype(float), factors["blond"].astype(float))[0, 1]
    return stats, corr, data_corr, faceless


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--model", type=Path, default=embedded.DDPM_FOLDER,
                   help="the model to measure: a DDPM folder, or a DiT file (faces-dit.safetensors)")
    a = p.parse_args()

    images, factors = faces.dataset(2000, seed=a.seed)
    report = classifier_targets(images, factors)
    model, vae = embedded.load_model(a.model)
    report |= conditional_targets(model, vae, a)
    stats, corr, data_corr, faceless = unconditional_statistics(model, vae, factors, a)
    report["unconditional samples without a face"] = faceless

    targets = {"accuracy": "≥ 0.95", "R²": "≥ 0.90", "obeyed": "≥ 0.98", "without a face": f"0 of {a.samples}"}
    print(markdown_table(["measure", "value", "target"],
                         [[k, f"{v:.3f}" if isinstance(v, float) else v,
                           next(t for key, t in targets.items() if key in k)] for k, v in report.items()]))
    print(f"\nUnconditional samples ({a.samples}, {a.steps} {sampler_of(model)} steps) vs the dataset:\n")
    rows = [[k, f"{s['dataset_mean']:.3f} ± {s['dataset_std']:.3f}",
             f"{s['samples_mean']:.3f} ± {s['samples_std']:.3f}", "yes" if target_met(k, s) else "no"]
            for k, s in stats.items()]
    corr_met = "yes" if abs(corr - data_corr) <= 0.1 else "no"
    print(markdown_table(["factor", "dataset mean ± std", "samples mean ± std", "target met"],
                         rows + [["corr(glasses, blond)", f"{data_corr:.3f}", f"{corr:.3f}", corr_met]]))
    write_report(a.json, {"targets": report, "unconditional": stats, "corr_glasses_blond":
                          {"dataset": data_corr, "samples": float(corr)}, "settings": vars(a)})


if __name__ == "__main__":
    main()
