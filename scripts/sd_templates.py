"""Writes the templates for a user's own checkpoints, workflows/api/sd/<family>_<graph>.api.json, from one
definition per graph: SD1.5 and SDXL (which differ only in checkpoint name, image size and guidance) get
every graph; the transformers SD3.5 and Flux get the prompt-pair slider, with the direction applied by
Apply H-space Edit in front of a stock KSampler, and Wan a text-to-video edit made the same way. Then
`python scripts/workflow_ui.py` writes their UI twins and `bash scripts/demo.sh --thumbnails` their cards.
The tests run the SD1.5, SDXL and SD3.5 ones on tiny checkpoints of those shapes
(tests/test_sd_templates.py); Flux's and Wan's need their separate text encoders and VAE, and are
checked there only as far as the browser and the API twin go.

The graphs that apply a direction load `<family>_smiling.safetensors`, which the prompt-pair graph saves.
"""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "workflows" / "api" / "sd"

FAMILIES = {
    # clip_vision: the CLIP vision model whose image embeddings live where the family's pooled text embedding
    # does (CLIP-L's 768 for SD1.5 and Flux, CLIP-G's 1280 for SDXL), for the Direction Report
    "sd15": {"title": "Stable Diffusion 1.5", "ckpt": "v1-5-pruned-emaonly.safetensors", "size": 512, "cfg": 7.0,
             "clip_vision": "clip_vision_vit_l.safetensors"},
    "sdxl": {"title": "SDXL", "ckpt": "sd_xl_base_1.0.safetensors", "size": 1024, "cfg": 6.0,
             "clip_vision": "clip_vision_g.safetensors"},
    # transformers: 16-channel latents, h at the middle joint block (H-space Block moves it)
    "sd35": {"title": "SD3.5", "ckpt": "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors", "size": 1024,
             "cfg": 4.5, "transformer": True},
    "flux": {"title": "Flux", "ckpt": "flux1-dev.safetensors", "size": 1024, "cfg": 1.0, "transformer": True,
             "clip": ("clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors"), "vae": "ae.safetensors",
             "clip_vision": "clip_vision_vit_l.safetensors"},
    # Z-Image (Turbo): a Lumina 2 transformer read through a forward hook on its blocks; Qwen3 4B text encoder
    "zimage": {"title": "Z-Image", "ckpt": "z_image_turbo_bf16.safetensors", "size": 1024, "cfg": 1.0,
               "transformer": True, "clip": ("qwen_3_4b.safetensors",), "clip_type": "lumina2",
               "vae": "ae.safetensors"},
    # video: 832 × 480, 33 frames; h stacks the frames' token grids
    "wan": {"title": "Wan 2.1", "ckpt": "wan2.1_t2v_1.3B_fp16.safetensors", "size": (832, 480), "length": 33,
            "cfg": 6.0, "transformer": True, "clip": ("umt5_xxl_fp8_e4m3fn_scaled.safetensors",),
            "vae": "wan_2.1_vae.safetensors"},
}
WALKING = "a person walking in a park, medium shot"
WALKING_SMILING = "a smiling person walking in a park, medium shot"
PERSON = "a photo portrait of a person, studio light"
SMILING = "a photo portrait of a person smiling, studio light"
NEGATIVE = "blurry, lowres, deformed"
SAMPLING = {"steps": 30, "sampler_name": "ddim", "scheduler": "ddim_uniform"}


def link(node: str, slot: int = 0) -> list:
    return [node, slot]


def clip(f: dict) -> list:
    return link("20") if "clip" in f else link("1", 1)


def vae(f: dict) -> list:
    return link("21") if "vae" in f else link("1", 2)


def base(f: dict, batch: int = 1) -> dict:
    """Model, the two prompts, the negative and an empty latent: nodes 1–5 of every graph (Flux: its
    diffusion model in 1, text encoders in 20 and VAE in 21)."""
    nodes = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f["ckpt"]}}}
    width, height = f["size"] if isinstance(f["size"], tuple) else (f["size"], f["size"])
    latent = {"class_type": "EmptySD3LatentImage" if f.get("transformer") else "EmptyLatentImage",
              "inputs": {"width": width, "height": height, "batch_size": batch}}
    if "length" in f:
        latent = {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": width, "height": height, "length": f["length"], "batch_size": batch}}
    if len(f.get("clip", ())) == 1:
        nodes = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": f["ckpt"], "weight_dtype": "default"}},
                 "20": {"class_type": "CLIPLoader", "inputs": {"clip_name": f["clip"][0],
                                                               "type": f.get("clip_type", "wan"),
                                                               "device": "default"}},
                 "21": {"class_type": "VAELoader", "inputs": {"vae_name": f["vae"]}}}
    elif "clip" in f:
        nodes = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": f["ckpt"], "weight_dtype": "default"}},
                 "20": {"class_type": "DualCLIPLoader",
                        "inputs": {"clip_name1": f["clip"][0], "clip_name2": f["clip"][1], "type": "flux",
                                   "device": "default"}},
                 "21": {"class_type": "VAELoader", "inputs": {"vae_name": f["vae"]}}}
    return {
        **nodes,
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PERSON, "clip": clip(f)}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": SMILING, "clip": clip(f)}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": clip(f)}},
        "5": latent,
    }


