"""The ComfyUI side of the library: the one module that imports ComfyUI.

- ``bottleneck_shape`` / ``model_fingerprint``: what h looks like for a MODEL, checked before sampling;
- ``load_pixel_ddpm``: a diffusers pixel-space DDPM folder as a ComfyUI MODEL + pixel VAE;
- ``edited_sample``: the Edited Sampler over ComfyUI's own samplers;
- ``record_activations``: the HSpace Hook, sampling through ComfyUI into running statistics of h;
- ``invert``: DDIM inversion of a latent to its starting noise, recording h;
- ``pca_directions``: PCA Directions from those statistics;
- ``at_trajectory_steps`` / ``jacobian_maps`` / ``jacobian_directions``: Jacobian Directions at a point
  of a sample's own trajectory;
- ``with_denoiser`` / ``train_discovery``: the Discovery Trainer, training through ComfyUI's denoiser.
"""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.sd
import comfy.supported_models_base
import comfy.utils

from .directions import Directions, DirectionsError
from .editing import sample_asyrp
from .hspace import APPLY_TO, BOTTLENECK, DELTA, HSpaceEdit, hspace_clone
from .pca import HSpaceActivations

MODES = ("both terms", "asymmetric (Asyrp)")


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
            for patch in patches:
                h, _ = patch(h, None, transformer_options)
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
    missing, unexpected = model.diffusion_model.unet.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(f"UNet weights {weights}: do not fit {unet_dir / 'config.json'} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                               offload_device=offload)
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    return patcher, vae


def bottleneck_shape(model: Any, latent_shape: tuple[int, ...] | torch.Size) -> tuple[int, int, int]:
    """(C, H, W) of h for a latent of ``latent_shape`` [B, C, H, W]; raises for models without a UNet bottleneck."""
    dm = model.get_model_object("diffusion_model")
    height, width = latent_shape[-2:]
    if isinstance(dm, DiffusersUNet):
        channels, downs = dm.unet.config.block_out_channels[-1], len(dm.unet.config.down_block_types) - 1
    elif hasattr(dm, "channel_mult") and hasattr(dm, "model_channels") and dm.middle_block is not None:
        channels, downs = dm.model_channels * dm.channel_mult[-1], len(dm.channel_mult) - 1
    else:
        raise ValueError(f"model: {type(dm).__name__} has no UNet bottleneck (h-space needs an SD1.x/SD2.x/SDXL "
                         f"UNet or a diffusers UNet2DModel)")
    for _ in range(downs):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return channels, height, width


def model_fingerprint(model: Any) -> str:
    """Identifies the UNet a direction was found on: its class, h channels and a hash of a
    sample of its middle-block weights."""
    dm = model.get_model_object("diffusion_model")
    middle = dm.unet.mid_block if isinstance(dm, DiffusersUNet) else getattr(dm, "middle_block", None)
    digest = hashlib.sha256(type(dm).__name__.encode())
    if middle is not None:
        for name, p in sorted(middle.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return f"{type(dm).__name__}:{digest.hexdigest()[:16]}"


def check_directions_fit(model: Any, directions: Directions, latent_shape: tuple[int, ...]) -> None:
    expected = bottleneck_shape(model, latent_shape)
    if tuple(directions.h_shape) != tuple(expected):
        hint = " (use Resize Directions for another resolution)" if directions.h_shape[0] == expected[0] else ""
        raise DirectionsError(f"directions: h shape {list(directions.h_shape)} does not fit this model, whose h "
                              f"is {list(expected)} for a latent of {list(latent_shape[-2:])}{hint}")


def edited_sample(model: Any, directions: Directions, strengths: list[float], sweep: list[float], seed: int,
                  steps: int, cfg: float, sampler_name: str, scheduler: str, positive: Any, negative: Any,
                  latent: dict, start_percent: float = 0.0, end_percent: float = 1.0, apply_to: str = "both",
                  mode: str = "both terms", eta: float = 1.0, denoise: float = 1.0,
                  noise_latent: dict | None = None) -> dict:
    """Samples ``latent`` once per sweep multiplier m with h ← h + m·Σ strength_k·direction_k(t)
    inside the edit interval (x_T-space directions: x_T ← x_T + m·Σ …). Every member gets the same
    noise (one sampling run each, with the same seed; or ``noise_latent``, e.g. an inverted
    image's), so a member whose edit is zero is exactly the stock KSampler's output.
    Returns a LATENT whose batch is the sweep members one after another."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if apply_to not in APPLY_TO:
        raise ValueError(f"apply_to: expected one of {APPLY_TO}, got {apply_to!r}")
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"edit interval: expected 0 ≤ start ≤ end ≤ 1, got {start_percent} … {end_percent}")
    if len(strengths) == 1 and directions.count > 1:
        strengths = strengths * directions.count
    offsets_per_unit = directions.combined(strengths)  # checks the count
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if directions.space == "x_T":
        if tuple(directions.h_shape) != tuple(latent_image.shape[1:]):
            raise DirectionsError(f"directions: x_T shape {list(directions.h_shape)} does not match the latent's "
                                  f"{list(latent_image.shape[1:])}")
    else:
        check_directions_fit(model, directions, latent_image.shape)
    if noise_latent is None:
        noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    else:
        noise = noise_latent["samples"]
        if noise.shape != latent_image.shape:
            raise ValueError(f"noise: shape {list(noise.shape)} does not match latent_image {list(latent_image.shape)}"
                             f" (connect an empty latent of the noise's size and batch)")
    model_sampling = model.get_model_object("model_sampling")
    sigma_start = model_sampling.percent_to_sigma(start_percent)
    sigma_end = model_sampling.percent_to_sigma(end_percent)
    pbar = comfy.utils.ProgressBar(steps * len(sweep))

    members = []
    for m, multiplier in enumerate(sweep):
        member_noise, edit = noise, None
        if multiplier == 0 or not offsets_per_unit.any():
            pass  # the unedited model: bit-for-bit the stock sampler
        elif directions.space == "x_T":
            member_noise = noise + multiplier * offsets_per_unit[0].to(noise)
        else:
            edit = HSpaceEdit(offsets_per_unit * multiplier, directions.timesteps, sigma_start, sigma_end, apply_to)
        patched = model if edit is None else hspace_clone(model, edit=edit)

        def callback(step, x0, x, total, m=m):
            pbar.update_absolute(m * steps + step + 1)

        if mode == "both terms":
            samples = comfy.sample.sample(patched, member_noise, steps, cfg, sampler_name, scheduler, positive,
                                          negative, latent_image, denoise=denoise,
                                          noise_mask=latent.get("noise_mask"), callback=callback, disable_pbar=True,
                                          seed=seed)
        else:
            sigmas = comfy.samplers.KSampler(patched, steps=steps, device=patched.load_device, sampler=sampler_name,
                                             scheduler=scheduler, denoise=denoise).sigmas
            interval = (sigma_start, sigma_end) if edit is not None else (-1.0, 0.0)  # no edit: one pass a step
            sampler = comfy.samplers.KSAMPLER(sample_asyrp, extra_options={
                "eta": eta, "sigma_start": interval[0], "sigma_end": interval[1]})
            samples = comfy.sample.sample_custom(patched, member_noise, cfg, sampler, sigmas, positive, negative,
                                                 latent_image, noise_mask=latent.get("noise_mask"),
                                                 callback=callback, disable_pbar=True, seed=seed)
        members.append(samples)
    return latent_with(latent, torch.cat(members))


def latent_with(latent: dict, samples: torch.Tensor) -> dict:
    """A LATENT like ``latent`` holding other samples (a new batch: per-sample keys are dropped)."""
    out = {k: v for k, v in latent.items() if k not in ("samples", "batch_index", "noise_mask")}
    out["samples"] = samples
    return out


def seed_noise(latent_image: torch.Tensor, first_seed: int) -> torch.Tensor:
    """Noise for each row i of ``latent_image`` as KSampler draws it for seed first_seed + i alone,
    so any sample of a large run can be reproduced by itself."""
    return torch.cat([comfy.sample.prepare_noise(latent_image[i:i + 1], first_seed + i)
                      for i in range(latent_image.shape[0])])


def record_activations(model: Any, positive: Any, negative: Any, latent: dict, n_samples: int, batch_size: int,
                       components: int, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                       latent_is_noise: bool = False, keep_samples: bool = False
                       ) -> tuple[HSpaceActivations, torch.Tensor]:
    """HSpace Hook (paper 000 §III): samples and streams the h of every UNet call into running
    statistics per model timestep (``HSpaceActivations``). Sample i starts from the noise
    KSampler draws for seed + i alone; with ``latent_is_noise`` the latent's rows are the
    starting noises instead (e.g. inverted images) and n_samples is their number.
    Returns the activations and the samples [N, C, H, W]."""
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    channels, height, width = bottleneck_shape(model, latent_image.shape)
    if latent_is_noise:
        n_samples = latent_image.shape[0]
    if components > n_samples:
        raise ValueError(f"components: {components} is more than the {n_samples} samples")
    if components > channels * height * width:
        raise ValueError(f"components: {components} is more than the h dimension {channels * height * width}")
    activations = HSpaceActivations(components, min_batch=batch_size, keep_samples=keep_samples,
                                    storage_device=comfy.model_management.intermediate_device(),
                                    compute_device=model.load_device)
    patched = hspace_clone(model, recorder=activations)
    starts = list(range(0, n_samples, batch_size))
    pbar = comfy.utils.ProgressBar(len(starts) * steps)
    samples = []
    for b, start in enumerate(starts):
        n = min(batch_size, n_samples - start)
        if latent_is_noise:
            noise, empty = latent_image[start:start + n], torch.zeros_like(latent_image[start:start + n])
        else:
            empty = torch.zeros((n, *latent_image.shape[1:]), dtype=latent_image.dtype)
            noise = seed_noise(empty, seed + start)
        activations.begin_batch(start, noise)
        samples.append(comfy.sample.sample(
            patched, noise, steps, cfg, sampler_name, scheduler, positive, negative, empty,
            callback=lambda step, x0, x, total, b=b: pbar.update_absolute(b * steps + step + 1),
            disable_pbar=True, seed=seed + start).to(comfy.model_management.intermediate_device()))
    activations.finish()
    activations.parameters = {"n_samples": n_samples, "steps": steps, "cfg": cfg, "sampler": sampler_name,
                              "scheduler": scheduler, "seed": None if latent_is_noise else seed,
                              "model_fingerprint": model_fingerprint(model)}
    return activations, torch.cat(samples)


def noise_scale(model: Any, first_sigma: float) -> float:
    """What sampling multiplies unit noise by at the first sigma (ComfyUI's noise_scaling with max_denoise)."""
    sigma_max = float(model.get_model_object("model_sampling").sigma_max)
    full = math.isclose(first_sigma, sigma_max, rel_tol=1e-5) or first_sigma > sigma_max
    return (1 + first_sigma ** 2) ** 0.5 if full else first_sigma


def invert(model: Any, positive: Any, negative: Any, latent: dict, steps: int, cfg: float, scheduler: str,
           batch_size: int = 16, components: int = 0, keep_samples: bool = False
           ) -> tuple[torch.Tensor, HSpaceActivations]:
    """Deterministic DDIM inversion of a LATENT (an encoded image) over the schedule of ``steps``
    and ``scheduler``, recording h on the way up. Returns the starting noise in the form
    ComfyUI's samplers take it (unit variance; sampling it with the ddim sampler, the same steps
    and scheduler and a zero edit gives the image back) and the recorded activations."""
    from .inversion import sample_ddim_inversion

    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    bottleneck_shape(model, latent_image.shape)
    sigmas = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler="ddim", scheduler=scheduler).sigmas
    to_noise = noise_scale(model, float(sigmas[0]))
    activations = HSpaceActivations(components, min_batch=batch_size, keep_samples=keep_samples,
                                    storage_device=comfy.model_management.intermediate_device(),
                                    compute_device=model.load_device)
    patched = hspace_clone(model, recorder=activations)
    sampler = comfy.samplers.KSAMPLER(sample_ddim_inversion)
    n = latent_image.shape[0]
    starts = list(range(0, n, batch_size))
    pbar = comfy.utils.ProgressBar(len(starts) * steps)
    noises = []
    for b, start in enumerate(starts):
        part = latent_image[start:start + batch_size]
        activations.begin_batch(start)
        x_top = comfy.sample.sample_custom(
            patched, torch.zeros_like(part), cfg, sampler, sigmas.flip(0), positive, negative, part,
            callback=lambda step, x0, x, total, b=b: pbar.update_absolute(b * steps + step + 1),
            disable_pbar=True, seed=0)
        # sample_custom hands back process_latent_out(x); the sampler's noise lives before that
        noise = model.model.process_latent_in(x_top) / to_noise
        activations.add_noise(noise)
        noises.append(noise.to(comfy.model_management.intermediate_device()))
    activations.finish()
    activations.parameters = {"n_samples": n, "steps": steps, "cfg": cfg, "sampler": "ddim inversion",
                              "scheduler": scheduler, "seed": None, "model_fingerprint": model_fingerprint(model)}
    return torch.cat(noises), activations


def pca_directions(activations: HSpaceActivations, n_components: int) -> Directions:
    """Paper 000 §IV-A: direction k = the k-th principal component of h at every timestep."""
    vectors, timesteps, ratios = activations.directions(n_components)
    parameters = {k: v for k, v in activations.parameters.items() if k != "model_fingerprint"}
    return Directions(vectors, timesteps, [f"pc{i + 1}" for i in range(n_components)], method="pca",
                      model_fingerprint=activations.parameters.get("model_fingerprint", ""), units="std",
                      parameters={**parameters, "explained_variance_ratio":
                                  [[round(v, 5) for v in r] for r in ratios.tolist()]})


class _StopSampling(Exception):
    """Raised from inside a sampling run once everything it was started for has been measured."""


@contextmanager
def _autograd_ready(module: torch.nn.Module):
    """ComfyUI loads weights inside inference mode, and autograd cannot save inference tensors.
    Swaps such parameters and buffers for ordinary copies while gradients are taken and puts the
    originals back afterwards, so the model is left exactly as it was. Weights that require grad
    are frozen meanwhile: gradients are taken through the model, never for it."""
    swapped = []
    frozen = [p for p in module.parameters() if p.requires_grad and not p.is_inference()]  # inference ones are swapped
    for p in frozen:
        p.requires_grad_(False)
    with torch.inference_mode(False):
        for mod in module.modules():
            for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                if t is not None and t.is_inference():
                    copy = torch.nn.Parameter(t.clone(), requires_grad=False) if name in mod._parameters else t.clone()
                    swapped.append((mod, name, t))
                    setattr(mod, name, copy)
    try:
        yield
    finally:
        for mod, name, t in swapped:
            if name in mod._parameters:
                mod._parameters[name] = t
            else:
                mod._buffers[name] = t
        for p in frozen:
            p.requires_grad_(True)


def image_scale(model: Any) -> int:
    """Image pixels per latent pixel: 1 for pixel-space DDPMs, 8 for the SD1.x/SD2.x/SDXL VAEs."""
    return 1 if isinstance(model.model, PixelDDPM) else 8


def mask_for_latent(mask: torch.Tensor, latent_shape: tuple[int, ...], scale: int) -> torch.Tensor:
    """A ComfyUI MASK ([H, W] or [1, H, W]) of the image's size as a [1, 1, h, w] weight on the
    latent, averaged down by the VAE's ``scale``. Masks of other sizes are refused, not resized."""
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"mask: expected one mask [H, W], got shape {list(mask.shape)}")
    height, width = latent_shape[-2:]
    if tuple(mask.shape) != (height * scale, width * scale):
        raise ValueError(f"mask: {mask.shape[1]}×{mask.shape[0]} does not fit the image, which is "
                         f"{width * scale}×{height * scale}; masks are not resized, scale or crop it to the image")
    if not mask.any():
        raise ValueError("mask: the mask is empty, there is no region to find directions for")
    return torch.nn.functional.avg_pool2d(mask.float()[None, None], scale)


@dataclass
class TrajectoryPoint:
    """One sample at one step of its own sampling trajectory, seen from inside ComfyUI's sampler."""
    step: int
    timestep: float  # model timestep
    h: torch.Tensor  # [C, H, W] bottleneck h there, unedited
    eps: Callable[[torch.Tensor], torch.Tensor]  # δ [b, C, H, W] ↦ guided ε [b, …] with h + δ, one row per δ


def at_trajectory_steps(model: Any, positive: Any, negative: Any, latent_image: torch.Tensor, noise: torch.Tensor,
                        seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, wanted: list[int],
                        analyse: Callable[[TrajectoryPoint], Any]) -> dict[int, Any]:
    """Samples one latent as KSampler would and calls ``analyse`` at each wanted step with the
    point x_i of that very trajectory (same noise, same sampler), in a context where autograd
    works (ComfyUI runs prompts in inference mode); stops sampling after the last one."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    schedule = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler_name,
                                       scheduler=scheduler).sigmas.tolist()
    outside = [i for i in wanted if not 0 <= i < steps]
    if outside:
        raise ValueError(f"step: {outside[0]} is outside the schedule of {steps} steps (expected 0 … {steps - 1})")
    model_sampling = model.get_model_object("model_sampling")
    diffusion_model = model.get_model_object("diffusion_model")
    results: dict[int, Any] = {}

    class LastH:
        h = None

        def record(self, h, row_timesteps, row_chunks):
            self.h = h.detach()

    last = LastH()
    clone = hspace_clone(model, recorder=last)

    def wrapper(executor, x, timestep, model_options, seed):
        sigma = float(timestep.reshape(-1)[0])
        i = min(range(steps), key=lambda j: abs(schedule[j] - sigma))
        if i in wanted and i not in results and abs(schedule[i] - sigma) <= 1e-5 * max(sigma, 1e-3):
            def eps(delta):
                options = {**model_options, "transformer_options": {**model_options.get("transformer_options", {}),
                                                                    DELTA: delta}}
                xs, sigmas = x0.expand(delta.shape[0], *x0.shape[1:]), sigma0.expand(delta.shape[0])
                return (xs - executor(xs, sigmas, options, seed)) / sigmas.reshape(-1, 1, 1, 1)

            # attention's fused CPU kernels have no forward-mode derivative; the math one has
            with torch.inference_mode(False), torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]), \
                    _autograd_ready(diffusion_model):
                x0, sigma0 = x[:1].clone(), timestep[:1].clone()
                with torch.no_grad():
                    eps(torch.zeros(1, *bottleneck_shape(model, x.shape), device=x.device, dtype=x.dtype))
                point = TrajectoryPoint(i, float(model_sampling.timestep(sigma0).reshape(-1)[0]), last.h[0].clone(), eps)
                results[i] = analyse(point)
            if len(results) == len(wanted):
                raise _StopSampling
        return executor(x, timestep, model_options, seed)

    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "hspace_trajectory", wrapper)
    try:
        comfy.sample.sample(clone, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                            disable_pbar=True, seed=seed)
    except _StopSampling:
        pass
    if len(results) != len(wanted):
        missing = sorted(set(wanted) - set(results))
        raise ValueError(f"sampler_name: {sampler_name} never evaluated the model at step {missing[0]} of the "
                         f"schedule; use one that does (euler, ddim, ddpm, dpmpp_2m, …)")
    return results


def jacobian_maps(point: TrajectoryPoint, weight: torch.Tensor | None = None) -> tuple[Callable, Callable]:
    """(v ↦ Jv, u ↦ Jᵀu) for J = ∂(weight·ε)/∂h at ``point``, batched along dim 0. Jv is forward
    mode, linearised once per batch size so that each product costs about one pass; Jᵀu reuses
    one retained reverse graph per batch size (J is only ever taken at δ = 0)."""
    region = None if weight is None else weight.to(point.h).clone()  # clone: not an inference tensor
    h_shape = tuple(point.h.shape)

    def masked_eps(delta):
        out = point.eps(delta)
        return out if region is None else out * region

    linear, graphs = {}, {}

    def jvp(v):
        b = v.shape[0]
        if b not in linear:
            _, linear[b] = torch.func.linearize(masked_eps, torch.zeros(b, *h_shape).to(point.h))
        return linear[b](v.to(point.h))

    def vjp(u):
        b = u.shape[0]
        if b not in graphs:
            delta = torch.zeros(b, *h_shape).to(point.h).requires_grad_(True)
            graphs[b] = (delta, masked_eps(delta))
        delta, out = graphs[b]
        return torch.autograd.grad(out, delta, u.to(out), retain_graph=True)[0].double()

    return jvp, vjp


def jacobian_directions(model: Any, positive: Any, negative: Any, latent: dict, seed: int, steps: int, cfg: float,
                        sampler_name: str, scheduler: str, step: int, each_step: bool, n_directions: int,
                        batch_size: int, tolerance: float = 1e-3, max_iterations: int = 50,
                        mask: torch.Tensor | None = None, scale_by_singular_value: bool = False) -> Directions:
    """Paper 000 §IV-B: the top right singular vectors of J = ∂ε/∂h for one sample at the given
    step of its own trajectory, or at each step. ε is ComfyUI's guided noise prediction; with a
    mask, the masked one (eq. 9–10). Each direction is a unit vector times ‖h‖ at that step
    (strength 0.1 moves h by a tenth of its norm), optionally times σ_k/σ_1. Found at one step,
    a direction applies at every step (T = 1)."""
    from .jacobian import top_singular_vectors

    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if latent_image.shape[0] != 1:
        raise ValueError(f"latent_image: Jacobian directions are for one sample, got a batch of {latent_image.shape[0]}")
    h_shape = bottleneck_shape(model, latent_image.shape)
    if not 1 <= n_directions <= math.prod(h_shape):
        raise ValueError(f"n_directions: expected 1 … {math.prod(h_shape)} (the h dimension), got {n_directions}")
    weight = None if mask is None else mask_for_latent(mask, latent_image.shape, image_scale(model))
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    wanted = list(range(steps)) if each_step else [step]
    blocks = math.ceil(n_directions / max(1, min(batch_size, n_directions)))
    pbar = comfy.utils.ProgressBar(len(wanted) * blocks * max_iterations)

    def analyse(point: TrajectoryPoint):
        jvp, vjp = jacobian_maps(point, weight)
        found = top_singular_vectors(jvp, vjp, h_shape, n_directions, batch_size, tolerance, max_iterations,
                                     seed=seed, progress=pbar.update)
        return found, float(point.h.norm()), point.timestep

    found = at_trajectory_steps(model, positive, negative, latent_image, noise, seed, steps, cfg, sampler_name,
                                scheduler, wanted, analyse)
    per_step, previous = [], None
    for i in wanted:
        vectors, h_norm, _ = found[i]
        v = vectors.vectors.reshape(n_directions, -1)
        if previous is not None:  # signs consistent along the schedule
            signs = torch.sign((v * previous).sum(1))
            v = v * torch.where(signs == 0, 1.0, signs)[:, None]
        previous = v
        relative = vectors.values / vectors.values[0] if scale_by_singular_value else torch.ones(n_directions)
        per_step.append((v * (h_norm * relative)[:, None].to(v)).reshape(n_directions, *h_shape))
    return Directions(torch.stack(per_step, 1).float(), torch.tensor([found[i][2] for i in wanted]),
                      [f"jacobian{k + 1}" for k in range(n_directions)], method="jacobian",
                      model_fingerprint=model_fingerprint(model), units="h norm",
                      parameters={"seed": seed, "steps": steps, "cfg": cfg, "sampler": sampler_name,
                                  "scheduler": scheduler, "step": None if each_step else step,
                                  "masked": mask is not None, "scale_by_singular_value": scale_by_singular_value,
                                  "singular_values": [[round(s, 6) for s in found[i][0].values.tolist()]
                                                      for i in wanted],
                                  "iterations": [found[i][0].iterations for i in wanted]})


def with_denoiser(model: Any, positive: Any, negative: Any, latent_shape: tuple[int, ...], cfg: float,
                  fn: Callable[[Callable, torch.device], Any]) -> Any:
    """Calls ``fn(denoise, device)`` from inside one ComfyUI sampling run, where the model is loaded
    and the conditioning prepared, with autograd working. ``denoise(x, sigma, shift)`` is ComfyUI's
    guided x0 prediction (cfg included) with the bottleneck callback ``shift`` (or None).
    Returns what ``fn`` returns; the model is left as it was."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    clone = hspace_clone(model)
    diffusion_model = model.get_model_object("diffusion_model")
    result: dict = {}

    def sampler_function(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}

        def denoise(x, sigma, shift=None):
            if shift is None:
                return model_fn(x, sigma, **extra_args)
            options = dict(extra_args.get("model_options", {}))
            options["transformer_options"] = {**options.get("transformer_options", {}), DELTA: shift}
            return model_fn(x, sigma, **{**extra_args, "model_options": options})

        # attention's fused CPU kernels have no derivative for the double pass; the math one has
        with torch.inference_mode(False), torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]), \
                _autograd_ready(diffusion_model):
            result["value"] = fn(denoise, x.device)
        return x

    latent = torch.zeros(latent_shape)
    sigmas = comfy.samplers.KSampler(model, steps=1, device="cpu", sampler="ddim", scheduler="ddim_uniform").sigmas
    comfy.sample.sample_custom(clone, latent, cfg, comfy.samplers.KSAMPLER(sampler_function), sigmas, positive,
                               negative, latent, disable_pbar=True, seed=0)
    return result["value"]


