"""Tiny real models for the tests and benches: random-weight UNets in the shapes of SD1.5, SDXL and a
pixel-space diffusers DDPM, and whole SD1.5- and SDXL-shaped checkpoint files (UNet, CLIP text
encoders, TAESD VAE) that ComfyUI's own Load Checkpoint reads. Small enough to sample on the CPU in
a fraction of a second."""
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
    **SD15_UNET, "adm_in_channels": 32 + 6 * 256, "num_classes": "sequential", "use_linear_in_transformer": True,
    "num_head_channels": 16, "num_heads": -1,
}

# Transformers: SD3's loader reads depth = hidden ÷ 64 from the state dict, so 2 blocks of width 128.
SD3_DIT = {"in_channels": 16, "patch_size": 2, "depth": 2, "adm_in_channels": 64, "pos_embed_max_size": 16,
           "num_patches": 256, "pos_embed_scaling_factor": None,
           "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 128}}}
FLUX_DIT = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32,
            "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
            "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True}
CHROMA_DIT = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 32, "hidden_size": 64,
              "mlp_ratio": 2.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2, "axes_dim": [8, 12, 12],
              "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 64, "hidden_dim": 64,
              "n_layers": 2}

# SD3.5 as a checkpoint: its CLIP-L and CLIP-G outputs are padded to 4,096 context channels
SD35_DIT = {**SD3_DIT, "context_embedder_config": {"target": "torch.nn.Linear",
                                                   "params": {"in_features": 4096, "out_features": 128}}}
QWEN_DIT = {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 2,
            "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": 32,
            "axes_dims_rope": [8, 12, 12]}
WAN_DIT = {"image_model": "wan2.1", "model_type": "t2v", "dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 2,
           "text_dim": 32, "in_dim": 16, "out_dim": 16, "freq_dim": 32}
HUNYUAN_VIDEO_DIT = {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
                     "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2,
                     "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 256, "patch_size": [1, 2, 2],
                     "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False,
                     "use_cond_type_embedding": False, "vision_in_dim": None}
LTXV_DIT = {"image_model": "ltxv", "in_channels": 128, "cross_attention_dim": 64, "attention_head_dim": 32,
            "num_attention_heads": 2, "caption_channels": 32, "num_layers": 2}
AURA_DIT = {"cond_seq_dim": 32, "in_channels": 4, "out_channels": 4, "patch_size": 2, "dim": 64, "n_layers": 4,
            "n_double_layers": 2, "n_heads": 2, "global_conddim": 64, "max_seq": 256}

# Families added by issue 30 (configs found by building each with ComfyUI 0.3.75's classes); the hooked ones
FLUX2_DIT = {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
             "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 3.0, "num_heads": 2, "depth": 2,
             "depth_single_blocks": 2, "axes_dim": [8, 8, 8, 8], "theta": 2000, "patch_size": 1, "qkv_bias": False,
             "guidance_embed": True, "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
             "default_ref_method": "index", "ref_index_scale": 10.0}
CHROMA_RADIANCE_DIT = {**CHROMA_DIT, "image_model": "chroma_radiance", "in_channels": 3, "out_channels": 3,
                       "patch_size": 4, "nerf_hidden_size": 16, "nerf_mlp_ratio": 2, "nerf_depth": 2,
                       "nerf_max_freqs": 4, "nerf_tile_size": 512, "nerf_final_head_type": "linear",
                       "nerf_embedder_dtype": None}
HUNYUAN_IMAGE21_DIT = {**HUNYUAN_VIDEO_DIT, "in_channels": 64, "out_channels": 64, "vec_in_dim": None,
                       "axes_dim": [16, 16], "patch_size": [1, 1], "guidance_embed": False}
HUNYUAN_VIDEO15_DIT = {**HUNYUAN_VIDEO_DIT, "in_channels": 65, "out_channels": 32, "vec_in_dim": None,
                       "patch_size": [1, 1, 1], "guidance_embed": False, "use_cond_type_embedding": True,
                       "vision_in_dim": 16}
