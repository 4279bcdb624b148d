"""Measures a Discovery Trainer state on the embedded model (issue 6, paper 001 §5.5–5.6) and
prints Markdown tables:

- Reconstructor Classification Accuracy (RCA) on fresh pairs (random k, ε uniform in [−S, S]);
- which learnt direction moves which known factor (classifier score change from ε = −S to +S,
  ÷ the factor's scale), and how many directions align with one factor;
- fidelity of shifted samples, with the classifier instead of FID: the share of samples that
  are faces with valid, readable factors (the face drawn from the classifier's reading of the
  sample comes back within the PSNR that 95% of other unshifted samples reach), unshifted vs shifted;
- the discriminator's output through training, from the training log.

Usage: .venv/bin/python scripts/measure_discovery.py --state runs/faces.safetensors [--log log.jsonl]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

comfy_env.setup()
import comfy.utils  # noqa: E402

from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import discovery as dv  # noqa: E402
from comfy_hspace import faces  # noqa: E402
from comfy_hspace.host.discovery import discovery_schedule, new_discovery_trainer, with_denoiser  # noqa: E402
from comfy_hspace.host.latents import noise_scale  # noqa: E402
from comfy_hspace.host.pixel_ddpm import CLASS_KEY, load_pixel_ddpm  # noqa: E402

EMBEDDED_DDPM = C.EMBEDDED.parent / "faces-ddpm"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--log", type=Path, default=None, help="the training log (JSON lines) for the discriminator table")
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--factor-samples", type=int, default=64, help="samples per direction for the factor table")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--picture", type=Path, default=None,
                   help="write a PNG: one row per direction, ε from −S to +S in five columns, one sample")
    a = p.parse_args()
    comfy.utils.PROGRESS_BAR_ENABLED = False
    clf, _ = C.load_classifier()
    model, vae = load_pixel_ddpm(EMBEDDED_DDPM)
    tensors, meta = dv.load_state(a.state)
    settings = dv.DiscoverySettings(**meta["settings"])
    latent_shape = (settings.batch_size, *meta["latent_shape"])
    trainer = new_discovery_trainer(model, latent_shape, settings, 0)
    dv.load_state_tensors(trainer, tensors)
    sigmas, timesteps = discovery_schedule(model, meta["steps"])
    shifted = dv.shifted_step_count(timesteps, settings.t_edit)
    scale = noise_scale(model, float(sigmas[0]))
    null = [[torch.zeros(1, 1, 1), {CLASS_KEY: faces.NULL_CLASS}]]
    K, S = settings.count, settings.magnitude

    def images(x0):
        return vae.decode(model.model.process_latent_out(x0.cpu())).clamp(0, 1)

    def run(denoise, device):
        for m in trainer.modules().values():
            m.to(device).eval()
        g = torch.Generator().manual_seed(2 ** 31 - 1)  # not a training seed
        correct, plain_imgs, shifted_imgs, chunk = 0, [], [], 50
        with torch.no_grad():
            for start in range(0, a.pairs, chunk):
                batch = dv.draw_batch(g, (min(chunk, a.pairs - start), *latent_shape[1:]), K, S, scale)
                shift = dv.shift_fn(trainer.shift, batch.index.to(device), batch.magnitude.to(device))
                x0, _ = dv.run_chain(denoise, batch.noise.to(device), sigmas.to(device), 0)
                xs, _ = dv.run_chain(denoise, batch.noise.to(device), sigmas.to(device), shifted, shift)
                logits, _ = trainer.reconstructor(x0, xs)
                correct += int((logits.argmax(1).cpu() == batch.index).sum())
                plain_imgs.append(images(x0))
                shifted_imgs.append(images(xs))
            # factor table: each direction at ε = −S and +S on the same noises
            n = a.factor_samples
            noise = (torch.randn((n, *latent_shape[1:]), generator=g) * scale).to(device)
            changes = []
            for k in range(K):
                ends = []
                for eps in (-S, S):
                    shift = dv.shift_fn(trainer.shift, torch.full((n,), k, device=device), torch.full((n,), eps))
                    xs, _ = dv.run_chain(denoise, noise, sigmas.to(device), shifted, shift)
                    ends.append(C.score_images(clf, images(xs)) / C.SCALES)
                changes.append((ends[1] - ends[0]).mean(0))
            rows = []
            for k in range(K):
                eps = torch.linspace(-S, S, 5)
                shift = dv.shift_fn(trainer.shift, torch.full((5,), k, device=device), eps)
                xs, _ = dv.run_chain(denoise, noise[:1].expand(5, -1, -1, -1), sigmas.to(device), shifted, shift)
                rows.append(images(xs))
        return correct / a.pairs, torch.cat(plain_imgs), torch.cat(shifted_imgs), torch.stack(changes), rows

    rca, plain, moved, changes, rows = with_denoiser(model, null, null, (1, *latent_shape[1:]), meta["cfg"], run)
    report = {"state": str(a.state), "settings": meta["settings"], "steps": meta["steps"], "trained_steps": meta["step"],
              "rca": rca, "pairs": a.pairs}
    print(f"Reconstructor Classification Accuracy on {a.pairs} fresh pairs (K = {K}, chance {1 / K:.3f}): "
          f"**{rca:.3f}** (paper: 0.77 MNIST … 0.93 CelebA-HQ)")

    print(f"\nWhich direction moves which factor (score change from ε = −{S:g} to +{S:g}, ÷ factor scale, "
          f"{a.factor_samples} samples):\n")
    print("| direction | " + " | ".join(C.NAMES) + " | aligned with |\n| --- |" + " --- |" * (len(C.NAMES) + 1))
    aligned = []
    for k in range(K):
        mag = changes[k].abs()
        top2 = mag.topk(2)
        one = bool(top2.values[0] >= 0.1 and top2.values[0] >= 2 * top2.values[1])
        aligned.append(C.NAMES[int(top2.indices[0])] if one else None)
        print(f"| {k} | " + " | ".join(f"{v:+.2f}" for v in changes[k].tolist()) + f" | {aligned[-1] or '—'} |")
    n_aligned = sum(x is not None for x in aligned)
    print(f"\n{n_aligned} of {K} directions align with one factor (largest change ≥ 0.1 and ≥ 2× the next); "
          f"factors covered: {sorted(set(x for x in aligned if x))}")
    report["changes"], report["aligned"] = changes.tolist(), aligned

    # validity threshold from half of the unshifted samples; rates on the other half and on the shifted ones
    half = len(plain) // 2
    tau = float(C.rerender_psnr(clf, plain[:half].cpu()).quantile(0.05))
    rates = {}
    for label, imgs in (("unshifted (held out)", plain[half:]), ("shifted", moved)):
        psnr = C.rerender_psnr(clf, imgs.cpu())
        rates[label] = {"valid": float((psnr >= tau).float().mean()), "median_psnr": float(psnr.median())}
    print(f"\nFidelity: share of valid faces — the face drawn from the classifier's reading of a sample comes back "
          f"within {tau:.1f} dB, the PSNR 95% of {half} other unshifted samples reach:\n\n"
          "| samples | valid faces | median PSNR |\n| --- | --- | --- |")
    for label, r in rates.items():
        print(f"| {label} | {100 * r['valid']:.1f}% | {r['median_psnr']:.1f} dB |")
    report["fidelity"], report["tau"] = rates, tau

    if a.log and a.log.exists():
        log = {}
        for line in a.log.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                log[entry["step"]] = entry  # a resumed run repeats the steps after its last save
        logged = [log[k] for k in sorted(log)]
        window = max(1, len(logged) // 8)
        print("\nDiscriminator through training (mean sigmoid output; ideal 0.5 for both):\n\n"
              "| steps | D(unshifted) | D(shifted) | reconstructor accuracy (batch) |\n| --- | --- | --- | --- |")
        report["discriminator"] = []
        for i in range(0, len(logged), window):
            part = logged[i:i + window]
            mean = {k: sum(r[k] for r in part) / len(part) for k in ("d_real", "d_fake", "accuracy")}
            report["discriminator"].append({"from": part[0]["step"], "to": part[-1]["step"], **mean})
            print(f"| {part[0]['step']}–{part[-1]['step']} | {mean['d_real']:.3f} | {mean['d_fake']:.3f} | "
                  f"{mean['accuracy']:.3f} |")
    if a.picture:
        from PIL import Image

        grid = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0)  # [K·H, 5·W, 3]
        picture = Image.fromarray((grid.numpy() * 255).round().astype("uint8"))
        picture.resize((picture.width * 4, picture.height * 4), Image.NEAREST).save(a.picture)
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
