"""Trains the embedded attribute classifier on freshly rendered faces and reports held-out
accuracy (binary factors) and R² (continuous factors). Noise is added to the training images
so that the classifier also reads the slightly grainy samples of the tiny DDPM.
Usage: .venv/bin/python scripts/train_classifier.py [--images 30000] [--epochs 4] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import faces  # noqa: E402


@torch.no_grad()
def evaluate(model: C.FaceClassifier, images: torch.Tensor, factors: dict) -> dict[str, float]:
    out = torch.cat([model(images[i:i + 512]) for i in range(0, len(images), 512)])
    scores = C.scores_from_outputs(out)
    metrics = {}
    for j, k in enumerate(faces.BINARY):
        truth = torch.as_tensor(factors[k])
        metrics[f"{k}_accuracy"] = ((scores[:, j] > 0.5) == truth).float().mean().item()
    for j, k in enumerate(faces.CONTINUOUS, start=len(faces.BINARY)):
        truth = torch.as_tensor(factors[k], dtype=torch.float32)
        metrics[f"{k}_r2"] = (1 - ((scores[:, j] - truth) ** 2).mean() / truth.var()).item()
    return {k: round(v, 4) for k, v in metrics.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=30000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-noise", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=C.EMBEDDED)
    a = p.parse_args()
    from safetensors.torch import save_file

    torch.manual_seed(a.seed)
    t0 = time.monotonic()
    train_x, train_f = faces.dataset(a.images, seed=a.seed)
    test_x, test_f = faces.dataset(max(a.images // 10, 200), seed=a.seed + 1000)
    train_x, test_x = torch.from_numpy(train_x), torch.from_numpy(test_x)
    targets = C.targets_from_factors(train_f)
    print(f"rendered {a.images} + {len(test_x)} images in {time.monotonic() - t0:.0f} s", flush=True)

    model = C.FaceClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    total = a.epochs * (len(train_x) // a.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=total)
    step = 0
    for epoch in range(a.epochs):
        perm = torch.randperm(len(train_x))
        for i in range(0, len(perm) - a.batch + 1, a.batch):
            idx = perm[i:i + a.batch]
            x = train_x[idx]
            x = x + torch.randn_like(x) * torch.rand(len(x), 1, 1, 1) * a.max_noise
            loss_value = C.loss(model(x), targets[idx])
            opt.zero_grad()
            loss_value.backward()
            opt.step()
            sched.step()
            step += 1
        model.eval()
        print(f"epoch {epoch + 1}: loss {loss_value.item():.4f} held-out {evaluate(model, test_x, test_f)}", flush=True)
        model.train()
    model.eval()
    metrics = evaluate(model, test_x, test_f)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".partial")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
              metadata={"width": "32", "names": json.dumps(list(C.NAMES)), "metrics": json.dumps(metrics)})
    os.replace(tmp, a.out)
    print(json.dumps(metrics), flush=True)
    print(f"saved {a.out} in {(time.monotonic() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
