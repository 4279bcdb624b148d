"""The one safetensors writer and reader of the pack: direction files, AVI Φ, Discovery Trainer
states, DDPM training states. Files are written whole and renamed into place, read without
unpickling anything, and every failure names the file and what was expected."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Writes next to ``path`` and renames into place: a failed or cancelled save never leaves a
    half-written file under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # safetensors writes 0600; direction and model files are shared like other models
    os.replace(tmp, path)
    return path


def read_safetensors(path: str | os.PathLike, what: str, file_format: str, kind: str,
                     error: type[ValueError] = ValueError) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file written with metadata ``format`` = ``file_format``, read once.
    Errors read "<what> <path>: <problem>": ``what`` names the input or the kind of file, ``kind``
    says what was expected; they are raised as ``error``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise error(f"{what} {path}: not a readable safetensors file ({e})") from None
    if metadata.get("format") != file_format:
        raise error(f"{what} {path}: safetensors, but not {kind} (format {metadata.get('format')!r}, "
                    f"expected {file_format!r})")
    return tensors, metadata
