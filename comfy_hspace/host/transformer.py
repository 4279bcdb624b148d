"""Where h lives in a diffusion transformer, and how the pack reads and writes it there: one row per
family (``FAMILIES``), every other model class ComfyUI runs refused with its reason (``REFUSED``).

In a transformer, h is the image tokens of the residual stream after one block, seen as a grid
[C, rows, columns] (row-major, as every family here patchifies; a video's frames stacked, [C, frames ×
rows, columns]); text tokens are never touched.
A block is reached through ComfyUI's own hook, ``transformer_options["patches_replace"]["dit"]
[(kind, i)]`` (reach "dit hook"), or, in families that have none, through a forward hook on the block
module that lives for one model call (reach "block hook"; the row's ``layout`` says where the image
tokens are in the block's output). Nothing here imports ComfyUI's model classes: families are told
apart by the class names of the diffusion model.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

# model_options key: the block a MODEL's h is read and written at (index over all its blocks)
BLOCK_OPTION = "hspace_block"
# model_options key: which image tokens of that block are h (STREAMS; the residual stream unless set)
STREAM_OPTION = "hspace_stream"
RESIDUAL, ATTENTION = "residual stream", "attention output"
STREAMS = (RESIDUAL, ATTENTION)
# attribute of a diffusion model that measured its own best block (the embedded DiT): its default
DEFAULT_BLOCK_ATTRIBUTE = "hspace_default_block"
DIT_HOOK, BLOCK_HOOK = "dit hook", "block hook"
# where a block-hooked family's image tokens are in its block's output: a sequence [B, tokens, C] with the
# image's first or last (then only trailing pad tokens, Z-Image's), or a token grid [B, T, H, W, C] /
# [T, H, W, B, C]; a block that returns a tuple (HiDream's (image, text)) holds them in its first element
LAYOUTS = ("first", "last", "BTHWC", "THWBC")


@dataclass(frozen=True)
class Family:
    name: str
    stacks: tuple[tuple[str, str], ...]  # (hook kind, attribute holding the blocks), in the order they run
    width: str  # attribute (path) holding the residual stream's width
    default_stack: str  # the default block is the middle of this stack
    reach: str = DIT_HOOK  # ComfyUI's block hook, or a forward hook on the block module for one call
    layout: str = ""  # block hook: where the image tokens are in a block's output (LAYOUTS)
    patch: str = "patch_size"  # attribute (path) holding the patch size: an int, (h, w) or (t, h, w)
    temporal_patch: str = ""  # attribute holding a separate temporal patch size (Cosmos)
    text_input: str = ""  # attribute (path) of the module taking the text (Null Conditioning); "" where none
    adds_in_place: bool = False  # blocks add their residuals in place (reverse-mode autograd needs care)
    text_first: bool = True  # in a single-stream block, the text tokens come before the image's
    registers: str = ""  # attribute holding learnt tokens put before the text (AuraFlow's)
    text_mask: bool = False  # the model takes its text's attention mask as an argument (LTXV, Mochi, Lumina 2)
    # module (path within a double block) whose output is the image tokens' attention output, projected
    # and before its gate: what FluxSpace edits; "" where the pack does not reach it
    attention_output: str = ""
    recomputes_blocks: bool = False  # blocks run under activation checkpointing: the backward pass calls them again

    def stack(self, dm: Any, kind: str) -> list[torch.nn.Module]:
        blocks = getattr(dm, dict(self.stacks)[kind])
        return list(blocks.values()) if isinstance(blocks, torch.nn.ModuleDict) else list(blocks)

    def blocks(self, dm: Any) -> list[tuple[str, int]]:
        return [(kind, i) for kind, _ in self.stacks for i in range(len(self.stack(dm, kind)))]

    def default_block(self, dm: Any) -> int:
        if (chosen := getattr(dm, DEFAULT_BLOCK_ATTRIBUTE, None)) is not None:  # a model that knows its own
            return chosen
        blocks = self.blocks(dm)
        own = [j for j, (kind, _) in enumerate(blocks) if kind == self.default_stack]
        return own[len(own) // 2]


_FLUX_STACKS = (("double_block", "double_blocks"), ("single_block", "single_blocks"))
_NEXT_DIT = (("block", "layers"),)  # Lumina 2, Z-Image, Omnigen2: the caption and image refiners come first
# Families with image and text in separate streams for the first blocks default to the middle of
# those (FluxSpace edits the joint blocks; fixed directions written into late single-stream
# blocks were reported to do nothing).
FAMILIES = {
    "OpenAISignatureMMDITWrapper": Family("SD3", (("double_block", "joint_blocks"),), "hidden_size", "double_block",
                                          text_input="context_embedder", attention_output="x_block.attn.proj",
                                          recomputes_blocks=True),
    # Flux 2 and Chroma Radiance are these classes too (Flux 2 pads its text to 512 tokens)
    "Flux": Family("Flux", _FLUX_STACKS, "hidden_size", "double_block", text_input="txt_in", adds_in_place=True,
                   attention_output="img_attn.proj"),
    "Chroma": Family("Chroma", _FLUX_STACKS, "hidden_size", "double_block", text_input="txt_in", adds_in_place=True,
                     attention_output="img_attn.proj"),
    # latents with a frame axis of one ([B, 16, 1, H, W]); image tokens only in its blocks
    "QwenImageTransformer2DModel": Family("Qwen-Image", (("double_block", "transformer_blocks"),), "inner_dim",
                                          "double_block", text_input="txt_in"),
    # video: h is every frame's token grid stacked, [C, frames × rows, columns]
    "WanModel": Family("Wan", (("double_block", "blocks"),), "dim", "double_block", text_input="text_embedding"),
    # also HunyuanImage 2.1 and HunyuanVideo 1.5
    "HunyuanVideo": Family("HunyuanVideo", _FLUX_STACKS, "hidden_size", "double_block", text_input="txt_in",
                           adds_in_place=True, text_first=False, attention_output="img_attn.proj"),
    # video; patch size 1, so its token grid is the latent's
    "LTXVModel": Family("LTXV", (("double_block", "transformer_blocks"),), "inner_dim", "double_block",
                        patch="patchifier.patch_size", text_input="caption_projection", adds_in_place=True,
                        text_mask=True),
    "MMDiT": Family("AuraFlow", (("double_block", "double_layers"), ("single_block", "single_layers")),
                    "init_x_linear.out_features", "double_block", text_input="cond_seq_linear",
                    registers="register_tokens"),
    "AsymmDiTJoint": Family("Mochi", (("double_block", "blocks"),), "hidden_size_x", "double_block",
                            text_input="t5_yproj", text_mask=True, attention_output="attn.proj_x"),
    "HunYuanDiT": Family("HunyuanDiT", (("double_block", "blocks"),), "hidden_size", "double_block",
                         attention_output="attn1.out_proj"),
    # no block hook in ComfyUI 0.3.75: a forward hook on the block module
    "NextDiT": Family("Lumina 2 / Z-Image", _NEXT_DIT, "dim", "block", reach=BLOCK_HOOK, layout="last",
                      text_input="cap_embedder", text_mask=True),
    "OmniGen2Transformer2DModel": Family("Omnigen2", _NEXT_DIT, "hidden_size", "block", reach=BLOCK_HOOK,
                                         layout="last", text_input="time_caption_embed.caption_embedder",
                                         text_mask=True),
    "HiDreamImageTransformer2DModel": Family(
        "HiDream", (("double_block", "double_stream_blocks"), ("single_block", "single_stream_blocks")), "inner_dim",
        "double_block", reach=BLOCK_HOOK, layout="first"),
    "PixArtMS": Family("PixArt", (("block", "blocks"),), "hidden_size", "block", reach=BLOCK_HOOK, layout="first",
                       text_input="y_embedder"),
    "MiniTrainDIT": Family("Cosmos Predict2", (("block", "blocks"),), "model_channels", "block", reach=BLOCK_HOOK,
                           layout="BTHWC", patch="patch_spatial", temporal_patch="patch_temporal"),
    "GeneralDIT": Family("Cosmos", (("block", "blocks"),), "model_channels", "block", reach=BLOCK_HOOK,
                         layout="THWBC", patch="patch_spatial", temporal_patch="patch_temporal"),
}
REFUSED = {  # diffusion model classes ComfyUI 0.3.75 runs whose h the pack does not read, and why
    "StageC": "Stable Cascade's stage C is a convolutional UNet without a middle block, whose levels may run their "
              "blocks several times",
    "StageB": "Stable Cascade's stage B is a convolutional UNet without a middle block, whose levels may run their "
              "blocks several times",
    "AudioDiffusionTransformer": "audio models are out of scope",
    "ACEStepTransformer2DModel": "audio models are out of scope",
    "HunYuanDiTPlain": "3-D models are out of scope",
}


def _named(dm: Any, table: dict) -> Any:
    for cls in type(dm).__mro__:
        if cls.__name__ in table:
            return table[cls.__name__]
    return None


def family_of(dm: Any) -> Family | None:
    """The transformer family of a diffusion model; None for anything else. Models the pack cannot
    read are refused, naming the model and the reason."""
    family = _named(dm, FAMILIES)
    if family is not None:
        return family
    if (reason := _named(dm, REFUSED)) is not None:
        raise ValueError(f"model: {type(dm).__name__} is not read by this pack: {reason}")
    return None


@dataclass(frozen=True)
class Site:
    """Where h is read and written: the family, the hook, the block index over all blocks, and the
    stream (the residual stream after the block, or the image tokens' attention output inside it)."""
    family: Family
    kind: str
    index: int  # within its stack
    block: int  # over all blocks
    stream: str = RESIDUAL

    def __str__(self) -> str:
        where = f"{self.family.name} block {self.block} ({self.kind.replace('_', '-')} {self.index})"
        return where if self.stream == RESIDUAL else f"{where} {self.stream}"

    def block_module(self, dm: Any) -> torch.nn.Module:
        return self.family.stack(dm, self.kind)[self.index]

    def attention_module(self, dm: Any) -> torch.nn.Module:
        """The module whose output is h at an attention-output site."""
        return functools.reduce(getattr, self.family.attention_output.split("."), self.block_module(dm))


def site_of(model: Any) -> Site | None:
    """The block a transformer MODEL's h sits at (its ``hspace_block`` option, else the family's
    default); None for a UNet. A block out of range is refused with the valid range."""
    dm = model.get_model_object("diffusion_model")
    family = family_of(dm)
    if family is None:
        return None
    blocks = family.blocks(dm)
    block = model.model_options.get(BLOCK_OPTION)
    block = family.default_block(dm) if block is None else block
    if not 0 <= block < len(blocks):
        counts = ", ".join(f"{len(family.stack(dm, kind))} {kind.replace('_', '-')}" for kind, _ in family.stacks)
        raise ValueError(f"block: {block} is outside this {family.name} model's blocks 0 … {len(blocks) - 1} "
                         f"({counts})")
    kind, index = blocks[block]
    stream = model.model_options.get(STREAM_OPTION, RESIDUAL)
    if stream not in STREAMS:
        raise ValueError(f"stream: expected one of {STREAMS}, got {stream!r}")
    if stream == ATTENTION and (kind != "double_block" or not family.attention_output):
        reach = [f.name for f in FAMILIES.values() if f.attention_output]
        raise ValueError(f"stream: the attention output is reached in the double-stream (joint) blocks of "
                         f"{', '.join(reach)}; {family.name} block {block} is a {kind.replace('_', '-')}")
    return Site(family, kind, index, block, stream)


def _attribute(dm: Any, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), dm)


