import comfy.model_management
import torch
from comfy_api.latest import io

from comfy_hspace import directions as D
from comfy_hspace.grid import labelled_grid
from comfy_hspace.host.architectures import site_of
from comfy_hspace.host.edited_sampling import edited_model, edited_sample
from comfy_hspace.host.memory import check_fits, grid_bytes
from comfy_hspace.host.model_info import image_scale
from comfy_hspace.settings import APPLY_TO, MODES, EditSettings, SamplerSettings

from .common import CATEGORY, TIPS, Directions, parse_floats, sampler_inputs


def parse_strengths(text: str, directions) -> list[float]:
    """One strength per direction, or one for all."""
    values = parse_floats(text, "strengths")
    if len(values) not in (1, directions.count):
        raise ValueError(f"strengths: expected 1 or {directions.count} values (one per direction), got {len(values)}")
    return values


class EditedSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceEditedSampler",
            display_name="Edited Sampler (h-space)",
            category=CATEGORY,
            description="Samples like KSampler while adding h-space directions to the UNet bottleneck: "
                        "h ← h + Σ strength·direction(t) inside the edit interval (several directions with "
                        "their strengths edit together; x_T directions are added to the starting noise). A sweep "
                        "list gives one batch member per multiplier, all from the same noise.",
            inputs=[
                io.Model.Input("model", tooltip=TIPS["model"]),
                io.Conditioning.Input("positive", tooltip=TIPS["positive"]),
                io.Conditioning.Input("negative", tooltip=TIPS["negative"]),
                io.Latent.Input("latent_image", tooltip=TIPS["latent_image"]),
                Directions.Input("directions", tooltip="The h-space directions to add."),
                *sampler_inputs("ddpm", "normal", tips={"sampler_name": "Used in 'both terms' mode; the asymmetric "
                                                                        "mode has its own DDIM(η) step."}),
                io.String.Input("strengths", default="1.0",
                                tooltip="One strength per direction, or one for all (comma separated)."),
                io.String.Input("sweep", default="",
                                tooltip="Multipliers of the strengths, e.g. '-2, -1, 0, 1, 2': one output per "
                                        "value, same noise for each. Empty: a single output."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start of the edit interval as a fraction of the schedule (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="End of the edit interval as a fraction of the schedule (1 = last step)."),
                io.Combo.Input("apply_to", options=list(APPLY_TO), default="both",
                               tooltip="Edit the conditional pass, the unconditional one, or both."),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0],
                               tooltip="both terms: one UNet pass per step, the edit reaches x0 and the direction "
                                       "term (paper 000). asymmetric (Asyrp): x0 from the edited pass, direction "
                                       "term from an unedited pass (two passes per edited step)."),
                io.Float.Input("eta", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Asymmetric mode only: DDIM η (0 deterministic, 1 DDPM-like)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=TIPS["denoise"]),
                io.Latent.Input("noise", optional=True,
                                tooltip="Starting noise instead of the seed's, e.g. from Invert Image: with the ddim "
                                        "sampler, the inversion's steps and scheduler and zero edit it gives the "
                                        "image back. Same shape as latent_image."),
            ],
            outputs=[io.Latent.Output(tooltip="Sweep members one after another, each the size of the input batch.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, directions, seed, steps, cfg, sampler_name,
                scheduler, strengths, sweep, start_percent, end_percent, apply_to, mode, eta,
                denoise, noise=None) -> io.NodeOutput:
        strength_list = parse_strengths(strengths, directions)
        sweep_list = parse_floats(sweep, "sweep") or [1.0]
        sampling = SamplerSettings(seed, steps, cfg, sampler_name, scheduler, denoise)
        edit = EditSettings(strength_list, start_percent, end_percent, apply_to, mode, eta)
        out = edited_sample(model, directions, sampling, edit, positive, negative, latent_image, sweep=sweep_list,
                            noise_latent=noise)
        return io.NodeOutput(out)


class ApplyHSpaceEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceApplyEdit", display_name="Apply H-space Edit", category=CATEGORY,
            description="Patches the model so that any sampler node (KSampler, KSamplerAdvanced, "
                        "SamplerCustomAdvanced, hires-fix passes) adds h-space directions at the UNet bottleneck: "
                        "h ← h + Σ strength·direction(t) inside the edit interval, the Edited Sampler's 'both "
                        "terms' edit. Two in a row add their edits; strength 0 gives the model back unchanged.",
            inputs=[
                io.Model.Input("model", tooltip=TIPS["model"]),
                Directions.Input("directions", tooltip="The h-space directions to add."),
                io.String.Input("strengths", default="1.0",
                                tooltip="One strength per direction, or one for all (comma separated)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip=TIPS["start_percent"]),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=TIPS["end_percent"]),
                io.Combo.Input("apply_to", options=list(APPLY_TO), default="both",
                               tooltip="Edit the conditional pass, the unconditional one, or both."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the edit; the input model is left as it was.")],
        )

    @classmethod
    def execute(cls, model, directions, strengths, start_percent, end_percent, apply_to) -> io.NodeOutput:
        edit = EditSettings(parse_strengths(strengths, directions), start_percent, end_percent, apply_to)
        return io.NodeOutput(edited_model(model, directions, edit))


class DirectionSweepGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceDirectionSweepGrid", display_name="Direction Sweep Grid (h-space)", category=CATEGORY,
            description="The picture to judge directions by: one row per direction (per sample of the batch), one "
                        "column per strength, labelled with the direction names and strengths. Each direction is "
                        "applied alone, as in the Edited Sampler, all from the same noise; the zero column is the "
                        "stock sampler's image.",
            inputs=[
                io.Model.Input("model", tooltip=TIPS["model"]),
                io.Vae.Input("vae", tooltip=TIPS["vae"]),
                io.Conditioning.Input("positive", tooltip=TIPS["positive"]),
                io.Conditioning.Input("negative", tooltip=TIPS["negative"]),
                io.Latent.Input("latent_image", tooltip="Size and batch; each sample of the batch gets its own rows."),
                Directions.Input("directions",
                                 tooltip="The directions, one row of the grid each."),
                *sampler_inputs(),
                io.String.Input("strengths", default="-2, -1, 0, 1, 2", tooltip="The columns."),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0],
                               tooltip="As in the Edited Sampler; asymmetric for Discovery Trainer directions."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip=TIPS["start_percent"]),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=TIPS["end_percent"]),
                io.Int.Input("cell_size", default=0, min=0, max=4096,
                             tooltip="Pixels per cell; small images are enlarged by a whole factor. 0: at least 128."),
            ],
            outputs=[io.Image.Output(tooltip="One labelled grid image.")],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, latent_image, directions, seed, steps, cfg, sampler_name,
                scheduler, strengths, mode, start_percent, end_percent, cell_size) -> io.NodeOutput:
        columns = parse_floats(strengths, "strengths")
        if not columns:
            raise ValueError("strengths: empty; expected a list like '-2, -1, 0, 1, 2'")
        batch = latent_image["samples"].shape[0]
        height, width = (side * image_scale(model) for side in latent_image["samples"].shape[-2:])
        check_fits(grid_bytes(directions.count * batch * len(columns), height, width, cell_size),
                   comfy.model_management.intermediate_device(), "the grid's images", "strengths",
                   " or the directions, the batch or cell_size")
        sampling = SamplerSettings(seed, steps, cfg, sampler_name, scheduler)
        edit = EditSettings((1.0,), start_percent, end_percent, mode=mode)
        site = site_of(model)
        rows, labels = [], []
        for k, name in enumerate(directions.names):
            out = edited_sample(model, D.select(directions, [k]), sampling, edit, positive, negative, latent_image,
                                sweep=columns, site=site)
            images = vae.decode(out["samples"])
            images = images.reshape(len(columns), batch, *images.shape[-3:]).transpose(0, 1)
            rows += list(images)
            labels += [name if batch == 1 else f"{name} #{b}" for b in range(batch)]
        return io.NodeOutput(labelled_grid(torch.cat(rows), labels, [f"{c:+g}" if c else "0" for c in columns],
                                           cell_size))
