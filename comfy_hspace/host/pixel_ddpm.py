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
import comfy.model_sampling
import comfy.pixel_space_convert
import comfy.sd
import comfy.supported_models_base
import torch

from ..editing import PAIRED_ROWS
from .patch import BOTTLENECK, as_pairs, half_of_pairs


class DiffusersUNet(torch.nn.Module):
    """A diffusers ``UNet2DModel`` in ComfyUI's diffusion_model slot. The bottleneck patches are
    called on the mid block's output, under the same contract as ComfyUI's own UNet at
    block ("output", 0); the hooks live only for one call, so clones do not share them. A call of
    ``PAIRED_ROWS`` runs the down path and the mid block on each pair's first rows only and the up
    path on both, their skip connections repeated: the pair's passes differ only from h on."""

    def __init__(self, diffusers_config: dict, device=None, operations=None, dtype=None, **_):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel.from_config(diffusers_config)
        self.unet.to(device=device)
        self.dtype = torch.float32

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        patches = transformer_options.get("patches", {}).get("output_block_patch", [])
        pairs = transformer_options.get(PAIRED_ROWS) if self.unet.mid_block is not None else None

        def at_bottleneck(module, args, h):
            if pairs:
                h = as_pairs(h, pairs)
            transformer_options["block"] = BOTTLENECK
            no_skip = h[:, :0]  # a UNet2DModel's mid block has no skip connection to hand on
            for patch in patches:
                h, _ = patch(h, no_skip, transformer_options)
            return h

        handles = [self.unet.mid_block.register_forward_hook(at_bottleneck)] if patches or pairs else []
        if pairs:
            handles += self._share_down_path(pairs)
        try:
            labels = y.reshape(-1).long() if y is not None else None  # whole numbers, checked in encode_adm
            return self.unet(x, timesteps, class_labels=labels).sample
        finally:
            for handle in handles:
                handle.remove()

    def _share_down_path(self, n: int) -> list:
        """Hooks for one call of paired rows: the down path's inputs (the sample, the time embedding, a
        skip block's image) cut to the pairs' first rows, the up path's skip connections repeated."""
        def fit(value, rows: int, resize):
            if isinstance(value, tuple):
                return tuple(fit(v, rows, resize) for v in value)
            return resize(value, n) if torch.is_tensor(value) and value.shape[0] == rows else value

        def down(module, args, kwargs):
            rows = 2 * kwargs.get("hidden_states", args[0] if args else None).shape[0]
            return fit(args, rows, half_of_pairs), {k: fit(v, rows, half_of_pairs) for k, v in kwargs.items()}

        def up(module, args, kwargs):
            rows = args[0].shape[0] // 2
            return fit(args, rows, as_pairs), {k: fit(v, rows, as_pairs) for k, v in kwargs.items()}

        unet = self.unet
        hooks = [unet.conv_in.register_forward_pre_hook(lambda m, args: (half_of_pairs(args[0], n),))]
        hooks += [b.register_forward_pre_hook(down, with_kwargs=True) for b in [*unet.down_blocks, unet.mid_block]]
        return hooks + [b.register_forward_pre_hook(up, with_kwargs=True) for b in unet.up_blocks]


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
        if label is not None and float(label) != int(float(label)):
            raise ValueError(f"conditioning: class {label} is not a whole number (class labels index the model's "
                             f"{classes} classes)")
        label = classes - 1 if label is None else int(float(label))
        if not 0 <= label < classes:
            raise ValueError(f"conditioning: class {label} is outside this model's {classes} classes")
        return torch.tensor([float(label)])


class GreyLatent(comfy.latent_formats.ChromaRadiance):
    """A grey pixel-space model's latent: the image's one channel, previewed as grey."""
    latent_channels = 1

    def __init__(self):
        self.latent_rgb_factors = [[1.0, 1.0, 1.0]]


class PixelDDPMConfig(comfy.supported_models_base.BASE):
    latent_format = comfy.latent_formats.ChromaRadiance  # 3 channels, identity scaling
    unet_extra_config = {}
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.float32]

    def __init__(self, diffusers_config: dict, sampling_settings: dict, channels: int = 3):
        self.sampling_settings = sampling_settings
        if channels == 1:
            self.latent_format = GreyLatent
        super().__init__({"diffusers_config": diffusers_config})


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path}: cannot be read as JSON ({e})") from None


# diffusers schedulers of models trained on the discrete 1000-step DDPM schedule (betas, alphas_cumprod):
# which one a folder names changes how diffusers samples it, not what the network learnt
DISCRETE_SCHEDULERS = {
    "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
    "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "UniPCMultistepScheduler",
    "DEISMultistepScheduler", "DDPMParallelScheduler", "DDIMParallelScheduler", "LCMScheduler", "TCDScheduler"}
EDM_SCHEDULERS = {"EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"}  # Karras et al.'s preconditioning
CONSISTENCY_SCHEDULERS = {"CMStochasticIterativeScheduler"}  # Song et al.'s consistency models


class ConsistencySampling(comfy.model_sampling.ModelSamplingContinuousEDM, comfy.model_sampling.EDM):
    """A consistency model's parametrisation (diffusers' CMStochasticIterativeScheduler): timestep
    250·ln σ, input scaled by 1/√(σ² + σ_d²), x0 = c_skip·x + c_out·F with the boundary condition at
    σ_min (c_skip = σ_d²/((σ − σ_min)² + σ_d²), c_out = (σ − σ_min)·σ_d/√(σ² + σ_d²))."""

    def timestep(self, sigma):
        return 250.0 * (sigma + 1e-44).log()

    def sigma(self, timestep):
        return (timestep / 250.0).exp()

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = comfy.model_sampling.reshape_sigma(sigma, model_output.ndim)
        shifted = sigma - self.sigma_min
        c_skip = self.sigma_data ** 2 / (shifted ** 2 + self.sigma_data ** 2)
        c_out = shifted * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
        return model_input * c_skip + model_output * c_out


