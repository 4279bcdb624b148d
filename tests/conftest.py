"""Puts the real ComfyUI (provisioned by scripts/setup.sh, or $COMFYUI_PATH) on the path and
loads this pack the way ComfyUI does, as a package named after its folder."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMFYUI = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui").resolve()
if not (COMFYUI / "main.py").exists():
    raise RuntimeError(f"No ComfyUI at {COMFYUI}: run scripts/setup.sh (or set COMFYUI_PATH)")
for p in (str(REPO / "scripts"), str(REPO / "tests"), str(REPO), str(COMFYUI)):
    if p not in sys.path:
        sys.path.insert(0, p)

from comfy.cli_args import args  # noqa: E402

args.cpu = True
args.disable_all_custom_nodes = True


def load_pack():
    """The pack's root package, imported from its __init__.py like ComfyUI's loader does."""
    if "comfy_hspace_pack" in sys.modules:
        return sys.modules["comfy_hspace_pack"]
    spec = importlib.util.spec_from_file_location("comfy_hspace_pack", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfy_hspace_pack"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return load_pack()
