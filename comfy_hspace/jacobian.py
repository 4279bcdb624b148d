"""Image-specific directions (paper 000 §IV-B, Alg. 1 and SM-E Alg. 2): the top right singular
vectors of J = ∂ε/∂h at one point of one sample's trajectory, by block power iteration on JᵀJ
without ever forming J. ``Jv`` comes from forward-mode AD, ``JᵀJv = ∂/∂h ⟨ε, Jv⟩`` from reverse
mode; the block is re-orthogonalised by QR after each iteration. Vectors are found in blocks of
``batch_size``; each block is kept orthogonal to the blocks found before it (deflation), so
``batch_size = k`` is Alg. 1 and a smaller one is the low-memory Alg. 2.
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


def top_singular_vectors(jvp: LinearMap, vjp: LinearMap, h_shape: tuple[int, ...], k: int,
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