def model_sampling_for(sched: dict, where: Path | None) -> tuple[type, dict]:
    """(ComfyUI model sampling class, its sampling settings) for a diffusers scheduler config; a
    scheduler class or prediction type the pack cannot reproduce is refused, naming it."""
    name = sched.get("_class_name", "DDPMScheduler")
    prediction = sched.get("prediction_type", "epsilon")
    ms = comfy.model_sampling
    # continuous σ (EDM, consistency): diffusers' defaults where the config leaves them out
    continuous = {k: sched.get(k, d) for k, d in (("sigma_min", 0.002), ("sigma_max", 80.0), ("sigma_data", 0.5))}
    if name in CONSISTENCY_SCHEDULERS:
        return ConsistencySampling, continuous
    if name in EDM_SCHEDULERS:
        kinds = {"epsilon": ms.EDM, "v_prediction": ms.V_PREDICTION}
        if prediction not in kinds:
            raise ValueError(f"scheduler config {where}: {name} with prediction_type {prediction!r} is not supported "
                             f"(expected one of {sorted(kinds)})")
        return type("ModelSampling", (ms.ModelSamplingContinuousEDM, kinds[prediction]), {}), continuous
    if name not in DISCRETE_SCHEDULERS:
        raise ValueError(f"scheduler config {where}: {name} is not supported: expected a scheduler of the discrete "
                         f"DDPM schedule ({', '.join(sorted(DISCRETE_SCHEDULERS))}), an EDM one "
                         f"({', '.join(sorted(EDM_SCHEDULERS))}) or a consistency model's "
                         f"({', '.join(sorted(CONSISTENCY_SCHEDULERS))})")
    kinds = {"epsilon": ms.EPS, "v_prediction": ms.V_PREDICTION, "sample": ms.X0}
    if prediction not in kinds:
        raise ValueError(f"scheduler config {where}: prediction_type {prediction!r} is not supported (expected one "
                         f"of {sorted(kinds)})")
    schedule = {"linear": "sqrt_linear", "scaled_linear": "linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}
    beta_schedule = sched.get("beta_schedule", "linear")
    if beta_schedule not in schedule:
        raise ValueError(f"scheduler config {where}: beta_schedule {beta_schedule!r} is not supported "
                         f"(expected one of {sorted(schedule)})")
    if sched.get("trained_betas") is not None:
        raise ValueError(f"scheduler config {where}: trained_betas (a schedule given as a list) is not supported")
    # ComfyUI's "linear" is diffusers' "scaled_linear"; diffusers' "linear" is ComfyUI's "sqrt_linear".
    settings = {"beta_schedule": schedule[beta_schedule], "linear_start": sched.get("beta_start", 1e-4),
                "linear_end": sched.get("beta_end", 0.02), "timesteps": sched.get("num_train_timesteps", 1000),
                "zsnr": bool(sched.get("rescale_betas_zero_snr", False))}
    return type("ModelSampling", (ms.ModelSamplingDiscrete, kinds[prediction]), {}), settings


def pixel_vae(channels: int) -> Any:
    """ComfyUI's identity pixel-space VAE; a grey (1-channel) model's images are shown as RGB and
    encoded as their channel mean."""
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    if channels == 1:
        vae.first_stage_model = GreyPixels()
        vae.latent_channels = 1
    return vae


class GreyPixels(comfy.pixel_space_convert.PixelspaceConversionVAE):
    def encode(self, pixels: torch.Tensor, *_args, **_kwargs) -> torch.Tensor:
        return pixels.mean(1, keepdim=True)

    def decode(self, samples: torch.Tensor, *_args, **_kwargs) -> torch.Tensor:
        return samples.expand(-1, 3, *samples.shape[2:])


def load_pixel_ddpm(folder: str | Path) -> tuple[Any, Any]:
    """(MODEL, VAE) from a diffusers pixel-space UNet2DModel folder in the layout of
    ``google/ddpm-ema-celebahq-256``: unet/config.json + unet/diffusion_pytorch_model.safetensors
    (or both at the top), scheduler/scheduler_config.json (or scheduler_config.json). Grey (1-channel)
    or RGB models, trained on the discrete DDPM schedule (ε, v or x0 prediction), EDM's or a
    consistency model's parametrisation."""
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
    sampling_class, sampling = model_sampling_for(sched, sched_path)
    channels = config.get("in_channels", 3)
    if channels not in (1, 3) or config.get("out_channels", 3) != channels:
        raise ValueError(f"UNet config {unet_dir / 'config.json'}: {channels} input and "
                         f"{config.get('out_channels', 3)} output channels; expected a grey (1) or RGB (3) pixel-space "
                         f"model that predicts as many channels as it takes")

    model_config = PixelDDPMConfig(config, sampling, channels)
    offload = comfy.model_management.unet_offload_device()
    model = PixelDDPM(model_config, device=offload, unet_model=DiffusersUNet)
    model.model_sampling = sampling_class(model_config)
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
    return patcher, pixel_vae(channels)
