"""The one table of architectures the pack reads h in (``ARCHITECTURES``: ComfyUI's UNet, the diffusers
pixel UNet, one row per transformer family) and the model classes ComfyUI runs that it refuses, each with
its reason (``REFUSED``). A node resolves its model's ``Site`` once (``site_of``) and hands it down; the
site answers where h is, its shape for a latent, its fingerprint and the down path a discriminator copies.

In a UNet, h is the middle block's output (reach "output block patch", DESIGN.md §3). In a transformer,
h is the image tokens of the residual stream after one block, seen as a grid [C, rows, columns]
(row-major, as every family here patchifies; a video's frames stacked, [C, frames × rows, columns]);
text tokens are never touched. A block is reached through ComfyUI's own hook,
``transformer_options["patches_replace"]["dit"][(kind, i)]`` (reach "dit hook"), or, in families that
have none, through a forward hook on the block module that lives for one model call (reach "block
hook"; the row's ``layout`` says where the image tokens are in the block's output). Several blocks
together are one h, their grids stacked along the channels [blocks × C, rows, columns], each block
edited by its slice times its weight. Nothing here imports ComfyUI's model classes: rows are told
apart by the class names of the diffusion model.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

# model_options keys: the block(s) a MODEL's h is read and written at (indices over all its blocks: an
# int or a tuple), their edit weights, and which image tokens are h (STREAMS; the residual stream unless set)
BLOCK_OPTION = "hspace_block"
WEIGHTS_OPTION = "hspace_block_weights"
STREAM_OPTION = "hspace_stream"
RESIDUAL, ATTENTION = "residual stream", "attention output"
STREAMS = (RESIDUAL, ATTENTION)
# attribute of a diffusion model that measured its own best block (the embedded DiT): its default
DEFAULT_BLOCK_ATTRIBUTE = "hspace_default_block"
OUTPUT_BLOCK_PATCH, DIT_HOOK, BLOCK_HOOK = "output block patch", "dit hook", "block hook"
UNET_SITE = "UNet bottleneck"
# where a block-hooked family's image tokens are in its block's output: a sequence [B, tokens, C] with the
# image's first or last (then only trailing pad tokens, Z-Image's), or a token grid [B, T, H, W, C] /
# [T, H, W, B, C]; a block that returns a tuple (HiDream's (image, text)) holds them in its first element
LAYOUTS = ("first", "last", "BTHWC", "THWBC")


@dataclass(frozen=True)
class Architecture:
    name: str
    stacks: tuple[tuple[str, str], ...] = ()  # (hook kind, attribute holding the blocks), in the order they run
    width: str = ""  # attribute (path) holding the residual stream's width
    default_stack: str = ""  # the default block is the middle of this stack
    reach: str = DIT_HOOK  # the UNet's output block patch, ComfyUI's block hook, or a forward hook for one call
    # UNets: the middle block (its output is h) and the down path (latent channels, channels per level,
    # residual blocks per level) that the Discovery Trainer's discriminator copies
    middle: str = ""
    down_path: Callable[[Any], tuple[int, list[int], int]] | None = None
    exact_halving: bool = False  # the up path doubles (diffusers'): a size must halve exactly at every level
    layout: str = ""  # block hook: where the image tokens are in a block's output (LAYOUTS)
    patch: str = "patch_size"  # attribute (path) holding the patch size: an int, (h, w) or (t, h, w)
    temporal_patch: str = ""  # attribute holding a separate temporal patch size (Cosmos)
    # Null Conditioning: the module (path) taking the text, whose width it shapes a zero token for; "" where
    # the model takes its text through more than one encoder (refused) or, with ``unconditional``, none at all
    text_input: str = ""
    unconditional: bool = False
    adds_in_place: bool = False  # blocks add their residuals in place (reverse-mode autograd needs care)
    text_first: bool = True  # in a single-stream block, the text tokens come before the image's
    registers: str = ""  # attribute holding learnt tokens put before the text (AuraFlow's)
    # (the model call's argument holding a latent whose tokens come before the image's in every block, the
    # module that embeds it where the model may lack it): HunyuanVideo's ref_latent, Wan's reference_latent
    leading_latent: tuple[str, str] = ("", "")
    text_mask: bool = False  # the model takes its text's attention mask as an argument (LTXV, Mochi, Lumina 2)
    # module (path within a double block) whose output is the image tokens' attention output, projected
    # and before its gate: what FluxSpace edits; "" where the pack does not reach it
    attention_output: str = ""
    recomputes_blocks: bool = False  # blocks run under activation checkpointing: the backward pass calls them again

    @property
    def is_transformer(self) -> bool:
        return bool(self.stacks)

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


def _comfy_down_path(dm: Any) -> tuple[int, list[int], int]:
    blocks = dm.num_res_blocks
    return (dm.in_channels, [dm.model_channels * m for m in dm.channel_mult],
            max(blocks) if isinstance(blocks, (list, tuple)) else blocks)


def _diffusers_down_path(dm: Any) -> tuple[int, list[int], int]:
    c = dm.unet.config
    return c.in_channels, list(c.block_out_channels), c.layers_per_block


_FLUX_STACKS = (("double_block", "double_blocks"), ("single_block", "single_blocks"))
_NEXT_DIT = (("block", "layers"),)  # Lumina 2, Z-Image, Omnigen2: the caption and image refiners come first
# Families with image and text in separate streams for the first blocks default to the middle of
# those (FluxSpace edits the joint blocks; fixed directions written into late single-stream
# blocks were reported to do nothing).
ARCHITECTURES = {
    # SD1.x/2.x/XL and their variants (SVD, SSD-1B, Segmind Vega, KOALA, the x4 upscaler, …): ComfyUI's UNet
    "UNetModel": Architecture("UNet (SD1.x/SD2.x/SDXL)", reach=OUTPUT_BLOCK_PATCH, middle="middle_block",
                              down_path=_comfy_down_path),
    # the Pixel DDPM Loader's diffusers UNet2DModel (and the embedded model); unconditional or class labels
    "DiffusersUNet": Architecture("diffusers UNet2DModel", reach=OUTPUT_BLOCK_PATCH, middle="unet.mid_block",
                                  down_path=_diffusers_down_path, exact_halving=True, unconditional=True),
    "OpenAISignatureMMDITWrapper": Architecture("SD3", (("double_block", "joint_blocks"),), "hidden_size",
                                                "double_block", text_input="context_embedder",
                                                attention_output="x_block.attn.proj", recomputes_blocks=True),
    # Flux 2 and Chroma Radiance are these classes too (Flux 2 pads its text to 512 tokens)
    "Flux": Architecture("Flux", _FLUX_STACKS, "hidden_size", "double_block", text_input="txt_in",
                         adds_in_place=True, attention_output="img_attn.proj"),
    "Chroma": Architecture("Chroma", _FLUX_STACKS, "hidden_size", "double_block", text_input="txt_in",
                           adds_in_place=True, attention_output="img_attn.proj"),
    # latents with a frame axis of one ([B, 16, 1, H, W]); image tokens only in its blocks
    "QwenImageTransformer2DModel": Architecture("Qwen-Image", (("double_block", "transformer_blocks"),), "inner_dim",
                                                "double_block", text_input="txt_in"),
    # video: h is every frame's token grid stacked, [C, frames × rows, columns]
    "WanModel": Architecture("Wan", (("double_block", "blocks"),), "dim", "double_block", text_input="text_embedding",
                             leading_latent=("reference_latent", "ref_conv")),
    # also HunyuanImage 2.1 and HunyuanVideo 1.5
    "HunyuanVideo": Architecture("HunyuanVideo", _FLUX_STACKS, "hidden_size", "double_block", text_input="txt_in",
                                 adds_in_place=True, text_first=False, attention_output="img_attn.proj",
                                 leading_latent=("ref_latent", "")),
    # video; patch size 1, so its token grid is the latent's
    "LTXVModel": Architecture("LTXV", (("double_block", "transformer_blocks"),), "inner_dim", "double_block",
                              patch="patchifier.patch_size", text_input="caption_projection", adds_in_place=True,
                              text_mask=True),
    "MMDiT": Architecture("AuraFlow", (("double_block", "double_layers"), ("single_block", "single_layers")),
                          "init_x_linear.out_features", "double_block", text_input="cond_seq_linear",
                          registers="register_tokens"),
    "AsymmDiTJoint": Architecture("Mochi", (("double_block", "blocks"),), "hidden_size_x", "double_block",
                                  text_input="t5_yproj", text_mask=True, attention_output="attn.proj_x"),
    "HunYuanDiT": Architecture("HunyuanDiT", (("double_block", "blocks"),), "hidden_size", "double_block",
                               attention_output="attn1.out_proj"),
    # no block hook in ComfyUI 0.3.75: a forward hook on the block module
    "NextDiT": Architecture("Lumina 2 / Z-Image", _NEXT_DIT, "dim", "block", reach=BLOCK_HOOK, layout="last",
                            text_input="cap_embedder", text_mask=True),
    "OmniGen2Transformer2DModel": Architecture("Omnigen2", _NEXT_DIT, "hidden_size", "block", reach=BLOCK_HOOK,
                                               layout="last", text_input="time_caption_embed.caption_embedder",
                                               text_mask=True),
    "HiDreamImageTransformer2DModel": Architecture(
        "HiDream", (("double_block", "double_stream_blocks"), ("single_block", "single_stream_blocks")), "inner_dim",
        "double_block", reach=BLOCK_HOOK, layout="first"),
    "PixArtMS": Architecture("PixArt", (("block", "blocks"),), "hidden_size", "block", reach=BLOCK_HOOK,
                             layout="first", text_input="y_embedder"),
    "MiniTrainDIT": Architecture("Cosmos Predict2", (("block", "blocks"),), "model_channels", "block",
                                 reach=BLOCK_HOOK, layout="BTHWC", patch="patch_spatial",
                                 temporal_patch="patch_temporal"),
    "GeneralDIT": Architecture("Cosmos", (("block", "blocks"),), "model_channels", "block", reach=BLOCK_HOOK,
                               layout="THWBC", patch="patch_spatial", temporal_patch="patch_temporal"),
}
UNETS = [row for row in ARCHITECTURES.values() if not row.is_transformer]
TRANSFORMERS = [row for row in ARCHITECTURES.values() if row.is_transformer]
REFUSED = {  # diffusion model classes ComfyUI 0.3.75 runs whose h the pack does not read, and why
    "StageC": "Stable Cascade's stage C is a convolutional UNet without a middle block, whose levels may run their "
              "blocks several times",
    "StageB": "Stable Cascade's stage B is a convolutional UNet without a middle block, whose levels may run their "
              "blocks several times",
    "AudioDiffusionTransformer": "audio models are out of scope",
    "ACEStepTransformer2DModel": "audio models are out of scope",
    "HunYuanDiTPlain": "3-D models are out of scope",
    "Hunyuan3Dv2": "3-D models are out of scope",
}


def read_or_refused(model_class: type) -> Architecture | str:
    """The row of a diffusion model class, or why the pack refuses it ("" when it does not know it)."""
    for cls in model_class.__mro__:
        if cls.__name__ in ARCHITECTURES:
            return ARCHITECTURES[cls.__name__]
        if cls.__name__ in REFUSED:
            return REFUSED[cls.__name__]
    return ""


def architecture_of(dm: Any) -> Architecture:
    """The row of a diffusion model; models the pack cannot read are refused, naming the model and the reason."""
    row = read_or_refused(type(dm))
    if isinstance(row, Architecture):
        return row
    if row:
        raise ValueError(f"model: {type(dm).__name__} is not read by this pack: {row}")
    transformers = ", ".join(row.name for row in TRANSFORMERS)
    raise ValueError(f"model: {type(dm).__name__} has no h this pack reads (h-space needs an SD1.x/SD2.x/SDXL UNet, "
                     f"a diffusers UNet2DModel or a transformer of the families {transformers})")


@dataclass(frozen=True)
class Site:
    """Where a model's h is read and written: its row, the diffusion model, and for a transformer the
    block(s) (indices over all blocks, in the order they run), each one's edit weight, and the stream
    (the residual stream after the block, or the image tokens' attention output inside it)."""
    architecture: Architecture
    dm: Any = field(compare=False, repr=False)
    blocks: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    stream: str = RESIDUAL

    def __str__(self) -> str:
        if not self.blocks:
            return UNET_SITE
        name = self.architecture.name
        if len(self.blocks) == 1:
            kind, index = self.located(self.blocks[0])
            where = f"{name} block {self.blocks[0]} ({kind.replace('_', '-')} {index})"
        else:
            where = f"{name} blocks {block_list(self.blocks)}"
        return where if self.stream == RESIDUAL else f"{where} {self.stream}"

    def located(self, block: int) -> tuple[str, int]:
        """(hook kind, index within its stack) of a block."""
        return self.architecture.blocks(self.dm)[block]

    def modules(self) -> list[torch.nn.Module]:
        """The modules whose output is h: the UNet's middle block, or each chosen transformer block."""
        if not self.blocks:
            return [_attribute(self.dm, self.architecture.middle)]
        return [self.architecture.stack(self.dm, kind)[index] for kind, index in map(self.located, self.blocks)]

    def attention_module(self, block: int) -> torch.nn.Module:
        """The module whose output is h at an attention-output site, in one of its blocks."""
        kind, index = self.located(block)
        return _attribute(self.architecture.stack(self.dm, kind)[index], self.architecture.attention_output)

    @property
    def block_width(self) -> int:
        """Channels of one block's h (of the bottleneck's in a UNet)."""
        if not self.blocks:
            return self.architecture.down_path(self.dm)[1][-1]
        return int(_attribute(self.dm, self.architecture.width))

    @property
    def channels(self) -> int:
        """Channels of h: a block's width times the number of blocks."""
        return self.block_width * max(1, len(self.blocks))

    def h_shape(self, latent_shape: tuple[int, ...] | torch.Size, what: str = "latent_image") -> tuple[int, int, int]:
        """(C, H, W) of h for a latent of ``latent_shape`` [B, C, H, W] (given as the input ``what``); raises
        for sizes the UNet cannot take. A transformer's h is its token grid."""
        if self.blocks:
            return (self.channels, *self.token_grid(latent_shape))
        _, levels, _ = self.architecture.down_path(self.dm)
        downs = len(levels) - 1
        height, width = latent_shape[-2:]
        if self.architecture.exact_halving and (height % 2 ** downs or width % 2 ** downs):
            # ComfyUI's own UNets upsample to the skip connection's size; diffusers' double it
            raise ValueError(f"{what}: {height}×{width} does not go through this UNet, whose down path halves it "
                             f"{downs}× and its up path doubles it back: use a size that is a multiple of "
                             f"{2 ** downs}")
        for _ in range(downs):
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        return self.channels, height, width

    def token_grid(self, latent_shape: tuple[int, ...]) -> tuple[int, int]:
        """(rows, columns) of image tokens for a latent [..., H, W] or [..., frames, H, W], the latent padded
        to whole patches; a video's frames are stacked, frames × rows (its tokens run frame by frame)."""
        patch = _attribute(self.dm, self.architecture.patch)
        pt, ph, pw = (1, patch, patch) if isinstance(patch, int) else (1, *patch) if len(patch) == 2 else tuple(patch)
        if self.architecture.temporal_patch:
            pt = _attribute(self.dm, self.architecture.temporal_patch)
        frames = math.ceil(latent_shape[-3] / pt) if len(latent_shape) == 5 else 1
        return frames * math.ceil(latent_shape[-2] / ph), math.ceil(latent_shape[-1] / pw)

    def fingerprint(self) -> str:
        """Identifies the network and the place a direction was found at: for a UNet its class and a hash
        of a sample of its middle block's weights; for a transformer "<site>/<class>:<hash of its blocks>"."""
        digest = hashlib.sha256(type(self.dm).__name__.encode())
        for module in self.modules():
            for name, p in sorted(module.state_dict().items()):
                digest.update(name.encode())
                digest.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
        return f"{'' if not self.blocks else f'{self}/'}{type(self.dm).__name__}:{digest.hexdigest()[:16]}"

    def down_path(self, latent_channels: int) -> tuple[int, list[int], int]:
        """(latent channels, channels per level, residual blocks per level) of the UNet's down path, which
        the Discovery Trainer's discriminator and reconstructor copy (paper 001 B.3); a transformer has
        none to copy: a small one of the same kind."""
        if not self.blocks:
            return self.architecture.down_path(self.dm)
        return latent_channels, [64, 128, 256], 1

    def leading_tokens(self, call_arguments: dict) -> int:
        """How many tokens come before the image's in every block of this model call: a reference latent's
        where the model embeds one (HunyuanVideo's ref_latent, Wan Fun's reference_latent); else none."""
        argument, embedder = self.architecture.leading_latent
        latent = call_arguments.get(argument) if argument else None
        if latent is None or (embedder and getattr(self.dm, embedder, None) is None):
            return 0
        return math.prod(self.token_grid(latent.shape))

    def tokens_before_image(self, kind: str, text_tokens: int) -> int:
        """How many tokens come before the image's in a block of this hook kind: in single-stream blocks the
        text's (and learnt registers before it) where the family puts them first; none elsewhere."""
        row = self.architecture
        if kind != "single_block" or not row.text_first:
            return 0
        return text_tokens + (getattr(self.dm, row.registers).shape[1] if row.registers else 0)


def block_list(blocks: tuple[int, ...]) -> str:
    """Blocks as a user writes them: runs as "10-14", the rest with commas ("3, 7, 10-14")."""
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b == runs[-1][-1] + 1:
            runs[-1].append(b)
        else:
            runs.append([b])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def parse_blocks(text: str) -> tuple[int, ...]:
    """"10-14", "3, 7" or "3, 10-12" as block indices in order; raises naming the input for anything else."""
    blocks = []
    for part in text.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"blocks: expected block indices like '10-14' or '3, 7', got {text!r}")
        blocks.extend(range(int(first), int(last if dash else first) + 1))
    if len(set(blocks)) != len(blocks) or not blocks:
        raise ValueError(f"blocks: each block once, at least one, got {text!r}")
    return tuple(sorted(blocks))


