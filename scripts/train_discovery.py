"""Discovery Trainer from the command line, for long runs outside ComfyUI: the same code as the
node (comfy_hspace.host.discovery.train_discovery), single process, or data-parallel over several
processes / GPUs with torchrun (torch.distributed; gloo on the CPU, nccl on GPUs). The batch is
split over the processes and every process draws the same full batch, so N processes train the
parameters one process would with the whole batch.

  .venv/bin/python scripts/train_discovery.py --state runs/faces.safetensors --training-steps 300
  .venv/bin/torchrun --nproc_per_node 2 scripts/train_discovery.py --state runs/faces.safetensors
  .venv/bin/torchrun --nproc_per_node 4 scripts/train_discovery.py --gpu --model my_ddpm_folder ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None,
                   help="a diffusers pixel DDPM folder (default: the embedded faces model) or an SD checkpoint file")
    p.add_argument("--prompt", default="", help="SD checkpoints: the prompt the chain samples with")
    p.add_argument("--label", default="null",
                   help="the embedded model: face labels, e.g. 'smile, glasses' (default: none)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("WIDTH", "HEIGHT"),
                   help="image size (default: the pixel model's sample size; 512 512 for SD)")
    p.add_argument("--count", type=int, default=16, help="K directions")
    p.add_argument("--magnitude", type=float, default=2.0, help="S: ε uniform in [−S, S]")
    p.add_argument("--steps", type=int, default=10, help="M, DDIM steps of the chain")
    p.add_argument("--t-edit", type=float, default=400.0, help="end of the shifting interval (model timestep)")
    p.add_argument("--batch-size", type=int, default=16, help="the whole batch, over all processes")
    p.add_argument("--training-steps", type=int, default=300,
                   help="the run's total steps: a resumed or --start-from state trains on up to it")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--regression-weight", type=float, default=0.1)
    p.add_argument("--adversarial-weight", type=float, default=0.1)
    p.add_argument("--shift-limit", type=float, default=0.0,
                   help="soft cap on the unit shift's RMS ÷ h's RMS (0: none, as the paper)")
    p.add_argument("--vanilla", action="store_true", help="plain backprop through the chain (no checkpointing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--state", type=Path, required=True, help="training state (.safetensors), resumed if it exists")
    p.add_argument("--fresh", action="store_true", help="start over even if --state exists")
    p.add_argument("--start-from", type=Path, default=None, help="a saved state to begin from when --state has none")
    p.add_argument("--save-every", type=int, default=25)
    p.add_argument("--direction-samples", type=int, default=16)
    p.add_argument("--directions", type=Path, default=None, help="write the per-timestep directions here")
    p.add_argument("--log", type=Path, default=None, help="append each step's losses here (JSON lines)")
    p.add_argument("--gpu", action="store_true", help="use the GPU (one per process under torchrun)")
    p.add_argument("--export", type=Path, default=None,
                   help="only write the networks of --state, without optimiser moments, here (to ship) and stop")
    return p.parse_args()


def model_and_conditioning(a: argparse.Namespace):
    """(MODEL, positive, negative, latent shape [1, C, H, W]) of --model (default: the embedded model)."""
    import comfy.sd

    from comfy_hspace.host import embedded

    if a.model is None or a.model.is_dir():
        model, _ = embedded.load_model(a.model or embedded.DDPM_FOLDER)
        # the embedded model's label; another pixel DDPM folder's class embedding (if any) its default
        positive = negative = embedded.conditioning(a.label) if a.model is None else [[torch.zeros(1, 1, 1), {}]]
        size = a.size or [model.get_model_object("diffusion_model").unet.config.sample_size] * 2
        return model, positive, negative, (1, 3, size[1], size[0])
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(a.model), output_vae=False, output_clip=True)[:4]
    positive = clip.encode_from_tokens_scheduled(clip.tokenize(a.prompt))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    size = a.size or [512, 512]
    return model, positive, negative, (1, 4, size[1] // 8, size[0] // 8)


def main() -> None:
    a = arguments()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if a.gpu and world_size > 1:  # each process sees only its own GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = os.environ.get("LOCAL_RANK", "0")
    comfy_env.setup(cpu=not a.gpu)
    if a.export:
        from comfy_hspace.discovery import save_networks

        save_networks(a.export, a.state)
        return
    import comfy.utils

    from comfy_hspace import directions
    from comfy_hspace.discovery import DiscoverySettings
    from comfy_hspace.host.discovery import train_discovery

    rank = 0
    if world_size > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if a.gpu else "gloo")
        rank = dist.get_rank()
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, positive, negative, latent_shape = model_and_conditioning(a)

    settings = DiscoverySettings(count=a.count, magnitude=a.magnitude, t_edit=a.t_edit, batch_size=a.batch_size,
                                 learning_rate=a.learning_rate, regression_weight=a.regression_weight,
                                 adversarial_weight=a.adversarial_weight, shift_limit=a.shift_limit,
                                 checkpointed=not a.vanilla)
    started = time.monotonic()

    def progress(step, total, losses):
        if rank == 0:
            line = {"step": step, "seconds": round(time.monotonic() - started, 1), **losses}
            print(json.dumps(line), flush=True)
            if a.log:
                with a.log.open("a") as f:
                    f.write(json.dumps(line) + "\n")

    per_step, _, history = train_discovery(model, positive, negative, latent_shape, settings, steps=a.steps,
                                           training_steps=a.training_steps, seed=a.seed, cfg=a.cfg,
                                           state_path=a.state, start_from=a.start_from, resume=not a.fresh,
                                           save_every=a.save_every, direction_samples=a.direction_samples,
                                           progress=progress, rank=rank, world_size=world_size)
    if not history and rank == 0:  # a state already at the total would otherwise exit without a word
        print(f"nothing trained: --training-steps {a.training_steps} is the run's total, and the state is already "
              "there; give a larger total to train on", file=sys.stderr)
    if a.directions and rank == 0:
        directions.save_directions(per_step, a.directions)
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
