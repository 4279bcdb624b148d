"""ComfyUI's patch protocol at h: reading and writing h on a clone of a MODEL.

In a UNet the patch goes through ``set_model_output_block_patch`` and acts only at block
("output", 0), where h is exactly the middle block's output (see DESIGN.md §3). In a transformer
it replaces the chosen block's ``patches_replace["dit"]`` entry, wrapping whatever was there
(see ``transformer``). Nothing here imports ComfyUI: the model is used through its ModelPatcher
methods only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .transformer import ATTENTION, GRID, TEXT_TOKENS, site_of, token_grid, tokens_before_image

# transformer_options key: a model call made with it set to True runs without the edit
# (the asymmetric sampler's unedited pass).
EDIT_OFF = "hspace_edit_off"
# transformer_options key: an offset [n, C, H, W] added to h of each of the n samples in this one
# model call (every chunk), e.g. the point at which Jacobian Directions differentiates; or a
# callable (h, row_timesteps) -> offset for all rows, e.g. the Discovery Trainer's shift block.
DELTA = "hspace_delta"
BOTTLENECK = ("output", 0)
APPLY_TO = ("both", "cond", "uncond")


@dataclass
class HSpaceEdit:
    """h ← h + offsets[t] for the rows selected by ``apply_to``, while sigma_end ≤ σ ≤ sigma_start."""
    offsets: torch.Tensor  # [T, C, H, W]
    timesteps: torch.Tensor  # [T] model timesteps
    sigma_start: float = float("inf")
    sigma_end: float = 0.0
    apply_to: str = "both"
    _on_device: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.apply_to not in APPLY_TO:
            raise ValueError(f"apply_to: expected one of {APPLY_TO}, got {self.apply_to!r}")

    def active(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start

    def offsets_like(self, h: torch.Tensor) -> torch.Tensor:
        key = (h.device, h.dtype)
        if key not in self._on_device:
            self._on_device[key] = self.offsets.to(h.device, h.dtype)
        return self._on_device[key]

    def apply(self, h: torch.Tensor, row_sigmas: torch.Tensor, row_timesteps: torch.Tensor,
              row_chunks: torch.Tensor) -> torch.Tensor:
        if tuple(h.shape[1:]) != tuple(self.offsets.shape[1:]):
            raise ValueError(f"directions: h shape {list(self.offsets.shape[1:])} does not fit this model's h "
                             f"{list(h.shape[1:])} at this latent size (use Resize Directions for another "
                             f"resolution)")
        rows = (row_sigmas <= self.sigma_start) & (row_sigmas >= self.sigma_end)
        if self.apply_to != "both":
            rows &= row_chunks == (0 if self.apply_to == "cond" else 1)
        if not rows.any():
            return h
        offsets = self.offsets_like(h)
        if offsets.shape[0] > 1:
            idx = (row_timesteps.reshape(-1, 1) - self.timesteps.reshape(1, -1).to(row_timesteps)).abs().argmin(1)
            offsets = offsets[idx.to(h.device)]
        if bool(rows.all()):
            return h + offsets
        # rows outside the edit stay bit-for-bit as they were
        return torch.where(rows.to(h.device).reshape(-1, 1, 1, 1), h + offsets, h)


def row_layout(h: torch.Tensor, options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of h: its sigma and its chunk. ComfyUI batches cond and uncond rows in one
    forward; ``sigmas`` has one entry per latent, ``cond_or_uncond`` lists the chunks."""
    chunks = options.get("cond_or_uncond") or [0]
    sigmas = options["sigmas"].reshape(-1).float()
    if sigmas.numel() != h.shape[0]:
        sigmas = sigmas.repeat(h.shape[0] // sigmas.numel())
    per_chunk = h.shape[0] // len(chunks)
    row_chunks = torch.tensor(chunks, device=sigmas.device).repeat_interleave(per_chunk)
    return sigmas, row_chunks


def hspace_clone(model: Any, *, edit: HSpaceEdit | None = None, recorder: Any = None, deltas: bool = False) -> Any:
    """A clone of a ComfyUI MODEL with one more patch at h: h is recorded
    (``recorder.record(h, row_timesteps, row_chunks)``, see ``comfy_hspace.recorder``), then offset
    by ``edit``, then, with ``deltas``, by the per-call ``DELTA`` of transformer_options. Patches
    of clones in a row all act, in order, so edits add; only one patch of a chain may take the
    per-call deltas. h is a UNet's bottleneck, or a transformer's image tokens after its chosen
    block, or their attention output inside it (``transformer.site_of``). The input model is never
    touched; the only module hook, the attention output's, lives for one block call."""
    model_sampling = model.get_model_object("model_sampling")
    site = site_of(model)
    clone = model.clone()

    def at_h(h: torch.Tensor, options: dict) -> torch.Tensor:
        row_sigmas, row_chunks = row_layout(h, options)
        row_timesteps = model_sampling.timestep(row_sigmas).float()
        if recorder is not None:
            recorder.record(h, row_timesteps, row_chunks)
        if edit is not None and not options.get(EDIT_OFF, False):
            h = edit.apply(h, row_sigmas, row_timesteps, row_chunks)
        delta = options.get(DELTA) if deltas else None
        if callable(delta):
            h = h + delta(h, row_timesteps)
        elif delta is not None:
            h = h + delta.to(h.dtype).repeat(h.shape[0] // delta.shape[0], 1, 1, 1)
        return h

    if site is None:
        def bottleneck_patch(h, hsp, options):
            # newer ComfyUI lets an earlier patch (SUPIR's) fuse the skip connection into h and hand on
            # hsp = None: h is then no longer the bottleneck's
            if options.get("block") != BOTTLENECK or hsp is None:
                return h, hsp
            return at_h(h, options), hsp

        clone.set_model_output_block_patch(bottleneck_patch)
        return clone

    key = (site.kind, site.index)
    dm = model.get_model_object("diffusion_model")
    earlier = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {}).get(key)

    def as_grid(img: torch.Tensor, options: dict, start: int) -> torch.Tensor:
        """The image tokens img[:, start : start + rows·columns] with h moved (``at_h``); the rest as it was."""
        rows, cols = options[GRID]
        tokens = img[:, start:start + rows * cols]  # reference-image tokens (Kontext) come after these
        h = tokens.transpose(1, 2).reshape(img.shape[0], img.shape[2], rows, cols)
        moved = at_h(h, options)
        if moved is h:
            return img
        tokens = moved.reshape(img.shape[0], img.shape[2], rows * cols).transpose(1, 2)
        if img.shape[1] != rows * cols:  # text or reference tokens around the image's
            tokens = torch.cat([img[:, :start], tokens, img[:, start + rows * cols:]], dim=1)
        return tokens

    def block_patch(args: dict, extra: dict) -> dict:
        options = args.get("transformer_options") or {}
        if site.stream == ATTENTION:
            reverse = torch.is_grad_enabled() and torch._C._functorch.peek_interpreter_stack() is None
            if reverse and site.family.recomputes_blocks:
                # SD3 calls its blocks again in the backward pass (checkpointing), after this hook is gone
                raise ValueError(f"stream: {site} takes no reverse-mode gradients (Discovery Trainer, Jacobian "
                                 f"Directions): {site.family.name} recomputes its blocks in the backward pass; use "
                                 f"the residual stream")
            # the attention output is inside the block: a forward hook on its projection for this one call
            hook = site.attention_module(dm).register_forward_hook(lambda m, i, out: as_grid(out, options, 0))
            try:
                return earlier(args, extra) if earlier is not None else extra["original_block"](args)
            finally:
                hook.remove()
        out = earlier(args, extra) if earlier is not None else extra["original_block"](args)
        img = as_grid(out["img"], options, tokens_before_image(site, dm, options[TEXT_TOKENS]))
        return out if img is out["img"] else {**out, "img": img}

    def note_grid(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        transformer_options[GRID] = token_grid(model, x.shape)
        transformer_options[TEXT_TOKENS] = 0 if c_crossattn is None else c_crossattn.shape[1]
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    clone.set_model_patch_replace(block_patch, "dit", site.kind, site.index)
    clone.add_wrapper_with_key("apply_model", "comfy_hspace", note_grid)
    return clone
