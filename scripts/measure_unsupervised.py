"""Measures the unsupervised methods (issue 4) on the embedded model, whose factors are known,
and prints Markdown tables:

- PCA (paper 000 Fig. 4): which known factors each of the top-5 PCs moves, and how much more
  than a random direction of equal norm per timestep, at equal strength;
- masked Jacobian (eq. 9–10): per-pixel change inside a mouth mask vs outside, with and
  without the mask.

A factor's change is mean |score(+s) − score(−s)| over the samples, divided by the factor's
scale (1 for the binary factors' probabilities, the generator's range for the continuous ones).
Usage: .venv/bin/python scripts/measure_unsupervised.py [--samples 256] [--edits 32] [--strengths 1 2 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from measure_common import decoded, markdown_row, markdown_table, write_report  # first: ComfyUI on the path
import comfy.sample  # noqa: E402
import torch

from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import directions as D  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.edited_sampling import edited_sample  # noqa: E402
from comfy_hspace.host.recording import record_activations  # noqa: E402
from comfy_hspace.host.trajectory import jacobian_directions  # noqa: E402
from comfy_hspace.pca import pca_directions  # noqa: E402
from comfy_hspace.settings import EditSettings, SamplerSettings  # noqa: E402

STEPS, SAMPLER, SCHEDULER = 20, "ddim", "ddim_uniform"


def factor_change(model, vae, d: D.Directions, k: int, strength: float, latent: dict, seed: int, null):
    """Per factor, mean |score(+strength) − score(−strength)| / scale over the latent's samples."""
    out = edited_sample(model, D.select(d, [k]), SamplerSettings(seed, STEPS, 1.0, SAMPLER, SCHEDULER),
                        EditSettings(eta=0.0), null, null, latent, sweep=[-strength, strength])
    n = latent["samples"].shape[0]
    scores = embedded.score(decoded(vae, out["samples"]))
    return ((scores[n:] - scores[:n]).abs().mean(0) / C.SCALES), (scores[n:] - scores[:n]).mean(0)


