from comfy_api.latest import io

from comfy_hspace.host.recording import record_activations
from comfy_hspace.settings import SamplerSettings

from .common import CATEGORY, TIPS, Activations, sampler_inputs


class HSpaceHook(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceHook", display_name="HSpace Hook", category=CATEGORY,
            description="Samples many images and records the UNet bottleneck h at every call, streamed into "
                        "running statistics per timestep (mean and a PCA of the leading components), so memory "
                        "does not grow with the number of samples. Feeds PCA Directions and Attribute Direction; "
                        "`samples` are the images it drew (decode them to score them).",
            inputs=[
                io.Model.Input("model", tooltip=TIPS["model"]),
                io.Conditioning.Input("positive", tooltip=TIPS["positive"]),
                io.Conditioning.Input("negative", tooltip=TIPS["negative"]),
                io.Latent.Input("latent_image", tooltip="Gives the image size (its batch size is not used), or, with "
                                                        "latent_is_noise, the starting noises themselves."),
                io.Int.Input("n_samples", default=64, min=1, max=1000000,
                             tooltip="Sample i starts from the noise KSampler draws for seed + i."),
                io.Int.Input("batch_size", default=16, min=1, max=4096,
                             tooltip="Samples per sampling run; memory grows with it, not with n_samples."),
                io.Int.Input("components", default=16, min=0, max=4096,
                             tooltip="Principal components kept per timestep (the most PCA Directions can ask for); "
                                     "0 keeps only the means."),
                *sampler_inputs(),
                io.Boolean.Input("latent_is_noise", default=False,
                                 tooltip="On: sample from the latent's rows as starting noise (e.g. inverted "
                                         "images); n_samples and seed are not used."),
                io.Boolean.Input("keep_samples", default=False,
                                 tooltip="On: also keep every sample's h trajectory (memory grows with n_samples), so "
                                         "Attribute Direction can pick samples by their scores."),
            ],
            outputs=[Activations.Output("activations"), io.Latent.Output("samples")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, n_samples, batch_size, components, seed, steps, cfg,
                sampler_name, scheduler, latent_is_noise, keep_samples=False) -> io.NodeOutput:
        sampling = SamplerSettings(seed, steps, cfg, sampler_name, scheduler)
        activations, samples = record_activations(model, positive, negative, latent_image, sampling,
                                                  n_samples=n_samples, batch_size=batch_size, components=components,
                                                  latent_is_noise=latent_is_noise, keep_samples=keep_samples)
        return io.NodeOutput(activations, {"samples": samples})
