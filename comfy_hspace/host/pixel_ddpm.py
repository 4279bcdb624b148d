"""A diffusers pixel-space DDPM folder (``UNet2DModel`` + scheduler config) as a ComfyUI MODEL
with an identity pixel VAE: the model type, its class-label conditioning and the loader."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models_base
import torch

from .patch import BOTTLENECK


class DiffusersUNet(torch.nn.Module):
    """A diffusers ``UNet2DModel`` in ComfyUI's diffusion_model slot. The bottleneck patches are
    called on the mid block's output, under the same contract as ComfyUI's own UNet at
    block ("output", 0); the hook lives only for one call, so clones do not share it."""

    def __init__(self, diffusers_config: dict, device=None, operations=None, dtype=None, **_):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel.from_config(diffusers_config)
        self.unet.to(device=device)
        self.dtype = torch.float32

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        patches = transformer_options.get("patches", {}).get("output_block_patch", [])

        def at_bottleneck(module, args, h):
            transformer_options["block"] = BOTTLENECK
            no_skip = h[:, :0]  # a UNet2DModel's mid block has no skip connection to hand on
            for patch in patches:
                h, _ = patch(h, no_skip, transformer_options)
            return h

        handle = self.unet.mid_block.register_forward_hook(at_bottleneck) if patches else None
        try:
            labels = y.reshape(-1).round().long() if y is not None else None
            return self.unet(x, timesteps, class_labels=labels).sample
        finally:
            if handle is not None:
                handle.remove()


CLASS_KEY = "hspace_class"  # CONDITIONING key holding a class label for class-conditional DDPMs


class PixelDDPM(comfy.model_base.BaseModel):
    """A pixel DDPM whose UNet may be class-conditional (diffusers ``num_class_embeds``): the
    CONDITIONING's ``hspace_class`` becomes the class label; without one, the null class (the
    last class, as the embedded model is trained) is used."""

    def encode_adm(self, **kwargs):
        classes = self.diffusion_model.unet.config.num_class_embeds
        if not classes:
            return None
        label = kwargs.get(CLASS_KEY)
        label = classes - 1 if label is None else int(label)
        if not 0 <= label < classes:
            raise ValueError(f"conditioning: class {label} is outside this model's {classes} classes")
        return torch.tensor([float(label)])


class PixelDDPMConfig(comfy.supported_models_base.BASE):
    latent_format = comfy.latent_formats.ChromaRadiance  # 3 channels, identity scaling
    unet_extra_config = {}
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.float32]

    def __init__(self, diffusers_config: dict, sampling_settings: dict):
        self.sampling_settings = sampling_settings
        super().__init__({"diffusers_config": diffusers_config})


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path}: cannot be read as JSON ({e})") from None


def load_pixel_ddpm(folder: str | Path) -> tuple[Any, Any]:
    """(MODEL, VAE) from a diffusers pixel-space DDPM folder in the layout of
    ``google/ddpm-ema-celebahq-256``: unet/config.json + unet/diffusion_pytorch_model.safetensors
    (or both at the top), scheduler/scheduler_config.json (or scheduler_config.json)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder {folder}: no such folder")
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").exists() else folder
    if not (unet_dir / "config.json").exists():
        raise ValueError(f"model folder {folder}: no unet/config.json (expected the diffusers DDPM layout)")
    weights = unet_dir / "diffusion_pytorch_model.safetensors"
    if not weights.exists():
        found = ", ".join(sorted(p.name for p in unet_dir.iterdir()))
        raise ValueError(f"model folder {unet_dir}: no diffusion_pytorch_model.safetensors (found: {found}); "
                         f"pickled .bin weights are not loaded, convert them to safetensors")
    config = _read_json(unet_dir / "config.json", "UNet config")
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"UNet config {unet_dir / 'config.json'}: expected a UNet2DModel, got {config['_class_name']}")
    sched_path = next((p for p in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json")
                       if p.exists()), None)
    sched = _read_json(sched_path, "scheduler config") if sched_path else {}
    schedule = {"linear": "sqrt_linear", "scaled_linear": "linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}
    beta_schedule = sched.get("beta_schedule", "linear")
    if beta_schedule not in schedule:
        raise ValueError(f"scheduler config {sched_path}: beta_schedule {beta_schedule!r} is not supported "
                         f"(expected one of {sorted(schedule)})")
    # ComfyUI's "linear" is diffusers' "scaled_linear"; diffusers' "linear" is ComfyUI's "sqrt_linear".
    sampling = {"beta_schedule": schedule[beta_schedule], "linear_start": sched.get("beta_start", 1e-4),
                "linear_end": sched.get("beta_end", 0.02), "timesteps": sched.get("num_train_timesteps", 1000)}
    prediction = sched.get("prediction_type", "epsilon")
    model_types = {"epsilon": comfy.model_base.ModelType.EPS, "v_prediction": comfy.model_base.ModelType.V_PREDICTION}
    if prediction not in model_types:
        raise ValueError(f"scheduler config {sched_path}: prediction_type {prediction!r} is not supported")
    if config.get("in_channels", 3) != 3 or config.get("out_channels", 3) != 3:
        raise ValueError(f"UNet config {unet_dir / 'config.json'}: expected a 3-channel pixel-space model")

    model_config = PixelDDPMConfig(config, sampling)
    offload = comfy.model_management.unet_offload_device()
    model = PixelDDPM(model_config, model_types[prediction], device=offload, unet_model=DiffusersUNet)
    try:
        state_dict = load_file(str(weights))
    except Exception as e:
        raise ValueError(f"UNet weights {weights}: not a readable safetensors file ({e})") from None
    try:
        missing, unexpected = model.diffusion_model.unet.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # same names, other shapes
        shapes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise ValueError(f"UNet weights {weights}: do not fit {unet_dir / 'config.json'} ({shapes[:2]})") from None
    if missing or unexpected:
        raise ValueError(f"UNet weights {weights}: do not fit {unet_dir / 'config.json'} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                               offload_device=offload)
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    return patcher, vae
