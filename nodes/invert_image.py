import comfy.samplers
from comfy_api.latest import io

from comfy_hspace.comfy_host import invert

from .common import CATEGORY, TIPS, Activations


class InvertImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceInvertImage", display_name="Invert Image (h-space)", category=CATEGORY,
            description="Deterministic DDIM inversion: encodes images with the VAE and runs them up the schedule to "
                        "the starting noise they would be sampled from, recording h on the way (paper 000 SM-F). "
                        "Feed `noise` to the Edited Sampler (ddim sampler, same steps and scheduler) to edit the "
                        "image, and `activations` to Attribute Direction to learn from labelled images.",
            inputs=[io.Model.Input("model", tooltip=TIPS["model"]),
                    io.Vae.Input("vae", tooltip=TIPS["vae"]),
                    io.Image.Input("images", tooltip="The real images to invert, at the model's image size."),
                    io.Conditioning.Input("positive", tooltip=TIPS["positive"]),
                    io.Conditioning.Input("negative", tooltip=TIPS["negative"]),
                    io.Int.Input("steps", default=50, min=1, max=10000, tooltip=TIPS["steps"]),
                    io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                                   tooltip="1 inverts best; guidance makes the inversion drift."),
                    io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="ddim_uniform",
                                   tooltip=TIPS["scheduler"]),
                    io.Int.Input("batch_size", default=16, min=1, max=4096,
                                 tooltip="Images inverted per run."),
                    io.Boolean.Input("keep_samples", default=False,
                                     tooltip="Keep every image's h trajectory (to select them by score later).")],
            outputs=[io.Latent.Output("noise"), Activations.Output("activations")],
        )

    @classmethod
    def execute(cls, model, vae, images, positive, negative, steps, cfg, scheduler, batch_size,
                keep_samples) -> io.NodeOutput:
        latent = {"samples": vae.encode(images[:, :, :, :3])}
        noise, activations = invert(model, positive, negative, latent, steps, cfg, scheduler, batch_size,
                                    keep_samples=keep_samples)
        return io.NodeOutput({"samples": noise}, activations)
