from comfy_api.latest import io

from comfy_hspace.attribute import METHODS, attribute_direction, disentangle_directions
from comfy_hspace.directions import SPACES

from .common import CATEGORY, Activations, Directions
from .embedded import Scores


class AttributeDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceAttributeDirection", display_name="Attribute Direction (h-space)", category=CATEGORY,
            description="Paper 000 §V: an attribute's direction in h per timestep. From scores (connect them; record "
                        "with keep_samples): method `mean difference` is the paper's, mean(h⁺) − mean(h⁻) of the "
                        "top- and bottom-`count` samples; `regression` (default) fits h on all the scores at once "
                        "and keeps the attribute's own part, so attributes that come together in the samples (dark "
                        "hair with glasses) or that the classifier confuses (eyes behind glasses) are not carried "
                        "along; strength 1 is the change between the top and bottom samples either way. Without "
                        "scores: all samples of `activations` minus all of `negative` (labelled images through "
                        "Invert Image, or the same seeds under two labels or prompts through two HSpace Hooks). "
                        "With `start_percent` > 0 the direction is zero before that point of the schedule: "
                        "an edit in the early, noisy steps lets the model re-attach what comes with the attribute "
                        "in its data (glasses bring dark hair), a later one does not, but attributes decided early "
                        "(hair colour) then barely move. Sample the scored set with an ancestral sampler (ddpm, as "
                        "the paper): with deterministic DDIM the early steps' h mostly encodes each sample's "
                        "starting noise.",
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
                                           "for comparison; the Edited Sampler adds it to the noise."),
                    io.Combo.Input("method", options=list(METHODS), default=METHODS[0], optional=True,
                                   tooltip="With scores: regression holds the other scores fixed; mean difference "
                                           "is the paper's top-minus-bottom mean."),
                    io.Float.Input("start_percent", default=0.0, min=0.0, max=0.99, step=0.01, optional=True,
                                   tooltip="The direction acts from this fraction of the schedule on (ComfyUI's "
                                           "percent, as KSamplerAdvanced and the edit's start_percent: the "
                                           "same on DDPM, EDM and flow models); 0 = at every step, the paper's.")],
            outputs=[Directions.Output()],
        )

    @classmethod
    def execute(cls, activations, attribute, count, space, negative=None, scores=None,
                method=METHODS[0], start_percent=0.0) -> io.NodeOutput:
        values, column = None, 0
        if scores is not None:
            if attribute not in scores["names"]:
                raise ValueError(f"attribute: {attribute!r} is not among the scores {scores['names']}")
            values, column = scores["values"], scores["names"].index(attribute)
        return io.NodeOutput(attribute_direction(activations, negative, values, count, space, attribute, column,
                                                 method, start_percent))


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
