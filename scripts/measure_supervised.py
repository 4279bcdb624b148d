"""Measures the supervised methods (issue 5) on the embedded model with the shipped classifier,
and prints Markdown tables:

- effect matrix (paper 000 Table I analog): E[i, j] = mean change of attribute j's score when
  editing along direction i from −s to +s, for the classifier-annotated directions of both
  Attribute Direction methods (the paper's mean difference, and the node's default, the
  regression on all scores; both at every step, and the regression acting from half the
  schedule on) and for the first two disentangled from the others;
- monotonic response: each direction's attribute score over a strength sweep (Spearman);
- sample efficiency (paper Fig. 8a): cosine between the direction from n pairs and from the
  reference number of pairs, in h and in x_T;
- combined edits: two attributes at once vs each alone;
- inversion: PSNR of zero-edit reconstructions of real (procedurally drawn) faces.

A score change is divided by the factor's scale (1 for the binary probabilities, the
generator's range for the continuous factors).
Usage: .venv/bin/python scripts/measure_supervised.py [--samples 2048] [--edits 64] [--sets A;B;…] [--json FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure_common import decoded, markdown_row, markdown_table, write_report  # first: ComfyUI on the path
import comfy.sample  # noqa: E402
import torch

from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import directions as D  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.attribute import attribute_direction, disentangle_directions  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.edited_sampling import edited_sample  # noqa: E402
from comfy_hspace.host.recording import invert, record_activations  # noqa: E402
from comfy_hspace.report import spearman  # noqa: E402
from comfy_hspace.settings import EditSettings, SamplerSettings  # noqa: E402

STEPS, SCHEDULER = 20, "ddim_uniform"
# set A, set B, and all six attributes of issue 18
SETS = ("glasses,blond,smile,eyes_open,size", "glasses,blond,smile,size,bg_hue",
        "glasses,blond,smile,eyes_open,size,bg_hue")


@dataclass
class Edits:
    """Edits of the same samples (the latent's, unconditional) with one sampler, scored by the classifier."""
    model: Any
    vae: Any
    null: list
    latent: dict
    sampler: str

    def scores(self, d: D.Directions, strengths: list[float], sweep: list[float]) -> torch.Tensor:
        """Classifier scores ÷ scale [len(sweep), N, factors] of the latent's samples edited along ``d``."""
        out = edited_sample(self.model, d, SamplerSettings(5000, STEPS, 1.0, self.sampler, SCHEDULER),
                            EditSettings(strengths), self.null, self.null, self.latent, sweep=sweep)
        scores = embedded.score(decoded(self.vae, out["samples"]))
        return scores.reshape(len(sweep), -1, scores.shape[-1]) / C.SCALES


def annotated_samples(model, vae, null, a):
    """The recorded activations of ``a.samples`` unconditional samples and the classifier's scores of them."""
    t = time.monotonic()
    activations, samples = record_activations(model, null, null, {"samples": torch.zeros(1, 3, 32, 32)},
                                              SamplerSettings(0, STEPS, 1.0, a.sampler, SCHEDULER), n_samples=a.samples,
                                              batch_size=64, components=0, keep_samples=True)
    scores = embedded.score(decoded(vae, samples))
    print(f"{a.samples} annotated samples: {time.monotonic() - t:.0f} s", file=sys.stderr)
    return activations, scores


# the directions measured: Attribute Direction's method and start_percent
VARIANTS = {"mean difference": ("mean difference", 0.0), "regression": ("regression", 0.0),
            "regression from 0.5": ("regression", 0.5)}


def find_directions(activations, scores: torch.Tensor, attributes: list[str], count: int, variant: str,
                    known: dict, report: dict):
    """(classifier-annotated directions, the same disentangled from the others); prints their cosines.
    ``known`` keeps each (variant, attribute) direction for the next sets: it does not depend on the set."""
    method, start = VARIANTS[variant]
    for k in attributes:
        if (variant, k) not in known:
            known[variant, k] = attribute_direction(activations, scores=scores, count=count, name=k,
                                                    column=C.NAMES.index(k), method=method, start_percent=start)
    found = [known[variant, k] for k in attributes]
    original = D.Directions(torch.cat([d.vectors for d in found]), found[0].timesteps, attributes, method="attribute",
                            model_fingerprint=found[0].model_fingerprint, units="mean difference")
    flat = torch.nn.functional.normalize(original.vectors.flatten(1).double(), dim=1)
    print(f"\nCosine between the {variant} directions (all timesteps):\n")
    print(markdown_table(["", *attributes], [[k, *(f"{v:+.2f}" for v in (flat @ flat.T)[i].tolist())]
                                              for i, k in enumerate(attributes)]))
    report.setdefault("cosines", {})[variant] = (flat @ flat.T).tolist()
    disentangled = []
    for i in range(len(attributes)):
        rest = D.select(original, [j for j in range(len(attributes)) if j != i])
        disentangled.append(disentangle_directions(D.select(original, [i]), rest).vectors)
    cleaned = D.Directions(torch.cat(disentangled), original.timesteps, attributes, units="mean difference",
                           model_fingerprint=original.model_fingerprint)
    return original, cleaned


# (label, reference): the ratios of each set against the one its target compares it with
COMPARED = [("mean difference, disentangled", "mean difference"), ("regression", "mean difference"),
            ("regression, disentangled", "mean difference"), ("regression from 0.5", "mean difference")]


def effect_matrices(edits: Edits, directions: dict, attributes: list[str], s: float, report: dict) -> dict:
    """Per set of directions, E[i, j]: the change of attribute j's score from −s to +s along direction i."""
    columns = [C.NAMES.index(k) for k in attributes]
    matrices = {}
    for label, d in directions.items():
        rows = []
        for i in range(len(attributes)):
            sc = edits.scores(D.select(d, [i]), [1.0], [-s, s])
            rows.append((sc[1] - sc[0]).mean(0)[columns])
        matrices[label] = torch.stack(rows)
        print(f"\nEffect matrix, {label} directions (rows: edited along; columns: change of score ÷ scale, "
              f"from −{s:g} to +{s:g} mean differences, {edits.latent['samples'].shape[0]} samples):\n")
        print(markdown_table(["direction", *attributes],
                             [[k, *(f"{v:+.3f}" for v in matrices[label][i].tolist())]
                              for i, k in enumerate(attributes)]))
    report["effect"] = {k: v.tolist() for k, v in matrices.items()}
    off = ~torch.eye(len(attributes), dtype=torch.bool)
    pair = (attributes.index("glasses"), attributes.index("blond"))
    report["ratios"] = {}
    for label, reference in COMPARED:
        m, r = matrices[label], matrices[reference]
        off_ratio = (m[off].abs().mean() / r[off].abs().mean()).item()
        diag_ratio = m.diagonal() / r.diagonal()
        report["ratios"][f"{label} ÷ {reference}"] = {"off_diagonal": off_ratio, "diagonal": diag_ratio.tolist()}
        print(f"\n{label} ÷ {reference}: mean |off-diagonal| {off_ratio:.2f} (target ≤ 0.5); diagonal "
              + ", ".join(f"{k} {v:.2f}" for k, v in zip(attributes, diag_ratio.tolist())) + " (target ≥ 0.8); "
              f"glasses → blond {r[pair].item():+.3f} → {m[pair].item():+.3f}, blond → glasses "
              f"{r[pair[::-1]].item():+.3f} → {m[pair[::-1]].item():+.3f}")
    print("\nSelectivity, mean |diagonal| ÷ mean |off-diagonal|: " + ", ".join(
        f"{label} {m.diagonal().abs().mean() / m[off].abs().mean():.2f}" for label, m in matrices.items()))
    return matrices


def monotonic_response(edits: Edits, directions: dict, attributes: list[str], report: dict) -> None:
    """Each attribute's mean score over a strength sweep along its own direction, and its Spearman
    correlation, for each method's (not disentangled) directions."""
    sweep = [-2.0, -1.0, 0.0, 1.0, 2.0]
    print(f"\nResponse of each attribute to its own direction (mean score ÷ scale over "
          f"{edits.latent['samples'].shape[0]} samples):\n")
    print(markdown_table(["method", "direction", *(f"{v:+g}" for v in sweep), "Spearman"]))
    report["monotonic"] = {}
    for method in VARIANTS:
        for k in attributes:
            own = D.select(directions[method], [directions[method].names.index(k)])
            means = edits.scores(own, [1.0], sweep)[:, :, C.NAMES.index(k)].mean(1)
            rho = spearman(torch.tensor(sweep), means)
            report["monotonic"][f"{method} {k}"] = {"means": means.tolist(), "spearman": rho}
            print(markdown_row([method, k, *(f"{v:.3f}" for v in means.tolist()), f"{rho:.2f}"]))


def combined_edits(edits: Edits, directions: dict, matrices: dict, attributes: list[str], s: float,
                   report: dict) -> None:
    """Smile and glasses edited together vs each alone, with each set of directions."""
    report["combined"] = {}
    print(f"\nCombined edit smile + glasses (both at ±{s:g}; change of each attribute's score ÷ scale):\n")
    print(markdown_table(["directions", "attribute", "alone", "together", "ratio"]))
    for label, d in directions.items():
        both = D.select(d, [attributes.index("smile"), attributes.index("glasses")])
        together = edits.scores(both, [s, s], [-1.0, 1.0])
        for k in ("smile", "glasses"):
            alone = matrices[label][attributes.index(k), attributes.index(k)].item()
            change = (together[1] - together[0]).mean(0)[C.NAMES.index(k)].item()
            report["combined"][f"{label} {k}"] = {"alone": alone, "together": change, "ratio": change / alone}
            print(markdown_row([label, k, f"{alone:+.3f}", f"{change:+.3f}", f"{change / alone:.2f} (target ≥ 0.7)"]))


def sample_efficiency(activations, scores: torch.Tensor, report: dict) -> None:
    """Smile positives / negatives by the classifier, in recording order: cosine of the direction from
    n pairs with the one from the reference number of pairs, in h and in x_T."""
    smile = scores[:, C.NAMES.index("smile")]
    pos_all, neg_all = (smile > 0.5).nonzero().flatten(), (smile <= 0.5).nonzero().flatten()
    reference_n = min(len(pos_all), len(neg_all), 1000)
    trajectories, noises = activations.trajectories(), activations.sample_noises()

    def direction(space, pos, neg):
        x = trajectories if space == "h" else noises
        return (x[pos].double().mean(0) - x[neg].double().mean(0)).flatten()

    reference = {sp: direction(sp, pos_all[:reference_n], neg_all[:reference_n]) for sp in ("h", "x_T")}
    g = torch.Generator().manual_seed(0)
    ns = [1, 2, 5, 10, 20, 50, 100]
    report["sample_efficiency"] = {"reference_pairs": reference_n, "n": ns}
    print(f"\nSample efficiency (smile; cosine with the direction from {reference_n} pairs; mean of 10 random "
          f"draws of n pairs from the other samples):\n")
    print(markdown_table(["space", *(f"n={n}" for n in ns)]))
    spare_pos, spare_neg = pos_all[reference_n:], neg_all[reference_n:]
    pool_pos = spare_pos if len(spare_pos) >= max(ns) else pos_all
    pool_neg = spare_neg if len(spare_neg) >= max(ns) else neg_all
    for sp in ("h", "x_T"):
        cosines = []
        for n in ns:
            draws = []
            for _ in range(10):
                pos = pool_pos[torch.randperm(len(pool_pos), generator=g)[:n]]
                neg = pool_neg[torch.randperm(len(pool_neg), generator=g)[:n]]
                draws.append(torch.nn.functional.cosine_similarity(direction(sp, pos, neg), reference[sp], dim=0))
            cosines.append(torch.stack(draws).mean().item())
        report["sample_efficiency"][sp] = cosines
        print(markdown_row([sp, *(f"{c:.2f}" for c in cosines)]))


def inversion(model, vae, null, report: dict) -> None:
    """PSNR of zero-edit reconstructions of 32 real (procedurally drawn) faces after DDIM inversion."""
    images, _ = faces.dataset(32, seed=77)
    pixels = embedded.to_image(images)
    report["inversion_psnr"] = {}
    for steps in (20, 50):
        noise, _ = invert(model, null, null, {"samples": vae.encode(pixels)},
                          SamplerSettings(0, steps, 1.0, "ddim", SCHEDULER), batch_size=32)
        rec = comfy.sample.sample(model, noise, steps, 1.0, "ddim", SCHEDULER, null, null, torch.zeros_like(noise),
                                  seed=0, disable_pbar=True)
        psnr = 10 * torch.log10(1 / ((decoded(vae, rec) - pixels) ** 2).mean(dim=(1, 2, 3)))
        report["inversion_psnr"][steps] = {"mean": psnr.mean().item(), "median": psnr.median().item(),
                                           "min": psnr.min().item()}
        print(f"\nInversion + zero-edit reconstruction of 32 real faces, {steps} DDIM steps: PSNR mean "
              f"{psnr.mean():.1f} dB, median {psnr.median():.1f}, min {psnr.min():.1f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=2048, help="annotated samples")
    p.add_argument("--count", type=int, default=64, help="top and bottom samples per attribute direction")
    p.add_argument("--edits", type=int, default=64, help="samples each direction is applied to")
    p.add_argument("--strength", type=float, default=1.0, help="in units of the mean difference")
    p.add_argument("--sets", default=";".join(SETS), help="attribute sets separated by ';', each with the "
                                                          "correlated pair glasses and blond, and smile")
    p.add_argument("--sampler", default="ddpm", help="for annotation and edits (paper 000: DDPM, η = 1)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    model, vae = embedded.load_model()
    null = embedded.conditioning("null")
    report: dict = {"settings": vars(a)}

    activations, scores = annotated_samples(model, vae, null, a)
    edits = Edits(model, vae, null, {"samples": torch.zeros(a.edits, 3, 32, 32)}, a.sampler)
    report["sets"], measured, known = {}, set(), {}
    for attributes in (part.split(",") for part in a.sets.split(";")):
        print(f"\n## Set {', '.join(attributes)}")
        part = report["sets"][",".join(attributes)] = {}
        directions = {}
        for variant in VARIANTS:
            original, cleaned = find_directions(activations, scores, attributes, a.count, variant, known, part)
            directions[variant] = original
            if variant != "regression from 0.5":
                directions[f"{variant}, disentangled"] = cleaned
        matrices = effect_matrices(edits, directions, attributes, a.strength, part)
        monotonic_response(edits, directions, [k for k in attributes if k not in measured], part)
        measured.update(attributes)
        combined_edits(edits, directions, matrices, attributes, a.strength, part)
    sample_efficiency(activations, scores, report)
    inversion(model, vae, null, report)
    write_report(a.json, report)


if __name__ == "__main__":
    main()
