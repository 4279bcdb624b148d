"""Streaming PCA of h (paper 000 §IV-A): one incremental PCA per timestep, memory O(k·d)
whatever the number of samples. The update is the one of scikit-learn's IncrementalPCA
(Ross et al. 2008): the SVD of the current components scaled by their singular values, the
new centred batch and a mean-correction row. Runs in float64 on the device it is given.
``pca_directions`` turns what the HSpace Hook recorded (``recorder.HSpaceActivations``) into
PCA directions."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .directions import Directions

if TYPE_CHECKING:
    from .recorder import HSpaceActivations


class StreamingPCA:
    def __init__(self, n_components: int):
        if n_components < 1:
            raise ValueError(f"n_components: expected ≥ 1, got {n_components}")
        self.n_components = n_components
        self.n_seen = 0
        self.mean: torch.Tensor | None = None  # [d]
        self.components: torch.Tensor | None = None  # [k, d], rows orthonormal
        self.singular_values: torch.Tensor | None = None  # [k]
        self.total_sq = 0.0  # Σ‖x − mean‖², for the explained-variance ratio

    def partial_fit(self, x: torch.Tensor) -> "StreamingPCA":
        """Adds a batch [n, d] of vectorised h."""
        x = x.reshape(x.shape[0], -1).double()
        n, d = x.shape
        if self.n_seen == 0 and n < self.n_components:
            raise ValueError(f"n_components: {self.n_components} is more than the first batch's {n} samples")
        if self.n_components > d:
            raise ValueError(f"n_components: {self.n_components} is more than the h dimension {d}")
        batch_mean = x.mean(0)
        centred = x - batch_mean
        return self._fold_in(centred, n, batch_mean, centred.pow(2).sum().item())

    def merge(self, other: "StreamingPCA") -> "StreamingPCA":
        """Adds the samples another state saw, as one more update whose batch is the other's components
        scaled by their singular values (the same scatter about its mean)."""
        rows = other.singular_values.double()[:, None] * other.components.double()
        return self._fold_in(rows, other.n_seen, other.mean.double(), other.total_sq)

    def _fold_in(self, rows: torch.Tensor, n: int, mean: torch.Tensor, scatter: float) -> "StreamingPCA":
        """Ross et al.'s update with n samples of ``mean`` whose scatter about it is ``rows``ᵀ·``rows`` (trace
        ``scatter``): the SVD of the current scaled components, the rows and the mean-correction row."""
        if self.n_seen == 0:
            stacked, new_mean, self.total_sq = rows, mean, scatter
        else:
            total = self.n_seen + n
            new_mean = self.mean + (mean - self.mean) * (n / total)
            correction = ((self.n_seen * n / total) ** 0.5) * (self.mean - mean)
            stacked = torch.cat([self.singular_values[:, None] * self.components, rows, correction[None]])
            self.total_sq += scatter + correction.pow(2).sum().item()
        self.components, self.singular_values = _top_right_singular(stacked, self.n_components)
        self.mean, self.n_seen = new_mean, self.n_seen + n
        return self

    @property
    def explained_variance(self) -> torch.Tensor:
        return self.singular_values.pow(2) / max(self.n_seen - 1, 1)

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        return self.singular_values.pow(2) / self.total_sq


def _top_right_singular(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Vᵀ[:k], S[:k]) of a [m, d] matrix. With m < d (a batch of h is short and wide) through the
    eigendecomposition of the m×m Gram matrix: one matrix product instead of a full SVD, and in
    float64 exact enough for the leading components."""
    m, d = a.shape
    if m >= d:
        _, s, vt = torch.linalg.svd(a, full_matrices=False)
        return vt[:k], s[:k]
    eigenvalues, eigenvectors = torch.linalg.eigh(a @ a.T)
    top = eigenvalues.argsort(descending=True)[:k]
    s = eigenvalues[top].clamp_min(0).sqrt()
    vt = (eigenvectors[:, top].T @ a) / s.clamp_min(torch.finfo(a.dtype).tiny)[:, None]
    return vt, s


def pca_directions(activations: HSpaceActivations, n_components: int) -> Directions:
    """Paper 000 §IV-A: direction k = the k-th principal component of h at every timestep."""
    vectors, timesteps, ratios = activations.directions(n_components)
    parameters = {k: v for k, v in activations.parameters.items() if k != "model_fingerprint"}
    return Directions(vectors, timesteps, [f"pc{i + 1}" for i in range(n_components)], method="pca",
                      model_fingerprint=activations.parameters.get("model_fingerprint", ""), units="std",
                      parameters={**parameters, "explained_variance_ratio":
                                  [[round(v, 5) for v in r] for r in ratios.tolist()]})
