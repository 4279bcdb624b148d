"""Measures AVI (paper 003) on the embedded model and prints Markdown tables (issue 7):

- fidelity, the Table 1 analog with the classifier: for a label pair (original → original + one
  label) the share of samples with the target attribute and the identity distance (position, size,
  skin hue; mean |change| ÷ factor range against the original sample of the same seed), for
  regenerating the seed with the target label and for AVI with and without Φ; the attribute score
  along ρ with its Spearman correlation;
- §4.3: the Grassmann geodesic distance between the top-r singular subspaces of each channel of
  the latent at consecutive steps and against the final sample;
- §4.1: scaling the largest singular value of every channel at one step: how much each factor
  changes, by step.

All sampling goes through ComfyUI's own KSamplerAdvanced, as in the workflows (DDIM, 20 steps).
Usage: .venv/bin/python scripts/measure_avi.py [--attributes smile,glasses,blond] [--json out.json]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from measure_common import markdown_row, markdown_table, write_report  # first: ComfyUI on the path
import comfy.samplers  # noqa: E402
import torch

import nodes  # noqa: E402
from comfy_hspace import avi, faces  # noqa: E402
from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.report import spearman  # noqa: E402

IDENTITY = ("x", "y", "size", "skin_hue")
COARSE, FINE = ("x", "y", "size", "skin_hue", "bg_hue"), ("smile", "eyes_open", "glasses", "blond")
RHOS = (0.0, 0.25, 0.5, 0.75, 1.0)
# name: (label, merge with Φ, keep_noise)
VARIANTS = {"plain": ("x values", False, False), "phi": ("Φ", True, False),
            "keep noise": ("x values, keep noise", False, True), "phi, keep noise": ("Φ, keep noise", True, True)}


class Embedded:
    def __init__(self, steps: int, cfg: float):
        self.model, self.vae = embedded.load_model()
        self.sampler, self.steps, self.cfg = nodes.KSamplerAdvanced(), steps, cfg
        self.null = embedded.conditioning("null")

    def sample(self, labels: str, latent: torch.Tensor, start: int, end: int, seed: int, fresh: bool) -> torch.Tensor:
        """KSamplerAdvanced from step ``start`` to ``end``: fresh noise at the start, leftover noise at the end."""
        out = self.sampler.sample(self.model, "enable" if fresh else "disable", seed, self.steps, self.cfg, "ddim",
                                  "ddim_uniform", embedded.conditioning(labels), self.null,
                                  {"samples": latent}, start, end,
                                  "enable" if end < self.steps else "disable")
        return out[0]["samples"]

    def scores(self, latent: torch.Tensor) -> torch.Tensor:
        return embedded.score(self.vae.decode(self.model.model.process_latent_out(latent)))


def roughness(latent: torch.Tensor) -> float:
    """Mean |difference| of vertically neighbouring pixels: residual noise left in a sample."""
    return float((latent[..., 1:, :] - latent[..., :-1, :]).abs().mean())


def change(scores: torch.Tensor, reference: torch.Tensor, names: tuple[str, ...]) -> float:
    cols = [C.NAMES.index(n) for n in names]
    return float(((scores[:, cols] - reference[:, cols]).abs() / C.SCALES[cols]).mean())


def fidelity(e: Embedded, original: str, attribute: str, a) -> dict:
    target = ",".join(w for w in [original if original != "null" else "", attribute] if w)
    empty = torch.zeros(a.samples, 3, faces.SIZE, faces.SIZE)
    col = C.NAMES.index(attribute)
    final_orig = e.sample(original, empty, 0, a.steps, a.seed, True)
    s_orig = e.scores(final_orig)
    s_regen = e.scores(e.sample(target, empty, 0, a.steps, a.seed, True))
    x = e.sample(original, empty, 0, a.tx, a.seed, True)
    z = e.sample(target, empty, 0, a.tz, a.seed, True)
    t0 = time.perf_counter()
    pairs = torch.zeros(a.pairs, 3, faces.SIZE, faces.SIZE)
    xs = e.sample(original, pairs, 0, a.tx, a.seed + 1, True)
    zs = e.sample(target, pairs, 0, a.tz, a.seed + 1, True)
    pair_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    phi, history = avi.train_phi(xs, zs, a.k, epochs=a.epochs, batch_size=256, seed=a.seed)
    train_s = time.perf_counter() - t0
    row = {"target": target, "original_hit": float((s_orig[:, col] > 0.5).float().mean()),
           "regenerated_hit": float((s_regen[:, col] > 0.5).float().mean()),
           "regenerated_identity": change(s_regen, s_orig, IDENTITY), "original_roughness": roughness(final_orig),
           "pairs_s": pair_s, "train_s": train_s,
           "phi_losses": history[-1]}
    for name, (_, with_phi, keep) in VARIANTS.items():
        means, hits, ids, noise = [], [], [], []
        for rho in RHOS:
            y = avi.merge_latents(x, z, a.k, rho, phi if with_phi else None, keep_noise=keep)
            final = e.sample(original, y, a.tx, a.steps, a.seed, False)
            s = e.scores(final)
            means.append(float(s[:, col].mean()))
            hits.append(float((s[:, col] > 0.5).float().mean()))
            ids.append(change(s, s_orig, IDENTITY))
            noise.append(roughness(final) / row["original_roughness"])
        row[name] = {"mean": means, "hit": hits, "identity": ids, "roughness": noise,
                     "spearman": spearman(torch.tensor(means), torch.tensor(RHOS))}
    return row


def settings_sweep(e: Embedded, attribute: str, a) -> list[dict]:
    """Issue 33: the two settings never varied, at the default merge (keep_noise, k, z's step; ρ 1): which
    channels are merged (x's values, and Φ trained on all channels) and how many pairs train Φ."""
    target = attribute if a.original == "null" else f"{a.original},{attribute}"
    col, empty = C.NAMES.index(attribute), torch.zeros(a.samples, 3, faces.SIZE, faces.SIZE)
    s_orig = e.scores(e.sample(a.original, empty, 0, a.steps, a.seed, True))
    x, z = e.sample(a.original, empty, 0, a.tx, a.seed, True), e.sample(target, empty, 0, a.tz, a.seed, True)
    most = max(a.pair_sizes)
    pairs = torch.zeros(most, 3, faces.SIZE, faces.SIZE)
    xs, zs = e.sample(a.original, pairs, 0, a.tx, a.seed + 1, True), e.sample(target, pairs, 0, a.tz, a.seed + 1, True)
    phis = {n: avi.train_phi(xs[:n], zs[:n], a.k, epochs=max(1, a.epochs * a.pairs // n), batch_size=256,
                             seed=a.seed)[0] for n in a.pair_sizes}  # the same number of updates for each size

    def measure(phi_pairs: int | None, channels: list[int] | None) -> dict:
        y = avi.merge_latents(x, z, a.k, 1.0, phis.get(phi_pairs), keep_noise=True, channels=channels)
        s = e.scores(e.sample(a.original, y, a.tx, a.steps, a.seed, False))
        return {"attribute": attribute, "phi_pairs": phi_pairs, "channels": "all" if channels is None else channels,
                "hit": float((s[:, col] > 0.5).float().mean()), "identity": change(s, s_orig, IDENTITY)}

    rows = [measure(None, channels) for channels in a.channel_sets]
    return rows + [measure(n, channels) for n in a.pair_sizes for channels in (None, *a.channel_sets[1:2])]


def subspaces(e: Embedded, a) -> list[dict]:
    empty = torch.zeros(a.samples, 3, faces.SIZE, faces.SIZE)
    latents = [e.sample("null", empty, 0, 1, a.seed, True)]
    for i in range(1, a.steps):
        latents.append(e.sample("null", latents[-1], i, i + 1, a.seed, False))
    model_sampling = e.model.get_model_object("model_sampling")
    schedule = comfy.samplers.calculate_sigmas(model_sampling, "ddim_uniform", a.steps)
    rows = []
    for i, lat in enumerate(latents):
        t = float(model_sampling.timestep(schedule[i + 1])) if i + 1 < a.steps else 0.0
        row = {"step": i + 1, "t": t}
        for r in (1, 4):
            row[f"next_r{r}"] = (float(avi.grassmann_distance(lat, latents[i + 1], r).mean())
                                 if i + 1 < len(latents) else 0.0)
            row[f"final_r{r}"] = float(avi.grassmann_distance(lat, latents[-1], r).mean())
        rows.append(row)
    return rows


def value_edits(e: Embedded, a) -> list[dict]:
    empty = torch.zeros(a.samples, 3, faces.SIZE, faces.SIZE)
    base = e.scores(e.sample("null", empty, 0, a.steps, a.seed, True))
    rows = []
    for step in a.edit_steps:
        x = e.sample("null", empty, 0, step, a.seed, True)
        row = {"step": step}
        for factor in (0.8, 1.2):
            s = e.scores(e.sample("null", avi.scale_singular_values(x, [0], factor), step, a.steps, a.seed, False))
            row[factor] = {n: change(s, base, (n,)) for n in COARSE + FINE}
        rows.append(row)
    return rows


def print_fidelity(e: Embedded, a) -> dict:
    """Measures and prints fidelity for each attribute as it goes: {attribute: fidelity(…)}."""
    print(f"## AVI fidelity ({a.samples} seeds, DDIM {a.steps} steps, x at step {a.tx}, z at step {a.tz}, k {a.k}, "
          f"original labels '{a.original}', Φ on {a.pairs} pairs × {a.epochs} epochs)\n")
    print(markdown_table(["target", "original hit", "regenerated hit", "identity", "AVI hit (ρ 1)", "identity",
                          "AVI + Φ hit (ρ 1)", "identity", "AVI, keep noise hit (ρ 1)", "identity",
                          "AVI + Φ, keep noise hit (ρ 1)", "identity", "score along ρ 0…1 (no Φ)", "Spearman",
                          "with Φ", "Spearman", "keep noise", "Spearman", "Φ, keep noise", "Spearman"]))
    rows = {}
    for attribute in a.attributes.split(","):
        r = rows[attribute] = fidelity(e, a.original, attribute, a)
        variants = [r[name] for name in VARIANTS]
        print(markdown_row([r["target"], f"{r['original_hit']:.2f}", f"{r['regenerated_hit']:.2f}",
                            f"{r['regenerated_identity']:.3f}",
                            *(f"{v[key][-1]:{form}}" for v in variants for key, form in (("hit", ".2f"),
                                                                                       ("identity", ".3f"))),
                            *(part for v in variants for part in (" ".join(f"{m:.2f}" for m in v["mean"]),
                                                                  f"{v['spearman']:.2f}"))]), flush=True)
    print("\nPer ρ (0 … 1): hit rate / identity / roughness ÷ the original samples' (residual noise)\n")
    print(markdown_table(["target", "AVI", *(f"ρ {r}" for r in RHOS)],
                         [[attribute, label,
                           *(f"{h:.2f} / {i:.3f} / {n:.2f}" for h, i, n in
                             zip(r[name]["hit"], r[name]["identity"], r[name]["roughness"]))]
                          for attribute, r in rows.items() for name, (label, _, _) in VARIANTS.items()]))
    print("\nΦ: pairs generated in " + ", ".join(f"{r['pairs_s']:.0f} s" for r in rows.values())
          + "; trained in " + ", ".join(f"{r['train_s']:.1f} s" for r in rows.values()))
    return rows


def print_subspaces(rows: list[dict], a) -> None:
    print(f"\n## Grassmann distance of top-r singular subspaces along the schedule (mean over {a.samples} samples "
          f"× 3 channels; max √r·π/2)\n")
    print(markdown_table(["step", "t", "to next step, r 1", "r 4", "to final sample, r 1", "r 4"],
                         [[row["step"], f"{row['t']:.0f}", f"{row['next_r1']:.3f}", f"{row['next_r4']:.3f}",
                           f"{row['final_r1']:.3f}", f"{row['final_r4']:.3f}"] for row in rows]))


def print_value_edits(rows: list[dict]) -> None:
    print("\n## Largest singular value of every channel × 0.8 / × 1.2 at one step: mean |change| ÷ factor range\n")
    print(markdown_table(["step", "scale", *COARSE, *FINE],
                         [[row["step"], factor, *(f"{row[factor][n]:.3f}" for n in COARSE + FINE)]
                          for row in rows for factor in (0.8, 1.2)]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attributes", default="smile,glasses,blond")
    p.add_argument("--original", default="null", help="original labels; the target adds one attribute")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--tx", type=int, default=4, help="end step of x (paper Tx = 0.8T: step 4 of 20)")
    p.add_argument("--tz", type=int, default=14, help="end step of z (Tx + Δτ; the node's default Δτ = −0.5T: "
                                                       "step 14 of 20; the paper's −0.3T: 10)")
    p.add_argument("--k", type=int, default=faces.SIZE // 4,
                   help="x's singular vectors kept whole (the node's default: a quarter; the paper: half)")
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--pairs", type=int, default=1024, help="training pairs for Φ")
    p.add_argument("--epochs", type=int, default=25, help="25 epochs of 1,024 pairs = the paper's ~100 updates")
    p.add_argument("--edit-steps", type=lambda s: [int(v) for v in s.split(",")], default=[2, 6, 10, 14])
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--sweep", action="store_true", help="only the sweep of merged channels and Φ's training size")
    p.add_argument("--channel-sets", type=lambda s: [None if c == "all" else [int(v) for v in c.split("+")]
                                                     for c in s.split(",")], default="all,0,1,2,0+1,0+2,1+2")
    p.add_argument("--pair-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[256, 1024, 2048])
    a = p.parse_args()
    e = Embedded(a.steps, a.cfg)
    if a.sweep:
        print(markdown_table(["target", "Φ trained on (pairs)", "merged channels", "hit (ρ 1)", "identity"]))
        rows = []
        for attribute in a.attributes.split(","):
            for r in settings_sweep(e, attribute, a):
                rows.append(r)
                print(markdown_row([attribute, r["phi_pairs"] or "— (x's values)", r["channels"], f"{r['hit']:.2f}",
                                    f"{r['identity']:.3f}"]), flush=True)
        write_report(a.json, {"settings": vars(a) | {"json": None}, "sweep": rows})
        return
    result = {"settings": vars(a) | {"json": None}}
    result["fidelity"] = print_fidelity(e, a)
    result["subspaces"] = subspaces(e, a)
    print_subspaces(result["subspaces"], a)
    result["value_edits"] = value_edits(e, a)
    print_value_edits(result["value_edits"])
    write_report(a.json, result)


if __name__ == "__main__":
    main()
