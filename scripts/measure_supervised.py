"""Measures the supervised methods (issue 5) on the embedded model with the shipped classifier,
and prints Markdown tables:

- effect matrix (paper 000 Table I analog): E[i, j] = mean change of attribute j's score when
  editing along direction i from −s to +s, for the classifier-annotated directions and for the
  same directions disentangled from the others;
- monotonic response: each direction's attribute score over a strength sweep (Spearman);
- sample efficiency (paper Fig. 8a): cosine between the direction from n pairs and from the
  reference number of pairs, in h and in x_T;
- combined edits: two attributes at once vs each alone;
- inversion: PSNR of zero-edit reconstructions of real (procedurally drawn) faces.

A score change is divided by the factor's scale (1 for the binary probabilities, the
generator's range for the continuous factors).
Usage: .venv/bin/python scripts/measure_supervised.py [--samples 2048] [--edits 64] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

comfy_env.setup()
import comfy.sample  # noqa: E402
import comfy.utils  # noqa: E402

from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import directions as D  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.attribute import attribute_direction, disentangle_directions  # noqa: E402
from comfy_hspace.host.edited_sampling import edited_sample  # noqa: E402
from comfy_hspace.host.pixel_ddpm import CLASS_KEY, load_pixel_ddpm  # noqa: E402
from comfy_hspace.host.recording import invert, record_activations  # noqa: E402
from comfy_hspace.settings import SamplerSettings  # noqa: E402

EMBEDDED_DDPM = C.EMBEDDED.parent / "faces-ddpm"
STEPS, SCHEDULER = 20, "ddim_uniform"


def edit_scores(model, vae, clf, d, strengths, sweep, latent, null, sampler) -> torch.Tensor:
    """Classifier scores [len(sweep), N, factors] of the latent's samples edited along ``d``."""
    out = edited_sample(model, d, SamplerSettings(5000, STEPS, 1.0, sampler, SCHEDULER), null, null, latent,
                        strengths=strengths, sweep=sweep)
    scores = C.score_images(clf, vae.decode(out["samples"]).clamp(0, 1))
    return scores.reshape(len(sweep), -1, scores.shape[-1]) / C.SCALES


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = x.argsort().argsort().double(), y.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=2048, help="annotated samples")
    p.add_argument("--count", type=int, default=64, help="top and bottom samples per attribute direction")
    p.add_argument("--edits", type=int, default=64, help="samples each direction is applied to")
    p.add_argument("--strength", type=float, default=1.0, help="in units of the mean difference")
    p.add_argument("--attributes", default="glasses,blond,smile,size,bg_hue",
                   help="classifier factors to find directions for (glasses and blond are the correlated pair)")
    p.add_argument("--sampler", default="ddpm", help="for annotation and edits (paper 000: DDPM, η = 1)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    ATTRIBUTES = a.attributes.split(",")
    comfy.utils.PROGRESS_BAR_ENABLED = False
    clf, _ = C.load_classifier()
    model, vae = load_pixel_ddpm(EMBEDDED_DDPM)
    null = [[torch.zeros(1, 1, 1), {CLASS_KEY: faces.NULL_CLASS}]]
    report: dict = {"settings": vars(a)}

    t = time.monotonic()
    activations, samples = record_activations(model, null, null, {"samples": torch.zeros(1, 3, 32, 32)},
                                              SamplerSettings(0, STEPS, 1.0, a.sampler, SCHEDULER), n_samples=a.samples,
                                              batch_size=64, components=0, keep_samples=True)
    scores = C.score_images(clf, vae.decode(samples).clamp(0, 1))
    print(f"{a.samples} annotated samples: {time.monotonic() - t:.0f} s", file=sys.stderr)
    columns = [C.NAMES.index(k) for k in ATTRIBUTES]
    found = [attribute_direction(activations, scores=scores[:, j], count=a.count, name=k)
             for k, j in zip(ATTRIBUTES, columns)]
    original = D.Directions(torch.cat([d.vectors for d in found]), found[0].timesteps, ATTRIBUTES, method="attribute",
                            model_fingerprint=found[0].model_fingerprint, units="mean difference")
    flat = torch.nn.functional.normalize(original.vectors.flatten(1).double(), dim=1)
    print("\nCosine between the directions (all timesteps):\n\n| | " + " | ".join(ATTRIBUTES) + " |\n| --- |"
          + " --- |" * len(ATTRIBUTES))
    for i, k in enumerate(ATTRIBUTES):
        print(f"| {k} | " + " | ".join(f"{v:+.2f}" for v in (flat @ flat.T)[i].tolist()) + " |")
    report["cosines"] = (flat @ flat.T).tolist()
    disentangled = []
    for i in range(len(ATTRIBUTES)):
        rest = D.select(original, [j for j in range(len(ATTRIBUTES)) if j != i])
        disentangled.append(disentangle_directions(D.select(original, [i]), rest).vectors)
    cleaned = D.Directions(torch.cat(disentangled), original.timesteps, ATTRIBUTES, units="mean difference",
                           model_fingerprint=original.model_fingerprint)

    # effect matrices
    latent = {"samples": torch.zeros(a.edits, 3, 32, 32)}
    s = a.strength
    matrices = {}
    for label, d in (("original", original), ("disentangled", cleaned)):
        rows = []
        for i in range(len(ATTRIBUTES)):
            sc = edit_scores(model, vae, clf, D.select(d, [i]), [1.0], [-s, s], latent, null, a.sampler)
            rows.append((sc[1] - sc[0]).mean(0)[columns])
        matrices[label] = torch.stack(rows)
    off = ~torch.eye(len(ATTRIBUTES), dtype=torch.bool)
    off_ratio = (matrices["disentangled"][off].abs().mean() / matrices["original"][off].abs().mean()).item()
    diag_ratio = (matrices["disentangled"].diagonal() / matrices["original"].diagonal())
    report["effect"] = {k: v.tolist() for k, v in matrices.items()}
    report["off_diagonal_ratio"], report["diagonal_ratio"] = off_ratio, diag_ratio.tolist()
    for label, m in matrices.items():
        print(f"\nEffect matrix, {label} directions (rows: edited along; columns: change of score ÷ scale, "
              f"from −{s:g} to +{s:g} mean differences, {a.edits} samples):\n")
        print("| direction | " + " | ".join(ATTRIBUTES) + " |\n| --- |" + " --- |" * len(ATTRIBUTES))
        for i, k in enumerate(ATTRIBUTES):
            print(f"| {k} | " + " | ".join(f"{v:+.3f}" for v in m[i].tolist()) + " |")
    print(f"\nDisentangled ÷ original: mean |off-diagonal| {off_ratio:.2f} (target ≤ 0.5); diagonal "
          + ", ".join(f"{k} {v:.2f}" for k, v in zip(ATTRIBUTES, diag_ratio.tolist())) + " (target ≥ 0.8)")
    pair = (ATTRIBUTES.index("glasses"), ATTRIBUTES.index("blond"))
    print(f"The correlated pair: glasses → blond {matrices['original'][pair].item():+.3f} before, "
          f"{matrices['disentangled'][pair].item():+.3f} after; blond → glasses "
          f"{matrices['original'][pair[::-1]].item():+.3f} before, {matrices['disentangled'][pair[::-1]].item():+.3f} after.")

    # monotonic response
    sweep = [-2.0, -1.0, 0.0, 1.0, 2.0]
    print(f"\nResponse of each attribute to its own direction (mean score ÷ scale over {a.edits} samples):\n")
    print("| direction | " + " | ".join(f"{v:+g}" for v in sweep) + " | Spearman |\n| --- |" + " --- |" * (len(sweep) + 1))
    report["monotonic"] = {}
    for i, k in enumerate(ATTRIBUTES):
        sc = edit_scores(model, vae, clf, D.select(original, [i]), [1.0], sweep, latent, null, a.sampler)[:, :, columns[i]]
        means = sc.mean(1)
        rho = spearman(torch.tensor(sweep), means)
        report["monotonic"][k] = {"means": means.tolist(), "spearman": rho}
        print(f"| {k} | " + " | ".join(f"{v:.3f}" for v in means.tolist()) + f" | {rho:.2f} |")

    # combined edits, with the original and with the disentangled directions
    report["combined"] = {}
    print("\nCombined edit smile + glasses (both at ±{:g}; change of each attribute's score ÷ scale):\n\n"
          "| directions | attribute | alone | together | ratio |\n| --- | --- | --- | --- | --- |".format(s))
    for label, d in (("original", original), ("disentangled", cleaned)):
        both = D.select(d, [ATTRIBUTES.index("smile"), ATTRIBUTES.index("glasses")])
        together = edit_scores(model, vae, clf, both, [s, s], [-1.0, 1.0], latent, null, a.sampler)
        for k in ("smile", "glasses"):
            alone = matrices[label][ATTRIBUTES.index(k), ATTRIBUTES.index(k)].item()
            change = (together[1] - together[0]).mean(0)[C.NAMES.index(k)].item()
            report["combined"][f"{label} {k}"] = {"alone": alone, "together": change, "ratio": change / alone}
            print(f"| {label} | {k} | {alone:+.3f} | {change:+.3f} | {change / alone:.2f} (target ≥ 0.7) |")

    # sample efficiency: smile positives / negatives by the classifier, in recording order
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
    print("| space | " + " | ".join(f"n={n}" for n in ns) + " |\n| --- |" + " --- |" * len(ns))
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
        print(f"| {sp} | " + " | ".join(f"{c:.2f}" for c in cosines) + " |")

    # inversion
    images, _ = faces.dataset(32, seed=77)
    pixels = torch.from_numpy((images.transpose(0, 2, 3, 1) + 1) / 2)
    report["inversion_psnr"] = {}
    for steps in (20, 50):
        noise, _ = invert(model, null, null, {"samples": vae.encode(pixels)},
                          SamplerSettings(0, steps, 1.0, "ddim", SCHEDULER), batch_size=32)
        rec = comfy.sample.sample(model, noise, steps, 1.0, "ddim", SCHEDULER, null, null, torch.zeros_like(noise),
                                  seed=0, disable_pbar=True)
        psnr = 10 * torch.log10(1 / ((vae.decode(rec).clamp(0, 1) - pixels) ** 2).mean(dim=(1, 2, 3)))
        report["inversion_psnr"][steps] = {"mean": psnr.mean().item(), "median": psnr.median().item(),
                                           "min": psnr.min().item()}
        print(f"\nInversion + zero-edit reconstruction of 32 real faces, {steps} DDIM steps: PSNR mean "
              f"{psnr.mean():.1f} dB, median {psnr.median():.1f}, min {psnr.min():.1f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
