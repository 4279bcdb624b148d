from comfy_api.latest import io

from comfy_hspace.attribute import attribute_direction, disentangle_directions
from comfy_hspace.directions import SPACES

from .common import CATEGORY, Activations, Directions
from .embedded import Scores


class AttributeDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceAttributeDirection", display_name="Attribute Direction (h-space)", category=CATEGORY,
            description="Paper 000 §V: w = mean(h⁺) − mean(h⁻) per timestep. Positives and negatives are either the "
                        "top- and bottom-scored samples of `activations` (connect scores; record with keep_samples), "
                        "or all samples of `activations` and of `negative` (labelled images through Invert Image, or "
                        "the same seeds under two labels or prompts through two HSpace Hooks). Strength 1 = the "
                        "whole mean difference. Sample the scored set with an ancestral sampler (ddpm, as the paper): "
                        "with deterministic DDIM the early steps' h mostly encodes each sample's starting noise, and "
                        "their mean difference pushes the edit the wrong way.",
            inputs=[Activations.Input("activations", tooltip="The positives, or all scored samples."),
                    Activations.Input("negative", optional=True, tooltip="The negatives, when not chosen by score."),
                    Scores.Input("scores", optional=True, tooltip="One score set per recorded sample, e.g. Face "
                                                                  "Attribute Scores of the Hook's decoded samples."),
                    io.String.Input("attribute", default="smile",
                                    tooltip="Which score picks the samples; also the direction's name."),
                    io.Int.Input("count", default=16, min=1, max=100000,
                                 tooltip="With scores: this many top and this many bottom samples."),
                    io.Combo.Input("space", options=list(SPACES), default="h",
                                   tooltip="h: the bottleneck (the paper's method). x_T: the starting noise instead, "
                                           "for comparison; the Edited Sampler adds it to the noise.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, activations, attribute, count, space, negative=None, scores=None) -> io.NodeOutput:
        values = None
        if scores is not None:
            if attribute not in scores["names"]:
                raise ValueError(f"attribute: {attribute!r} is not among the scores {scores['names']}")
            values = scores["values"][:, scores["names"].index(attribute)]
        return io.NodeOutput(attribute_direction(activations, negative, values, count, space, attribute))


class Disentangle(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceDisentangle", display_name="Disentangle (h-space)", category=CATEGORY,
            description="Paper 000 §V: removes from each primary direction what it shares with the others, "
                        "projecting it per timestep onto the orthogonal complement of their joint span, "
                        "w₀ − W(WᵀW)⁻¹Wᵀw₀ (all others at once, not one after another).",
            inputs=[Directions.Input("primary",
                                     tooltip="The directions to clean; each loses its part in the span of `others`."),
                    Directions.Input("others", tooltip="The directions it should no longer move, e.g. a correlated "
                                                       "attribute's (combine several with Combine Directions).")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, primary, others) -> io.NodeOutput:
        return io.NodeOutput(disentangle_directions(primary, others))