# Mochi asserts hidden_size_x · mlp_ratio_x = 12288: width 32 keeps it at 1.6 M parameters
MOCHI_DIT = {"image_model": "mochi_preview", "depth": 2, "patch_size": 2, "num_heads": 2, "hidden_size_x": 32,
             "hidden_size_y": 32, "mlp_ratio_x": 384.0, "mlp_ratio_y": 2.0, "learn_sigma": False, "in_channels": 12,
             "qk_norm": True, "qkv_bias": False, "out_bias": True, "attn_drop": 0.0, "patch_embed_bias": True,
             "posenc_preserve_area": True, "timestep_mlp_bias": True, "attend_to_padding": False,
             "timestep_scale": 1000.0, "use_t5": True, "t5_feat_dim": 32, "t5_token_length": 8, "rope_theta": 10000.0}
# HunyuanDiT's long skips need 4 blocks
HUNYUAN_DIT = {"image_model": "hydit", "patch_size": 2, "in_channels": 4, "hidden_size": 64, "depth": 4,
               "num_heads": 2, "mlp_ratio": 2.0, "text_states_dim": 32, "text_states_dim_t5": 32, "text_len": 8,
               "text_len_t5": 8, "qk_norm": True, "size_cond": False, "use_style_cond": False, "learn_sigma": True}
WAN22_5B_DIT = {**WAN_DIT, "in_dim": 48, "out_dim": 48}
# Wan 2.1/2.2 variants, each its own class, all sampling from text alone. VACE: a VACE block beside each block
# (every 5th in the 14B), its 96 context channels the 32 of control frames and 64 of mask that ComfyUI fills in
WAN_VACE_DIT = {**WAN_DIT, "model_type": "vace", "vace_layers": 2, "vace_in_dim": 96}
# Camera (Wan 2.1 Fun): image-to-video with 16 start-image channels, zeros without one; its CLIP-vision projection
# is fixed at 1280 wide (2.4 M parameters)
WAN_CAMERA_DIT = {**WAN_DIT, "model_type": "camera", "in_dim": 32}
# S2V: a narrow audio encoder and an audio injector at both blocks (the 14B's at 12 of its 40)
WAN_S2V_DIT = {**WAN_DIT, "model_type": "s2v", "audio_dim": 32, "audio_inject_layers": [0, 1]}
# HuMo (the 1.7B, no start-image channels) and Animate (36 input channels, as its checkpoint) have audio, motion
# and face encoders of fixed widths that sampling from text alone never runs: 40 M and 37 M parameters (Animate's
# face adapter sits at every 5th block, so 2 blocks have none and take no face video)
WAN_HUMO_DIT = {**WAN_DIT, "model_type": "humo"}
WAN_ANIMATE_DIT = {**WAN_DIT, "model_type": "animate", "in_dim": 36}
# Wan 2.2 Fun with a reference image: its tokens come before the image's in every block
WAN_REFERENCE_DIT = {**WAN_DIT, "in_dim_ref_conv": 16}
# ... and those without a block hook. Z-Image's adaLN reads 256 timestep features: width 256 (2.0 M parameters)
ZIMAGE_DIT = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": 32,
              "n_layers": 2, "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 1, "qk_norm": True,
              "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "multiple_of": 16,
              "ffn_dim_multiplier": 0.25, "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}
LUMINA2_DIT = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "cap_feat_dim": 32,
               "n_layers": 2, "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 1, "qk_norm": True,
               "axes_dims": [8, 12, 12], "axes_lens": [300, 512, 512], "rope_theta": 10000.0, "multiple_of": 16,
               "ffn_dim_multiplier": 1.0}
HIDREAM_DIT = {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 2,
               "num_single_layers": 2, "attention_head_dim": 32, "num_attention_heads": 2,
               "caption_channels": [32, 32], "text_emb_dim": 32, "num_routed_experts": 2, "num_activated_experts": 1,
               "axes_dims_rope": [8, 12, 12], "max_resolution": [128, 128], "llama_layers": [0, 1, 1, 1]}
PIXART_SIGMA_DIT = {"image_model": "pixart_sigma", "num_heads": 2, "patch_size": 2, "hidden_size": 64,
                    "in_channels": 4, "depth": 2, "mlp_ratio": 2.0, "caption_channels": 32, "model_max_length": 8,
                    "micro_condition": False}
