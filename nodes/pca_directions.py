import comfy.samplers
from comfy_api.latest import io

from comfy_hspace.comfy_host import pca_directions

from .common import CATEGORY, Directions


class PCADirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpacePCADirections", display_name="PCA Directions (h-space)", category=CATEGORY,
            description="Paper 000 §IV-A: samples n_samples images and runs a streaming PCA of h per timestep; "
                        "direction k is the k-th principal component at every timestep, scaled so that strength 1 "
                        "is one standard deviation. Explained-variance ratios are kept in the metadata.",
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent_image", tooltip="Gives the image size; its batch size is not used."),
                io.Int.Input("n_samples", default=64, min=1, max=100000),
                io.Int.Input("batch_size", default=16, min=1, max=1024),
                io.Int.Input("n_components", default=8, min=1, max=1024),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff),
                io.Int.Input("steps", default=20, min=1, max=10000),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="ddim"),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="ddim_uniform"),
            ],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, n_samples, batch_size, n_components, seed, steps,
                cfg, sampler_name, scheduler) -> io.NodeOutput:
        return io.NodeOutput(pca_directions(model, positive, negative, tuple(latent_image["samples"].shape),
                                            n_samples, batch_size, n_components, seed, steps, cfg,
                                            sampler_name, scheduler))
