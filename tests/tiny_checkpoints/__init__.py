"""A test-only ComfyUI extension, linked into the test server's custom_nodes: lets ComfyUI's own
checkpoint loader read the tiny SD1.5- and SDXL-shaped checkpoints the tests write
(scripts/tiny_models.py). It adds no nodes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "scripts"))
import tiny_models  # noqa: E402

tiny_models.register_tiny_checkpoints()
NODE_CLASS_MAPPINGS: dict = {}