COSMOS_PREDICT2_DIT = {
    "image_model": "cosmos_predict2", "max_img_h": 240, "max_img_w": 240, "max_frames": 128, "in_channels": 16,
    "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1, "model_channels": 64, "concat_padding_mask": True,
    "crossattn_emb_channels": 32, "pos_emb_cls": "rope3d", "pos_emb_learnable": True,
    "pos_emb_interpolation": "crop", "min_fps": 1, "max_fps": 30, "use_adaln_lora": True, "adaln_lora_dim": 16,
    "num_blocks": 2, "num_heads": 2, "mlp_ratio": 2.0, "extra_per_block_abs_pos_emb": False,
    "rope_h_extrapolation_ratio": 4.0, "rope_w_extrapolation_ratio": 4.0, "rope_t_extrapolation_ratio": 1.0,
    "extra_h_extrapolation_ratio": 1.0, "extra_w_extrapolation_ratio": 1.0, "extra_t_extrapolation_ratio": 1.0,
    "rope_enable_fps_modulation": False}
OMNIGEN2_DIT = {"image_model": "omnigen2", "axes_dim_rope": [8, 12, 12], "axes_lens": [1024, 1664, 1664],
                "ffn_dim_multiplier": None, "hidden_size": 64, "in_channels": 16, "multiple_of": 16, "norm_eps": 1e-5,
                "num_attention_heads": 2, "num_kv_heads": 1, "num_layers": 2, "num_refiner_layers": 1,
                "out_channels": None, "patch_size": 2, "text_feat_dim": 32, "timestep_scale": 1000.0}

# Cosmos 1: the same patching as Predict2, its token grid [T, H, W, B, C] in the blocks
COSMOS_DIT = {"image_model": "cosmos", "max_img_h": 240, "max_img_w": 240, "max_frames": 128, "in_channels": 16,
              "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1, "model_channels": 64, "num_blocks": 2,
              "num_heads": 2, "mlp_ratio": 2.0, "crossattn_emb_channels": 32, "pos_emb_cls": "rope3d",
              "use_adaln_lora": True, "adaln_lora_dim": 16, "block_x_format": "THWBD",
              "extra_per_block_abs_pos_emb": True, "extra_per_block_abs_pos_emb_type": "learnable",
              "rope_h_extrapolation_ratio": 4.0, "rope_w_extrapolation_ratio": 4.0}

# kind: (ComfyUI model config class, unet config)
DITS = {"sd3": ("SD3", SD3_DIT), "flux": ("Flux", FLUX_DIT), "chroma": ("Chroma", CHROMA_DIT),
        "qwen": ("QwenImage", QWEN_DIT), "wan": ("WAN21_T2V", WAN_DIT),
        "hunyuan_video": ("HunyuanVideo", HUNYUAN_VIDEO_DIT), "auraflow": ("AuraFlow", AURA_DIT),
        "ltxv": ("LTXV", LTXV_DIT), "flux2": ("Flux2", FLUX2_DIT), "chroma_radiance": ("ChromaRadiance",
                                                                                         CHROMA_RADIANCE_DIT),
        "hunyuan_image21": ("HunyuanImage21", HUNYUAN_IMAGE21_DIT),
        "hunyuan_video15": ("HunyuanVideo15", HUNYUAN_VIDEO15_DIT), "mochi": ("GenmoMochi", MOCHI_DIT),
        "hunyuan_dit": ("HunyuanDiT", HUNYUAN_DIT), "wan22_5b": ("WAN22_T2V", WAN22_5B_DIT),
        "zimage": ("ZImage", ZIMAGE_DIT), "lumina2": ("Lumina2", LUMINA2_DIT), "hidream": ("HiDream", HIDREAM_DIT),
        "pixart_sigma": ("PixArtSigma", PIXART_SIGMA_DIT),
        "cosmos_predict2": ("CosmosT2IPredict2", COSMOS_PREDICT2_DIT), "omnigen2": ("Omnigen2", OMNIGEN2_DIT),
        "wan_vace": ("WAN21_Vace", WAN_VACE_DIT), "wan_camera": ("WAN21_Camera", WAN_CAMERA_DIT),
        "wan_s2v": ("WAN22_S2V", WAN_S2V_DIT), "wan_humo": ("WAN21_HuMo", WAN_HUMO_DIT),
        "wan_animate": ("WAN22_Animate", WAN_ANIMATE_DIT), "wan_reference": ("WAN21_T2V", WAN_REFERENCE_DIT),
        "cosmos": ("CosmosT2V", COSMOS_DIT)}
