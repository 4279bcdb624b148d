"""Attribute Vector Integration (paper 003, §3.2, Algorithm 1): channel-wise SVD of two latents,
the integration of their singular vectors, the singular-value network Φ and its training, the
singular-value edits of §4.1 and the Grassmann distance of §4.3. Torch only.

Per channel, x = Ux·diag(Sx)·Vxᵀ and z = Uz·diag(Sz)·Vzᵀ (``torch.linalg.svd``'s Vh is Vᵀ, so V's
"rows" below are Vh's rows). z's top vectors, in reversed order, are blended into the trailing
vectors of x: Û = [Ux[:, :k], (1−ρ)·Ux[:, k:] + ρ·rev(Uz[:, :n−k])], V̂ likewise by rows; with the
paper's k = n/2 that is §3.2.1's Û = [Ux[:, :k], U'z[:, :k]]. Algorithm 1 as printed reverses first
and then takes the first k, i.e. z's *smallest* vectors; on the embedded model that version moves
no attribute (smile hit rate 0.52 → 0.54 at ρ = 1) while the text's does (→ 0.79), and Φ's
‖ŷ − z‖² can only be met when z's leading vectors are in Û, so the text's reading is the one built.

The paper's latents are variance-preserving (√ᾱ·x0 + √(1−ᾱ)·ε, RMS ≈ 1 at every step); ComfyUI's
carry σ-scaled noise (x0 + σ·ε). ``merge_latents`` and ``train_phi`` therefore bring each latent to
unit RMS before the SVD and give the merged latent x's RMS back, so it continues at x's noise level.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .files import read_safetensors, write_safetensors

PHI_FORMAT = "comfy-hspace avi phi"
LOSS_WEIGHTS = (3.0, 10.0, 10.0, 10.0)  # λ1 … λ4, paper §5


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
    uz_top, vhz_top = uz[..., :n - k].flip(-1), vhz[..., :n - k, :].flip(-2)
    u_hat = torch.cat([ux[..., :k], (1 - rho) * ux[..., k:] + rho * uz_top], dim=-1)
    vh_hat = torch.cat([vhx[..., :k, :], (1 - rho) * vhx[..., k:, :] + rho * vhz_top], dim=-2)
    return u_hat, vh_hat, sx, sz


def merge(x: torch.Tensor, z: torch.Tensor, k: int, rho: float, singular_values: torch.Tensor | None = None
          ) -> torch.Tensor:
    """ŷ = Û·diag(S)·V̂ (line 10), with S predicted by Φ or, without one, x's own singular values."""
    u_hat, vh_hat, sx, _ = integrate(x, z, k, rho)
    s = sx if singular_values is None else singular_values.to(sx)
    return compose(u_hat, s, vh_hat).to(x.dtype)


