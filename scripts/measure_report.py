"""The Direction Report's table on the embedded UNet (issue 31) for PCA, random (of the PCs' norms), attribute
(regression on the classifier's scores), Jacobian and the shipped Discovery directions, measured in the face
classifier's scores; and the report's cost against plain sampling of as many images in the same run.

  .venv/bin/python scripts/measure_report.py [--samples 16] [--json runs/report.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from measure_common import write_report  # first: ComfyUI on the path
import comfy.sample  # noqa: E402
import torch  # noqa: E402

from comfy_hspace import classifier as C  # noqa: E402
from comfy_hspace import directions as D  # noqa: E402
from comfy_hspace import discovery as dv  # noqa: E402
from comfy_hspace.attribute import attribute_direction  # noqa: E402
from comfy_hspace.host import embedded  # noqa: E402
from comfy_hspace.host.discovery import train_discovery  # noqa: E402
from comfy_hspace.host.recording import record_activations  # noqa: E402
from comfy_hspace.host.report import direction_report, face_classifier_features  # noqa: E402
from comfy_hspace.host.trajectory import jacobian_directions  # noqa: E402
from comfy_hspace.pca import pca_directions  # noqa: E402
from comfy_hspace.report import report_text  # noqa: E402
from comfy_hspace.settings import MODES, EditSettings, SamplerSettings  # noqa: E402

STRENGTHS = [-2.0, -1.0, 0.0, 1.0, 2.0]
ATTRIBUTES = ("smile", "glasses", "blond", "eyes_open")


def direction_sets(model, vae, null, latent) -> dict[str, tuple[D.Directions, str]]:
    """Each set of directions with the edit mode it is meant for."""
    ddim = SamplerSettings(0, 20, 1.0, "ddim", "ddim_uniform")
    acts, _ = record_activations(model, null, null, latent, ddim, n_samples=256, batch_size=64, components=4)
    pcs = pca_directions(acts, 4)
    kept, samples = record_activations(model, null, null, latent, SamplerSettings(1, 20, 1.0, "ddpm", "ddim_uniform"),
                                       n_samples=256, batch_size=64, components=0, keep_samples=True)
    scores = embedded.score(vae.decode(samples))
    found = [attribute_direction(kept, scores=scores, count=64, name=k, column=C.NAMES.index(k)) for k in ATTRIBUTES]
    attributes = D.Directions(torch.cat([d.vectors for d in found]), found[0].timesteps, list(ATTRIBUTES),
                              method="attribute", model_fingerprint=found[0].model_fingerprint)
    jacobian = jacobian_directions(model, null, null, {"samples": latent["samples"][:1]}, ddim, step=10,
                                   each_step=False, n_directions=4, batch_size=4)
    state = embedded.DISCOVERY_FOLDER / "faces-discovery.safetensors"
    settings = dv.DiscoverySettings(count=8, magnitude=2.0, t_edit=400.0, batch_size=16,
                                    shift_limit=dv.load_state(state)[1]["shift_limit"])  # as it was trained
    _, discovery, _ = train_discovery(model, null, null, (1, 3, 32, 32), settings, steps=5, training_steps=0,
                                      seed=0, cfg=1.0, start_from=state)
    return {"PCA": (pcs, MODES[0]), "random (PCs' norms)": (D.random_like(pcs, 0), MODES[0]),
            "attribute (regression)": (attributes, MODES[0]), "Jacobian (step 10 of 20)": (jacobian, MODES[0]),
            "Discovery (shipped state)": (D.select(discovery, [0, 1, 2, 3]), MODES[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    model, vae = embedded.load_model()
    null = embedded.conditioning("null")
    latent = {"samples": torch.zeros(1, 3, 32, 32)}
    sampling = SamplerSettings(7, 20, 1.0, "ddim", "ddim_uniform")
    report: dict = {"samples": a.samples, "strengths": STRENGTHS, "sets": {}}
    for name, (d, mode) in direction_sets(model, vae, null, latent).items():
        start = time.monotonic()
        found = direction_report(model, vae, d, sampling, null, null, latent, samples=a.samples, strengths=STRENGTHS,
                                 features=face_classifier_features, feature_names=list(C.NAMES),
                                 edit=EditSettings(mode=mode))
        seconds = time.monotonic() - start
        start = time.monotonic()  # plain sampling of as many images, in runs of as many samples
        for _ in range(d.count * len(STRENGTHS)):
            noise = comfy.sample.prepare_noise(torch.zeros(a.samples, 3, 32, 32), 7)
            vae.decode(comfy.sample.sample(model, noise, 20, 1.0, "ddim", "ddim_uniform", null, null,
                                           torch.zeros_like(noise), seed=7, disable_pbar=True))
        plain = time.monotonic() - start
        report["sets"][name] = {"mode": mode, "rows": [m.__dict__ for m in found], "seconds": seconds,
                                "plain_seconds": plain}
        print(f"\n{name} ({mode}): {seconds:.1f} s, {seconds / plain:.2f}× plain sampling of as many images")
        print(report_text(found, "face classifier"), flush=True)
        write_report(a.json, report)
    print(json.dumps({k: v["seconds"] / v["plain_seconds"] for k, v in report["sets"].items()}))


if __name__ == "__main__":
    main()
