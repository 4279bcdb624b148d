from comfy_api.latest import io

from comfy_hspace.host.recording import invert
from comfy_hspace.settings import SamplerSettings

from .common import CATEGORY, TIPS, Activations, sampler_inputs


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
                    *sampler_inputs(steps=50, names=("steps", "cfg", "scheduler"),
                                    tips={"cfg": "1 inverts best; guidance makes the inversion drift."}),
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
        sampling = SamplerSettings(0, steps, cfg, "ddim", scheduler)
        noise, activations = invert(model, positive, negative, latent, sampling, batch_size=batch_size,
                                    keep_samples=keep_samples)
        return io.NodeOutput({"samples": noise}, activations)
