"""ComfyUI's patch protocol at h: reading and writing h on a clone of a MODEL.

In a UNet the patch goes through ``set_model_output_block_patch`` and acts only at block
("output", 0), where h is exactly the middle block's output (see DESIGN.md §3). In a transformer
it replaces the chosen block's ``patches_replace["dit"]`` entry, wrapping whatever was there, or,
in families without that hook, hooks the block module for each model call (see ``transformer``).
Nothing here imports ComfyUI: the model is used through its ModelPatcher methods only.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..editing import DELTA, EDIT_OFF, HSpaceEdit
from .transformer import ATTENTION, BLOCK_HOOK, read_tokens, site_of, token_grid, tokens_before_image, write_tokens

BOTTLENECK = ("output", 0)
# transformer_options keys set for each model call of a transformer: the latent's token grid and the text
# tokens that come before the image tokens in a single-stream block (written and read here only)
GRID = "hspace_token_grid"
TEXT_TOKENS = "hspace_text_tokens"


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
    touched; module hooks (a block's, an attention output's) live for one call."""
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
        _patch_bottleneck(clone, at_h)
    elif site.family.reach == BLOCK_HOOK:
        _hook_block(clone, model, site, at_h)
    else:
        _patch_dit_block(clone, model, site, at_h)
    return clone


def _patch_bottleneck(clone: Any, at_h: Callable) -> None:
    def bottleneck_patch(h, hsp, options):
        # newer ComfyUI lets an earlier patch (SUPIR's) fuse the skip connection into h and hand on
        # hsp = None: h is then no longer the bottleneck's
        if options.get("block") != BOTTLENECK or hsp is None:
            return h, hsp
        return at_h(h, options), hsp

    clone.set_model_output_block_patch(bottleneck_patch)


def _moved_tokens(tokens: torch.Tensor, grid: tuple[int, int], options: dict, at_h: Callable) -> torch.Tensor:
    """Image tokens [B, rows·columns, C] with h moved (``at_h`` on them seen as a grid [B, C, rows, columns]);
    the same tensor when nothing moved."""
    rows, cols = grid
    h = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)
    moved = at_h(h, options)
    return tokens if moved is h else moved.reshape(tokens.shape[0], tokens.shape[2], rows * cols).transpose(1, 2)


def _hook_block(clone: Any, model: Any, site: Any, at_h: Callable) -> None:
    """h through a forward hook on the block module, registered for one model call by a keyed wrapper on
    the clone (the family has no block hook in ComfyUI)."""
    dm = model.get_model_object("diffusion_model")
    layout = site.family.layout

    def hook_for_the_call(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        grid = token_grid(model, x.shape)

        def at_output(module, args, out):
            tokens = read_tokens(layout, out, grid[0] * grid[1], dm)
            moved = _moved_tokens(tokens, grid, transformer_options, at_h)
            return out if moved is tokens else write_tokens(layout, out, moved, dm)

        handle = site.block_module(dm).register_forward_hook(at_output)
        try:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            handle.remove()

    clone.add_wrapper_with_key("apply_model", "comfy_hspace", hook_for_the_call)


def _patch_dit_block(clone: Any, model: Any, site: Any, at_h: Callable) -> None:
    """h through ComfyUI's block hook (``patches_replace["dit"]``), wrapping whatever was set there."""
    key = (site.kind, site.index)
    dm = model.get_model_object("diffusion_model")
    earlier = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {}).get(key)
    call = {}  # this model call's transformer_options, for blocks not handed them (HunyuanDiT's)

    def as_grid(img: torch.Tensor, options: dict, start: int) -> torch.Tensor:
        """img with its image tokens img[:, start : start + rows·columns] moved; the rest as it was."""
        rows, cols = options[GRID]
        tokens = img[:, start:start + rows * cols]  # reference-image tokens (Kontext) come after these
        moved = _moved_tokens(tokens, (rows, cols), options, at_h)
        if moved is tokens:
            return img
        if img.shape[1] != rows * cols:  # text or reference tokens around the image's
            moved = torch.cat([img[:, :start], moved, img[:, start + rows * cols:]], dim=1)
        return moved

    def block_patch(args: dict, extra: dict) -> dict:
        options = args.get("transformer_options") or call["options"]
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
        call["options"] = transformer_options
        try:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            call.clear()

    clone.set_model_patch_replace(block_patch, "dit", site.kind, site.index)
    clone.add_wrapper_with_key("apply_model", "comfy_hspace", note_grid)