# latent of each kind: channels, frames (None for images), rows, columns; 8 × 6 tokens of 2 × 2 where it can
LATENTS = {"sd3": (16, None, 16, 12), "flux": (16, None, 16, 12), "chroma": (16, None, 16, 12),
           "qwen": (16, 1, 16, 12), "wan": (16, 1, 16, 12), "hunyuan_video": (16, 1, 16, 12),
           "auraflow": (4, None, 16, 12), "ltxv": (128, 1, 8, 6), "flux2": (128, None, 8, 6),
           "chroma_radiance": (3, None, 32, 24), "hunyuan_image21": (64, None, 8, 6),
           "hunyuan_video15": (32, 1, 8, 6), "mochi": (12, 1, 16, 12), "hunyuan_dit": (4, None, 16, 12),
           "wan22_5b": (48, 1, 16, 12), "zimage": (16, None, 16, 12), "lumina2": (16, None, 16, 12),
           "hidream": (16, None, 16, 12), "pixart_sigma": (4, None, 32, 40), "cosmos_predict2": (16, 1, 16, 12),
           "omnigen2": (16, None, 16, 12), "wan_vace": (16, 1, 16, 12), "wan_camera": (16, 1, 16, 12),
           "wan_s2v": (16, 1, 16, 12), "wan_humo": (16, 1, 16, 12), "wan_animate": (16, 1, 16, 12),
           "wan_reference": (16, 1, 16, 12), "cosmos": (16, 1, 16, 12)}
# PixArt's position table needs (H + W) / 2 > 32 latent pixels; its grid is 16 × 20

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


def comfy_dit(kind: str, seed: int = 0):
    """A ModelPatcher around a random transformer of one of the families (``DITS``), built by ComfyUI's own classes
    (the 0.3.75 loader cannot detect tiny ones: it fixes widths such as Flux's 24 heads of 128 channels)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    torch.manual_seed(seed)
    config_class, config = DITS[kind]
    model = getattr(comfy.supported_models, config_class)(dict(config)).get_model({})
    init_weights(model.diffusion_model)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def tiny_latent(kind: str, batch: int = 1) -> dict:
    """An empty LATENT of the right shape for the tiny model of ``kind``."""
    channels, frames, rows, cols = LATENTS[kind]
    return {"samples": torch.zeros(batch, channels, *((frames,) if frames else ()), rows, cols)}


def save_tiny_sd3(path: Path, seed: int = 0) -> Path:
    """The tiny SD3 transformer's weights alone, as UNETLoader (Load Diffusion Model) reads them."""
    from safetensors.torch import save_file

    dm = comfy_dit("sd3", seed).model.diffusion_model
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in dm.state_dict().items()}, str(path))
    return path


