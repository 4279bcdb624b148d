from comfy_api.latest import io

from comfy_hspace.host.transformer import BLOCK_OPTION, FAMILIES, RESIDUAL, STREAM_OPTION, STREAMS, family_of, site_of

from .common import ATTENTION_FAMILIES, CATEGORY, TRANSFORMERS


class HSpaceBlock(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        defaults = "; ".join(f"{f.name}: the middle {f.default_stack.replace('_', '-')} block"
                             for f in FAMILIES.values())
        return io.Schema(
            node_id="HSpaceBlock", display_name="H-space Block (transformer)", category=CATEGORY,
            description="Chooses where a transformer's h is: the image tokens of the residual stream after this "
                        "block, as a grid of channels × rows × columns (text tokens are never edited). Every node "
                        "of the pack then reads and writes h there. Blocks count from 0 over the whole stack (Flux, "
                        "Chroma, HunyuanVideo, AuraFlow: the double-stream blocks, then the single-stream ones). "
                        f"Defaults: {defaults}. A video's h stacks its frames: channels × (frames × rows) × "
                        "columns. Stream 'attention output' takes instead the image tokens' attention output inside "
                        "a double-stream block, projected and before its gate (where FluxSpace edits; "
                        f"{ATTENTION_FAMILIES}; on SD3 no reverse-mode gradients there: Discovery Trainer, Jacobian "
                        "Directions). A UNet's h is always its bottleneck.",
            inputs=[io.Model.Input("model", tooltip=f"A transformer: {TRANSFORMERS}."),
                    io.Int.Input("block", default=-1, min=-1, max=1000,
                                 tooltip="Block index over the whole stack; −1: the model's default (its "
                                         "family's; the embedded DiT's was chosen by its block study)."),
                    io.Combo.Input("stream", options=list(STREAMS), default=RESIDUAL, optional=True,
                                   tooltip="The residual stream after the block, or the image tokens' attention "
                                           "output inside it.")],
            outputs=[io.Model.Output(tooltip="The model with h at that block; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model, block, stream=RESIDUAL) -> io.NodeOutput:
        dm = model.get_model_object("diffusion_model")
        if family_of(dm) is None:
            raise ValueError(f"model: {type(dm).__name__} is not a transformer; a UNet's h is its bottleneck")
        clone = model.clone()
        if block >= 0:
            clone.model_options[BLOCK_OPTION] = block
        else:
            clone.model_options.pop(BLOCK_OPTION, None)
        clone.model_options[STREAM_OPTION] = stream
        site_of(clone)  # the range and the stream, checked here
        return io.NodeOutput(clone)
