"""The embedded transformer: a pixel-space DiT of the procedural faces, built from ComfyUI's own
SD3 classes (MMDiT joint blocks), trained by flow matching, with the face labels as its text stream.

Labels become tokens: one token per label of ``faces.LABELS``, a one-hot over (label i off, on,
unconditional) — so the context embedder, a linear map, is an embedding table — and the pooled
vector is their sum. The model is SD3-shaped in every other way, so the pack's transformer hooks
read its h exactly as they read SD3's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import torch

from .. import faces
from .architectures import DEFAULT_BLOCK_ATTRIBUTE
from .pixel_ddpm import CLASS_KEY

FORMAT = "comfy-hspace/pixel-dit/1"
LABEL_WIDTH = 3 * len(faces.LABELS)  # per label token: off, on, unconditional
# depth 2 → width 128 and 2 heads of 64 (MMDiT ties them); num_blocks sets the number of joint blocks
DIT_CONFIG = {"input_size": faces.SIZE, "patch_size": 4, "in_channels": 3, "depth": 2, "num_blocks": 6,
              "mlp_ratio": 4.0, "adm_in_channels": LABEL_WIDTH, "qk_norm": "rms",
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": LABEL_WIDTH, "out_features": 128}}}
SAMPLING = {"shift": 1.0, "multiplier": 1000}
DEFAULT_BLOCK = 5  # where its h is unless H-space Block says otherwise: the last joint block, by the block study


def dit_config(patch: int, depth: int, blocks: int) -> dict:
    """The embedded DiT's config at another patch size, width (64 · depth) and number of joint blocks."""
    return {**DIT_CONFIG, "patch_size": patch, "depth": depth, "num_blocks": blocks,
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": LABEL_WIDTH, "out_features": 64 * depth}}}


# issue 33's candidate: patch 2 for the small features, width 64 (one head), 8 joint blocks
DIT_V2_CONFIG = dit_config(2, 1, 8)
# every embedded DiT this pack reads, with its default block: the shipped one's by its block study; the
# candidate's, until it has a study of its own, its last joint block as well
DEFAULT_BLOCKS = ((DIT_CONFIG, DEFAULT_BLOCK), (DIT_V2_CONFIG, 7))


def label_tokens(classes: torch.Tensor) -> torch.Tensor:
    """Class indices [B] (``faces.class_index``; ``faces.NULL_CLASS`` = unconditional) → label
    tokens [B, len(LABELS), LABEL_WIDTH]."""
    classes = classes.long().reshape(-1)
    null = classes == faces.NULL_CLASS
    tokens = torch.zeros(len(classes), len(faces.LABELS), LABEL_WIDTH)
    for i in range(len(faces.LABELS)):
        state = torch.where(null, 2, (classes >> i) & 1)
        tokens[torch.arange(len(classes)), i, 3 * i + state] = 1.0
    return tokens


class PixelDiT(comfy.model_base.SD3):
    """SD3's model type with label conditioning: the CONDITIONING's ``hspace_class`` (Face
    Labels) becomes the label tokens and the pooled vector; without one, unconditional."""

    def _tokens(self, kwargs: dict) -> torch.Tensor:
        label = kwargs.get(CLASS_KEY, faces.NULL_CLASS)
        if not 0 <= int(label) <= faces.NULL_CLASS:
            raise ValueError(f"conditioning: class {label} is outside this model's {faces.NULL_CLASS + 1} classes")
        return label_tokens(torch.tensor([int(label)]))

    def encode_adm(self, **kwargs):
        return self._tokens(kwargs).sum(1)

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        out["c_crossattn"] = comfy.conds.CONDRegular(self._tokens(kwargs))
        return out


class PixelDiTConfig(comfy.supported_models.SD3):
    latent_format = comfy.latent_formats.ChromaRadiance  # 3 channels, identity scaling
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.float32]

    def __init__(self, config: dict):
        self.sampling_settings = dict(SAMPLING)
        super().__init__(dict(config))


def build_dit(config: dict = DIT_CONFIG, device: Any = "cpu") -> PixelDiT:
    """The model with its weights uninitialised (ComfyUI's layers skip initialisation)."""
    return PixelDiT(PixelDiTConfig(config), device=device)


def init_weights(dm: torch.nn.Module) -> None:
    """DiT's initialisation: Xavier-uniform linear layers, zero biases, the adaLN modulations and
    the output layer at zero, so every block starts as the identity and the output at zero."""
    for module in dm.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    for name, p in dm.named_parameters():
        if name.endswith(".scale") or name.endswith("ln_q.weight") or name.endswith("ln_k.weight"):
            torch.nn.init.ones_(p)  # RMSNorm scales
        if "adaLN_modulation" in name or name.startswith("final_layer.linear"):
            torch.nn.init.zeros_(p)
    for layer in (dm.t_embedder.mlp[0], dm.t_embedder.mlp[2]):
        torch.nn.init.normal_(layer.weight, std=0.02)


def save_dit(dm: torch.nn.Module, path: Path, info: dict, config: dict = DIT_CONFIG) -> None:
    from ..files import write_safetensors

    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, {k: v.detach().contiguous().cpu() for k, v in dm.state_dict().items()},
                      {"format": FORMAT, "config": json.dumps(config), "labels": json.dumps(list(faces.LABELS)),
                       "training": json.dumps(info)})


def load_pixel_dit(path: str | Path) -> tuple[Any, Any]:
    """(MODEL, VAE) from a file written by ``save_dit``. A file of another patch size, size or label
    set, or a damaged one, is refused with a message naming it."""
    from ..files import read_safetensors

    path = Path(path)
    tensors, meta = read_safetensors(path, "model", FORMAT, "an embedded DiT")
    try:
        config, labels = json.loads(meta["config"]), json.loads(meta["labels"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"model {path}: damaged metadata ({e})") from None
    if labels != list(faces.LABELS):
        raise ValueError(f"model {path}: trained on the labels {labels}; this pack's faces have {list(faces.LABELS)}")
    default_block = next((block for known, block in DEFAULT_BLOCKS if config == known), None)
    if default_block is None:
        changed = {k: (config.get(k), v) for k, v in DIT_CONFIG.items() if config.get(k) != v}
        raise ValueError(f"model {path}: another architecture than the embedded DiT's (file, expected): {changed}")
    offload = comfy.model_management.unet_offload_device()
    model = build_dit(config, device=offload)
    try:
        model.diffusion_model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ValueError(f"model {path}: its weights do not fit the embedded DiT ({str(e)[:200]})") from None
    setattr(model.diffusion_model, DEFAULT_BLOCK_ATTRIBUTE, default_block)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                               offload_device=offload)
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    return patcher, vae
