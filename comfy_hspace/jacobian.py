"""Image-specific directions (paper 000 §IV-B, Alg. 1 and SM-E Alg. 2): the top right singular
vectors of J = ∂ε/∂h at one point of one sample's trajectory, by block power iteration on JᵀJ
without ever forming J. Both products come from one retained reverse graph: ``Jᵀu`` is a backward
pass, and ``Jv`` the gradient along v of Jᵀu with respect to u (Jᵀu is linear in u; the paper uses
forward mode, which recomputes the forward at every product). The block is re-orthogonalised by QR
after each iteration. Vectors are found in blocks of ``batch_size``; each block is kept orthogonal
to the blocks found before it (deflation), so ``batch_size = k`` is Alg. 1 and a smaller one is the
low-memory Alg. 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

LinearMap = Callable[[torch.Tensor], torch.Tensor]  # batched: [b, *in] → [b, *out]


@dataclass
class SingularVectors:
    values: torch.Tensor  # [k], descending
    vectors: torch.Tensor  # [k, *h_shape], unit norm, orthogonal
    iterations: list[int]  # per block
    residuals: torch.Tensor  # [k], ‖JᵀJv − σ²v‖ / σ² at the end


def _orthonormal_rows(w: torch.Tensor, found: torch.Tensor | None) -> torch.Tensor:
    if found is not None:
        w = w - (w @ found.T) @ found  # deflation: stay orthogonal to earlier blocks
    q, r = torch.linalg.qr(w.T)
    # QR's signs are arbitrary; fix them so a converged vector keeps its sign between iterations
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return (q * signs).T


def top_singular_vectors(jvp: LinearMap, vjp: LinearMap, h_shape: tuple[int, ...], k: int, *,
                         batch_size: int | None = None, tol: float = 1e-3, max_iters: int = 50,
                         seed: int = 0, progress: Callable[[int], None] | None = None) -> SingularVectors:
    """Top-k right singular vectors of the linear map J given by ``jvp`` (v ↦ Jv) and ``vjp``
    (u ↦ Jᵀu), each applied to a batch of vectors along dim 0. A block stops when every vector's
    residual ‖JᵀJv − σ²v‖/σ² is below ``tol`` or after ``max_iters`` iterations."""
    d = 1
    for s in h_shape:
        d *= s
    if not 1 <= k <= d:
        raise ValueError(f"n_directions: expected 1 … {d} (the h dimension), got {k}")
    if tol <= 0 or max_iters < 1:
        raise ValueError(f"tolerance / max_iterations: expected > 0 and ≥ 1, got {tol}, {max_iters}")
    batch_size = min(batch_size or k, k)
    generator = torch.Generator().manual_seed(seed)
    found: torch.Tensor | None = None
    values, residuals, iterations = [], [], []

    def jtj(v: torch.Tensor) -> torch.Tensor:
        return vjp(jvp(v.reshape(-1, *h_shape))).reshape(v.shape[0], d).to(v)

    done = 0
    while done < k:
        b = min(batch_size, k - done)
        v = _orthonormal_rows(torch.randn(b, d, generator=generator, dtype=torch.float64), found)
        for it in range(1, max_iters + 1):
            w = jtj(v)
            rayleigh = (v * w).sum(1)  # σ² estimates
            residual = (w - rayleigh[:, None] * v).norm(dim=1) / rayleigh.abs().clamp_min(1e-30)
            v = _orthonormal_rows(w, found)
            if progress is not None:
                progress(1)
            if residual.max() < tol:
                break
        # Rayleigh–Ritz inside the block: orders the vectors and sharpens them
        w = jtj(v)
        small = v @ w.T
        eigenvalues, rotation = torch.linalg.eigh((small + small.T) / 2)
        order = eigenvalues.argsort(descending=True)
        v = rotation[:, order].T @ v
        w = rotation[:, order].T @ w
        rayleigh = (v * w).sum(1)
        residuals.append((w - rayleigh[:, None] * v).norm(dim=1) / rayleigh.abs().clamp_min(1e-30))
        values.append(rayleigh.clamp_min(0).sqrt())
        found = v if found is None else torch.cat([found, v])
        iterations.append(it)
        done += b
    values_all = torch.cat(values)
    order = values_all.argsort(descending=True)
    return SingularVectors(values_all[order], found[order].reshape(k, *h_shape), iterations,
                           torch.cat(residuals)[order])


def mask_for_latent(mask: torch.Tensor, latent_shape: tuple[int, ...], scale: int) -> torch.Tensor:
    """A ComfyUI MASK ([H, W] or [1, H, W]) of the image's size as a [1, 1, h, w] weight on the
    latent, averaged down by the VAE's ``scale``. Masks of other sizes are refused, not resized."""
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"mask: expected one mask [H, W], got shape {list(mask.shape)}")
    height, width = latent_shape[-2:]
    if tuple(mask.shape) != (height * scale, width * scale):
        raise ValueError(f"mask: {mask.shape[1]}×{mask.shape[0]} does not fit the image, which is "
                         f"{width * scale}×{height * scale}; masks are not resized, scale or crop it to the image")
    if not mask.any():
        raise ValueError("mask: the mask is empty, there is no region to find directions for")
    return torch.nn.functional.avg_pool2d(mask.float()[None, None], scale)


@dataclass
class TrajectoryPoint:
    """One sample at one step of its own sampling trajectory, seen from inside ComfyUI's sampler."""
    step: int
    timestep: float  # model timestep
    h: torch.Tensor  # [C, H, W] bottleneck h there, unedited
    eps: Callable[[torch.Tensor], torch.Tensor]  # δ [b, C, H, W] ↦ guided ε [b, …] with h + δ, one row per δ


def jacobian_maps(point: TrajectoryPoint, weight: torch.Tensor | None = None) -> tuple[Callable, Callable]:
    """(v ↦ Jv, u ↦ Jᵀu) for J = ∂(weight·ε)/∂h at ``point``, batched along dim 0, from one graph
    per batch size (J is only ever taken at δ = 0): the forward's graph, retained, gives Jᵀu; the
    graph of Jᵀu for a symbolic u (``create_graph``), retained, gives Jv = ∂⟨Jᵀu, v⟩/∂u without running
    the forward again. Forward mode cost 3.9–4.5 forwards per product on the CPU (the primal again
    each time, no fused kernels); this costs about one. Not torch.func.linearize: its traced map
    drifted after the first product through ComfyUI's sampling path and gave NaN on SD3's MMDiT."""
    region = None if weight is None else weight.to(point.h).clone()  # clone: not an inference tensor
    h_shape = tuple(point.h.shape)
    graphs = {}

    def graph(b: int):
        if b not in graphs:
            delta = torch.zeros(b, *h_shape).to(point.h).requires_grad_(True)
            out = point.eps(delta)
            out = out if region is None else out * region
            u = torch.zeros_like(out).requires_grad_(True)  # any value: Jᵀu is linear in u
            graphs[b] = delta, out, u, torch.autograd.grad(out, delta, u, create_graph=True)[0]
        return graphs[b]

    def jvp(v):
        _, _, u, jt_u = graph(v.shape[0])
        return torch.autograd.grad(jt_u, u, v.to(jt_u), retain_graph=True)[0]

    def vjp(u):
        delta, out, _, _ = graph(u.shape[0])
        return torch.autograd.grad(out, delta, u.to(out), retain_graph=True)[0].double()

    return jvp, vjp