def measure_pca(model, vae, null, a) -> dict:
    t = time.monotonic()
    activations, _ = record_activations(model, null, null, {"samples": torch.zeros(1, 3, faces.SIZE, faces.SIZE)},
                                        SamplerSettings(0, STEPS, 1.0, SAMPLER, SCHEDULER), n_samples=a.samples,
                                        batch_size=64, components=8)
    pcs = pca_directions(activations, 5)
    baseline = D.random_like(pcs, seed=1)
    print(f"PCA over {a.samples} samples: {time.monotonic() - t:.0f} s", file=sys.stderr)
    latent = {"samples": torch.zeros(a.edits, 3, faces.SIZE, faces.SIZE)}
    rows = []
    for strength in a.strengths:
        for k in range(5):
            change, signed = factor_change(model, vae, pcs, k, strength, latent, 1000, null)
            random_change, _ = factor_change(model, vae, baseline, k, strength, latent, 1000, null)
            top = change.argsort(descending=True)[:2].tolist()
            rows.append({"strength": strength, "direction": f"pc{k + 1}", "total": change.sum().item(),
                         "random_total": random_change.sum().item(),
                         "top": [(C.NAMES[j], change[j].item(), signed[j].item()) for j in top]})
    return {"rows": rows, "samples": a.samples, "edits": a.edits,
            "explained_variance_ratio_mid": [r[STEPS // 2] for r in pcs.parameters["explained_variance_ratio"]]}


def measure_jacobian(model, vae, null, a) -> dict:
    """Per seed: the top Jacobian direction with the mouth mask at each step of ``a.jacobian_steps``
    (and without the mask at the first), applied at ±strength·‖h‖ at all steps or only from its
    own step on; the ratio of mean per-pixel change inside the mask to outside it."""
    rows = []
    for seed in range(a.jacobian_samples):
        latent = {"samples": torch.zeros(1, 3, faces.SIZE, faces.SIZE)}
        noise = comfy.sample.prepare_noise(latent["samples"], seed)
        plain = decoded(vae, comfy.sample.sample(model, noise, STEPS, 1.0, SAMPLER, SCHEDULER, null, null,
                                                 latent["samples"], seed=seed, disable_pbar=True))
        s = dict(zip(C.NAMES, embedded.score(plain)[0].tolist()))
        mask = torch.from_numpy(faces.region_mask("mouth", s["x"], s["y"], s["size"]))
        cases = [(step, True) for step in a.jacobian_steps] + [(a.jacobian_steps[0], False)]
        for step, masked in cases:
            d = jacobian_directions(model, null, null, latent, SamplerSettings(seed, STEPS, 1.0, SAMPLER, SCHEDULER),
                                    step=step, each_step=False, n_directions=2, batch_size=2, tolerance=1e-3,
                                    max_iterations=60, mask=mask[None] if masked else None)
            for start in (0.0, step / STEPS):
                out = edited_sample(model, D.select(d, [0]), SamplerSettings(seed, STEPS, 1.0, SAMPLER, SCHEDULER),
                                    EditSettings(start_percent=start, eta=0.0), null, null, latent,
                                    sweep=[-a.jacobian_strength, a.jacobian_strength])
                images = decoded(vae, out["samples"])
                change = (images[1] - images[0]).abs().mean(-1)  # per pixel
                rows.append({"seed": seed, "step": step, "masked": masked, "from_step": start > 0,
                             "ratio": change[mask > 0].mean().item() / max(change[mask == 0].mean().item(), 1e-12)})
    return {"rows": rows, "strength": a.jacobian_strength}


def print_pca(pca: dict, a) -> None:
    print(f"PCA over {pca['samples']} unconditional samples ({STEPS} {SAMPLER} steps); each direction applied at "
          f"±strength std to {a.edits} other samples. Change = mean |Δscore| / factor scale, summed over the "
          f"9 factors; the random direction has the PC's norm at every timestep.\n")
    rows = []
    for r in pca["rows"]:
        (n1, c1, s1), (n2, c2, s2) = r["top"]
        rows.append([f"{r['strength']:g}", r["direction"], f"{n1} ({c1:.3f}, {s1:+.2f})", f"{n2} ({c2:.3f}, {s2:+.2f})",
                     f"{r['total']:.3f}", f"{r['random_total']:.3f}",
                     f"{r['total'] / max(r['random_total'], 1e-12):.1f}×"])
    print(markdown_table(["strength", "direction", "moves most (change, mean signed Δ)", "next", "total change",
                          "random", "ratio"], rows))
    print()
    for strength in a.strengths:
        rows = [r for r in pca["rows"] if r["strength"] == strength]
        ratio = sum(r["total"] for r in rows) / max(sum(r["random_total"] for r in rows), 1e-12)
        print(f"Top-5 PCs at ±{strength:g} std: {ratio:.1f}× the change of random directions (target ≥ 5×).")
    print(f"Explained variance ratio of PC1…5 at the middle step: "
          f"{', '.join(f'{v:.3f}' for v in pca['explained_variance_ratio_mid'])}\n")


def print_jacobian(jac: dict, a) -> None:
    print(f"Top Jacobian direction ({a.jacobian_samples} seeds, {STEPS} {SAMPLER} steps), applied at "
          f"±{jac['strength']}·‖h‖; mean per-pixel |Δ| inside the mouth mask ÷ outside, median over seeds "
          f"(min … max):\n")
    print(markdown_table(["found at step", "mask", "applied at all steps", "applied from that step on"]))
    for step, masked in [(s_, True) for s_ in a.jacobian_steps] + [(a.jacobian_steps[0], False)]:
        cells = []
        for from_step in (False, True):
            r = torch.tensor([x["ratio"] for x in jac["rows"] if (x["step"], x["masked"], x["from_step"]) ==
                              (step, masked, from_step)])
            cells.append(f"{r.median():.1f}× ({r.min():.1f} … {r.max():.1f})")
        print(markdown_row([step, "mouth" if masked else "none", *cells]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=256, help="samples the PCA is computed over")
    p.add_argument("--edits", type=int, default=32, help="samples each PCA direction is applied to")
    p.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0, 3.0],
                   help="PCA edit strengths in standard deviations")
    p.add_argument("--jacobian-samples", type=int, default=8)
    p.add_argument("--jacobian-steps", type=int, nargs="+", default=[12, 8, 15], help="the first also unmasked")
    p.add_argument("--jacobian-strength", type=float, default=0.1)
    p.add_argument("--parts", nargs="+", choices=["pca", "jacobian"], default=["pca", "jacobian"])
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    model, vae = embedded.load_model()
    null = embedded.conditioning("null")

    report = {"settings": vars(a)}
    if "pca" in a.parts:
        report["pca"] = measure_pca(model, vae, null, a)
        print_pca(report["pca"], a)
    if "jacobian" in a.parts:
        report["jacobian"] = measure_jacobian(model, vae, null, a)
        print_jacobian(report["jacobian"], a)
    write_report(a.json, report)


if __name__ == "__main__":
    main()