def width(model: Any) -> int:
    dm = model.get_model_object("diffusion_model")
    return int(_attribute(dm, family_of(dm).width))


def tokens_before_image(site: Site, dm: Any, text_tokens: int) -> int:
    """How many tokens come before the image's at this site: in single-stream blocks the text's (and
    learnt registers before it) where the family puts them first; none elsewhere."""
    family = site.family
    if site.kind != "single_block" or not family.text_first:
        return 0
    return text_tokens + (getattr(dm, family.registers).shape[1] if family.registers else 0)


def token_grid(model: Any, latent_shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) of image tokens for a latent [..., H, W] or [..., frames, H, W], the latent padded
    to whole patches; a video's frames are stacked, frames × rows (its tokens run frame by frame)."""
    dm = model.get_model_object("diffusion_model")
    family = family_of(dm)
    patch = _attribute(dm, family.patch)
    pt, ph, pw = (1, patch, patch) if isinstance(patch, int) else (1, *patch) if len(patch) == 2 else tuple(patch)
    if family.temporal_patch:
        pt = _attribute(dm, family.temporal_patch)
    frames = math.ceil(latent_shape[-3] / pt) if len(latent_shape) == 5 else 1
    return frames * math.ceil(latent_shape[-2] / ph), math.ceil(latent_shape[-1] / pw)


