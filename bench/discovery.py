"""Discovery Trainer: memory and speed of training through the sampling chain (paper 001 §5.1).

1. peak resident memory of two training steps (each M in a fresh process, from before the first) at
   M = 10, 20, 50 chain steps, checkpointed and plain ("vanilla") backprop: the step's own
   working set (peak − RSS before it); target: checkpointed M = 50 ≤ 1.1× checkpointed M = 10,
   while vanilla grows with M. Checkpointed also with glibc's mmap threshold fixed at its default
   (``MALLOC_MMAP_THRESHOLD_``): by default glibc raises it as large blocks are freed and then keeps
   freed blocks in its heap, which RSS counts though no tensor holds them;
2. throughput: samples per second of a training step, checkpointed ÷ vanilla at M = 10
   (target ≥ 0.5), and a training step ÷ plain sampling of the same batch over the same chain.
Usage: .venv/bin/python bench/discovery.py [--batch 8] [--repeats 3]
"""
from __future__ import annotations

import argparse

import torch
from bench_common import interleaved_medians, peak_during, peak_in_child, print_peak
from measure_common import DiscoveryRun, discovery_run, markdown_row, markdown_table  # noqa: E402

from comfy_hspace import discovery as dv  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402


def setup(model, steps: int, batch: int, checkpointed: bool) -> tuple[DiscoveryRun, dv.Batch]:
    """A fresh trainer (K 8, S 2, t_edit 400) on the model's ``steps``-step chain and one batch for it."""
    settings = dv.DiscoverySettings(count=8, magnitude=2.0, t_edit=400, batch_size=batch, checkpointed=checkpointed)
    run = discovery_run(model, settings, (batch, 3, faces.SIZE, faces.SIZE), steps)
    return run, dv.draw_batch(torch.Generator().manual_seed(0), run.latent_shape, 8, 2.0, run.noise_scale)


def train_step(denoise, run: DiscoveryRun, batch: dv.Batch):
    return dv.train_step(denoise, run.trainer, batch, run.sigmas, run.shifted)


def child(model, steps: int, batch: int, checkpointed: bool) -> None:
    run, b = setup(model, steps, batch, checkpointed)

    def measure(denoise, device):
        # two steps (the first makes the optimiser state) measured from before the first: the
        # allocator keeps what a step freed, so a second step alone would hide its working set
        return peak_during(lambda: [train_step(denoise, run, b) for _ in range(2)])

    print_peak(run.with_denoiser(model, 1.0, measure))


FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # glibc's default threshold, no longer adapted


def step_memory(steps: int, batch: int, checkpointed: bool, env: dict[str, str] | None = None) -> float:
    peak, before = peak_in_child(__file__, ["--child", str(steps), "--batch", str(batch)]
                                 + ([] if checkpointed else ["--vanilla"]), env)
    return peak - before


def timings(model, batch: int, repeats: int) -> list[float]:
    """Medians of a training step at M = 10, checkpointed and vanilla, and of plain sampling of the batch."""
    runs = {c: setup(model, 10, batch, c) for c in (True, False)}

    def measure(denoise, device):
        def train(c):
            return lambda: train_step(denoise, *runs[c])

        def plain():
            with torch.no_grad():
                dv.run_chain(denoise, runs[True][1].noise, runs[True][0].sigmas, 0)

        for fn in (train(True), train(False), plain):
            fn()  # warm-up
        return interleaved_medians([train(True), train(False), plain], repeats)

    return runs[True][0].with_denoiser(model, 1.0, measure)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--vanilla", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    model, _ = embedded.load_model()
    if a.child:
        child(model, a.child, a.batch, not a.vanilla)
        return

    print(f"Peak memory of two training steps above the process's RSS before them (MiB), batch {a.batch}, K 8:\n")
    print(markdown_table(["M", "checkpointed", "checkpointed, mmap threshold fixed", "vanilla"]))
    memory = {}
    for steps in (10, 20, 50):
        memory[steps] = (step_memory(steps, a.batch, True), step_memory(steps, a.batch, True, FIXED_MMAP_THRESHOLD),
                         step_memory(steps, a.batch, False))
        print(markdown_row([steps, *(f"{m:.0f}" for m in memory[steps])]), flush=True)
    print(f"\ncheckpointed M = 50 ÷ M = 10: {memory[50][0] / memory[10][0]:.2f}× (target ≤ 1.1), "
          f"with the mmap threshold fixed {memory[50][1] / memory[10][1]:.2f}×; "
          f"vanilla: {memory[50][2] / memory[10][2]:.2f}×")

    t_ckpt, t_vanilla, t_plain = timings(model, a.batch, a.repeats)
    print(f"\nM = 10, batch {a.batch}: training step checkpointed {t_ckpt:.2f} s, vanilla {t_vanilla:.2f} s, "
          f"plain sampling of the batch {t_plain:.2f} s (medians of {a.repeats})")
    print(f"throughput checkpointed ÷ vanilla: {t_vanilla / t_ckpt:.2f} (target ≥ 0.5); "
          f"training step ÷ plain sampling: {t_ckpt / t_plain:.1f}×")


if __name__ == "__main__":
    main()
