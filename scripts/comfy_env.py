"""Puts the real ComfyUI (scripts/setup.sh's .comfyui, or $COMFYUI_PATH) and this repo on the
import path, in CPU mode, for in-process use by the tests, benchmarks and measurement scripts."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def comfyui_path() -> Path:
    path = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui").resolve()
    if not (path / "main.py").exists():
        raise RuntimeError(f"No ComfyUI at {path}: run scripts/setup.sh (or set COMFYUI_PATH)")
    return path


def setup(cpu: bool = True) -> Path:
    comfy = comfyui_path()
    # ComfyUI first: our repo has a ``nodes`` package that must not shadow ComfyUI's nodes.py.
    for p in (str(REPO / "scripts"), str(REPO), str(comfy)):
        if p not in sys.path:
            sys.path.insert(0, p)
    from comfy.cli_args import args

    args.cpu = cpu
    args.disable_all_custom_nodes = True
    return comfy
