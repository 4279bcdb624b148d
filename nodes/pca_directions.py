from comfy_api.latest import io

from comfy_hspace.pca import pca_directions

from .common import CATEGORY, Activations, Directions


class PCADirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpacePCADirections", display_name="PCA Directions (h-space)", category=CATEGORY,
            description="Paper 000 §IV-A: direction k is the k-th principal component of h at every timestep, from "
                        "the HSpace Hook's streaming PCA, scaled so that strength 1 is one standard deviation and "
                        "with signs consistent across timesteps. Explained-variance ratios are in the metadata.",
            inputs=[Activations.Input("activations",
                                      tooltip="Activations from an HSpace Hook run with components > 0."),
                    io.Int.Input("n_components", default=8, min=1, max=4096,
                                 tooltip="At most the number of components the HSpace Hook kept.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, activations, n_components) -> io.NodeOutput:
        return io.NodeOutput(pca_directions(activations, n_components))
