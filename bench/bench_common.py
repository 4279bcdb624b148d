"""What the benches share: ComfyUI on the path in CPU mode with progress bars off (by
scripts/measure_common.py, on import), the embedded model's architecture with random weights,
interleaved timing, and peak resident memory, in-process and in a fresh process."""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import measure_common  # noqa: E402,F401  (ComfyUI on the path, CPU mode, progress bars off)
import tiny_models  # noqa: E402
from train_ddpm import UNET_CONFIG  # noqa: E402

from comfy_hspace.host import embedded  # noqa: E402


def random_embedded_model() -> tuple[Any, list]:
    """(MODEL, conditioning) of a UNet2DModel of the embedded default's architecture (scripts/train_ddpm.py's
    UNET_CONFIG) with random weights, unconditional (its null class): timing does not depend on the weights."""
    folder = tiny_models.save_pixel_ddpm(Path(tempfile.mkdtemp()), config=UNET_CONFIG)
    model, _ = embedded.load_model(folder)
    return model, tiny_models.conditioning("pixel")


def interleaved_medians(fns: list, repeats: int) -> list[float]:
    """Median time of each function, run in turn so that drift of the machine hits all alike, in a
    new (seeded) order each round so that no function always runs after the same one."""
    times = [[] for _ in fns]
    order = list(range(len(fns)))
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for i in order:
            t = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_during(fn) -> tuple[float, float]:
    """(peak RSS in MiB while ``fn`` runs, RSS before it), polled every 5 ms."""
    before, peak, done = rss_mb(), [rss_mb()], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.005)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], rss_mb()), before


def print_peak(peak_before: tuple[float, float]) -> None:
    """In the child process of ``peak_in_child``: its answer, peak_during's (peak, before), as the last line."""
    print(*peak_before)


def peak_in_child(script: str | Path, args: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(peak RSS in MiB, RSS before) of a run of ``script args`` in a fresh process (``env`` added to its
    environment), which answers with ``print_peak``: a fresh process, so that what an earlier run allocated
    does not hide a run's working set."""
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=True,
                         env=None if env is None else {**os.environ, **env})
    peak, before = map(float, out.stdout.strip().splitlines()[-1].split())
    return peak, before