def read_tokens(layout: str, out: Any, count: int, dm: Any) -> torch.Tensor:
    """The ``count`` image tokens [B, count, C] of a block's output in a block-hooked family's layout."""
    if isinstance(out, tuple):
        return read_tokens(layout, out[0], count, dm)
    if layout == "BTHWC":
        return out.flatten(1, 3)
    if layout == "THWBC":
        return out.permute(3, 0, 1, 2, 4).flatten(1, 3)
    start = _image_start(layout, out.shape[1], count, dm)
    return out[:, start:start + count]


def write_tokens(layout: str, out: Any, tokens: torch.Tensor, dm: Any) -> Any:
    """The block's output with its image tokens replaced by ``tokens`` [B, count, C]; the rest as it was."""
    if isinstance(out, tuple):
        return (write_tokens(layout, out[0], tokens, dm), *out[1:])
    if layout == "BTHWC":
        return tokens.reshape(out.shape)
    if layout == "THWBC":
        t, h, w, b, c = out.shape
        return tokens.reshape(b, t, h, w, c).permute(1, 2, 3, 0, 4)
    start = _image_start(layout, out.shape[1], tokens.shape[1], dm)
    return torch.cat([out[:, :start], tokens, out[:, start + tokens.shape[1]:]], dim=1)


