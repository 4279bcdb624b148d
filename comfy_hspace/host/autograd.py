"""Gradients through a ComfyUI model from inside a prompt, which ComfyUI runs in inference mode."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def _autograd_ready(module: torch.nn.Module):
    """ComfyUI loads weights inside inference mode, and autograd cannot save inference tensors.
    Swaps such parameters and buffers for ordinary copies while gradients are taken and puts the
    originals back afterwards, so the model is left exactly as it was. Weights that require grad
    are frozen meanwhile: gradients are taken through the model, never for it."""
    swapped = []
    frozen = [p for p in module.parameters() if p.requires_grad and not p.is_inference()]  # inference ones are swapped
    for p in frozen:
        p.requires_grad_(False)
    with torch.inference_mode(False):
        for mod in module.modules():
            for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                if t is not None and t.is_inference():
                    copy = torch.nn.Parameter(t.clone(), requires_grad=False) if name in mod._parameters else t.clone()
                    swapped.append((mod, name, t))
                    setattr(mod, name, copy)
    try:
        yield
    finally:
        for mod, name, t in swapped:
            if name in mod._parameters:
                mod._parameters[name] = t
            else:
                mod._buffers[name] = t
        for p in frozen:
            p.requires_grad_(True)


@contextmanager
def autograd_context(module: torch.nn.Module):
    """Where gradients through ``module`` work inside a ComfyUI prompt: out of inference mode,
    grad enabled, attention on the math kernel (the fused CPU kernels have no forward-mode or
    double-backward derivative) and the weights as ordinary tensors."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.inference_mode(False), torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]), _autograd_ready(module):
        yield
