"""comfy-hspace: h-space editing directions for ComfyUI (registered as a V3 extension)."""
import os
import sys

# The library is imported as the top-level package ``comfy_hspace`` so that tests, the
# command line and ComfyUI all share one copy of its classes. Appended, not prepended: our
# folder also holds a ``nodes`` package that must never shadow ComfyUI's ``nodes`` module.
_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.append(_here)

from comfy_api.latest import ComfyExtension, io  # noqa: E402

from .nodes import NODES  # noqa: E402

# web/docs/<node id>.md: the help pages the frontend shows for our nodes (scripts/node_docs.py)
WEB_DIRECTORY = "./web"


class HSpaceExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> HSpaceExtension:
    return HSpaceExtension()
