"""Streaming PCA of h (paper 000 §IV-A): one incremental PCA per timestep, memory O(k·d)
whatever the number of samples. The update is the one of scikit-learn's IncrementalPCA
(Ross et al. 2008): the SVD of the current components scaled by their singular values, the
new centred batch and a mean-correction row. Runs in float64 on whatever device h is on."""
from __future__ import annotations

import torch


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
        if self.n_seen == 0:
            stacked, new_mean = centred, batch_mean
            self.total_sq = centred.pow(2).sum().item()
        else:
            total = self.n_seen + n
            new_mean = self.mean + (batch_mean - self.mean) * (n / total)
            correction = ((self.n_seen * n / total) ** 0.5) * (self.mean - batch_mean)
            stacked = torch.cat([self.singular_values[:, None] * self.components, centred, correction[None]])
            self.total_sq += centred.pow(2).sum().item() + correction.pow(2).sum().item()
        _, s, vt = torch.linalg.svd(stacked, full_matrices=False)
        k = self.n_components
        self.components, self.singular_values = vt[:k], s[:k]
        self.mean, self.n_seen = new_mean, self.n_seen + n
        return self

    @property
    def explained_variance(self) -> torch.Tensor:
        return self.singular_values.pow(2) / max(self.n_seen - 1, 1)

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        return self.singular_values.pow(2) / self.total_sq
