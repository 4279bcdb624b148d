"""Puts the real ComfyUI on the path (scripts/comfy_env.py) and loads this pack the way
ComfyUI does, as a package from its __init__.py."""
from __future__ import annotations

import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import comfy_env  # noqa: E402

comfy_env.setup()


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


@contextmanager
def cancelled_at(at_step: int, seen: list | None = None):
    """Cancels what runs inside when a progress bar reaches ``at_step``, as the server's Cancel
    button does, and expects the interrupt; ``seen`` collects the progress values."""
    import comfy.model_management
    import comfy.utils

    def cancel(value, total, preview=None, node_id=None):
        if seen is not None:
            seen.append(value)
        if value >= at_step:
            raise comfy.model_management.InterruptProcessingException()

    comfy.utils.set_progress_bar_global_hook(cancel)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            yield
    finally:
        comfy.utils.set_progress_bar_global_hook(None)


def cancel_in_inference_mode(node, args: dict, at_step: int) -> None:
    """Runs a node in inference mode, as ComfyUI does, and cancels it at ``at_step``."""
    import torch

    with cancelled_at(at_step), torch.inference_mode():
        node.execute(**args)