def hook(f: dict, positive: str, n_samples: int, components: int) -> dict:
    return {"class_type": "HSpaceHook",
            "inputs": {"model": link("1"), "positive": link(positive), "negative": link("4"), "latent_image": link("5"),
                       "n_samples": n_samples, "batch_size": 4, "components": components, "seed": 0, "steps": 20,
                       "cfg": f["cfg"], "sampler_name": "ddim", "scheduler": "ddim_uniform", "latent_is_noise": False,
                       "keep_samples": False}}


def sweep_grid(f: dict, directions: list, strengths: str, seed: int, latent: list | None = None) -> dict:
    return {"class_type": "HSpaceDirectionSweepGrid",
            "inputs": {"model": link("1"), "vae": vae(f), "positive": link("2"), "negative": link("4"),
                       "latent_image": latent or link("5"), "directions": directions, "seed": seed, **SAMPLING,
                       "cfg": f["cfg"], "strengths": strengths, "mode": "both terms", "start_percent": 0.0,
                       "end_percent": 1.0, "cell_size": 0}}


def ksampler(f: dict, model: list, latent: list, seed: int = 7) -> dict:
    return {"class_type": "KSampler",
            "inputs": {"model": model, "seed": seed, **SAMPLING, "cfg": f["cfg"], "positive": link("2"),
                       "negative": link("4"), "latent_image": latent, "denoise": 1.0}}


def save(images: list, prefix: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}}


def smiling(family: str) -> dict:
    return {"class_type": "HSpaceLoadDirections", "inputs": {"filename": f"{family}_smiling.safetensors"}}


def apply_edit(model: list, directions: list, strength: str = "1.0") -> dict:
    return {"class_type": "HSpaceApplyEdit",
            "inputs": {"model": model, "directions": directions, "strengths": strength, "start_percent": 0.0,
                       "end_percent": 1.0, "apply_to": "both"}}


def smiling_from_prompts(family: str, f: dict, n_samples: int) -> dict:
    """Nodes 6–9: two Hooks on the same seeds under the plain and the smiling prompt (nodes 2 and 3), their
    difference as the smile direction (node 8), saved as <family>_smiling."""
    return {"6": hook(f, "3", n_samples, 0),
            "7": hook(f, "2", n_samples, 0),
            "8": {"class_type": "HSpaceAttributeDirection",
                  "inputs": {"activations": link("6"), "negative": link("7"), "attribute": "smiling", "count": 1,
                             "space": "h", "method": "regression", "start_percent": 0.0}},
            "9": {"class_type": "HSpaceSaveDirections",
                  "inputs": {"directions": link("8"), "filename": f"{family}_smiling", "overwrite": True}}}


def prompt_pair(family: str, f: dict) -> dict:
    """Two Hooks on the same seeds under "a person" / "a person smiling", their mean difference, a sweep grid."""
    return {**base(f),
            **smiling_from_prompts(family, f, 32),
            "10": sweep_grid(f, link("8"), "-1, -0.5, 0, 0.5, 1", seed=7),
            "11": save(link("10"), f"{family}_smiling_slider")}


def pca_grid(family: str, f: dict) -> dict:
    """A Hook's principal components, each as a row of a sweep grid."""
    return {**base(f),
            "6": hook(f, "2", 64, 8),
            "7": {"class_type": "HSpacePCADirections", "inputs": {"activations": link("6"), "n_components": 4}},
            "8": sweep_grid(f, link("7"), "-2, -1, 0, 1, 2", seed=7),
            "9": save(link("8"), f"{family}_pca_grid")}


