"""Supervised annotation at scale: peak resident memory of the whole classifier-annotation graph
(HSpace Hook with keep_samples → VAE decode → Face Attribute Scores → Attribute Direction by
regression on all scores, which reads every trajectory back in chunks) at N = 256 and N = 1024
samples on the embedded model, each in a fresh process
(target: ≤ 1.1× apart). The trajectories go to a file in half precision, so memory holds only the
samples, their images and scores; the file's size is printed beside what keeping the trajectories
in memory (float32) would have taken.
Usage: .venv/bin/python bench/annotation.py [--batch 64] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import math

from bench_common import peak_during, peak_in_child, print_peak  # first: ComfyUI on the path
import torch

from comfy_hspace import classifier, faces  # noqa: E402
from comfy_hspace.attribute import attribute_direction  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.architectures import site_of  # noqa: E402
from comfy_hspace.host.recording import record_activations  # noqa: E402
from comfy_hspace.settings import SamplerSettings  # noqa: E402

NULL = embedded.conditioning("null")
LATENT = {"samples": torch.zeros(1, 3, faces.SIZE, faces.SIZE)}


def annotate(model, vae, n: int, batch: int, steps: int) -> None:
    activations, samples = record_activations(model, NULL, NULL, LATENT,
                                              SamplerSettings(0, steps, 1.0, "ddpm", "normal"), n_samples=n,
                                              batch_size=batch, components=0, keep_samples=True)
    scores = torch.cat([embedded.score(vae.decode(samples[i:i + batch])) for i in range(0, n, batch)])
    attribute_direction(activations, scores=scores, count=64, space="h", column=classifier.NAMES.index("smile"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    model, vae = embedded.load_model()
    if a.child:  # a fresh process: warm up on two batches, then annotate once and print peak and start
        annotate(model, vae, 2 * a.batch, a.batch, 2)
        print_peak(peak_during(lambda: annotate(model, vae, a.child, a.batch, a.steps)))
        return
    h_values = a.steps * math.prod(site_of(model).h_shape(LATENT["samples"].shape))
    result = {}
    for n in (256, 1024):
        peak, before = peak_in_child(__file__, ["--child", str(n), "--batch", str(a.batch), "--steps", str(a.steps)])
        result[n] = {"peak_mb": round(peak), "working_set_mb": round(peak - before),
                     "trajectories_on_disk_mb": round(n * h_values * 2 / 2 ** 20),
                     "trajectories_float32_mb": round(n * h_values * 4 / 2 ** 20)}
        print(f"N = {n:4d}: peak RSS {peak:.0f} MiB ({peak - before:.0f} MiB above the loaded model); trajectories "
              f"{result[n]['trajectories_on_disk_mb']} MiB on disk (in memory as float32: "
              f"{result[n]['trajectories_float32_mb']} MiB)")
    ratio = result[1024]["peak_mb"] / result[256]["peak_mb"]
    print(f"N = 1024 ÷ N = 256: {ratio:.3f}× (target ≤ 1.1)")
    print(json.dumps({"batch": a.batch, "steps": a.steps, "peaks": result, "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
