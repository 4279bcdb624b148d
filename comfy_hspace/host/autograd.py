"""Gradients through a ComfyUI model from inside a prompt, which ComfyUI runs in inference mode."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from .architectures import Architecture


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


def in_place_safe(architecture: Architecture):
    """Reverse-mode autograd through a model of this architecture when its blocks add residuals in place (Flux,
    Chroma): every tensor autograd saves for the backward pass is copied when it is saved, so a
    later in-place add cannot change it. The gradients are exactly those of the out-of-place
    computation (checked against forward mode in the tests); the cost is the copies' memory. Not
    used under torch.func transforms (forward mode), which work as they are and refuse these hooks."""
    transformed = torch._C._functorch.peek_interpreter_stack() is not None  # no public query for this yet
    if not architecture.adds_in_place or transformed or not torch.is_grad_enabled():
        return nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)
