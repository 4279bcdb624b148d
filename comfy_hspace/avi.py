"""Attribute Vector Integration (paper 003, §3.2, Algorithm 1): channel-wise SVD of two latents
and the integration of their singular vectors. Torch only; the Φ network, the nodes and the
measurements build on these (issue 7, not done yet).

Per channel, x = Ux·diag(Sx)·Vxᵀ and z = Uz·diag(Sz)·Vzᵀ (``torch.linalg.svd``'s Vh is Vᵀ, so V's
"rows" below are Vh's rows). Algorithm 1 reverses z's vectors (coarse attributes sit low in
z's order at the earlier step) and blends them into the trailing vectors of x:
Û = [Ux[:, :k], (1−ρ)·Ux[:, k:] + ρ·rev(Uz)[:, :n−k]], V̂ likewise by rows. With the paper's
k = n/2 the blended block is rev(Uz)[:, :k] as printed; for other k it takes n − k vectors so the
shapes agree.
"""
from __future__ import annotations

import torch


def channel_svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of every channel of a latent [..., C, H, W]: U [..., C, H, n], S [..., C, n], Vh [..., C, n, W]."""
    return torch.linalg.svd(x if x.dtype == torch.float64 else x.float(), full_matrices=False)


def compose(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
    """U·diag(S)·Vh per channel."""
    return (u * s.unsqueeze(-2)) @ vh


def check_pair(x: torch.Tensor, z: torch.Tensor, k: int, rho: float) -> int:
    """Validates the inputs of a merge; returns n = min(H, W)."""
    if x.shape != z.shape:
        raise ValueError(f"z: shape {list(z.shape)} differs from x's {list(x.shape)}; both latents must come from "
                         f"the same image size and model")
    if x.dim() < 3:
        raise ValueError(f"x: expected a latent [..., C, H, W], got shape {list(x.shape)}")
    n = min(x.shape[-2:])
    if not 1 <= k <= n - 1:
        raise ValueError(f"k: expected 1 … {n - 1} (min(H, W) − 1 for a {x.shape[-1]}×{x.shape[-2]} latent), got {k}")
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho: expected a value in [0, 1], got {rho}")
    return n


def integrate(x: torch.Tensor, z: torch.Tensor, k: int, rho: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1, lines 1–9: (Û, V̂ᵀ, Sx, Sz) for latents x and z of the same shape."""
    n = check_pair(x, z, k, rho)
    ux, sx, vhx = channel_svd(x)
    uz, sz, vhz = channel_svd(z)
    uz_rev, vhz_rev = uz.flip(-1), vhz.flip(-2)
    u_hat = torch.cat([ux[..., :k], (1 - rho) * ux[..., k:] + rho * uz_rev[..., :n - k]], dim=-1)
    vh_hat = torch.cat([vhx[..., :k, :], (1 - rho) * vhx[..., k:, :] + rho * vhz_rev[..., :n - k, :]], dim=-2)
    return u_hat, vh_hat, sx, sz


def merge(x: torch.Tensor, z: torch.Tensor, k: int, rho: float, singular_values: torch.Tensor | None = None
          ) -> torch.Tensor:
    """ŷ = Û·diag(S)·V̂ (line 10), with S predicted by Φ or, without one, x's own singular values."""
    u_hat, vh_hat, sx, _ = integrate(x, z, k, rho)
    s = sx if singular_values is None else singular_values.to(sx)
    return compose(u_hat, s, vh_hat).to(x.dtype)


def grassmann_distance(a: torch.Tensor, b: torch.Tensor, rank: int) -> torch.Tensor:
    """Geodesic distance on the Grassmannian between the top-``rank`` left singular subspaces of
    a and b, per channel: sqrt(Σ θᵢ²) over the principal angles θ (paper 003 §4.3)."""
    # float64: arccos near 1 turns float32 rounding into angles of 1e-3
    ua, ub = channel_svd(a.double())[0][..., :rank], channel_svd(b.double())[0][..., :rank]
    cosines = torch.linalg.svdvals(ua.transpose(-1, -2) @ ub).clamp(-1.0, 1.0)
    return torch.arccos(cosines).pow(2).sum(-1).sqrt()
