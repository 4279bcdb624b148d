"""PCA Directions: cost against plain sampling, memory against the number of samples, and the
streaming PCA against scikit-learn's IncrementalPCA.

1. HSpace Hook over N samples (streaming PCA per timestep) / plain sampling of the same N
   samples with the same batches and seeds, interleaved (target ≤ 1.25×);
2. peak resident memory of the hook at N = 1024 / at N = 256, each in a fresh process
   (target ≤ 1.1×), in total and above the process's memory before the run (the run's own
   working set), with plain sampling's for scale;
3. our StreamingPCA / IncrementalPCA at d = 8192 on the same batches: time, and the largest
   principal angle between the two subspaces (target ≥ 3× faster, subspaces agreeing).
Usage: .venv/bin/python bench/pca.py [--samples 256] [--batch 64] [--steps 20] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json

from bench_common import interleaved_medians, peak_during, peak_in_child, print_peak  # first: ComfyUI on the path
import comfy.sample  # noqa: E402
import numpy as np
import torch

from comfy_hspace import faces  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.latents import seed_noise  # noqa: E402
from comfy_hspace.host.recording import record_activations  # noqa: E402
from comfy_hspace.pca import StreamingPCA  # noqa: E402
from comfy_hspace.settings import SamplerSettings  # noqa: E402

NULL = embedded.conditioning("null")
LATENT = {"samples": torch.zeros(1, 3, faces.SIZE, faces.SIZE)}


def hook(model, n: int, batch: int, steps: int):
    return record_activations(model, NULL, NULL, LATENT, SamplerSettings(0, steps, 1.0, "ddim", "ddim_uniform"),
                              n_samples=n, batch_size=batch, components=8)


def plain(model, n: int, batch: int, steps: int) -> None:
    """What the hook does, minus the hook: the same seeds and batches through ComfyUI's sampler."""
    for start in range(0, n, batch):
        m = min(batch, n - start)
        empty = torch.zeros(m, 3, faces.SIZE, faces.SIZE)
        noise = seed_noise(empty, start)
        comfy.sample.sample(model, noise, steps, 1.0, "ddim", "ddim_uniform", NULL, NULL, empty, seed=start,
                            disable_pbar=True)


def peak_rss_mb(what: str, n: int, batch: int, steps: int) -> tuple[float, float]:
    return peak_in_child(__file__, ["--peak", what, "--samples", str(n), "--batch", str(batch), "--steps", str(steps)])


def principal_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    qa, _ = np.linalg.qr(a.T)
    qb, _ = np.linalg.qr(b.T)
    return float(np.degrees(np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False).min(), -1, 1))))


def versus_sklearn(d: int = 8192, n: int = 2048, batch: int = 256, k: int = 16) -> dict:
    from sklearn.decomposition import IncrementalPCA

    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0].T
    data = (torch.randn(n, k, generator=g, dtype=torch.float64) * torch.linspace(10, 2, k, dtype=torch.float64)) @ basis
    data += 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    batches = list(data.split(batch))
    numpy_batches = [b.numpy() for b in batches]
    ours, theirs = [None], [None]

    def run_ours():
        ours[0] = StreamingPCA(k)
        for b in batches:
            ours[0].partial_fit(b)

    def run_theirs():
        theirs[0] = IncrementalPCA(n_components=k)
        for b in numpy_batches:
            theirs[0].partial_fit(b)

    t_ours, t_theirs = interleaved_medians([run_ours, run_theirs], 3)
    return {"d": d, "n": n, "batch": batch, "k": k, "ours_s": round(t_ours, 3), "sklearn_s": round(t_theirs, 3),
            "speedup": round(t_theirs / t_ours, 2),
            "max_principal_angle_deg": round(principal_angle_deg(ours[0].components.numpy(), theirs[0].components_), 4)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak", choices=["hook", "plain"], help=argparse.SUPPRESS)
    a = p.parse_args()
    model, _ = embedded.load_model()
    if a.peak:  # child process: warm up on one batch, then run once and print peak and starting RSS
        plain(model, a.batch, a.batch, a.steps)
        print_peak(peak_during(lambda: (hook if a.peak == "hook" else plain)(model, a.samples, a.batch, a.steps)))
        return

    plain(model, a.batch, a.batch, a.steps)  # warm-up
    t_plain, t_hook = interleaved_medians([lambda: plain(model, a.samples, a.batch, a.steps),
                                           lambda: hook(model, a.samples, a.batch, a.steps)], a.repeats)
    print(f"plain sampling      {t_plain:.2f} s  ({a.samples} samples, batch {a.batch}, {a.steps} ddim steps, "
          f"median of {a.repeats})")
    print(f"hook + PCA / plain  {t_hook / t_plain:.3f}×  (target ≤ 1.25)")
    peaks = {n: peak_rss_mb("hook", n, a.batch, a.steps) for n in (256, 1024)}
    plain_peak = peak_rss_mb("plain", 1024, a.batch, a.steps)
    (p256, b256), (p1024, b1024) = peaks[256], peaks[1024]
    print(f"peak RSS hook N=256 {p256:.0f} MiB, N=1024 {p1024:.0f} MiB: {p1024 / p256:.3f}× (target ≤ 1.1); above "
          f"the process before the run: {p256 - b256:.0f} and {p1024 - b1024:.0f} MiB; plain sampling N=1024 "
          f"{plain_peak[0]:.0f} MiB, {plain_peak[0] - plain_peak[1]:.0f} above")
    sk = versus_sklearn()
    print(f"StreamingPCA {sk['ours_s']:.2f} s vs IncrementalPCA {sk['sklearn_s']:.2f} s at d={sk['d']}, "
          f"n={sk['n']}, k={sk['k']}: {sk['speedup']:.1f}× faster (target ≥ 3); largest principal angle "
          f"{sk['max_principal_angle_deg']:.4f}°")
    print(json.dumps({"threads": torch.get_num_threads(), "plain_s": round(t_plain, 3),
                      "hook_ratio": round(t_hook / t_plain, 3), "peak_mb": peaks, "plain_peak_mb": plain_peak,
                      "memory_ratio": round(p1024 / p256, 3), "sklearn": sk}))


if __name__ == "__main__":
    main()