def site_of(model: Any) -> Site:
    """Where a MODEL's h is: a UNet's bottleneck, or the transformer block(s) of its ``hspace_block``
    option (else its family's default) with their weights and stream. Models without h, blocks out of
    range and streams a block lacks are refused, naming the input."""
    dm = model.get_model_object("diffusion_model")
    row = architecture_of(dm)
    option = model.model_options.get(BLOCK_OPTION)
    if not row.is_transformer:
        if option is not None or STREAM_OPTION in model.model_options:
            raise ValueError(f"model: {type(dm).__name__} is not a transformer; a UNet's h is its bottleneck (H-space "
                             f"Block chooses a transformer's block)")
        if _attribute(dm, row.middle) is None:
            raise ValueError(f"model: this {type(dm).__name__} has no middle block, so no bottleneck h")
        return Site(row, dm)
    every = row.blocks(dm)
    blocks = (row.default_block(dm),) if option is None else (option,) if isinstance(option, int) else tuple(option)
    for block in blocks:
        if not 0 <= block < len(every):
            counts = ", ".join(f"{len(row.stack(dm, kind))} {kind.replace('_', '-')}" for kind, _ in row.stacks)
            raise ValueError(f"block: {block} is outside this {row.name} model's blocks 0 … {len(every) - 1} "
                             f"({counts})")
    weights = tuple(model.model_options.get(WEIGHTS_OPTION) or (1.0,) * len(blocks))
    if len(weights) != len(blocks):
        raise ValueError(f"weights: {len(weights)} weights for {len(blocks)} blocks; give one per block or none")
    stream = model.model_options.get(STREAM_OPTION, RESIDUAL)
    if stream not in STREAMS:
        raise ValueError(f"stream: expected one of {STREAMS}, got {stream!r}")
    for block in blocks:
        kind = every[block][0]
        if stream == ATTENTION and (kind != "double_block" or not row.attention_output):
            reach = [f.name for f in ARCHITECTURES.values() if f.attention_output]
            raise ValueError(f"stream: the attention output is reached in the double-stream (joint) blocks of "
                             f"{', '.join(reach)}; {row.name} block {block} is a {kind.replace('_', '-')}")
    return Site(row, dm, blocks, weights, stream)