def init_weights(module: torch.nn.Module) -> None:
    """ComfyUI's layers skip weight initialisation (weights come from a checkpoint): give them
    torch's default initialisation, with no zero output layers that would hide every edit; norm
    scales 1 and learnt position tables small."""
    for name, p in [*module.named_parameters(), *module.named_buffers()]:
        if name.endswith((".scale", "modulation", "scale_shift_table", "pad_token", "gate.weight",
                          "image_index_embedding", "text_embedding_padding", "positional_embedding",
                          "pos_frequencies", "class_embedding")) or ".pos_emb_" in name or \
                name in ("pos_embed", "positional_encoding", "register_tokens"):
            # RMSNorm scales; learnt position tables, modulations (Wan, LTXV), registers (AuraFlow), pad tokens
            # (Z-Image, HunyuanDiT), mixture-of-experts routers (HiDream), CLIP vision's class token and what else
            # ComfyUI leaves empty
            with torch.no_grad():
                p.fill_(1.0) if name.endswith(".scale") else p.normal_(0, 0.02)
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.Linear.reset_parameters(m)
        elif isinstance(m, torch.nn.modules.conv._ConvNd):
            torch.nn.modules.conv._ConvNd.reset_parameters(m)
        elif isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
        elif type(m).__name__ == "RMSNorm" and isinstance(getattr(m, "weight", None), torch.nn.Parameter):
            torch.nn.init.ones_(m.weight)  # Qwen-Image's (torch's RMSNorm, or ComfyUI's with a weight)
    with torch.no_grad():  # parameters of no known layer whose memory held NaN (Wan Animate's motion encoder's)
        for p in module.parameters():
            if not torch.isfinite(p).all():
                p.normal_(0, 0.02)


def conditioning(kind: str, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    extra = {}
    if kind == "sdxl":
        extra = {"pooled_output": torch.randn(1, 32, generator=g), "width": 64, "height": 64}
    elif kind == "pixel":
        return [[torch.zeros(1, 1, 1), {}]]
    elif kind == "sd3":
        return [[torch.randn(1, 5, 32, generator=g), {"pooled_output": torch.randn(1, 64, generator=g)}]]
    elif kind in ("chroma", "qwen", "wan", "auraflow", "chroma_radiance", "hunyuan_image21", "hunyuan_video15",
                  "wan22_5b", "pixart_sigma", "cosmos_predict2", "wan_vace", "wan_camera", "wan_s2v", "wan_humo",
                  "wan_animate", "wan_reference", "cosmos"):
        return [[torch.randn(1, 5, 32, generator=g), {"pooled_output": None}]]
    elif kind in ("ltxv", "mochi", "zimage", "lumina2", "omnigen2"):
        # its text encoder's attention mask, integers as a tokenizer gives them
        return [[torch.randn(1, 5, 32, generator=g), {"attention_mask": torch.ones(1, 5, dtype=torch.long)}]]
    elif kind == "flux2":
        return [[torch.randn(1, 5, 32, generator=g), {"pooled_output": None, "guidance": 3.5}]]
    elif kind == "hidream":  # T5 tokens, the pooled CLIP vector and two of Llama 3's layers
        return [[torch.randn(1, 5, 32, generator=g), {"pooled_output": torch.randn(1, 32, generator=g),
                                                       "conditioning_llama3": torch.randn(1, 2, 4, 32, generator=g)}]]
    elif kind == "hunyuan_dit":  # CLIP and mT5 streams of its fixed text lengths, both with masks
        return [[torch.randn(1, 8, 32, generator=g), {
            "attention_mask": torch.ones(1, 8, dtype=torch.long),
            "conditioning_mt5xl": torch.randn(1, 8, 32, generator=g),
            "attention_mask_mt5xl": torch.ones(1, 8, dtype=torch.long)}]]
    elif kind in ("flux", "hunyuan_video"):
        return [[torch.randn(1, 5, 32, generator=g), {"pooled_output": torch.randn(1, 32, generator=g),
                                                       "guidance": 3.5}]]
    return [[torch.randn(1, 7, 64, generator=g), extra]]


def save_pixel_ddpm(folder: Path, seed: int = 0, config: dict = PIXEL_UNET, scheduler: dict = PIXEL_SCHEDULER) -> Path:
    """A random UNet2DModel saved in the google/ddpm-ema-celebahq-256 folder layout, with ``scheduler`` as
    its scheduler config."""
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    unet = UNet2DModel.from_config(config)
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()},
              str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return folder


# Text encoders in the tiny checkpoints: ComfyUI's CLIP classes at a width the tiny UNets take as
# context (SD1.5: CLIP-L 64; SDXL: CLIP-L 32 + CLIP-G 32, and CLIP-G's pooled output, 32 wide, in the
# SDXL UNet's class embedding with the six size embeddings: 32 + 6 · 256 = 1568, as 1280 + 1536 = 2816 in SDXL).
TINY_CLIP = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 3}
TINY_CLIP_XL = {**TINY_CLIP, "hidden_size": 32}


