"""Paper 003: AVI Latent Merge, the Φ trainer and loader, and singular-value edits of a latent.
All four sit between ComfyUI's own KSamplerAdvanced nodes (split sampling with leftover noise)."""

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from comfy_hspace import avi
from comfy_hspace.host.latents import latent_with
from comfy_hspace.host.memory import check_fits, phi_training_bytes, samples_bytes

from .common import (
    AVI_FOLDER,
    CATEGORY,
    TIPS,
    model_file,
    model_file_changed,
    output_path,
    parse_floats,
    send_progress_text,
)

Phi = io.Custom("HSPACE_AVI_PHI")
SPLIT = ("Sample x with KSamplerAdvanced (original conditioning, steps 0 → Tx, return_with_leftover_noise on) and z "
         "with a second one (target conditioning, same seed, 0 → Tz); Tx = 0.8T as the paper, Tz = Tx − 0.5T "
         "(the paper: − 0.3T), e.g. end steps 4 and 14 of 20.")


def _k(k: int, latent) -> int:
    return k or min(latent.shape[-2:]) // 4


class AVITrainer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceAVITrainer", display_name="AVI Singular Value Trainer (h-space)", category=CATEGORY,
            description="Paper 003 §3.2.2: trains Φ, the small MLP that predicts the singular values S used by AVI "
                        "Latent Merge (and a correction Δs with S + Δs ≈ x's), on N pairs: x and z latents of the same "
                        "seeds (a batch of N in both KSamplerAdvanced nodes). " + SPLIT + " Loss λ1‖ŷ−z‖² + "
                        "λ2‖ỹ−x‖² + λ3‖S−Sz‖² + λ4‖S+Δs−Sx‖², Adam. Saved to models/hspace_avi/<name>.safetensors "
                        "once training has finished (a cancelled run writes nothing).",
            inputs=[
                io.Latent.Input("x", tooltip="N latents at Tx under the original conditioning (leftover noise)."),
                io.Latent.Input("z", tooltip="The same N seeds at Tz under the target conditioning."),
                io.Int.Input("k", default=0, min=0, max=4096,
                             tooltip="Singular vectors kept from x; 0 = a quarter of min(H, W) (the paper: half)."),
                io.Int.Input("epochs", default=5, min=1, max=10000,
                             tooltip="Passes over the pairs. Paper: 5 epochs of 5,000 pairs at batch 256, about "
                                     "100 updates; with fewer pairs raise it to keep about 100 updates."),
                io.Int.Input("batch_size", default=256, min=1, max=65536,
                             tooltip="Pairs per update (paper: 256)."),
                io.Float.Input("learning_rate", default=1e-3, min=1e-7, max=1.0, step=1e-4, round=1e-7,
                               tooltip=TIPS["learning_rate"]),
                io.Float.Input("target_weight", default=3.0, min=0.0, max=1000.0, step=0.1, tooltip="λ1, on ‖ŷ − z‖²."),
                io.Float.Input("original_weight", default=10.0, min=0.0, max=1000.0, step=0.1,
                               tooltip="λ2, on ‖ỹ − x‖²."),
                io.Float.Input("values_weight", default=10.0, min=0.0, max=1000.0, step=0.1,
                               tooltip="λ3, on ‖S − Sz‖²."),
                io.Float.Input("correction_weight", default=10.0, min=0.0, max=1000.0, step=0.1,
                               tooltip="λ4, on ‖S + Δs − Sx‖²."),
                io.Int.Input("hidden", default=0, min=0, max=65536, tooltip="Width of Φ's layers; 0 = H·W (paper)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, tooltip=TIPS["seed"]),
                io.String.Input("name", default="avi_phi", tooltip="File name in models/hspace_avi; empty: not saved."),
            ],
            outputs=[Phi.Output("phi"), io.String.Output("losses", tooltip="Mean losses of each epoch.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, x, z, k, epochs, batch_size, learning_rate, target_weight, original_weight, values_weight,
                correction_weight, hidden, seed, name) -> io.NodeOutput:
        xs, zs = x["samples"], z["samples"]
        pbar = comfy.utils.ProgressBar(1)
        node = cls.hidden.unique_id if cls.hidden is not None else None

        def progress(step, total, losses):
            comfy.model_management.throw_exception_if_processing_interrupted()
            pbar.update_absolute(step, total)
            send_progress_text(f"step {step}/{total}: loss {losses['loss']:.3f}", node)

        device = comfy.model_management.get_torch_device()
        if xs.ndim == 4:  # (other shapes: train_phi names what it expected)
            height, width = xs.shape[-2:]
            batch = min(batch_size, xs.shape[0])
            check_fits(phi_training_bytes(height, width, hidden, xs.shape[1], batch), device,
                       f"training Φ of width {hidden or height * width} on {height}×{width} latents, batch {batch}",
                       "hidden", f" (0 means {height * width}) or batch_size")
        path = None
        if name.strip():
            path = output_path(AVI_FOLDER, name)
        phi, history = avi.train_phi(
            xs, zs, _k(k, xs), epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            weights=(target_weight, original_weight, values_weight, correction_weight), hidden=hidden, seed=seed,
            device=device, progress=progress)
        if path is not None:
            avi.save_phi(phi, path, {"pairs": xs.shape[0], "k": _k(k, xs), "epochs": epochs, "history": history})
        table = "\n".join(f"epoch {i + 1}: " + ", ".join(f"{n} {v:.4f}" for n, v in h.items())
                          for i, h in enumerate(history))
        return io.NodeOutput(phi, table)


class LoadAVIPhi(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceLoadAVIPhi", display_name="Load AVI Singular Value Net (h-space)", category=CATEGORY,
            description="Loads a Φ trained by AVI Singular Value Trainer from models/hspace_avi (safetensors only).",
            inputs=[io.Combo.Input("filename", options=folder_paths.get_filename_list(AVI_FOLDER),
                                   tooltip="A Φ file in models/hspace_avi.")],
            outputs=[Phi.Output("phi")],
        )

    @classmethod
    def execute(cls, filename) -> io.NodeOutput:
        return io.NodeOutput(avi.load_phi(model_file(AVI_FOLDER, filename)))

    @classmethod
    def fingerprint_inputs(cls, filename):
        return model_file_changed(AVI_FOLDER, filename)


class AVILatentMerge(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceAVILatentMerge", display_name="AVI Latent Merge (h-space)", category=CATEGORY,
            description="Paper 003, Attribute Vector Integration: per channel SVD of x and z; x keeps its top k "
                        "singular vectors and blends its others with z's leading ones in reversed order (ratio ρ); "
                        "singular values from Φ, or x's own without one. " + SPLIT + " Feed the result to a third "
                        "KSamplerAdvanced (original conditioning, add_noise off, start at Tx). Several ρ give a batch "
                        "per value, one after another (use a deterministic sampler after it to compare them).",
            inputs=[
                io.Latent.Input("x", tooltip="Latent at Tx under the original conditioning (leftover noise)."),
                io.Latent.Input("z", tooltip="Latent at Tz under the target conditioning; same shape as x."),
                io.Int.Input("k", default=0, min=0, max=4096,
                             tooltip="Singular vectors of x kept whole; 0 = a quarter of min(H, W) (the paper: half; a "
                                     "quarter with keep_noise and z at Tx − 0.5T measured best, see docs/avi.md)."),
                io.String.Input("rho", default="1.0",
                                tooltip="ρ in [0, 1]: 0 gives x back (without Φ), 1 the full integration. "
                                        "A list such as '0, 0.5, 1' gives a sweep."),
                Phi.Input("phi", optional=True, tooltip="A trained Φ; without it x's singular values are used."),
                io.Boolean.Input("keep_noise", default=True, optional=True,
                                 tooltip="Add ρ times x's trailing part (x minus its top k) back: at Tx it is mostly "
                                         "the noise the remaining steps remove, so samples at ρ = 1 come out clean "
                                         "instead of grainy and closer to x; the attribute moves less for some "
                                         "edits (see docs/avi.md). Off: the paper's merge, grainy at ρ = 1."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, x, z, k, rho, phi=None, keep_noise=True) -> io.NodeOutput:
        xs, zs = x["samples"], z["samples"]
        rhos = parse_floats(rho, "rho")
        if not rhos:
            raise ValueError("rho: empty; expected a value in [0, 1] or a list like '0, 0.5, 1'")
        check_fits(samples_bytes(len(rhos) * xs.shape[0], xs.shape), comfy.model_management.intermediate_device(),
                   f"{len(rhos)} merges of {xs.shape[0]} latents", "rho")
        return io.NodeOutput(latent_with(x, torch.cat([avi.merge_latents(xs, zs, _k(k, xs), r, phi, keep_noise)
                                                       for r in rhos])))


class LatentSingularValues(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceLatentSingularValues", display_name="Latent Singular Value Scale (h-space)",
            category=CATEGORY,
            description="Paper 003 §4.1: scales chosen singular values of every latent channel. Put it between two "
                        "KSamplerAdvanced nodes (the first ends at the chosen step with leftover noise, the second "
                        "continues from there with add_noise off): late in the schedule (high noise) the leading "
                        "values change coarse attributes, earlier fine ones. Several scales give a sweep: a batch "
                        "per scale, one after another (use a deterministic sampler after it to compare them).",
            inputs=[
                io.Latent.Input("latent",
                                tooltip="Latent from a KSamplerAdvanced that stopped at the chosen step "
                                        "with leftover noise."),
                io.String.Input("indices", default="0",
                                tooltip="Singular values to scale, 0 = the largest; e.g. '0, 1'."),
                io.String.Input("scales", default="0.8, 0.9, 1.0, 1.1, 1.2",
                                tooltip="Multipliers; one batch of the latent per value."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, latent, indices, scales) -> io.NodeOutput:
        samples = latent["samples"]
        try:
            chosen = sorted({int(p) for p in indices.replace(",", " ").split()})
        except ValueError:
            raise ValueError(f"indices: {indices!r} is not a list of whole numbers like '0, 1'") from None
        if not chosen:
            raise ValueError("indices: empty; expected e.g. '0' or '0, 1'")
        factors = parse_floats(scales, "scales")
        if not factors:
            raise ValueError("scales: empty; expected e.g. '0.8, 1, 1.2'")
        return io.NodeOutput(latent_with(latent, torch.cat([avi.scale_singular_values(samples, chosen, f)
                                                            for f in factors])))
