from comfy_api.latest import io

from comfy_hspace.host.trajectory import jacobian_directions
from comfy_hspace.settings import SamplerSettings

from .common import CATEGORY, TIPS, Directions, sampler_inputs


class JacobianDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceJacobianDirections", display_name="Jacobian Directions (h-space)", category=CATEGORY,
            description="Paper 000 §IV-B: image-specific directions, the top right singular vectors of the Jacobian "
                        "of the noise prediction with respect to h, for one sample at one step of its own trajectory "
                        "(same seed, sampler and noise), by power iteration. A mask restricts the output region the "
                        "directions should change. Strength 0.1 moves h by a tenth of its norm at that step.",
            inputs=[
                io.Model.Input("model", tooltip=TIPS["model"]),
                io.Conditioning.Input("positive", tooltip=TIPS["positive"]),
                io.Conditioning.Input("negative", tooltip=TIPS["negative"]),
                io.Latent.Input("latent_image", tooltip="One sample (batch 1); its size is the image size."),
                *sampler_inputs(tips={"seed": "The sample's seed, as in KSampler."}),
                io.Int.Input("step", default=5, min=0, max=9999,
                             tooltip="Where on the trajectory: 0 is the first (noisiest) step, steps − 1 the last."),
                io.Boolean.Input("each_step", default=False,
                                 tooltip="On: directions at every step (slow); off: found at `step`, applied at all."),
                io.Int.Input("n_directions", default=4, min=1, max=256,
                             tooltip="How many top singular vectors of ∂ε/∂h to find."),
                io.Int.Input("batch_size", default=4, min=1, max=256,
                             tooltip="Vectors iterated together; fewer use less memory (sequential variant with "
                                     "deflation), n_directions is the parallel algorithm."),
                io.Float.Input("tolerance", default=1e-3, min=1e-8, max=0.5, step=1e-4, round=1e-8,
                               tooltip="Stop when ‖JᵀJv − σ²v‖/σ² is below this for every vector."),
                io.Int.Input("max_iterations", default=50, min=1, max=10000,
                             tooltip="Cap on power iterations per block."),
                io.Boolean.Input("scale_by_singular_value", default=False,
                                 tooltip="On: direction k is scaled by σ_k/σ_1, so weaker directions move h less."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Region of interest at image size (white = region); other sizes are refused."),
            ],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, step,
                each_step, n_directions, batch_size, tolerance, max_iterations, scale_by_singular_value,
                mask=None) -> io.NodeOutput:
        sampling = SamplerSettings(seed, steps, cfg, sampler_name, scheduler)
        return io.NodeOutput(jacobian_directions(
            model, positive, negative, latent_image, sampling, step=step, each_step=each_step,
            n_directions=n_directions, batch_size=batch_size, tolerance=tolerance, max_iterations=max_iterations,
            mask=mask, scale_by_singular_value=scale_by_singular_value))