def tiny_model_configs() -> dict:
    """ComfyUI model configs for the tiny checkpoints: SD15 and SDXL with the tiny UNet's widths and
    tiny text encoders; everything else (model class, latent format, conditioning) is ComfyUI's."""
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models
    import comfy.supported_models_base
    import comfy.text_encoders.sd3_clip

    class TinySD1Clip(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, dtype=dtype,
                             model_options={**model_options, "clip_l_model_config": TINY_CLIP})

    class TinySDXLClip(comfy.sdxl_clip.SDXLClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, dtype=dtype, model_options={
                **model_options, "clip_l_model_config": TINY_CLIP_XL, "clip_g_model_config": TINY_CLIP_XL})

    class TinySD15(comfy.supported_models.SD15):
        unet_config = {"model_channels": SD15_UNET["model_channels"], "context_dim": SD15_UNET["context_dim"],
                       "adm_in_channels": None, "use_linear_in_transformer": False}
        unet_extra_config = {"num_heads": SD15_UNET["num_heads"], "num_head_channels": -1}

        def clip_target(self, state_dict={}):
            return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinySD1Clip)

    class TinySDXL(comfy.supported_models.SDXL):
        unet_config = {"model_channels": SDXL_UNET["model_channels"], "context_dim": SDXL_UNET["context_dim"],
                       "adm_in_channels": SDXL_UNET["adm_in_channels"], "use_linear_in_transformer": True}
        unet_extra_config = {"num_heads": -1, "num_head_channels": SDXL_UNET["num_head_channels"]}

        def clip_target(self, state_dict={}):
            return comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClip)

    class TinySD3Clip(comfy.text_encoders.sd3_clip.SD3ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(clip_l=True, clip_g=True, t5=False, device=device, dtype=dtype, model_options={
                **model_options, "clip_l_model_config": TINY_CLIP_XL, "clip_g_model_config": TINY_CLIP_XL})

    class TinySD35(comfy.supported_models.SD3):
        unet_config = {"in_channels": 16, "pos_embed_scaling_factor": None, "depth": SD35_DIT["depth"]}

        def clip_target(self, state_dict={}):
            return comfy.supported_models_base.ClipTarget(comfy.text_encoders.sd3_clip.SD3Tokenizer, TinySD3Clip)

    return {"sd15": TinySD15, "sdxl": TinySDXL, "sd35": TinySD35}


def register_tiny_checkpoints() -> dict:
    """Lets ComfyUI's checkpoint loader recognise the tiny checkpoints (no real model has these
    widths, so real checkpoints are unaffected). Idempotent."""
    import comfy.supported_models

    configs = tiny_model_configs()
    registered = {c.__name__ for c in comfy.supported_models.models}
    for config in configs.values():
        if config.__name__ not in registered:
            comfy.supported_models.models.insert(0, config)
    return configs


def save_tiny_checkpoint(kind: str, path: Path, seed: int = 0) -> Path:
    """A random SD1.5-, SDXL- or SD3.5-shaped checkpoint with text encoders and a TAESD VAE, written by
    ComfyUI's own checkpoint saver (the Save Checkpoint node's code)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd
    import comfy.taesd.taesd

    config_class = register_tiny_checkpoints()[kind]
    torch.manual_seed(seed)
    config = config_class({**{"sd15": SD15_UNET, "sdxl": SDXL_UNET, "sd35": SD35_DIT}[kind]})
    model = config.get_model({})
    init_weights(model.diffusion_model)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                               offload_device=comfy.model_management.unet_offload_device())
    clip = comfy.sd.CLIP(config.clip_target())
    init_weights(clip.cond_stage_model)
    taesd = comfy.taesd.taesd.TAESD(latent_channels=config.latent_format.latent_channels)
    init_weights(taesd)
    with torch.no_grad():  # mid-grey images, so that an edit shows in 8-bit pixels
        taesd.taesd_decoder[-1].bias.fill_(0.5)
    vae = comfy.sd.VAE(sd=taesd.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    comfy.sd.save_checkpoint(str(path), patcher, clip, vae)
    return path
