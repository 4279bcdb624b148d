"""Discovery Trainer: memory and speed of training through the sampling chain (paper 001 §5.1).

1. peak resident memory of two training steps (each M in a fresh process, from before the first) at
   M = 10, 20, 50 chain steps, checkpointed and plain ("vanilla") backprop: the step's own
   working set (peak − RSS before it); target: checkpointed M = 50 ≤ 1.1× checkpointed M = 10,
   while vanilla grows with M;
2. throughput: samples per second of a training step, checkpointed ÷ vanilla at M = 10
   (target ≥ 0.5), and a training step ÷ plain sampling of the same batch over the same chain.
Usage: .venv/bin/python bench/discovery.py [--batch 8] [--repeats 3]
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import torch

from bench_common import interleaved_medians, peak_during

import comfy.utils  # noqa: E402
from comfy_hspace import discovery as dv  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.classifier import EMBEDDED  # noqa: E402
from comfy_hspace.host.discovery import discovery_schedule, new_discovery_trainer, with_denoiser  # noqa: E402
from comfy_hspace.host.latents import noise_scale  # noqa: E402
from comfy_hspace.host.pixel_ddpm import CLASS_KEY, load_pixel_ddpm  # noqa: E402

NULL = [[torch.zeros(1, 1, 1), {CLASS_KEY: faces.NULL_CLASS}]]


def setup(model, steps: int, batch: int, checkpointed: bool):
    settings = dv.DiscoverySettings(count=8, magnitude=2.0, t_edit=400, batch_size=batch, checkpointed=checkpointed)
    shape = (batch, 3, faces.SIZE, faces.SIZE)
    sigmas, timesteps = discovery_schedule(model, steps)
    trainer = new_discovery_trainer(model, shape, settings, 0)
    shifted = dv.shifted_step_count(timesteps, settings.t_edit)
    batch_ = dv.draw_batch(torch.Generator().manual_seed(0), shape, 8, 2.0, noise_scale(model, float(sigmas[0])))
    return trainer, sigmas, shifted, batch_


def child(model, steps: int, batch: int, checkpointed: bool) -> None:
    trainer, sigmas, shifted, b = setup(model, steps, batch, checkpointed)

    def run(denoise, device):
        # two steps (the first makes the optimiser state) measured from before the first: the
        # allocator keeps what a step freed, so a second step alone would hide its working set
        return peak_during(lambda: [dv.train_step(denoise, trainer, b, sigmas, shifted) for _ in range(2)])

    peak, before = with_denoiser(model, NULL, NULL, (1, 3, faces.SIZE, faces.SIZE), 1.0, run)
    print(peak, before)


def step_memory(steps: int, batch: int, checkpointed: bool) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", str(steps), "--batch", str(batch)]
                         + ([] if checkpointed else ["--vanilla"]), capture_output=True, text=True, check=True)
    peak, before = map(float, out.stdout.strip().splitlines()[-1].split())
    return peak - before


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--vanilla", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, _ = load_pixel_ddpm(EMBEDDED.parent / "faces-ddpm")
    if a.child:
        child(model, a.child, a.batch, not a.vanilla)
        return

    print(f"Peak memory of two training steps above the process's RSS before them (MiB), batch {a.batch}, K 8:\n")
    print("| M | checkpointed | vanilla |\n| --- | --- | --- |")
    memory = {}
    for steps in (10, 20, 50):
        memory[steps] = (step_memory(steps, a.batch, True), step_memory(steps, a.batch, False))
        print(f"| {steps} | {memory[steps][0]:.0f} | {memory[steps][1]:.0f} |", flush=True)
    print(f"\ncheckpointed M = 50 ÷ M = 10: {memory[50][0] / memory[10][0]:.2f}× (target ≤ 1.1); "
          f"vanilla: {memory[50][1] / memory[10][1]:.2f}×")

    runs = {c: setup(model, 10, a.batch, c) for c in (True, False)}

    def timings(denoise, device):
        def train(c):
            trainer, sigmas, shifted, b = runs[c]
            return lambda: dv.train_step(denoise, trainer, b, sigmas, shifted)

        def plain():
            with torch.no_grad():
                dv.run_chain(denoise, runs[True][3].noise, runs[True][1], 0)

        for fn in (train(True), train(False), plain):
            fn()  # warm-up
        return interleaved_medians([train(True), train(False), plain], a.repeats)

    t_ckpt, t_vanilla, t_plain = with_denoiser(model, NULL, NULL, (1, 3, faces.SIZE, faces.SIZE), 1.0, timings)
    print(f"\nM = 10, batch {a.batch}: training step checkpointed {t_ckpt:.2f} s, vanilla {t_vanilla:.2f} s, "
          f"plain sampling of the batch {t_plain:.2f} s (medians of {a.repeats})")
    print(f"throughput checkpointed ÷ vanilla: {t_vanilla / t_ckpt:.2f} (target ≥ 0.5); "
          f"training step ÷ plain sampling: {t_ckpt / t_plain:.1f}×")


if __name__ == "__main__":
    main()
