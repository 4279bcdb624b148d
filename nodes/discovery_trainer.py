from pathlib import Path

import comfy.utils
import folder_paths
from comfy_api.latest import io

from comfy_hspace.discovery import DiscoverySettings
from comfy_hspace.host.discovery import train_discovery

from .common import CATEGORY, DISCOVERY_FOLDER, TIPS, Directions, output_path, sampler_inputs, send_progress_text

SHIFT_LIMIT = 1.0  # with ADVERSARIAL_WEIGHT, what the shipped state was trained with: measured in docs/discovery.md
ADVERSARIAL_WEIGHT = 0.3


class DiscoveryTrainer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceDiscoveryTrainer", display_name="Discovery Trainer (h-space)", category=CATEGORY,
            description="Paper 001: learns K directions without supervision. A shift block moves h by ε·f_k(h, t) in "
                        "the shifting interval [T, t_edit] (Asyrp's asymmetric step); a reconstructor must tell k and "
                        "ε from the unshifted and shifted samples, a discriminator keeps shifted samples realistic. "
                        "Trained through the whole M-step chain with step-by-step gradient checkpointing, so memory "
                        "does not grow with M. The state (shift block, reconstructor, discriminator, optimisers) is "
                        "saved to models/hspace_discovery/<name>.safetensors and training can resume from it, or "
                        "start from another saved state (start_from; the pack ships one for the embedded faces "
                        "model): with training_steps at or below its step, the node only computes its directions. "
                        "Use the directions in the Edited Sampler in asymmetric mode; strength = ε.",
            inputs=[
                io.Model.Input("model", tooltip=TIPS["model"]),
                io.Conditioning.Input("positive", tooltip=TIPS["positive"]),
                io.Conditioning.Input("negative", tooltip=TIPS["negative"]),
                io.Latent.Input("latent_image", tooltip="Gives the image size; the batch comes from batch_size."),
                io.Int.Input("count", default=16, min=2, max=1024, tooltip="K, the number of directions learnt."),
                io.Float.Input("magnitude", default=2.0, min=0.01, max=100.0, step=0.1,
                               tooltip="S: each training shift has ε uniform in [−S, S]."),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="M, DDIM steps of the sampling chain."),
                io.Float.Input("t_edit", default=400.0, min=0.0, max=10000.0, step=1.0,
                               tooltip="End of the shifting interval in model timesteps (0 … 999 for a "
                                       "1000-step DDPM, SD3 and Wan, 0 … 1 for Flux, Chroma, Qwen-Image, AuraFlow and "
                                       "LTXV)."),
                io.Int.Input("batch_size", default=16, min=1, max=4096,
                             tooltip="Samples per training step (paper: 128 for MNIST)."),
                io.Int.Input("training_steps", default=200, min=0, max=1000000,
                             tooltip="Total updates; with resume on, counted from the saved step."),
                io.Float.Input("learning_rate", default=1e-3, min=1e-7, max=1.0, step=1e-4, round=1e-7,
                               tooltip=TIPS["learning_rate"]),
                *sampler_inputs(names=("seed", "cfg")),
                io.String.Input("name", default="discovery", tooltip="File name of the saved training state."),
                io.Boolean.Input("resume", default=True,
                                 tooltip="On: continue from models/hspace_discovery/<name>.safetensors if it exists."),
                io.Int.Input("save_every", default=50, min=1, max=100000,
                             tooltip="Steps between saves; a cancelled run keeps the last save."),
                io.Float.Input("regression_weight", default=0.1, min=0.0, max=100.0, step=0.01,
                               tooltip="Weight of the reconstructor's magnitude loss (paper: 0.1)."),
                io.Float.Input("adversarial_weight", default=ADVERSARIAL_WEIGHT, min=0.0, max=100.0, step=0.01,
                               tooltip="Weight of the loss for fooling the discriminator (paper: 0.1; with "
                                       "shift_limit 1, 0.3 kept the shifted samples on the data)."),
                io.Int.Input("direction_samples", default=16, min=1, max=4096,
                             tooltip="Samples averaged for the output directions (mean shift per timestep)."),
                io.Boolean.Input("checkpointed", default=True,
                                 tooltip="Off: plain backprop through the chain "
                                         "(same gradients, memory grows with M)."),
                io.Float.Input("shift_limit", default=SHIFT_LIMIT, min=0.0, max=100.0, step=0.01, optional=True,
                               tooltip="Soft cap on each unit shift's size ÷ the size of h (RMS, per sample); "
                                       "0: none, as the paper. Unbounded shifts grow until samples leave the data."),
                io.Combo.Input("start_from", options=["none", *folder_paths.get_filename_list(DISCOVERY_FOLDER)],
                               default="none", optional=True,
                               tooltip="A saved state to begin from when <name> has none yet (or resume is off): "
                                       "its networks, optimisers and step. It must match the model and K; "
                                       "with another shift_limit its networks go on under this one."),
            ],
            outputs=[Directions.Output("directions", tooltip="Mean shift per timestep, zero after t_edit."),
                     Directions.Output("time_invariant",
                                       tooltip="The mean over the shifting interval at each of its steps.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, count, magnitude, steps, t_edit, batch_size,
                training_steps, learning_rate, seed, cfg, name, resume, save_every, regression_weight,
                adversarial_weight, direction_samples, checkpointed, shift_limit=SHIFT_LIMIT,
                start_from="none") -> io.NodeOutput:
        settings = DiscoverySettings(count=count, magnitude=magnitude, t_edit=t_edit, batch_size=batch_size,
                                     learning_rate=learning_rate, regression_weight=regression_weight,
                                     adversarial_weight=adversarial_weight, shift_limit=shift_limit,
                                     checkpointed=checkpointed)
        path = output_path(DISCOVERY_FOLDER, name)
        start = None
        if start_from != "none":
            found = folder_paths.get_full_path(DISCOVERY_FOLDER, start_from)
            if found is None:
                raise ValueError(f"start_from: {start_from!r} is not a state in models/{DISCOVERY_FOLDER}")
            start = Path(found)
        pbar = comfy.utils.ProgressBar(max(training_steps, 1))
        node = cls.hidden.unique_id if cls.hidden is not None else None

        def progress(step, total, losses):
            pbar.update_absolute(step, total)
            send_progress_text(f"step {step}/{total}: accuracy {losses['accuracy']:.2f}, classification "
                               f"{losses['classification']:.3f}, regression {losses['regression']:.3f}, "
                               f"D(real) {losses['d_real']:.2f}, D(shifted) {losses['d_fake']:.2f}", node)

        per_step, time_invariant, _ = train_discovery(
            model, positive, negative, tuple(latent_image["samples"].shape), settings, steps=steps,
            training_steps=training_steps, seed=seed, cfg=cfg, state_path=Path(path), start_from=start,
            resume=resume, save_every=save_every, direction_samples=direction_samples,
            progress=progress)
        return io.NodeOutput(per_step, time_invariant)
