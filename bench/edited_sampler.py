"""Edited Sampler vs the stock KSampler on the same model, settings and seed, in one run.

Prints the time ratio of each edit to plain sampling through the same code path: Apply H-space
Edit in the stock KSampler against the stock KSampler (target ≤ 1.02×), the Edited Sampler's modes
against the Edited Sampler with a zero edit (both terms ≤ 1.05×, asymmetric ≤ 2.1×). The model is
a pixel-space UNet2DModel of the embedded default's architecture
(scripts/train_ddpm.py's UNET_CONFIG, 32×32 images) with random weights: timing does not depend on them.
Then the same Apply H-space Edit ratio on the tiny SD3-, Flux- and Z-Image-shaped transformers of the
tests (scripts/tiny_models.py), at a 32×32 latent (256 image tokens, the most the tiny SD3 takes), h at
each family's default block: SD3's and Flux's through ComfyUI's block hook, Z-Image's through a forward
hook on its block for each model call.
Usage: .venv/bin/python bench/edited_sampler.py [--steps 20] [--batch 8] [--repeats 9]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from bench_common import interleaved_medians, random_embedded_model

import nodes as comfy_nodes  # noqa: E402
from comfy_hspace.directions import TIME_INVARIANT, Directions  # noqa: E402
from comfy_hspace.host.edited_sampling import edited_model, edited_sample  # noqa: E402
from comfy_hspace.host.architectures import site_of  # noqa: E402
from comfy_hspace.settings import EditSettings, SamplerSettings  # noqa: E402


def patch_call_seconds(applied, batch: int, shape: tuple[int, ...], calls: int = 2000) -> float:
    """Time of one call of Apply H-space Edit's bottleneck patch on a batch of h, on its own: what the edit
    adds to each model call, below the noise of timing whole sampling runs."""
    patch = applied.model_options["transformer_options"]["patches"]["output_block_patch"][-1]
    h = torch.randn(batch, *shape)
    options = {"block": ("output", 0), "sigmas": torch.full((batch,), 5.0), "cond_or_uncond": [0]}
    for _ in range(100):
        patch(h, h, options)
    t = time.perf_counter()
    for _ in range(calls):
        patch(h, h, options)
    return (time.perf_counter() - t) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    a = parser.parse_args()
    model, cond = random_embedded_model()  # progress bars are off: the stock path would pay for a tqdm bar
    latent = {"samples": torch.zeros(a.batch, 3, 32, 32)}
    shape = site_of(model).h_shape(latent["samples"].shape)
    directions = Directions(torch.randn(2, 1, *shape), torch.tensor([TIME_INVARIANT]), ["a", "b"])

    def stock(m=model):
        comfy_nodes.common_ksampler(m, 1, a.steps, 1.0, "ddpm", "normal", cond, cond, latent)

    def edited(mode, strengths=(1.0, 0.5)):
        return lambda: edited_sample(model, directions, SamplerSettings(1, a.steps, 1.0, "ddpm", "normal"),
                                     EditSettings(strengths, mode=mode), cond, cond, latent, sweep=[1.0])

    applied = edited_model(model, directions, EditSettings((1.0, 0.5)))
    stock()  # warm-up: first call loads the model
    # each edit against plain sampling through its own code path: Apply H-space Edit runs in the stock
    # KSampler; the Edited Sampler's modes against the Edited Sampler with a zero edit (the same calls)
    # and the stock KSampler twice: the ratio of the two is the noise floor of this run
    plain, again, patched, plain_es, both, asyrp = interleaved_medians(
        [stock, stock, lambda: stock(applied), edited("both terms", (0.0, 0.0)), edited("both terms"),
         edited("asymmetric (Asyrp)")], a.repeats)
    patch_s = patch_call_seconds(applied, a.batch, shape)
    result = {"device": "cpu", "threads": torch.get_num_threads(), "steps": a.steps, "batch": a.batch,
              "plain_s": round(plain, 3), "plain_again_ratio": round(again / plain, 3),
              "apply_edit_ratio": round(patched / plain, 3),
              "edited_sampler_zero_edit_s": round(plain_es, 3), "both_terms_ratio": round(both / plain_es, 3),
              "asyrp_ratio": round(asyrp / plain_es, 3), "patch_call_us": round(patch_s * 1e6, 1)}
    print(f"plain KSampler                 {plain:.3f} s  (batch {a.batch}, {a.steps} steps, 32×32, "
          f"median of {a.repeats})")
    print(f"plain KSampler, second timing  {again / plain:.3f}×  (the noise floor)")
    print(f"the edit patch alone           {patch_s * 1e6:.0f} µs a model call: "
          f"{1 + patch_s * a.steps / plain:.4f}× of plain sampling")
    print(f"Apply H-space Edit + KSampler  {patched / plain:.3f}×  (target ≤ 1.02)")
    print(f"Edited Sampler, zero edit      {plain_es:.3f} s  ({plain_es / plain:.3f}× the KSampler node)")
    print(f"both terms / zero edit         {both / plain_es:.3f}×  (target ≤ 1.05)")
    print(f"asymmetric / zero edit         {asyrp / plain_es:.3f}×  (target ≤ 2.1)")
    for kind in ("sd3", "flux", "zimage"):
        result[f"apply_edit_ratio_{kind}"] = round(transformer_ratio(kind, a), 3)
    print(json.dumps(result))


def transformer_ratio(kind: str, a: argparse.Namespace) -> float:
    """Apply H-space Edit + KSampler ÷ KSampler on a tiny transformer, interleaved in one run."""
    from tiny_models import comfy_dit, conditioning

    model, cond = comfy_dit(kind), conditioning(kind)
    latent = {"samples": torch.zeros(a.batch, 16, 32, 32)}
    shape = site_of(model).h_shape(latent["samples"].shape)
    applied = edited_model(model, Directions(torch.randn(2, 1, *shape), torch.tensor([TIME_INVARIANT]), ["a", "b"]),
                           EditSettings((1.0, 0.5)))

    def run(m):
        return lambda: comfy_nodes.common_ksampler(m, 1, a.steps, 1.0, "euler", "simple", cond, cond, latent)

    run(model)()  # warm-up
    plain, again, patched = interleaved_medians([run(model), run(model), run(applied)], a.repeats)
    print(f"tiny {kind}: plain KSampler {plain:.3f} s (batch {a.batch}, {a.steps} steps, 256 tokens); second timing "
          f"{again / plain:.3f}×; Apply H-space Edit + KSampler {patched / plain:.3f}× (target ≤ 1.02)")
    return patched / plain


if __name__ == "__main__":
    main()
