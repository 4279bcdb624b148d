"""Jacobian Directions: time of one power iteration (Jv and JᵀJv from
retained graphs, QR) ÷ time of one forward pass of the UNet at the same batch, at a
point of a real trajectory of the embedded model (target ≤ 3.5). Iteration time is the slope
between runs of few and many iterations, so the one-off set-up (the two graphs) is reported on
its own.
Usage: .venv/bin/python bench/jacobian.py [--batch 4 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import time

from bench_common import interleaved_medians  # first: ComfyUI on the path
import comfy.sample  # noqa: E402
import torch

from comfy_hspace.host.architectures import site_of  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.trajectory import at_trajectory_steps  # noqa: E402
from comfy_hspace.jacobian import jacobian_maps, top_singular_vectors  # noqa: E402
from comfy_hspace.settings import SamplerSettings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=[4, 8])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    model, _ = embedded.load_model()
    null = embedded.conditioning("null")
    latent = torch.zeros(1, 3, faces.SIZE, faces.SIZE)
    results = []

    def analyse(point):
        h_shape = tuple(point.h.shape)
        for b in a.batch:
            jvp, vjp = jacobian_maps(point)
            t = time.perf_counter()
            v = torch.randn(b, *h_shape, dtype=torch.float64)
            vjp(jvp(v))
            setup = time.perf_counter() - t

            def forward():
                with torch.no_grad():
                    point.eps(torch.zeros(b, *h_shape).to(point.h))

            def iterations(n):
                return lambda: top_singular_vectors(jvp, vjp, h_shape, b, tol=1e-30, max_iters=n)

            t_forward, t_few, t_many = interleaved_medians([forward, iterations(2), iterations(12)], a.repeats)
            per_iteration = (t_many - t_few) / 10
            results.append({"batch": b, "forward_s": round(t_forward, 4), "iteration_s": round(per_iteration, 4),
                            "ratio": round(per_iteration / t_forward, 2), "setup_s": round(setup, 3)})
        return None

    with torch.inference_mode():  # as a running prompt
        at_trajectory_steps(model, site_of(model), null, null, latent, comfy.sample.prepare_noise(latent, 0),
                            SamplerSettings(0, 20, 1.0, "ddim", "ddim_uniform"), wanted=[8], analyse=analyse)
    for r in results:
        print(f"batch {r['batch']}: forward {r['forward_s'] * 1000:.1f} ms, power iteration "
              f"{r['iteration_s'] * 1000:.1f} ms: {r['ratio']:.2f}× (target ≤ 3.5); set-up {r['setup_s']:.2f} s")
    print(json.dumps({"threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    main()