def encoder_levels(model: Any) -> tuple[int, list[int], int]:
    """(latent channels, channels per level, residual blocks per level) of the model's UNet down
    path, which the Discovery Trainer's discriminator and reconstructor copy (paper 001 B.3)."""
    dm = model.get_model_object("diffusion_model")
    if isinstance(dm, DiffusersUNet):
        c = dm.unet.config
        return c.in_channels, list(c.block_out_channels), c.layers_per_block
    blocks = dm.num_res_blocks
    return dm.in_channels, [dm.model_channels * m for m in dm.channel_mult], max(blocks) if isinstance(blocks, (list, tuple)) else blocks


def discovery_schedule(model: Any, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chain's sigmas (DDIM, uniform stride, M steps) and the model timestep of each step."""
    if steps < 1:
        raise ValueError(f"steps: expected at least 1 sampling step, got {steps}")
    sigmas = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler="ddim", scheduler="ddim_uniform").sigmas
    return sigmas, model.get_model_object("model_sampling").timestep(sigmas[:-1]).float()


def new_discovery_trainer(model: Any, latent_shape: tuple[int, ...], settings: Any, seed: int) -> Any:
    from .discovery import Encoder, Reconstructor, ShiftBlock, Trainer

    channels = bottleneck_shape(model, latent_shape)[0]
    in_channels, levels, layers = encoder_levels(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Trainer(ShiftBlock(channels, settings.count), Reconstructor(in_channels, settings.count, levels, layers),
                       Encoder(in_channels, levels, layers, 1), settings)


def _step_generator(seed: int, step: int) -> torch.Generator:
    # one generator per training step, so a resumed run draws what an uninterrupted one would
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# ComfyUI runs nodes in inference mode; the trainer's networks, their state and the schedule must
# be ordinary tensors for autograd.
@torch.inference_mode(False)
def train_discovery(model: Any, positive: Any, negative: Any, latent_shape: tuple[int, ...], settings: Any,
                    steps: int, training_steps: int, seed: int, cfg: float, state_path: Path | None = None,
                    resume: bool = False, save_every: int = 50, direction_samples: int = 16,
                    progress: Callable[[int, int, dict], None] | None = None, rank: int = 0, world_size: int = 1
                    ) -> tuple[Directions, Directions, list[dict]]:
    """Discovery Trainer (paper 001): trains shift block, reconstructor and discriminator through
    the M-step chain for ``training_steps`` updates of ``settings.batch_size`` samples (split over
    ``world_size`` torch.distributed processes), saving the state to ``state_path`` every
    ``save_every`` steps and at the end (rank 0; written whole, never half). Returns the per-step
    and the time-invariant directions (mean unit shift over ``direction_samples`` samples) and the
    loss history."""
    from . import discovery as dv

    if settings.count < 2:
        raise ValueError(f"count: expected K ≥ 2 directions to tell apart, got {settings.count}")
    if not settings.magnitude > 0:
        raise ValueError(f"magnitude: expected S > 0 (ε is drawn from [−S, S]), got {settings.magnitude}")
    if settings.batch_size % world_size:
        raise ValueError(f"batch_size: {settings.batch_size} does not split over {world_size} processes")
    latent_shape = (settings.batch_size, *latent_shape[1:])
    h_shape = bottleneck_shape(model, latent_shape)
    sigmas, timesteps = discovery_schedule(model, steps)
    shifted = dv.shifted_step_count(timesteps, settings.t_edit)
    trainer = new_discovery_trainer(model, latent_shape, settings, seed)
    fingerprint = model_fingerprint(model)
    meta = {"model_fingerprint": fingerprint, "count": settings.count, "h_shape": list(h_shape),
            "latent_shape": list(latent_shape[1:])}
    resumed: dict[str, torch.Tensor] = {}
    if resume and state_path is not None and state_path.exists():
        resumed, saved = dv.load_state(state_path)
        for key, value in meta.items():
            if saved.get(key) != value:
                raise ValueError(f"resume: {state_path.name} was trained with {key} {saved.get(key)}, "
                                 f"this run has {value}; use another name or turn resume off")
        trainer.step = int(saved["step"])
    scale = noise_scale(model, float(sigmas[0]))
    history: list[dict] = []

    def save() -> None:
        if state_path is not None and rank == 0:
            dv.save_state(state_path, trainer, {**meta, "step": trainer.step, "settings": vars(settings),
                                                "steps": steps, "seed": seed, "cfg": cfg})

    def run(denoise, device):
        for m in trainer.modules().values():
            m.to(device)
        if resumed:  # after the move, so Adam puts the saved moments on their parameters' device
            dv.load_state_tensors(trainer, resumed)
        chain = sigmas.to(device)
        while trainer.step < training_steps:
            comfy.model_management.throw_exception_if_processing_interrupted()
            batch = dv.draw_batch(_step_generator(seed, trainer.step), latent_shape, settings.count,
                                  settings.magnitude, scale, rank, world_size)
            batch = dv.Batch(batch.noise.to(device), batch.index.to(device), batch.magnitude.to(device))
            losses = dv.train_step(denoise, trainer, batch, chain, shifted, distributed=world_size > 1)
            history.append({"step": trainer.step, **losses})
            if trainer.step % save_every == 0 or trainer.step == training_steps:
                save()
            if progress is not None:
                progress(trainer.step, training_steps, losses)
        g = torch.Generator().manual_seed(seed + 7)
        noise = (torch.randn((direction_samples, *latent_shape[1:]), generator=g) * scale).to(device)
        return dv.mean_shifts(denoise, trainer.shift, noise, chain, shifted)

    per_step, time_invariant = with_denoiser(model, positive, negative, (1, *latent_shape[1:]), cfg, run)
    parameters = {"settings": vars(settings), "steps": steps, "training_steps": training_steps, "seed": seed,
                  "cfg": cfg, "shifted_steps": shifted, "state": state_path.name if state_path else None}
    names = [f"discovered {k}" for k in range(settings.count)]

    def directions(vectors: torch.Tensor, kind: str) -> Directions:
        return Directions(vectors.float().cpu(), timesteps.cpu(), names, method=f"discovery ({kind})",
                          model_fingerprint=fingerprint, units="shift ε", parameters=parameters)

    return directions(per_step, "per timestep"), directions(time_invariant, "time-invariant"), history
