"""Where h lives in a diffusion transformer, and how the pack reads and writes it there.

In a transformer, h is the image tokens of the residual stream after one block, seen as a grid
[C, rows, columns] (row-major, as every family here patchifies; a video's frames stacked, [C, frames ×
rows, columns]); text tokens are never touched.
The block is reached through ComfyUI's own hook, ``transformer_options["patches_replace"]["dit"]
[(kind, i)]``, on a clone. Nothing here imports ComfyUI's model classes: families are told apart by
the class names of the diffusion model.
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
# transformer_options keys set for each model call: the latent's token grid and the text tokens
# that come before the image tokens in a single-stream block
GRID = "hspace_token_grid"
TEXT_TOKENS = "hspace_text_tokens"


@dataclass(frozen=True)
class Family:
    name: str
    stacks: tuple[tuple[str, str], ...]  # (hook kind, attribute holding the blocks), in the order they run
    width: str  # attribute (path) holding the residual stream's width
    default_stack: str  # the default block is the middle of this stack
    adds_in_place: bool = False  # blocks add their residuals in place (reverse-mode autograd needs care)
    text_first: bool = True  # in a single-stream block, the text tokens come before the image's
    registers: str = ""  # attribute holding learnt tokens put before the text (AuraFlow's)
    text_mask: bool = False  # the model takes its text's attention mask as an argument (LTXV)
    # module (path within a double block) whose output is the image tokens' attention output, projected
    # and before its gate: what FluxSpace edits; "" where the pack does not reach it
    attention_output: str = ""
    recomputes_blocks: bool = False  # blocks run under activation checkpointing: the backward pass calls them again

    def blocks(self, dm: Any) -> list[tuple[str, int]]:
        return [(kind, i) for kind, attr in self.stacks for i in range(len(getattr(dm, attr)))]

    def default_block(self, dm: Any) -> int:
        if (chosen := getattr(dm, DEFAULT_BLOCK_ATTRIBUTE, None)) is not None:  # a model that knows its own
            return chosen
        blocks = self.blocks(dm)
        own = [j for j, (kind, _) in enumerate(blocks) if kind == self.default_stack]
        return own[len(own) // 2]


_FLUX_STACKS = (("double_block", "double_blocks"), ("single_block", "single_blocks"))
# Families with image and text in separate streams for the first blocks default to the middle of
# those (FluxSpace edits the joint blocks; fixed directions written into late single-stream
# blocks were reported to do nothing).
FAMILIES = {
    "OpenAISignatureMMDITWrapper": Family("SD3", (("double_block", "joint_blocks"),), "hidden_size", "double_block",
                                          attention_output="x_block.attn.proj", recomputes_blocks=True),
    "Flux": Family("Flux", _FLUX_STACKS, "hidden_size", "double_block", adds_in_place=True,
                   attention_output="img_attn.proj"),
    "Chroma": Family("Chroma", _FLUX_STACKS, "hidden_size", "double_block", adds_in_place=True,
                     attention_output="img_attn.proj"),
    # latents with a frame axis of one ([B, 16, 1, H, W]); image tokens only in its blocks
    "QwenImageTransformer2DModel": Family("Qwen-Image", (("double_block", "transformer_blocks"),), "inner_dim",
                                          "double_block"),
    # video: h is every frame's token grid stacked, [C, frames × rows, columns]
    "WanModel": Family("Wan", (("double_block", "blocks"),), "dim", "double_block"),
    "HunyuanVideo": Family("HunyuanVideo", _FLUX_STACKS, "hidden_size", "double_block", adds_in_place=True,
                           text_first=False, attention_output="img_attn.proj"),
    # video; patch size 1, so its token grid is the latent's
    "LTXVModel": Family("LTXV", (("double_block", "transformer_blocks"),), "inner_dim", "double_block",
                        adds_in_place=True, text_mask=True),
    "MMDiT": Family("AuraFlow", (("double_block", "double_layers"), ("single_block", "single_layers")),
                    "init_x_linear.out_features", "double_block", registers="register_tokens"),
}
NO_HOOK = {  # ComfyUI 0.3.75 has no block hook in these
    "HiDreamImageTransformer2DModel": "HiDream", "NextDiT": "Lumina 2 / Z-Image", "PixArtMS": "PixArt",
    "GeneralDIT": "Cosmos", "MiniTrainDIT": "Cosmos",
}


def _named(dm: Any, table: dict) -> Any:
    for cls in type(dm).__mro__:
        if cls.__name__ in table:
            return table[cls.__name__]
    return None


def family_of(dm: Any) -> Family | None:
    """The transformer family of a diffusion model; None for anything else. Families whose h the
    pack cannot reach are refused, naming the family."""
    family = _named(dm, FAMILIES)
    if family is not None:
        return family
    if (name := _named(dm, NO_HOOK)) is not None:
        raise ValueError(f"model: {name} has no block hook in this ComfyUI, so its h cannot be read or edited")
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
        return getattr(dm, dict(self.family.stacks)[self.kind])[self.index]

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
        counts = ", ".join(f"{len(getattr(dm, attr))} {kind.replace('_', '-')}" for kind, attr in family.stacks)
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


def width(model: Any) -> int:
    dm = model.get_model_object("diffusion_model")
    return int(functools.reduce(getattr, family_of(dm).width.split("."), dm))


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
    patch = dm.patchifier.patch_size if hasattr(dm, "patchifier") else dm.patch_size  # LTXV's is its patchifier's
    pt, ph, pw = (1, patch, patch) if isinstance(patch, int) else (1, *patch) if len(patch) == 2 else tuple(patch)
    frames = math.ceil(latent_shape[-3] / pt) if len(latent_shape) == 5 else 1
    return frames * math.ceil(latent_shape[-2] / ph), math.ceil(latent_shape[-1] / pw)


def empty_conditioning(model: Any) -> list:
    """A CONDITIONING shaped for a transformer without its text encoders: one zero context token of
    the width the model takes, and a zero pooled vector where the model takes one (none for Chroma,
    which ComfyUI still asks for; Flux's guidance then defaults to ComfyUI's 3.5)."""
    dm = model.get_model_object("diffusion_model")
    # the text input: SD3's, Flux's / Chroma's / Qwen-Image's, Wan's, AuraFlow's, LTXV's
    text_in = next(getattr(dm, a) for a in ("context_embedder", "txt_in", "text_embedding", "cond_seq_linear",
                                            "caption_projection") if hasattr(dm, a))
    extra = {"pooled_output": None}
    if family_of(dm).text_mask:
        extra["attention_mask"] = torch.ones(1, 1, dtype=torch.long)  # as a tokenizer's: integers, 1 = attend
    pooled = getattr(dm, "y_embedder", None) or getattr(dm, "vector_in", None)  # SD3's, Flux's pooled input
    if pooled is not None:
        extra["pooled_output"] = torch.zeros(1, _first_linear(pooled).in_features)
    return [[torch.zeros(1, 1, _first_linear(text_in).in_features), extra]]


def _first_linear(module: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