def unit_rms(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latent ÷ its RMS, the RMS [B, 1, 1, 1]) per sample of a batch [B, C, H, W]."""
    rms = latent.float().pow(2).mean(dim=(-3, -2, -1), keepdim=True).sqrt().clamp_min(1e-12)
    return latent.float() / rms, rms


class SingularValueNet(nn.Module):
    """Φ (§3.2.2, §5): per latent channel, the flattened H×W channel → three linear + ReLU layers
    → two one-layer branches, S (the singular values for Û, V̂) and the correction Δs (S + Δs ≈ Sx).
    The paper's SD2.1 net: 64×64 channels, width 4096 (= H·W), 64 singular values."""

    def __init__(self, height: int, width: int, hidden: int = 0):
        super().__init__()
        self.height, self.width = height, width
        self.hidden = hidden or height * width
        n = min(height, width)
        self.body = nn.Sequential(nn.Linear(height * width, self.hidden), nn.ReLU(),
                                  nn.Linear(self.hidden, self.hidden), nn.ReLU(),
                                  nn.Linear(self.hidden, self.hidden), nn.ReLU())
        self.values = nn.Linear(self.hidden, n)
        self.correction = nn.Linear(self.hidden, n)

    def check(self, latent: torch.Tensor, what: str = "x") -> None:
        if tuple(latent.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"phi: trained for {self.width}×{self.height} latents, but {what} is "
                             f"{latent.shape[-1]}×{latent.shape[-2]}; train Φ on pairs of this size")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, Δs), each [..., C, n], for a unit-RMS latent x [..., C, H, W]."""
        self.check(x)
        features = self.body(x.flatten(-2))
        return self.values(features), self.correction(features)


def phi_losses(phi: SingularValueNet, x: torch.Tensor, z: torch.Tensor, k: int, rho: float = 1.0
               ) -> dict[str, torch.Tensor]:
    """The four terms of the objective for unit-RMS pairs (Algorithm 1 in its training stage):
    ‖ŷ − z‖², ‖ỹ − x‖² with ỹ = rev(Û)·(S + Δs)·rev(V̂), ‖S − Sz‖², ‖S + Δs − Sx‖² (means)."""
    u_hat, vh_hat, sx, sz = integrate(x, z, k, rho)
    s, ds = phi(x)
    y_hat = compose(u_hat, s, vh_hat)
    y_tilde = compose(u_hat.flip(-1), s + ds, vh_hat.flip(-2))
    return {"target": F.mse_loss(y_hat, z), "original": F.mse_loss(y_tilde, x),
            "values": F.mse_loss(s, sz), "correction": F.mse_loss(s + ds, sx)}


@torch.inference_mode(False)  # ComfyUI runs nodes in inference mode, where nothing could be trained
def train_phi(x: torch.Tensor, z: torch.Tensor, k: int, *, epochs: int = 5, batch_size: int = 256,
              learning_rate: float = 1e-3, weights: tuple[float, float, float, float] = LOSS_WEIGHTS,
              hidden: int = 0, seed: int = 0, rho: float = 1.0, device: torch.device | str = "cpu",
              progress: Callable[[int, int, dict[str, float]], None] | None = None
              ) -> tuple[SingularValueNet, list[dict[str, float]]]:
    """Trains Φ with Adam on N pairs (x_i at Tx under the original conditioning, z_i at Tx + Δτ under
    the target one), batches [N, C, H, W] in ComfyUI's scale. Returns Φ (on the CPU, in eval mode)
    and the mean losses of every epoch. ``progress(step, total, losses)`` after each update."""
    check_pair(x, z, k, rho)
    if x.dim() != 4:
        raise ValueError(f"x: expected a batch of latents [N, C, H, W], got shape {list(x.shape)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size: expected ≥ 1, got {epochs} and {batch_size}")
    x, z = unit_rms(x.clone())[0], unit_rms(z.clone())[0]  # clones: normal tensors, not inference ones
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        phi = SingularValueNet(x.shape[-2], x.shape[-1], hidden)
    phi = phi.to(device).train()
    optimizer = torch.optim.Adam(phi.parameters(), lr=learning_rate)
    order = torch.Generator().manual_seed(seed)
    per_epoch = -(-x.shape[0] // batch_size)
    history = []
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        for b, rows in enumerate(torch.randperm(x.shape[0], generator=order).split(batch_size)):
            parts = phi_losses(phi, x[rows].to(device), z[rows].to(device), k, rho)
            loss = sum(w * v for w, v in zip(weights, parts.values()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            values = {name: v.item() for name, v in parts.items()} | {"loss": loss.item()}
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + v * len(rows)
            if progress is not None:
                progress(epoch * per_epoch + b + 1, epochs * per_epoch, values)
        history.append({name: v / x.shape[0] for name, v in sums.items()})
    return phi.cpu().eval().requires_grad_(False), history


def trailing_part(x: torch.Tensor, k: int) -> torch.Tensor:
    """x minus its rank-k approximation, per channel: what the merge takes away from x."""
    u, s, vh = channel_svd(x)
    return compose(u[..., k:], s[..., k:], vh[..., k:, :]).to(x.dtype)


def merge_latents(x: torch.Tensor, z: torch.Tensor, k: int, rho: float, phi: SingularValueNet | None = None,
                  keep_noise: bool = False, channels: list[int] | None = None) -> torch.Tensor:
    """y_pred for ComfyUI latents [B, C, H, W]: the merge of the unit-RMS latents with Φ's S (or x's
    own singular values without Φ), given x's RMS back. With ``keep_noise``, ρ times x's trailing
    part (x minus its rank-k approximation) is added back before the RMS: at Tx that part is mostly
    the noise the remaining steps expect, and without it the sample at ρ = 1 comes out grainy.
    ``channels``: merge only these channels; the others stay x's (None: all)."""
    check_pair(x, z, k, rho)
    if channels is not None and not all(0 <= c < x.shape[-3] for c in channels):
        raise ValueError(f"channels: expected indices 0 … {x.shape[-3] - 1} of the latent's channels, got {channels}")
    if phi is not None:
        phi.check(x)
    xn, rms = unit_rms(x)
    zn = unit_rms(z)[0]
    values = None
    if phi is not None:
        with torch.inference_mode():
            values = phi(xn.to(next(phi.parameters()).device))[0].cpu()
    merged = merge(xn, zn, k, rho, values)
    if keep_noise:
        merged = unit_rms(unit_rms(merged)[0] + rho * trailing_part(xn, k))[0]
    merged = (merged * rms).to(x.dtype)
    if channels is None:
        return merged
    kept = torch.ones(x.shape[-3], dtype=torch.bool)
    kept[channels] = False
    return torch.where(kept[:, None, None].to(x.device), x, merged)


