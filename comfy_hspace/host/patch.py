"""ComfyUI's patch protocol at h: reading and writing h on a clone of a MODEL.

In a UNet the patch goes through ``set_model_output_block_patch`` and acts only at block
("output", 0), where h is exactly the middle block's output (see DESIGN.md §3). In a transformer
it replaces each chosen block's ``patches_replace["dit"]`` entry, wrapping whatever was there, or,
in families without that hook, hooks the block modules for each model call (see ``architectures``).
Nothing here imports ComfyUI: the model is used through its ModelPatcher methods only.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..editing import DELTA, EDIT_OFF, HSpaceEdit
from .architectures import ATTENTION, BLOCK_HOOK, DIT_HOOK, OUTPUT_BLOCK_PATCH, Site, read_tokens, write_tokens

BOTTLENECK = ("output", 0)
# transformer_options keys set for each model call of a transformer: the latent's token grid, the text
# tokens that come before the image tokens in a single-stream block, and the reference tokens that come
# before them in every block (written and read here only)
GRID = "hspace_token_grid"
TEXT_TOKENS = "hspace_text_tokens"
LEADING_TOKENS = "hspace_leading_tokens"


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


def half_of_pairs(t: torch.Tensor, n: int, half: int = 0) -> torch.Tensor:
    """Rows [chunks·2n, …] laid out as ``PAIRED_ROWS``: each chunk's first (half 0) or second (1) n rows,
    [chunks·n, …]."""
    return t.unflatten(0, (-1, 2, n))[:, half].flatten(0, 1)


def as_pairs(t: torch.Tensor, n: int) -> torch.Tensor:
    """Rows [chunks·n, …] each chunk twice over, [chunks·2n, …], the layout of ``PAIRED_ROWS``."""
    rows = t.unflatten(0, (-1, 1, n))
    return rows.expand(-1, 2, *rows.shape[2:]).flatten(0, 2)


def hspace_clone(model: Any, site: Site, *, edit: HSpaceEdit | None = None, recorder: Any = None,
                 deltas: bool = False) -> Any:
    """A clone of a ComfyUI MODEL with one more patch at h (``site``, the model's ``site_of``): h is
    recorded (``recorder.record(h, row_timesteps, row_chunks)``, see ``comfy_hspace.recorder``), then
    offset by ``edit``, then, with ``deltas``, by the per-call ``DELTA`` of transformer_options.
    Patches of clones in a row all act, in order, so edits add; only one patch of a chain may take
    the per-call deltas. At several blocks, h is their grids stacked along the channels: it is
    recorded once the last of them has run, and each block gets its slice of the edit (times its
    weight) and of a delta. The input model is never touched; module hooks live for one call."""
    model_sampling = model.get_model_object("model_sampling")
    count = max(1, len(site.blocks))
    edits = [None if edit is None else edit.part(j, count, w) for j, w in enumerate(site.weights or (1.0,))]
    parts: dict[int, torch.Tensor] = {}  # this call's h of the blocks run so far

    def at_h(part: int, h: torch.Tensor, options: dict) -> torch.Tensor:
        row_sigmas, row_chunks = row_layout(h, options)
        row_timesteps = model_sampling.timestep(row_sigmas).float()
        if recorder is not None:
            parts[part] = h
            if len(parts) == count:
                recorder.record(torch.cat([parts.pop(j) for j in range(count)], dim=1), row_timesteps, row_chunks)
        if edit is not None and not options.get(EDIT_OFF, False):
            h = edits[part].apply(h, row_sigmas, row_timesteps, row_chunks)
        delta = options.get(DELTA) if deltas else None
        if callable(delta):
            h = h + delta(h, row_timesteps)
        elif delta is not None:
            delta = delta.chunk(count, dim=1)[part]
            h = h + delta.to(h.dtype).repeat(h.shape[0] // delta.shape[0], 1, 1, 1)
        return h

    clone = model.clone()
    PATCHES[site.architecture.reach](clone, site, at_h)
    return clone


def _patch_bottleneck(clone: Any, site: Site, at_h: Callable) -> None:
    def bottleneck_patch(h, hsp, options):
        # newer ComfyUI lets an earlier patch (SUPIR's) fuse the skip connection into h and hand on
        # hsp = None: h is then no longer the bottleneck's
        if options.get("block") != BOTTLENECK or hsp is None:
            return h, hsp
        return at_h(0, h, options), hsp

    clone.set_model_output_block_patch(bottleneck_patch)


def _moved_tokens(tokens: torch.Tensor, grid: tuple[int, int], options: dict, at_h: Callable) -> torch.Tensor:
    """Image tokens [B, rows·columns, C] with h moved (``at_h`` on them seen as a grid [B, C, rows, columns]);
    the same tensor when nothing moved."""
    rows, cols = grid
    h = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)
    moved = at_h(h, options)
    return tokens if moved is h else moved.reshape(tokens.shape[0], tokens.shape[2], rows * cols).transpose(1, 2)


def _hook_block(clone: Any, site: Site, at_h: Callable) -> None:
    """h through forward hooks on the block modules, registered for one model call by a keyed wrapper on
    the clone (the family has no block hook in ComfyUI)."""
    dm, layout, modules = site.dm, site.architecture.layout, site.modules()

    def hook_for_the_call(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        grid = site.token_grid(x.shape)

        def at_output(part: int, out: Any) -> Any:
            tokens = read_tokens(layout, out, grid[0] * grid[1], dm)
            moved = _moved_tokens(tokens, grid, transformer_options, lambda h, o: at_h(part, h, o))
            return out if moved is tokens else write_tokens(layout, out, moved, dm)

        handles = [module.register_forward_hook(lambda m, args, out, part=part: at_output(part, out))
                   for part, module in enumerate(modules)]
        try:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    clone.add_wrapper_with_key("apply_model", "comfy_hspace", hook_for_the_call)


def _patch_dit_block(clone: Any, site: Site, at_h: Callable) -> None:
    """h through ComfyUI's block hook (``patches_replace["dit"]``) of each chosen block, wrapping whatever
    was set there."""
    call = {}  # this model call's transformer_options, for blocks not handed them (HunyuanDiT's)
    for part, block in enumerate(site.blocks):
        kind, index = site.located(block)
        earlier = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {}).get(
            (kind, index))
        patch = _block_patch(site, block, kind, earlier, call, lambda h, o, part=part: at_h(part, h, o))
        clone.set_model_patch_replace(patch, "dit", kind, index)

    def note_grid(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        transformer_options[GRID] = site.token_grid(x.shape)
        transformer_options[TEXT_TOKENS] = 0 if c_crossattn is None else c_crossattn.shape[1]
        transformer_options[LEADING_TOKENS] = site.leading_tokens(kwargs)
        call["options"] = transformer_options
        try:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            call.clear()

    clone.add_wrapper_with_key("apply_model", "comfy_hspace", note_grid)


def _block_patch(site: Site, block: int, kind: str, earlier: Callable | None, call: dict, at_h: Callable
                 ) -> Callable:
    """One block's ``patches_replace["dit"]`` entry: h moved in its output, or in its attention output."""
    attention = site.attention_module(block) if site.stream == ATTENTION else None

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
            if reverse and site.architecture.recomputes_blocks:
                # SD3 calls its blocks again in the backward pass (checkpointing), after this hook is gone
                raise ValueError(f"stream: {site} takes no reverse-mode gradients (Discovery Trainer, Jacobian "
                                 f"Directions): {site.architecture.name} recomputes its blocks in the backward "
                                 f"pass; use the residual stream")
            # the attention output is inside the block: a forward hook on its projection for this one call
            hook = attention.register_forward_hook(
                lambda m, i, out: as_grid(out, options, options[LEADING_TOKENS]))
            try:
                return earlier(args, extra) if earlier is not None else extra["original_block"](args)
            finally:
                hook.remove()
        out = earlier(args, extra) if earlier is not None else extra["original_block"](args)
        start = options[LEADING_TOKENS] + site.tokens_before_image(kind, options[TEXT_TOKENS])
        img = as_grid(out["img"], options, start)
        return out if img is out["img"] else {**out, "img": img}

    return block_patch


PATCHES = {OUTPUT_BLOCK_PATCH: _patch_bottleneck, DIT_HOOK: _patch_dit_block, BLOCK_HOOK: _hook_block}
