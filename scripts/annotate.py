"""The HSpace Hook's statistics over many samples, on one machine or many (issue 32): the samples are cut
into shards of --shard-size seeds; each process of a torchrun job (torch.distributed: gloo on CPUs, NCCL on
GPUs) records its shards with the Hook's own code and writes each as an activations file; process 0 then
merges all shards in shard order (``activation_files.merge_activations``) into one file for Load
Activations. Shards already on disk are not sampled again, so a crashed or cancelled run resumes, and any
number of processes gives the same file. Without torchrun it runs as one process.

  .venv/bin/python scripts/annotate.py --model embedded --samples 256 --out runs/faces.safetensors
  .venv/bin/torchrun --standalone --nproc-per-node 2 scripts/annotate.py --model embedded --samples 256 ...
  torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:PORT scripts/annotate.py \\
      --model sd_xl_base_1.0.safetensors --prompt "a photo portrait of a person" --gpu ...

--model is a checkpoint (with its text encoders: --prompt), a diffusion-model file (sampled with Null
Conditioning's conditioning), or `embedded` / `embedded-dit`, the pack's faces models.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import time
from pathlib import Path

import torch

import comfy_env


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a checkpoint or diffusion-model file, or embedded / embedded-dit")
    p.add_argument("--samples", type=int, required=True, help="samples in all (seeds seed … seed + samples − 1)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--components", type=int, default=8, help="principal components kept per timestep (0: none)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--scheduler", default="ddim_uniform")
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--prompt", default="", help="the positive prompt, for checkpoints with text encoders")
    p.add_argument("--negative", default="")
    p.add_argument("--labels", default="null", help="embedded models: Face Labels' labels")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("WIDTH", "HEIGHT"),
                   help="image size (default: 32 × 32 for the embedded models, 1024 × 1024 else)")
    p.add_argument("--keep-samples", action="store_true", help="also every sample's h trajectory and noise")
    p.add_argument("--shard-size", type=int, default=16, help="samples a shard (the unit of resuming)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, required=True, help="the merged activations file; shards beside it")
    p.add_argument("--gpu", action="store_true", help="use the GPU (one per process under torchrun)")
    a = p.parse_args()
    if a.components > a.shard_size:
        p.error(f"--components {a.components} is more than the --shard-size {a.shard_size} samples a shard fits")
    return a


def model_and_conditioning(a: argparse.Namespace) -> tuple:
    """(MODEL, positive, negative, an empty LATENT of one sample) for --model, loaded as ComfyUI loads it."""
    import comfy.sd

    from comfy_hspace.host import embedded
    from comfy_hspace.host.architectures import null_conditioning
    from comfy_hspace.host.model_info import image_scale

    if a.model in ("embedded", "embedded-dit"):
        model, _ = embedded.load_model(embedded.DIT_FILE if a.model == "embedded-dit" else embedded.DDPM_FOLDER)
        positive = negative = embedded.conditioning(a.labels)
        width, height = a.size or (32, 32)
    else:
        try:
            model, clip = comfy.sd.load_checkpoint_guess_config(a.model, output_vae=False, output_clip=True)[:2]
        except RuntimeError:  # not a checkpoint: a diffusion model alone
            model, clip = comfy.sd.load_diffusion_model(a.model), None
        if clip is not None:
            positive = clip.encode_from_tokens_scheduled(clip.tokenize(a.prompt))
            negative = clip.encode_from_tokens_scheduled(clip.tokenize(a.negative))
        else:
            positive = negative = null_conditioning(model.get_model_object("diffusion_model"))
        width, height = a.size or (1024, 1024)
    scale = image_scale(model)
    channels = model.model.latent_format.latent_channels
    return model, positive, negative, {"samples": torch.zeros(1, channels, height // scale, width // scale)}


def shard_path(out: Path, shard: int) -> Path:
    return out.with_name(out.stem + ".shards") / f"shard-{shard:05d}.safetensors"


def main() -> None:
    a = arguments()
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if a.gpu and world_size > 1:  # each process sees only its own GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = os.environ.get("LOCAL_RANK", "0")
    comfy_env.setup(cpu=not a.gpu)
    import comfy.utils
    import torch.distributed as dist

    from comfy_hspace.activation_files import load_activations, merge_activations, save_activations
    from comfy_hspace.host.recording import record_activations
    from comfy_hspace.settings import SamplerSettings

    if world_size > 1:  # torchrun's rendezvous: its own free port, or the one given to --rdzv-endpoint
        dist.init_process_group("nccl" if a.gpu else "gloo")
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, positive, negative, latent = model_and_conditioning(a)
    shards = math.ceil(a.samples / a.shard_size)
    started, sampled = time.monotonic(), 0
    for shard in range(rank, shards, world_size):
        path = shard_path(a.out, shard)
        if path.exists():  # written whole by an earlier run: not sampled again
            continue
        first, count = shard * a.shard_size, min(a.shard_size, a.samples - shard * a.shard_size)
        sampling = SamplerSettings(a.seed + first, a.steps, a.cfg, a.sampler, a.scheduler)
        activations, _ = record_activations(model, positive, negative, latent, sampling, n_samples=count,
                                            batch_size=min(a.batch_size, count), components=a.components,
                                            keep_samples=a.keep_samples)
        save_activations(activations, path)
        sampled += count
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"process {rank} of {world_size}: {sampled} samples in {seconds:.1f} s "
          f"({sampled / max(seconds, 1e-9):.2f} samples/s), peak memory {peak:.0f} MiB", flush=True)
    if world_size > 1:
        dist.barrier()  # every shard is on disk
    if rank == 0:
        recordings = [load_activations(shard_path(a.out, s)) for s in range(shards)]
        merged = merge_activations(recordings)
        merged.parameters = {**merged.parameters, "seed": a.seed, "n_samples": a.samples, "shards": shards,
                             "shard_size": a.shard_size}
        save_activations(merged, a.out)
        print(f"wrote {a.out}: {a.samples} samples in {shards} shards", flush=True)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
