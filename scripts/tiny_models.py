"""Tiny real models for the tests and benches: random-weight UNets in the shapes of SD1.5, SDXL and a
pixel-space diffusers DDPM. Small enough to sample on the CPU in a fraction of a second."""
from __future__ import annotations

import json
from pathlib import Path

import torch

SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": 1,
    "transformer_depth": [0, 1], "channel_mult": [1, 2],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 64,
    "num_heads": 2, "num_head_channels": -1, "transformer_depth_output": [0, 0, 1, 1],
}
SDXL_UNET = {
    **SD15_UNET, "adm_in_channels": 2816, "num_classes": "sequential", "use_linear_in_transformer": True,
    "num_head_channels": 16, "num_heads": -1,
}

PIXEL_UNET = {
    "_class_name": "UNet2DModel", "sample_size": 16, "in_channels": 3, "out_channels": 3,
    "block_out_channels": [16, 32], "layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 8, "attention_head_dim": 8,
}
PIXEL_SCHEDULER = {"_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02,
                   "beta_schedule": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon"}


def comfy_unet(kind: str, seed: int = 0):
    """A ModelPatcher around a random SD1.5- or SDXL-shaped UNet built by ComfyUI's own classes."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    torch.manual_seed(seed)
    config_class, unet = {"sd15": (comfy.supported_models.SD15, SD15_UNET),
                          "sdxl": (comfy.supported_models.SDXL, SDXL_UNET)}[kind]
    model = config_class(dict(unet)).get_model({})
    init_weights(model.diffusion_model)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def init_weights(module: torch.nn.Module) -> None:
    """ComfyUI's layers skip weight initialisation (weights come from a checkpoint): give them
    torch's default initialisation, with no zero output layers that would hide every edit."""
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.Linear.reset_parameters(m)
        elif isinstance(m, torch.nn.modules.conv._ConvNd):
            torch.nn.modules.conv._ConvNd.reset_parameters(m)
        elif isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)


def conditioning(kind: str, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    extra = {}
    if kind == "sdxl":
        extra = {"pooled_output": torch.randn(1, 1280, generator=g), "width": 64, "height": 64}
    elif kind == "pixel":
        return [[torch.zeros(1, 1, 1), {}]]
    return [[torch.randn(1, 7, 64, generator=g), extra]]


def save_pixel_ddpm(folder: Path, seed: int = 0, config: dict = PIXEL_UNET) -> Path:
    """A random UNet2DModel saved in the google/ddpm-ema-celebahq-256 folder layout."""
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    unet = UNet2DModel.from_config(config)
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()},
              str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(PIXEL_SCHEDULER))
    return folder