def real_image_edit(family: str, f: dict) -> dict:
    """A photo inverted through the VAE and DDIM to its starting noise, then sampled with the smile direction."""
    return {**base(f),
            "6": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
            "7": {"class_type": "ImageScale",
                  "inputs": {"image": link("6"), "upscale_method": "lanczos", "width": f["size"], "height": f["size"],
                             "crop": "center"}},
            "8": {"class_type": "HSpaceInvertImage",
                  "inputs": {"model": link("1"), "vae": vae(f), "images": link("7"), "positive": link("2"),
                             "negative": link("4"), "steps": 50, "cfg": 1.0, "scheduler": "ddim_uniform",
                             "batch_size": 1, "keep_samples": False}},
            "9": smiling(family),
            "10": {"class_type": "HSpaceEditedSampler",
                   "inputs": {"model": link("1"), "positive": link("2"), "negative": link("4"),
                              "latent_image": link("5"), "directions": link("9"), "seed": 0, "steps": 50,
                              "cfg": 1.0, "sampler_name": "ddim", "scheduler": "ddim_uniform", "strengths": "1.0",
                              "sweep": "0, 0.5, 1",
                              "start_percent": 0.0, "end_percent": 1.0, "apply_to": "both", "mode": "both terms",
                              "eta": 0.0, "denoise": 1.0, "noise": link("8")}},
            "11": {"class_type": "VAEDecode", "inputs": {"samples": link("10"), "vae": vae(f)}},
            "12": save(link("11"), f"{family}_real_image_edit")}


def jacobian_mask(family: str, f: dict) -> dict:
    """Directions that move a painted region most: sample seed 7 (preview), paint the region over that image in
    Load Image's mask editor, and the Jacobian directions at a middle step, masked, as grid rows."""
    return {**base(f),
            "6": ksampler(f, link("1"), link("5")),
            "7": {"class_type": "VAEDecode", "inputs": {"samples": link("6"), "vae": vae(f)}},
            "8": {"class_type": "PreviewImage", "inputs": {"images": link("7")}},
            "9": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
            "10": {"class_type": "HSpaceJacobianDirections",
                   "inputs": {"model": link("1"), "positive": link("2"), "negative": link("4"),
                              "latent_image": link("5"), "seed": 7, **SAMPLING, "cfg": f["cfg"], "step": 15,
                              "each_step": False, "n_directions": 3, "batch_size": 3, "tolerance": 0.01,
                              "max_iterations": 30,
                              "scale_by_singular_value": False, "mask": link("9", 1)}},
            "11": sweep_grid(f, link("10"), "-0.5, -0.25, 0, 0.25, 0.5", seed=7),
            "12": save(link("11"), f"{family}_jacobian_mask")}


def beside_plain(f: dict, directions: list, first: int) -> dict:
    """Nodes first … first + 4: Apply H-space Edit with ``directions``, a stock KSampler on the plain and on the
    edited model (same seed), and their decodes, plain first."""
    n = [str(first + i) for i in range(5)]
    return {n[0]: apply_edit(link("1"), directions),
            n[1]: ksampler(f, link("1"), link("5")),
            n[2]: ksampler(f, link(n[0]), link("5")),
            n[3]: {"class_type": "VAEDecode", "inputs": {"samples": link(n[1]), "vae": vae(f)}},
            n[4]: {"class_type": "VAEDecode", "inputs": {"samples": link(n[2]), "vae": vae(f)}}}


def apply_edit_ksampler(family: str, f: dict) -> dict:
    """The smile direction as a model patch in front of a stock KSampler, beside the unedited sample."""
    return {**base(f),
            "6": smiling(family),
            **beside_plain(f, link("6"), 7),
            "12": {"class_type": "ImageBatch", "inputs": {"image1": link("10"), "image2": link("11")}},
            "13": save(link("12"), f"{family}_apply_edit")}


