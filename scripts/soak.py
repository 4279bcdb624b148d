"""Soak test (not in CI): a real ComfyUI server with the pack, 200 mixed prompts on the embedded model.

Kinds, in a seeded random order: stock KSampler (same seed every time), Apply H-space Edit + KSampler,
Edited Sampler sweeps, HSpace Hook + PCA + Edited Sampler, Jacobian Directions + Edited Sampler, and
sweeps, Discovery trainings and AVI trainings cancelled while they run (POST /interrupt). Checks:
- every stock output that was sampled anew (not taken from ComfyUI's cache, as right after another
  stock prompt) is bit-equal to the first one: edits leave the model as it was;
- every prompt that is not cancelled succeeds, and every cancelled one reports the interrupt;
- a cancelled AVI training writes no file;
- the server's resident memory after the warm-up (first 25 prompts) stays within 10% of its value then.
Prints one line per prompt and a summary; exits 1 when a check fails.
Usage: .venv/bin/python scripts/soak.py [--prompts 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
import uuid

import psutil
import requests
import torch
from comfy_server import REPO, ComfyServer
from safetensors.torch import load_file

WARM_UP = 25
KINDS = {"stock": 40, "edit": 40, "sweep": 30, "hook_pca": 30, "jacobian": 20, "cancel_sweep": 20,
         "cancel_discovery": 10, "cancel_avi": 10}
SAMPLING = {"seed": 7, "steps": 20, "cfg": 1.0, "sampler_name": "ddim", "scheduler": "ddim_uniform"}


def base(batch: int = 1) -> dict:
    return {"1": {"class_type": "HSpaceEmbeddedFacesModel", "inputs": {"architecture": "unet"}},
            "2": {"class_type": "HSpaceFaceLabels", "inputs": {"labels": "null"}},
            "3": {"class_type": "EmptyChromaRadianceLatentImage", "inputs": {"width": 32, "height": 32,
                                                                             "batch_size": batch}}}


def save(node: str, prefix: str) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": [node, 0], "filename_prefix": f"soak/{prefix}"}}


def edited_sampler(directions: list, sweep: str = "", steps: int = 20) -> dict:
    return {"class_type": "HSpaceEditedSampler",
            "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0],
                       "directions": directions, **SAMPLING, "steps": steps, "strengths": "1.0", "sweep": sweep,
                       "start_percent": 0.0, "end_percent": 1.0, "apply_to": "both", "mode": "both terms",
                       "eta": 0.0, "denoise": 1.0}}


def random_directions(seed: int) -> dict:
    return {"class_type": "HSpaceRandomDirections",
            "inputs": {"model": ["1", 0], "latent_image": ["3", 0], "count": 1, "seed": seed, "rms": 1.0}}


def prompt_for(kind: str, i: int) -> dict:
    p = base()
    if kind == "stock":
        p["4"] = {"class_type": "KSampler", "inputs": {"model": ["1", 0], **SAMPLING, "positive": ["2", 0],
                                                       "negative": ["2", 0], "latent_image": ["3", 0], "denoise": 1.0}}
        p["5"] = save("4", "stock")
    elif kind == "edit":
        p["4"] = random_directions(i)
        p["5"] = {"class_type": "HSpaceApplyEdit", "inputs": {"model": ["1", 0], "directions": ["4", 0],
                                                              "strengths": "1.5", "start_percent": 0.0,
                                                              "end_percent": 1.0, "apply_to": "both"}}
        p["6"] = {"class_type": "KSampler", "inputs": {"model": ["5", 0], **SAMPLING, "positive": ["2", 0],
                                                       "negative": ["2", 0], "latent_image": ["3", 0], "denoise": 1.0}}
        p["7"] = save("6", "edit")
    elif kind in ("sweep", "cancel_sweep"):
        p["4"] = random_directions(i)
        p["5"] = edited_sampler(["4", 0], "-1, 0, 1" if kind == "sweep" else "-2, -1, 0, 1, 2, 3, 4, 5",
                                steps=20 if kind == "sweep" else 200)
        p["6"] = save("5", kind)
    elif kind == "hook_pca":
        p["4"] = {"class_type": "HSpaceHook",
                  "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0],
                             "n_samples": 16, "batch_size": 16, "components": 4, **SAMPLING, "seed": i,
                             "steps": 10, "latent_is_noise": False, "keep_samples": False}}
        p["5"] = {"class_type": "HSpacePCADirections", "inputs": {"activations": ["4", 0], "n_components": 2}}
        p["6"] = edited_sampler(["5", 0])
        p["7"] = save("6", "hook_pca")
    elif kind == "jacobian":
        p["4"] = {"class_type": "HSpaceJacobianDirections",
                  "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0],
                             **SAMPLING, "seed": i, "steps": 10, "step": 5, "each_step": False, "n_directions": 1,
                             "batch_size": 1, "tolerance": 0.01, "max_iterations": 3,
                             "scale_by_singular_value": False}}
        p["5"] = edited_sampler(["4", 0])
        p["6"] = save("5", "jacobian")
    elif kind == "cancel_discovery":
        p["4"] = {"class_type": "HSpaceDiscoveryTrainer",
                  "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0],
                             "count": 4, "magnitude": 2.0, "steps": 5, "t_edit": 400.0, "batch_size": 8,
                             "training_steps": 1000, "learning_rate": 0.001, "seed": i, "cfg": 1.0,
                             "name": f"soak_{i}", "resume": False, "save_every": 1000, "regression_weight": 0.1,
                             "adversarial_weight": 0.1, "direction_samples": 4, "checkpointed": True}}
        p["5"] = edited_sampler(["4", 0])
        p["6"] = save("5", kind)
    elif kind == "cancel_avi":
        p["3"]["inputs"]["batch_size"] = 64
        for node, labels, end in (("4", "2", 4), ("5", "6", 10)):
            p[node] = {"class_type": "KSamplerAdvanced",
                       "inputs": {"model": ["1", 0], "add_noise": "enable", "noise_seed": i, "steps": 20, "cfg": 1.0,
                                  "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": [labels, 0],
                                  "negative": ["2", 0], "latent_image": ["3", 0], "start_at_step": 0,
                                  "end_at_step": end, "return_with_leftover_noise": "enable"}}
        p["6"] = {"class_type": "HSpaceFaceLabels", "inputs": {"labels": "smile"}}
        p["7"] = {"class_type": "HSpaceAVITrainer",
                  "inputs": {"x": ["4", 0], "z": ["5", 0], "k": 0, "epochs": 10000, "batch_size": 64,
                             "learning_rate": 0.001, "target_weight": 3.0, "original_weight": 10.0,
                             "values_weight": 10.0, "correction_weight": 10.0, "hidden": 0, "seed": i,
                             "name": f"soak_avi_{i}"}}
        p["8"] = {"class_type": "HSpaceAVILatentMerge", "inputs": {"x": ["4", 0], "z": ["5", 0], "k": 0, "rho": "1",
                                                                   "phi": ["7", 0]}}
        p["9"] = save("8", kind)
    return p


def queue(server: ComfyServer, prompt: dict) -> str:
    r = requests.post(server.url + "/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex}, timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"/prompt refused the prompt ({r.status_code}): {r.text[:2000]}")
    return r.json()["prompt_id"]


def wait(server: ComfyServer, prompt_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = requests.get(f"{server.url}/history/{prompt_id}", timeout=30).json()
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            return history[prompt_id]
        time.sleep(0.05)
    raise TimeoutError(prompt_id)


def cached_nodes(entry: dict) -> list[str]:
    return [n for m in entry["status"].get("messages", []) if m[0] == "execution_cached" for n in m[1]["nodes"]]


def saved_latent(server: ComfyServer, entry: dict) -> torch.Tensor:
    [files] = [o["latents"] for o in entry["outputs"].values() if "latents" in o]
    return load_file(str(server.base / "output" / files[0]["subfolder"] / files[0]["filename"]))["latent_tensor"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    kinds = [k for k, n in KINDS.items() for _ in range(n)]
    random.Random(a.seed).shuffle(kinds)
    kinds = ["stock"] + kinds[:a.prompts - 1]  # the first prompt gives the stock baseline
    base_dir = REPO / "out" / "soak"
    shutil.rmtree(base_dir, ignore_errors=True)
    avi_files = base_dir / "models" / "hspace_avi"
    failures, rss, stock, start = [], [], None, time.monotonic()
    sampled = cached = 0
    with ComfyServer(base_dir) as server:
        process = psutil.Process(server.process.pid)
        for i, kind in enumerate(kinds):
            t = time.monotonic()
            prompt_id = queue(server, prompt_for(kind, i))
            if kind.startswith("cancel"):  # the AVI graph samples its pairs first: cancel during training
                time.sleep(5.0 if kind == "cancel_avi" else 1.5)
                requests.post(server.url + "/interrupt", timeout=30)
            entry = wait(server, prompt_id)
            status = entry["status"]
            events = [m[0] for m in status.get("messages", [])]
            problem = None
            if kind.startswith("cancel"):
                if "execution_interrupted" not in events:
                    problem = f"not interrupted: {events}"
                elif kind == "cancel_avi" and (avi_files / f"soak_avi_{i}.safetensors").exists():
                    problem = "the cancelled training wrote its file"
            elif status.get("status_str") != "success":
                problem = json.dumps(status.get("messages", []))[-600:]
            elif kind == "stock" and "4" in cached_nodes(entry):
                cached += 1  # right after another stock prompt ComfyUI reuses its output: nothing to compare
            elif kind == "stock":
                sampled += 1
                latent = saved_latent(server, entry)
                stock = latent if stock is None else stock
                if not torch.equal(latent, stock):
                    problem = f"differs from the first stock run by {(latent - stock).abs().max().item():.3g}"
            if problem:
                failures.append(f"{i} {kind}: {problem}")
            rss.append(process.memory_info().rss / 2 ** 20)
            print(f"{i:3d} {kind:16s} {'FAILED' if problem else 'ok':6s} {time.monotonic() - t:6.1f} s  "
                  f"server RSS {rss[-1]:.0f} MiB", flush=True)
    settled = rss[min(WARM_UP, len(rss)) - 1]
    after = rss[WARM_UP:] or [settled]
    growth = max(after) / settled
    if growth > 1.10:
        failures.append(f"server RSS grew to {max(after):.0f} MiB after warm-up, {growth:.3f}× its {settled:.0f} MiB")
    counts = {k: kinds.count(k) for k in KINDS}
    print(json.dumps({"prompts": len(kinds), "kinds": counts, "minutes": round((time.monotonic() - start) / 60, 1),
                      "stock_sampled": sampled, "stock_from_cache": cached, "rss_after_warm_up_mb": round(settled),
                      "rss_max_after_mb": round(max(after)),
                      "rss_final_mb": round(rss[-1]), "growth": round(growth, 3), "failures": failures}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
