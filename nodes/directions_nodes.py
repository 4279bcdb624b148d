"""Nodes that make, save, load and reshape HSPACE_DIRECTIONS values."""
import os

import folder_paths
from comfy_api.latest import io

from comfy_hspace import directions as D
from comfy_hspace.host.architectures import site_of

from .common import (
    CATEGORY,
    DIRECTIONS_FOLDER,
    TIPS,
    Directions,
    model_file,
    model_file_changed,
    parse_floats,
    save_inputs,
    save_path,
)


class SaveDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceSaveDirections", display_name="Save Directions (h-space)", category=CATEGORY,
            description="Saves directions as .safetensors (metadata in the header) into models/hspace_directions, "
                        "where Load Directions finds them.",
            inputs=[Directions.Input("directions",
                                     tooltip="Directions from any h-space node (HSPACE_DIRECTIONS)."),
                    *save_inputs("directions")],
            outputs=[io.String.Output("path")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, directions, filename, overwrite) -> io.NodeOutput:
        path = save_path(DIRECTIONS_FOLDER, filename, overwrite)
        D.save_directions(directions, path)
        return io.NodeOutput(path, ui={"text": [os.path.basename(path)]})


class LoadDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceLoadDirections", display_name="Load Directions (h-space)", category=CATEGORY,
            description="Loads a direction file from models/hspace_directions. Only safetensors files written by "
                        "this pack are accepted; NaN or inf values are refused.",
            inputs=[io.Combo.Input("filename", options=folder_paths.get_filename_list(DIRECTIONS_FOLDER),
                                   tooltip="A direction file in models/hspace_directions.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, filename) -> io.NodeOutput:
        return io.NodeOutput(D.load_directions(model_file(DIRECTIONS_FOLDER, filename)))

    @classmethod
    def fingerprint_inputs(cls, filename):
        return model_file_changed(DIRECTIONS_FOLDER, filename)


class RandomDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceRandomDirections", display_name="Random Directions (h-space)", category=CATEGORY,
            description="Random time-invariant directions shaped for this model's h at this latent size: "
                        "the baseline a found direction should beat. With `like` connected: one random direction "
                        "per direction of `like`, with its norm at every timestep (count and rms are not used).",
            inputs=[io.Model.Input("model", tooltip=TIPS["model"]),
                    io.Latent.Input("latent_image", tooltip="Gives the latent size the directions are shaped for."),
                    io.Int.Input("count", default=4, min=1, max=256, tooltip="Number of random directions."),
                    io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                                 tooltip="Seed of the random directions."),
                    io.Float.Input("rms", default=1.0, min=0.0, max=1000.0, step=0.01,
                                   tooltip="Root-mean-square value per element of each direction."),
                    Directions.Input("like", optional=True,
                                     tooltip="Directions whose norms the random ones copy, e.g. PCA Directions.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, model, latent_image, count, seed, rms, like=None) -> io.NodeOutput:
        if like is not None:
            return io.NodeOutput(D.random_like(like, seed))
        site = site_of(model)
        shape = site.h_shape(latent_image["samples"].shape)
        return io.NodeOutput(D.random_directions(count, shape, seed, rms, site.fingerprint()))


class SelectDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceSelectDirections", display_name="Select Directions (h-space)", category=CATEGORY,
            description="Keeps the chosen directions, in the given order.",
            inputs=[Directions.Input("directions",
                                     tooltip="Directions from any h-space node (HSPACE_DIRECTIONS)."),
                    io.String.Input("indices", default="0", tooltip="Indices or names, e.g. '0, 2' or '1-3'.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, directions, indices) -> io.NodeOutput:
        return io.NodeOutput(D.select(directions, D.parse_indices(indices, directions)))


class ScaleDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceScaleDirections", display_name="Scale Directions (h-space)", category=CATEGORY,
            description="Multiplies each direction by a factor (negative flips it).",
            inputs=[Directions.Input("directions",
                                     tooltip="Directions from any h-space node (HSPACE_DIRECTIONS)."),
                    io.String.Input("factors", default="1.0", tooltip="One factor for all, or one per direction.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, directions, factors) -> io.NodeOutput:
        return io.NodeOutput(D.scale(directions, parse_floats(factors, "factors")))


class CombineDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceCombineDirections", display_name="Combine Directions (h-space)", category=CATEGORY,
            description="stack: all of a, then all of b. sum: direction k = weight_a·a_k + weight_b·b_k. "
                        "b is looked up at a's timesteps.",
            inputs=[Directions.Input("a",
                                     tooltip="First set of directions."),
                    Directions.Input("b",
                                     tooltip="Second set: same model, space and h shape as a."),
                    io.Combo.Input("mode", options=["stack", "sum"], default="stack",
                                   tooltip="stack: a's directions then b's; weighted sum: weight_a·a + weight_b·b."),
                    io.Float.Input("weight_a", default=1.0, min=-100.0, max=100.0, step=0.01,
                                   tooltip="Weight of a in the weighted sum."),
                    io.Float.Input("weight_b", default=1.0, min=-100.0, max=100.0, step=0.01,
                                   tooltip="Weight of b in the weighted sum.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, a, b, mode, weight_a, weight_b) -> io.NodeOutput:
        if mode == "stack":
            return io.NodeOutput(D.stack(a, b))
        return io.NodeOutput(D.weighted_sum(a, b, weight_a, weight_b))


class ResizeDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceResizeDirections", display_name="Resize Directions (h-space)", category=CATEGORY,
            description="Resizes directions to the h of another latent size (e.g. found at 512 px, used at 768 px); "
                        "per-position values are kept.",
            inputs=[Directions.Input("directions",
                                     tooltip="Directions from any h-space node (HSPACE_DIRECTIONS)."),
                    io.Model.Input("model", tooltip=TIPS["model"]),
                    io.Latent.Input("latent_image", tooltip="A latent of the size the directions will be used at.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, directions, model, latent_image) -> io.NodeOutput:
        channels, height, width = site_of(model).h_shape(latent_image["samples"].shape)
        if channels != directions.h_shape[0]:
            raise ValueError(f"directions: {directions.h_shape[0]} channels, but this model's h has {channels}; "
                             f"resizing changes only height and width")
        samples = latent_image["samples"]
        if samples.ndim == 5 and samples.shape[2] > 1 and (height, width) != tuple(directions.h_shape[1:]):
            raise ValueError(f"latent_image: a video's h stacks its frames ({samples.shape[2]} frames → "
                             f"h {[channels, height, width]}), which resizing would mix; find the directions on a "
                             f"latent of this size and length")
        return io.NodeOutput(D.resize(directions, height, width))
