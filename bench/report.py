"""The Direction Report's cost against plain sampling of as many images, in one run (issue 31).

On a pixel-space UNet2DModel of the embedded default's architecture with random weights (timing does not
depend on them): the report of K random directions at S strengths on N samples (face classifier features)
against the stock sampler making the same K·S·N images in runs of N and decoding them. The report samples
strength 0 once, so in sampling runs it makes (1 + K·(S − 1)) ÷ (K·S) of plain sampling's.
Usage: .venv/bin/python bench/report.py [--directions 4] [--samples 16] [--steps 20] [--repeats 3]
"""
from __future__ import annotations

import argparse

import torch
from bench_common import interleaved_medians, random_embedded_model

import comfy.sample  # noqa: E402
from comfy_hspace import directions as D  # noqa: E402
from comfy_hspace.host.architectures import site_of  # noqa: E402
from comfy_hspace.host.pixel_ddpm import pixel_vae  # noqa: E402
from comfy_hspace.host.report import direction_report, face_classifier_features  # noqa: E402
from comfy_hspace.settings import SamplerSettings  # noqa: E402

STRENGTHS = [-2.0, -1.0, 0.0, 1.0, 2.0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--directions", type=int, default=4)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    model, null = random_embedded_model()
    vae = pixel_vae(3)
    latent = {"samples": torch.zeros(1, 3, 32, 32)}
    d = D.random_directions(a.directions, site_of(model).h_shape(latent["samples"].shape), 0, 1.0,
                            site_of(model).fingerprint())
    sampling = SamplerSettings(0, a.steps, 1.0, "ddim", "ddim_uniform")

    def report():
        direction_report(model, vae, d, sampling, null, null, latent, samples=a.samples, strengths=STRENGTHS,
                         features=face_classifier_features)

    def plain():
        for run in range(a.directions * len(STRENGTHS)):
            noise = comfy.sample.prepare_noise(torch.zeros(a.samples, 3, 32, 32), run)
            face_classifier_features(vae.decode(comfy.sample.sample(
                model, noise, a.steps, 1.0, "ddim", "ddim_uniform", null, null, torch.zeros_like(noise), seed=run,
                disable_pbar=True)))

    report_s, plain_s = interleaved_medians([report, plain], a.repeats)
    runs = (1 + a.directions * (len(STRENGTHS) - 1)) / (a.directions * len(STRENGTHS))
    print(f"Direction Report, {a.directions} directions × {len(STRENGTHS)} strengths × {a.samples} samples, "
          f"{a.steps} steps: {report_s:.2f} s; plain sampling of as many images {plain_s:.2f} s; "
          f"ratio {report_s / plain_s:.2f}× (sampling runs alone: {runs:.2f}×)")


if __name__ == "__main__":
    main()