def _image_start(layout: str, length: int, count: int, dm: Any) -> int:
    if layout == "first":
        return 0
    multiple = getattr(dm, "pad_tokens_multiple", None)  # Z-Image pads the image tokens to a multiple of 32
    return length - count - ((-count) % multiple if multiple else 0)


def empty_conditioning(model: Any) -> list:
    """A CONDITIONING shaped for a transformer without its text encoders: one zero context token of
    the width the model takes, and a zero pooled vector where the model takes one (none for Chroma,
    which ComfyUI still asks for; Flux's guidance then defaults to ComfyUI's 3.5). Families that take
    several text encoders' outputs (HiDream, HunyuanDiT, Cosmos) are refused, naming them."""
    dm = model.get_model_object("diffusion_model")
    family = family_of(dm)
    if not family.text_input:
        raise ValueError(f"model: {family.name} takes more than one text input; connect its text encoders "
                         f"(CLIP Text Encode) instead of Null Conditioning")
    extra = {"pooled_output": None}
    if family.text_mask:
        extra["attention_mask"] = torch.ones(1, 1, dtype=torch.long)  # as a tokenizer's: integers, 1 = attend
    pooled = getattr(dm, "y_embedder", None) or getattr(dm, "vector_in", None)  # SD3's, Flux's pooled input
    if pooled is not None and family.text_input != "y_embedder":  # PixArt's y_embedder is its text input
        extra["pooled_output"] = torch.zeros(1, _first_linear(pooled).in_features)
    return [[torch.zeros(1, 1, _first_linear(_attribute(dm, family.text_input)).in_features), extra]]


def _first_linear(module: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