def _attribute(dm: Any, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), dm)


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


def null_conditioning(dm: Any) -> list:
    """A CONDITIONING for sampling without text encoders: empty for unconditional models (a pixel
    DDPM); for a transformer one zero context token of the width the model takes, and a zero pooled
    vector where it takes one (none for Chroma, which ComfyUI still asks for; Flux's guidance then
    defaults to ComfyUI's 3.5). Models that take their text only through their encoders (SD UNets,
    HiDream, HunyuanDiT, Cosmos) are refused, naming them."""
    row = architecture_of(dm)
    if row.unconditional:
        return [[torch.zeros(1, 1, 1), {}]]
    if not row.text_input:
        shaped = ", ".join(r.name for r in ARCHITECTURES.values() if r.text_input or r.unconditional)
        raise ValueError(f"model: {row.name} takes its text through its own text encoders; connect them (CLIP Text "
                         f"Encode) instead of Null Conditioning, which shapes conditioning for {shaped}")
    extra = {"pooled_output": None}
    if row.text_mask:
        extra["attention_mask"] = torch.ones(1, 1, dtype=torch.long)  # as a tokenizer's: integers, 1 = attend
    pooled = getattr(dm, "y_embedder", None) or getattr(dm, "vector_in", None)  # SD3's, Flux's pooled input
    if pooled is not None and row.text_input != "y_embedder":  # PixArt's y_embedder is its text input
        extra["pooled_output"] = torch.zeros(1, _first_linear(pooled).in_features)
    return [[torch.zeros(1, 1, _first_linear(_attribute(dm, row.text_input)).in_features), extra]]


def _first_linear(module: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
