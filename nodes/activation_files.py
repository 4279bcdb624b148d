import os

import folder_paths
from comfy_api.latest import io

from comfy_hspace.activation_files import load_activations, merge_activations, save_activations
from comfy_hspace.host.architectures import site_of
from comfy_hspace.host.model_info import check_recorded_at
from comfy_hspace.host.recording import spill_directory

from .common import (
    ACTIVATIONS_FOLDER,
    CATEGORY,
    TIPS,
    Activations,
    model_file,
    model_file_changed,
    save_inputs,
    save_path,
)


class SaveActivations(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceSaveActivations", display_name="Save Activations (h-space)", category=CATEGORY,
            description="Saves what the HSpace Hook (or Invert Image, Merge Activations) recorded into "
                        "models/hspace_activations: per-timestep counts, means and the streaming PCA state, and with "
                        "keep_samples every sample's h trajectory and noise; written whole, then renamed.",
            inputs=[Activations.Input("activations", tooltip="What the HSpace Hook recorded."),
                    *save_inputs("activations")],
            outputs=[io.String.Output("path")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, activations, filename, overwrite) -> io.NodeOutput:
        path = save_path(ACTIVATIONS_FOLDER, filename, overwrite)
        save_activations(activations, path)
        return io.NodeOutput(path, ui={"text": [os.path.basename(path)]})


class LoadActivations(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceLoadActivations", display_name="Load Activations (h-space)", category=CATEGORY,
            description="Loads a recording from models/hspace_activations (Save Activations, scripts/annotate.py) for "
                        "PCA Directions, Attribute Direction and every node that takes the Hook's activations. With "
                        "a model connected, a file of another model or block is refused by its fingerprint.",
            inputs=[io.Combo.Input("filename", options=folder_paths.get_filename_list(ACTIVATIONS_FOLDER),
                                   tooltip="An activations file in models/hspace_activations."),
                    io.Model.Input("model", optional=True, tooltip=f"{TIPS['model']} Checks the file is of it.")],
            outputs=[Activations.Output()],
        )

    @classmethod
    def execute(cls, filename, model=None) -> io.NodeOutput:
        path = model_file(ACTIVATIONS_FOLDER, filename)
        activations = load_activations(path, spill_directory(), "filename")
        if model is not None:
            check_recorded_at(site_of(model), activations.parameters.get("model_fingerprint"), filename)
        return io.NodeOutput(activations)

    @classmethod
    def fingerprint_inputs(cls, filename, model=None):
        return model_file_changed(ACTIVATIONS_FOLDER, filename)


class MergeActivations(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceMergeActivations", display_name="Merge Activations (h-space)", category=CATEGORY,
            description="The statistics of two recordings' samples together, as if one Hook had recorded them all: "
                        "counts and means exactly, the PCA state by one more incremental step. Recordings of "
                        "another model, block, schedule or size are refused.",
            inputs=[Activations.Input("a", tooltip="A recording."),
                    Activations.Input("b", tooltip="Another recording of the same model, steps and size.")],
            outputs=[Activations.Output()],
        )

    @classmethod
    def execute(cls, a, b) -> io.NodeOutput:
        return io.NodeOutput(merge_activations([a, b], spill_directory()))