def apply_edit_hires_fix(family: str, f: dict) -> dict:
    """Split sampling with KSamplerAdvanced: the edited base pass, a 1.5× latent upscale, and a second pass from
    step 15 with the direction resized to the larger h."""
    advanced = {"add_noise": "enable", "noise_seed": 7, **SAMPLING, "cfg": f["cfg"], "positive": link("2"),
                "negative": link("4"), "end_at_step": 10000, "return_with_leftover_noise": "disable"}
    return {**base(f),
            "6": smiling(family),
            "7": apply_edit(link("1"), link("6")),
            "8": {"class_type": "KSamplerAdvanced",
                  "inputs": {"model": link("7"), **advanced, "latent_image": link("5"), "start_at_step": 0}},
            "9": {"class_type": "LatentUpscaleBy",
                  "inputs": {"samples": link("8"), "upscale_method": "nearest-exact", "scale_by": 1.5}},
            "10": {"class_type": "HSpaceResizeDirections",
                   "inputs": {"directions": link("6"), "model": link("1"), "latent_image": link("9")}},
            "11": apply_edit(link("1"), link("10")),
            "12": {"class_type": "KSamplerAdvanced",
                   "inputs": {"model": link("11"), **advanced, "latent_image": link("9"), "start_at_step": 15}},
            "13": {"class_type": "VAEDecode", "inputs": {"samples": link("12"), "vae": vae(f)}},
            "14": save(link("13"), f"{family}_apply_edit_hires_fix")}


def transformer_prompt_pair(family: str, f: dict) -> dict:
    """The prompt-pair slider for a transformer: the smile direction from two Hooks, applied by Apply H-space
    Edit in front of a stock KSampler (beside the unedited sample), and a sweep grid."""
    return {**prompt_pair(family, f),
            **beside_plain(f, link("8"), 12),
            "17": {"class_type": "ImageBatch", "inputs": {"image1": link("15"), "image2": link("16")}},
            "18": save(link("17"), f"{family}_apply_edit")}


def text_to_video_edit(family: str, f: dict) -> dict:
    """Wan: the smile direction from two Hooks over four short videos under a prompt pair, applied by Apply
    H-space Edit in front of a stock KSampler; the plain and the edited video side by side."""
    graph = {**base(f),
             **smiling_from_prompts(family, f, 4),
             **beside_plain(f, link("8"), 12),
             "17": {"class_type": "ImageStitch",
                    "inputs": {"image1": link("15"), "direction": "right", "match_image_size": True,
                               "spacing_width": 0, "spacing_color": "white", "image2": link("16")}},
             "18": {"class_type": "SaveAnimatedWEBP",
                    "inputs": {"images": link("17"), "filename_prefix": f"{family}_smiling_edit", "fps": 16.0,
                               "lossless": False, "quality": 85, "method": "default"}}}
    graph["2"]["inputs"]["text"], graph["3"]["inputs"]["text"] = WALKING, WALKING_SMILING
    return graph


def direction_report(family: str, f: dict) -> dict:
    """The Direction Report on the smile direction from the prompt pair, two principal components and a random
    direction of the smile direction's norm, measured in the user's CLIP vision model, with CLIP directional
    similarity against the prompt pair; the calibrated directions saved as <family>_report_calibrated."""
    return {**base(f),
            **smiling_from_prompts(family, f, 32),
            "10": hook(f, "2", 32, 4),
            "11": {"class_type": "HSpacePCADirections", "inputs": {"activations": link("10"), "n_components": 2}},
            "12": {"class_type": "HSpaceRandomDirections",
                   "inputs": {"model": link("1"), "latent_image": link("5"), "count": 1, "seed": 0, "rms": 1.0,
                              "like": link("8")}},
            "13": {"class_type": "HSpaceCombineDirections",
                   "inputs": {"a": link("8"), "b": link("11"), "mode": "stack", "weight_a": 1.0, "weight_b": 1.0}},
            "14": {"class_type": "HSpaceCombineDirections",
                   "inputs": {"a": link("13"), "b": link("12"), "mode": "stack", "weight_a": 1.0, "weight_b": 1.0}},
            "15": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": f["clip_vision"]}},
            "16": {"class_type": "HSpaceDirectionReport",
                   "inputs": {"model": link("1"), "positive": link("2"), "negative": link("4"),
                              "latent_image": link("5"), "vae": vae(f), "directions": link("14"), "seed": 7,
                              **SAMPLING, "cfg": f["cfg"], "samples": 8, "strengths": "-2, -1, 0, 1, 2",
                              "features": "auto", "mode": "both terms", "calibrate_to": 0.0,
                              "clip_vision": link("15"), "clip": clip(f),
                              "text_from": PERSON, "text_to": SMILING}},
            "17": save(link("16"), f"{family}_direction_report"),
            "18": {"class_type": "PreviewAny", "inputs": {"source": link("16", 1)}},
            "19": {"class_type": "HSpaceSaveDirections",
                   "inputs": {"directions": link("16", 2), "filename": f"{family}_report_calibrated",
                              "overwrite": True}}}


# the user's own image pairs for the image-pair slider: the same scene with and without the attribute
PAIRS = [(f"smiling_{i}.png", f"neutral_{i}.png") for i in (1, 2, 3)]


