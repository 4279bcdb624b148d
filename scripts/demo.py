"""Runs every API-format workflow in workflows/ through a real ComfyUI server and copies the
images it writes to out/demo/. Until the embedded model ships, the model is a tiny random
pixel-space DDPM made here (the images are noise-like; the point is the real pipeline)."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests")]

from comfy_server import ComfyServer  # noqa: E402
from tiny_models import save_pixel_ddpm  # noqa: E402


def main() -> None:
    out = REPO / "out" / "demo"
    base = REPO / "out" / "server"
    shutil.rmtree(base, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    save_pixel_ddpm(base / "models" / "diffusers" / "hspace-tiny-random")
    start = time.monotonic()
    with ComfyServer(base) as server:
        print(f"ComfyUI up in {time.monotonic() - start:.1f} s at {server.url}")
        for workflow in sorted((REPO / "workflows").glob("*.api.json")):
            t = time.monotonic()
            entry = server.run(json.loads(workflow.read_text()))
            files = server.output_files(entry)
            for f in files:
                shutil.copy(f, out / f"{workflow.name.removesuffix('.api.json')}_{f.name}")
            print(f"{workflow.name}: {len(files)} image(s) in {time.monotonic() - t:.1f} s")
    print(f"images in {out}")


if __name__ == "__main__":
    main()
