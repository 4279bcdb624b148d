"""What the nodes share: the socket types, the folders, the sampler inputs, parsing of list widgets."""
from __future__ import annotations

import math
import os
import re
import sys

import comfy.samplers
import folder_paths
from comfy_api.latest import io

from comfy_hspace.host import architectures, embedded

Directions = io.Custom("HSPACE_DIRECTIONS")
Activations = io.Custom("HSPACE_ACTIVATIONS")
CATEGORY = "h-space"
DIRECTIONS_FOLDER = "hspace_directions"
DISCOVERY_FOLDER = "hspace_discovery"  # Discovery Trainer states
AVI_FOLDER = "hspace_avi"  # AVI Φ networks
ACTIVATIONS_FOLDER = "hspace_activations"  # HSpace Hook recordings (Save / Load Activations, scripts/annotate.py)
# the architectures the pack reads, from its one table of them (host/architectures.py)
UNETS = " or ".join(row.name for row in architectures.UNETS)
TRANSFORMERS = ", ".join(row.name for row in architectures.TRANSFORMERS)
ATTENTION_FAMILIES = ", ".join(row.name for row in architectures.TRANSFORMERS if row.attention_output)
# Tooltips of the inputs many nodes share with ComfyUI's own samplers.
TIPS = {
    "model": f"The diffusion model: a {UNETS}, or a transformer ({TRANSFORMERS}; H-space Block picks its "
             f"block(s)).",
    "positive": "Conditioning of the samples (prompt or label).",
    "negative": "Negative conditioning, used with cfg > 1.",
    "vae": "Decodes the samples to images (encodes, for Invert Image).",
    "seed": "Seed of the starting noise, as KSampler's.",
    "steps": "Sampling steps, as KSampler's.",
    "cfg": "Classifier-free guidance scale, as KSampler's (1 = conditional pass only).",
    "sampler_name": "ComfyUI sampler, as KSampler's.",
    "scheduler": "ComfyUI scheduler, as KSampler's.",
    "denoise": "Fraction of the schedule to run, as KSampler's.",
    "latent_image": "Empty latent: image size and batch.",
    "start_percent": "Start of the edit interval as a fraction of the schedule (0 = first step).",
    "end_percent": "End of the edit interval as a fraction of the schedule (1 = last step).",
    "learning_rate": "Adam's learning rate (paper: 1e-3).",
}

SAMPLER_INPUTS = ("seed", "steps", "cfg", "sampler_name", "scheduler")


def sampler_inputs(sampler_name: str = "ddim", scheduler: str = "ddim_uniform", steps: int = 20,
                   names: tuple[str, ...] = SAMPLER_INPUTS, tips: dict[str, str] | None = None) -> list:
    """The inputs a node shares with KSampler (in KSampler's order) with their defaults and
    tooltips; ``tips`` replaces the tooltips of the inputs it names."""
    tip = {**TIPS, **(tips or {})}
    made = {
        "seed": io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip=tip["seed"]),
        "steps": io.Int.Input("steps", default=steps, min=1, max=10000, tooltip=tip["steps"]),
        "cfg": io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=tip["cfg"]),
        "sampler_name": io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default=sampler_name,
                                       tooltip=tip["sampler_name"]),
        "scheduler": io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default=scheduler,
                                    tooltip=tip["scheduler"]),
    }
    return [made[name] for name in names]


for folder in (DIRECTIONS_FOLDER, DISCOVERY_FOLDER, AVI_FOLDER, ACTIVATIONS_FOLDER):
    if folder not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[folder] = ([os.path.join(folder_paths.models_dir, folder)],
                                                       {".safetensors"})
# The shipped faces DDPM is a diffusers folder too: list it in the Pixel DDPM Loader; and the
# shipped Discovery state for it in the Discovery Trainer's start_from (new states go to the first path).
folder_paths.add_model_folder_path("diffusers", str(embedded.FOLDER))
folder_paths.add_model_folder_path(DISCOVERY_FOLDER, str(embedded.DISCOVERY_FOLDER))


def send_progress_text(text: str, node_id) -> None:
    """Text under the node's progress bar in the frontend; nothing when the node runs in-process."""
    server = sys.modules.get("server")  # loaded when ComfyUI serves
    if server is not None and getattr(server.PromptServer, "instance", None) is not None:
        server.PromptServer.instance.send_progress_text(text, node_id)


def parse_floats(text: str, what: str) -> list[float]:
    """'1, -0.5 2' → [1.0, -0.5, 2.0]; a bad entry gives a message naming the input."""
    values = []
    for part in text.replace(",", " ").split():
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a number (expected a list like '-2, -1, 0, 1, 2')") from None
        if not math.isfinite(value):
            raise ValueError(f"{what}: {part!r} is not a finite number")
        values.append(value)
    return values


def safe_name(name: str, what: str) -> str:
    """A file name without folders or odd characters, so a name cannot escape its folder."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    if not stem:
        raise ValueError(f"{what}: {name!r} has no usable characters (letters, digits, '.', '_', '-')")
    return stem


def model_file(folder: str, filename: str) -> str:
    """The full path of a file a loader lists from a models folder, or a message naming the input."""
    path = folder_paths.get_full_path(folder, filename)
    if path is None:
        raise ValueError(f"filename: {filename!r} is not in {folder_paths.get_folder_paths(folder)}")
    return path


def model_file_changed(folder: str, filename: str):
    """A loader's fingerprint_inputs: the file's modification time, so a rewritten file reloads."""
    path = folder_paths.get_full_path(folder, filename)
    return os.path.getmtime(path) if path else filename


def save_inputs(default: str) -> list:
    """The filename and overwrite inputs of a Save node (``save_path`` takes them)."""
    return [io.String.Input("filename", default=default,
                            tooltip="File name without extension; other characters become '_'."),
            io.Boolean.Input("overwrite", default=False,
                             tooltip="Off: an existing file is kept and a numbered name is used.")]


def save_path(folder: str, filename: str, overwrite: bool) -> str:
    """Where a Save node writes ``<filename>.safetensors`` in its models folder: with ``overwrite`` off, a
    numbered name beside an existing file."""
    stem = safe_name(filename, "filename")
    path, counter = os.path.join(folder_paths.get_folder_paths(folder)[0], stem + ".safetensors"), 1
    while not overwrite and os.path.exists(path):
        counter += 1
        path = os.path.join(folder_paths.get_folder_paths(folder)[0], f"{stem}_{counter:05d}.safetensors")
    return path


def output_path(folder: str, name: str, what: str = "name") -> str:
    """Where a trainer writes ``<name>.safetensors`` in its models folder (first of its paths)."""
    return os.path.join(folder_paths.get_folder_paths(folder)[0], safe_name(name, what) + ".safetensors")