def image_batch(first: str, ids: list[str]) -> dict:
    """Nodes that batch the images of ``ids`` one after another, the last one numbered ``first``."""
    nodes, previous = {}, link(ids[0])
    for k, node in enumerate(ids[1:]):
        name = first if k == len(ids) - 2 else f"{first}{k}"
        nodes[name] = {"class_type": "ImageBatch", "inputs": {"image1": previous, "image2": link(node)}}
        previous = link(name)
    return nodes


def image_pair_slider(family: str, f: dict) -> dict:
    """A slider from three of the user's image pairs (Load Image: smiling_1…3 and neutral_1…3.png): both sets
    inverted to their noise with DDIM, their h's mean difference the direction (Attribute Direction with a
    negative), applied by Apply H-space Edit in front of a stock KSampler and measured by the Direction Report."""
    size = f["size"] if isinstance(f["size"], tuple) else (f["size"], f["size"])
    nodes = {**base(f)}
    for i, (with_it, without) in enumerate(PAIRS):
        nodes[f"{30 + i}"] = {"class_type": "LoadImage", "inputs": {"image": with_it}}
        nodes[f"{33 + i}"] = {"class_type": "LoadImage", "inputs": {"image": without}}
    nodes.update(image_batch("36", ["30", "31", "32"]))
    nodes.update(image_batch("37", ["33", "34", "35"]))
    for images, scaled, inverted in (("36", "38", "40"), ("37", "39", "41")):
        nodes[scaled] = {"class_type": "ImageScale",
                         "inputs": {"image": link(images), "upscale_method": "lanczos", "width": size[0],
                                    "height": size[1], "crop": "center"}}
        nodes[inverted] = {"class_type": "HSpaceInvertImage",
                           "inputs": {"model": link("1"), "vae": vae(f), "images": link(scaled),
                                      "positive": link("2"), "negative": link("4"), "steps": 50, "cfg": 1.0,
                                      "scheduler": "ddim_uniform", "batch_size": 3, "keep_samples": False}}
    return {**nodes,
            "42": {"class_type": "HSpaceAttributeDirection",
                   "inputs": {"activations": link("40", 1), "negative": link("41", 1), "attribute": "smiling",
                              "count": 1, "space": "h", "method": "regression", "start_percent": 0.0}},
            "43": {"class_type": "HSpaceSaveDirections",
                   "inputs": {"directions": link("42"), "filename": f"{family}_smiling_from_pairs",
                              "overwrite": True}},
            **beside_plain(f, link("42"), 44),
            "49": {"class_type": "ImageBatch", "inputs": {"image1": link("47"), "image2": link("48")}},
            "50": save(link("49"), f"{family}_image_pair_slider"),
            "51": {"class_type": "HSpaceDirectionReport",
                   "inputs": {"model": link("1"), "positive": link("2"), "negative": link("4"),
                              "latent_image": link("5"), "vae": vae(f), "directions": link("42"), "seed": 7,
                              **SAMPLING, "cfg": f["cfg"], "samples": 8, "strengths": "-1, 0, 1, 2",
                              "features": "auto", "mode": "both terms", "calibrate_to": 0.0, "text_from": "",
                              "text_to": ""}},
            "52": save(link("51"), f"{family}_image_pair_report"),
            "53": {"class_type": "PreviewAny", "inputs": {"source": link("51", 1)}}}


GRAPHS = {"prompt_pair_slider": prompt_pair, "pca_grid": pca_grid, "real_image_edit": real_image_edit,
          "jacobian_mask": jacobian_mask, "apply_edit_ksampler": apply_edit_ksampler,
          "apply_edit_hires_fix": apply_edit_hires_fix, "direction_report": direction_report,
          "image_pair_slider": image_pair_slider}


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for family, f in FAMILIES.items():
        graphs = ({"text_to_video_edit": text_to_video_edit} if "length" in f else
                  {"prompt_pair_slider": transformer_prompt_pair} if f.get("transformer") else GRAPHS)
        if f.get("transformer") and "clip_vision" in f:
            graphs = {**graphs, "direction_report": direction_report}
        if f.get("transformer") and "length" not in f and family != "sd35":  # the families issue 31 names
            graphs = {**graphs, "image_pair_slider": image_pair_slider}
        for name, graph in graphs.items():
            path = FOLDER / f"{family}_{name}.api.json"
            path.write_text(json.dumps(graph(family, f), indent=1) + "\n")
            print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
