"""The README's table of every model ComfyUI runs (``comfy.supported_models.models``) as the pack reads or
refuses it, generated from the pack's one table of architectures (``host/architectures.py``) and ComfyUI's
own sources: which diffusion model class each model builds (the ``unet_model`` its ``model_base`` class
passes on) and its default sampling (its ``model_type``).

  .venv/bin/python scripts/architectures_table.py           # rewrites the table in README.md
  .venv/bin/python scripts/architectures_table.py --check   # exit 1 where README.md differs
"""
from __future__ import annotations

import argparse
import functools
import inspect
import re
import sys
from pathlib import Path

import comfy_env

comfy_env.setup()
import comfy.model_base  # noqa: E402
import comfy.supported_models  # noqa: E402

from comfy_hspace.host.architectures import (BLOCK_HOOK, DIT_HOOK, OUTPUT_BLOCK_PATCH, Architecture,  # noqa: E402
                                             read_or_refused)
from comfy_hspace.host.model_info import sampling_is_flow  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- architectures table: scripts/architectures_table.py -->", "<!-- end of architectures table -->"
WHERE = {OUTPUT_BLOCK_PATCH: "middle block's output", DIT_HOOK: "image tokens after a block (ComfyUI's block hook)",
         BLOCK_HOOK: "image tokens after a block (a forward hook for one call)"}


def _first_match(cls: type, method: str, pattern: str) -> list[str]:
    for c in cls.__mro__:
        if method in c.__dict__ and (found := re.findall(pattern, inspect.getsource(c.__dict__[method]))):
            return found
    return []


def diffusion_model_class(base: type) -> type:
    """The class a ``model_base`` class builds its diffusion model from (its ``unet_model`` argument, a name
    in ``comfy.model_base``'s namespace)."""
    path = next(p for p in _first_match(base, "__init__", r"unet_model\s*=\s*([\w\.]+)") if p != "unet_model")
    first, *rest = path.split(".")
    return functools.reduce(getattr, rest, vars(comfy.model_base)[first])


def supported_models() -> list[tuple[str, list[type], list[str]]]:
    """(ComfyUI model name, the diffusion model classes it may build, their default model types) for every
    model of ``comfy.supported_models.models``."""
    found = []
    for config in comfy.supported_models.models:
        if config.__module__ != comfy.supported_models.__name__:  # a test's tiny checkpoint configurations
            continue
        bases = [getattr(comfy.model_base, b) for b in
                 dict.fromkeys(_first_match(config, "get_model", r"model_base\.(\w+)\("))]
        types = [inspect.signature(b.__init__).parameters["model_type"].default.name for b in bases]
        found.append((config.__name__, [diffusion_model_class(b) for b in bases], types))
    return found


def _sampling_ok(model_type: str) -> bool:
    """Whether the pack's x0 + σ·ε / flow-matching steps know this sampling (``model_info.is_flow``)."""
    sampling = comfy.model_base.model_sampling(_Settings, comfy.model_base.ModelType[model_type])
    try:
        sampling_is_flow(type(sampling))
    except ValueError:
        return False
    return True


class _Settings:  # what ComfyUI's model sampling reads of a model config: its defaults
    sampling_settings: dict = {}


def _nodes(row: Architecture, sampling_ok: bool) -> str:
    notes = []
    if not row.text_input and not row.unconditional:
        notes.append("Null Conditioning refused (connect its text encoders)")
    if not sampling_ok:
        notes.append("Invert Image, Discovery Trainer and the asymmetric mode refused (its sampling is neither "
                     "x0 + σ·ε nor flow matching)")
    if row.attention_output:
        notes.append("attention-output stream" + (" (no reverse-mode gradients there)" if row.recomputes_blocks
                                                  else ""))
    return "all" + (f"; {'; '.join(notes)}" if notes else "")


def table() -> str:
    lines = ["| ComfyUI model | Diffusion model class | Read as | h | Nodes |", "|---|---|---|---|---|"]
    models = supported_models() + [("Pixel DDPM Loader (this pack)", [_diffusers_unet()], ["EPS"])]
    for name, classes, types in models:
        for cls in dict.fromkeys(classes):  # SD1.x/2.x may build one class with either of two samplings
            row = read_or_refused(cls)
            if isinstance(row, Architecture):
                sampling_ok = all(_sampling_ok(t) for c, t in zip(classes, types) if c is cls)
                lines.append(f"| {name} | `{cls.__name__}` | {row.name} | {WHERE[row.reach]} | "
                             f"{_nodes(row, sampling_ok)} |")
            else:
                lines.append(f"| {name} | `{cls.__name__}` | refused: {row or 'not known to this pack'} | – | – |")
    return "\n".join(lines)


def _diffusers_unet() -> type:
    from comfy_hspace.host.pixel_ddpm import DiffusersUNet
    return DiffusersUNet


def readme_with(text: str, generated: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return f"{text[:start]}\n{generated}\n{text[end:]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 where README.md's table differs")
    a = p.parse_args()
    text = README.read_text()
    updated = readme_with(text, table())
    if a.check:
        sys.exit(0 if updated == text else 1)
    README.write_text(updated)
    print(f"wrote the table of {len(comfy.supported_models.models)} ComfyUI models to {README}")


if __name__ == "__main__":
    main()
