"""AVI (paper 003) against plain sampling of the same model, settings and seed, in one run.

Prints, as ratios to a plain KSamplerAdvanced run over all steps (batch B, DDIM):
- the edit path x (0 → Tx) + merge (with Φ) + continue (Tx → end): the merge's overhead (target ≤ 1.05×);
- the merge alone ÷ plain, and the whole AVI graph including the z branch (0 → Tz) ÷ plain;
and Φ's training time on the CPU at the paper's settings (N 5,000 pairs, batch 256, 5 epochs), scaled
to the embedded model (3×32×32 latents, width H·W = 1,024); for SD1.5 latents (4×64×64, width 4,096,
the paper's net) the time of one update, times the paper's 100 updates.
The model is a pixel-space UNet2DModel of the embedded default's architecture with random weights.
Usage: .venv/bin/python bench/avi.py [--steps 20] [--batch 8] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from bench_common import interleaved_medians, random_embedded_model

import nodes as comfy_nodes  # noqa: E402
from comfy_hspace import avi  # noqa: E402

K = 8  # the node's default for 32×32: a quarter of min(H, W), with keep_noise


def phi_training(g: torch.Generator, pairs: int) -> tuple[float, int, float]:
    """(seconds, updates) of Φ's training at the paper's N, batch and epochs on embedded-size pairs, and
    the seconds of one update of the paper's own net on SD1.5-size latents."""
    xs, zs = torch.randn(pairs, 3, 32, 32, generator=g), torch.randn(pairs, 3, 32, 32, generator=g)
    t0 = time.perf_counter()
    avi.train_phi(xs, zs, 16, epochs=5, batch_size=256)
    t_train = time.perf_counter() - t0
    # the paper's own net on SD1.5-size latents: a few updates, timed
    xs, zs = torch.randn(256, 4, 64, 64, generator=g), torch.randn(256, 4, 64, 64, generator=g)
    t0 = time.perf_counter()
    avi.train_phi(xs, zs, 32, epochs=2, batch_size=256)
    return t_train, 5 * -(-pairs // 256), (time.perf_counter() - t0) / 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=5000)
    a = parser.parse_args()
    model, cond = random_embedded_model()
    latent = {"samples": torch.zeros(a.batch, 3, 32, 32)}
    tx, tz = round(0.2 * a.steps), round(0.7 * a.steps)  # Tx = 0.8T, Tz = Tx − 0.5T (the node's default)
    sampler = comfy_nodes.KSamplerAdvanced()

    def ksampler(lat, start, end, fresh=True):
        return sampler.sample(model, "enable" if fresh else "disable", 1, a.steps, 1.0, "ddim", "ddim_uniform",
                              cond, cond, lat, start, end, "enable" if end < a.steps else "disable")[0]

    g = torch.Generator().manual_seed(0)
    phi, _ = avi.train_phi(torch.randn(64, 3, 32, 32, generator=g), torch.randn(64, 3, 32, 32, generator=g), K,
                           epochs=1)
    x, z = ksampler(latent, 0, tx), ksampler(latent, 0, tz)

    def plain():
        ksampler(latent, 0, a.steps)

    def edit_path(z=z):
        x = ksampler(latent, 0, tx)
        merged = avi.merge_latents(x["samples"], z["samples"], K, 1.0, phi, keep_noise=True)
        ksampler({"samples": merged}, tx, a.steps, False)

    def merge():
        avi.merge_latents(x["samples"], z["samples"], K, 1.0, phi, keep_noise=True)

    def whole():
        edit_path(ksampler(latent, 0, tz))

    plain()  # warm-up: the first call loads the model
    t_plain, t_edit, t_merge, t_whole = interleaved_medians([plain, edit_path, merge, whole], a.repeats)

    t_train, updates, t_sd_update = phi_training(g, a.pairs)
    result = {"device": "cpu", "threads": torch.get_num_threads(), "steps": a.steps, "batch": a.batch, "tx": tx,
              "tz": tz, "plain_s": round(t_plain, 3), "edit_path_ratio": round(t_edit / t_plain, 3),
              "merge_ratio": round(t_merge / t_plain, 4), "whole_graph_ratio": round(t_whole / t_plain, 3),
              "phi_train_s": round(t_train, 1), "phi_updates": updates, "sd15_update_s": round(t_sd_update, 2)}
    print(f"plain KSamplerAdvanced     {t_plain:.3f} s  (batch {a.batch}, {a.steps} DDIM steps, 32×32, median of "
          f"{a.repeats})")
    print(f"x + merge + continue       {t_edit / t_plain:.3f}×  (target ≤ 1.05)")
    print(f"merge alone (with Φ)       {t_merge / t_plain:.4f}×")
    print(f"whole graph incl. z branch {t_whole / t_plain:.3f}×  (z runs to step {tz} of {a.steps})")
    print(f"Φ training, embedded size  {t_train:.1f} s  ({a.pairs} pairs, batch 256, 5 epochs = {updates} updates)")
    print(f"Φ on SD1.5 latents         {t_sd_update:.2f} s per update of 256 pairs → "
          f"≈ {t_sd_update * 100 / 60:.1f} min "
          f"for the paper's ~100 updates")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