def save_phi(phi: SingularValueNet, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Writes Φ as safetensors (shape and training settings in the metadata) via a ``.partial``
    file renamed into place, so a failed write leaves no half file."""
    meta = {"format": PHI_FORMAT, "height": str(phi.height), "width": str(phi.width), "hidden": str(phi.hidden),
            "info": json.dumps(info or {})}
    return write_safetensors(path, {k: v.contiguous() for k, v in phi.state_dict().items()}, meta)


def load_phi(path: str | os.PathLike) -> SingularValueNet:
    """Reads a Φ written by ``save_phi``; never unpickles anything."""
    tensors, meta = read_safetensors(path, "phi file", PHI_FORMAT, "an AVI Φ")
    try:
        phi = SingularValueNet(int(meta["height"]), int(meta["width"]), int(meta["hidden"]))
        phi.load_state_dict(tensors)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ValueError(f"phi file {path}: damaged ({e})") from None
    if not all(torch.isfinite(v).all() for v in tensors.values()):
        raise ValueError(f"phi file {path}: contains NaN or inf weights")
    return phi.eval().requires_grad_(False)


def scale_singular_values(latent: torch.Tensor, indices: list[int], scale: float) -> torch.Tensor:
    """§4.1: every channel's singular values at ``indices`` (0 = the largest) multiplied by ``scale``."""
    n = min(latent.shape[-2:])
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices: {bad} outside 0 … {n - 1} (a {latent.shape[-1]}×{latent.shape[-2]} latent "
                         f"has {n} singular values per channel)")
    u, s, vh = channel_svd(latent)
    factors = torch.ones(n, dtype=s.dtype)
    factors[indices] = scale
    return compose(u, s * factors, vh).to(latent.dtype)


def grassmann_distance(a: torch.Tensor, b: torch.Tensor, rank: int) -> torch.Tensor:
    """Geodesic distance on the Grassmannian between the top-``rank`` left singular subspaces of
    a and b, per channel: sqrt(Σ θᵢ²) over the principal angles θ (paper 003 §4.3)."""
    # float64: arccos near 1 turns float32 rounding into angles of 1e-3
    ua, ub = channel_svd(a.double())[0][..., :rank], channel_svd(b.double())[0][..., :rank]
    cosines = torch.linalg.svdvals(ua.transpose(-1, -2) @ ub).clamp(-1.0, 1.0)
    return torch.arccos(cosines).pow(2).sum(-1).sqrt()
