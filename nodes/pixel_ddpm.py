"""Loading pixel-space diffusers DDPMs (the papers' google/ddpm-ema-celebahq-256 layout)."""
import os

import folder_paths
import torch
from comfy_api.latest import io

from comfy_hspace.host.architectures import ARCHITECTURES, null_conditioning
from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm

from .common import CATEGORY


def model_folders() -> list[str]:
    """Subfolders of models/diffusers that hold a diffusers UNet config."""
    found = []
    for root in folder_paths.get_folder_paths("diffusers"):
        if os.path.isdir(root):
            for name in sorted(os.listdir(root)):
                if any(os.path.exists(os.path.join(root, name, *p))
                       for p in (("unet", "config.json"), ("config.json",))):
                    found.append(name)
    return found


class PixelDDPMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpacePixelDDPMLoader", display_name="Pixel DDPM Loader (diffusers)", category=CATEGORY,
            description="Loads a pixel-space diffusers DDPM folder from models/diffusers (unet/ config + "
                        "safetensors weights, scheduler config) as a MODEL for the stock samplers, with the "
                        "pixel-space VAE for VAE Decode/Encode. Use EmptyChromaRadianceLatentImage for empty latents.",
            inputs=[io.Combo.Input("folder", options=model_folders(),
                                   tooltip="A diffusers DDPM folder in models/diffusers "
                                           "(unet/config.json + safetensors weights).")],
            outputs=[io.Model.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, folder) -> io.NodeOutput:
        path = next((os.path.join(r, folder) for r in folder_paths.get_folder_paths("diffusers")
                     if os.path.isdir(os.path.join(r, folder))), None)
        if path is None:
            raise ValueError(f"folder: {folder!r} is not in {folder_paths.get_folder_paths('diffusers')}")
        return io.NodeOutput(*load_pixel_ddpm(path))


SHAPED = ", ".join(row.name for row in ARCHITECTURES.values() if row.text_input)
UNSHAPED = ", ".join(row.name for row in ARCHITECTURES.values() if not row.text_input and not row.unconditional)


class NullConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceNullConditioning", display_name="Null Conditioning (h-space)", category=CATEGORY,
            description="An empty CONDITIONING for unconditional models such as a pixel DDPM; with a transformer "
                        f"model ({SHAPED}) one shaped for it (a zero text token of its width, a zero pooled vector "
                        "where it takes one, a text mask where it takes one), so it samples without text encoders. "
                        f"Models that take their text only through their own encoders ({UNSHAPED}) are refused "
                        "with their name.",
            inputs=[io.Model.Input("model", optional=True,
                                   tooltip="A transformer to shape the conditioning for; none: a pixel DDPM's.")],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, model=None) -> io.NodeOutput:
        if model is None:  # a pixel DDPM's
            return io.NodeOutput([[torch.zeros(1, 1, 1), {}]])
        return io.NodeOutput(null_conditioning(model.get_model_object("diffusion_model")))
