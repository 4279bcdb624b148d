"""Edited Sampler vs the stock KSampler on the same model, settings and seed, in one run.

Prints the time ratio of each injection mode to plain sampling (targets: both terms ≤ 1.05×,
asymmetric ≤ 2.1×). The model is a pixel-space UNet2DModel of the embedded default's architecture
(scripts/train_ddpm.py's UNET_CONFIG, 32×32 images) with random weights: timing does not depend on them.
Usage: .venv/bin/python bench/edited_sampler.py [--steps 20] [--batch 8] [--repeats 9]
"""
from __future__ import annotations

import argparse
import json

import torch
from bench_common import interleaved_medians, random_embedded_model

import nodes as comfy_nodes  # noqa: E402
from comfy_hspace.directions import (
    TIME_INVARIANT,  # noqa: E402
    Directions,  # noqa: E402
)
from comfy_hspace.host.edited_sampling import edited_sample  # noqa: E402
from comfy_hspace.host.model_info import bottleneck_shape  # noqa: E402
from comfy_hspace.settings import SamplerSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    a = parser.parse_args()
    model, cond = random_embedded_model()  # progress bars are off: the stock path would pay for a tqdm bar
    latent = {"samples": torch.zeros(a.batch, 3, 32, 32)}
    shape = bottleneck_shape(model, latent["samples"].shape)
    directions = Directions(torch.randn(2, 1, *shape), torch.tensor([TIME_INVARIANT]), ["a", "b"])

    def stock():
        comfy_nodes.common_ksampler(model, 1, a.steps, 1.0, "ddpm", "normal", cond, cond, latent)

    def edited(mode):
        return lambda: edited_sample(model, directions, SamplerSettings(1, a.steps, 1.0, "ddpm", "normal"), cond, cond,
                                     latent, strengths=[1.0, 0.5], sweep=[1.0], mode=mode)

    stock()  # warm-up: first call loads the model
    plain, both, asyrp = interleaved_medians([stock, edited("both terms"), edited("asymmetric (Asyrp)")], a.repeats)
    result = {"device": "cpu", "threads": torch.get_num_threads(), "steps": a.steps, "batch": a.batch,
              "plain_s": round(plain, 3), "both_terms_ratio": round(both / plain, 3),
              "asyrp_ratio": round(asyrp / plain, 3)}
    print(f"plain KSampler        {plain:.3f} s  (batch {a.batch}, {a.steps} steps, 32×32, median of {a.repeats})")
    print(f"both terms / plain    {both / plain:.3f}×  (target ≤ 1.05)")
    print(f"asymmetric / plain    {asyrp / plain:.3f}×  (target ≤ 2.1)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
