from comfy_api.latest import io

from comfy_hspace.host import architectures
from comfy_hspace.host.architectures import (
    BLOCK_OPTION,
    RESIDUAL,
    STREAM_OPTION,
    STREAMS,
    WEIGHTS_OPTION,
    parse_blocks,
    site_of,
)

from .common import ATTENTION_FAMILIES, CATEGORY, TRANSFORMERS, parse_floats


class HSpaceBlock(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        defaults = "; ".join(f"{row.name}: the middle {row.default_stack.replace('_', '-')} block"
                             for row in architectures.TRANSFORMERS)
        return io.Schema(
            node_id="HSpaceBlock", display_name="H-space Block (transformer)", category=CATEGORY,
            description="Chooses where a transformer's h is: the image tokens of the residual stream after this "
                        "block, as a grid of channels × rows × columns (text tokens are never edited). Every node "
                        "of the pack then reads and writes h there. Blocks count from 0 over the whole stack (Flux, "
                        "Chroma, HunyuanVideo, AuraFlow, HiDream: the double-stream blocks, then the single-stream "
                        f"ones). Defaults: {defaults}. A video's h stacks its frames: channels × (frames × rows) × "
                        "columns. Several blocks ('blocks': '10-14' or '3, 7') are one h, their grids stacked along "
                        "the channels, so the Hook, PCA and Attribute Direction find one direction set across them "
                        "and Apply H-space Edit moves each block by its slice times its weight (the Discovery "
                        "Trainer takes one block). Stream 'attention output' takes instead the image tokens' "
                        "attention output inside a double-stream block, projected and before its gate (where "
                        f"FluxSpace edits; {ATTENTION_FAMILIES}; on SD3 no reverse-mode gradients there: Discovery "
                        "Trainer, Jacobian Directions). A UNet's h is always its bottleneck.",
            inputs=[io.Model.Input("model", tooltip=f"A transformer: {TRANSFORMERS}."),
                    io.Int.Input("block", default=-1, min=-1, max=1000,
                                 tooltip="Block index over the whole stack; −1: the model's default (its "
                                         "family's; the embedded DiT's was chosen by its block study). Ignored "
                                         "when 'blocks' is set."),
                    io.Combo.Input("stream", options=list(STREAMS), default=RESIDUAL, optional=True,
                                   tooltip="The residual stream after the block, or the image tokens' attention "
                                           "output inside it."),
                    io.String.Input("blocks", default="", optional=True,
                                    tooltip="Several blocks at once, e.g. '10-14' or '3, 7'; empty: 'block' alone."),
                    io.String.Input("weights", default="", optional=True,
                                    tooltip="The edit's weight at each of 'blocks', e.g. '1, 0.5'; empty: 1 each.")],
            outputs=[io.Model.Output(tooltip="The model with h at that block; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model, block, stream=RESIDUAL, blocks="", weights="") -> io.NodeOutput:
        clone = model.clone()
        for key in (BLOCK_OPTION, WEIGHTS_OPTION):
            clone.model_options.pop(key, None)
        if blocks.strip():
            clone.model_options[BLOCK_OPTION] = parse_blocks(blocks)
        elif block >= 0:
            clone.model_options[BLOCK_OPTION] = block
        if weights.strip():
            if not blocks.strip():
                raise ValueError("weights: weights are for several 'blocks'; set 'blocks' too, or leave weights empty")
            clone.model_options[WEIGHTS_OPTION] = tuple(parse_floats(weights, "weights"))
        clone.model_options[STREAM_OPTION] = stream
        site_of(clone)  # a UNet, the range, the weights and the stream, checked here
        return io.NodeOutput(clone)
