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


class PCARecorder:
    """Feeds the bottleneck h of the cond rows into one StreamingPCA per model timestep, as
    ``hspace_clone``'s recorder. Rows are buffered per timestep only until a first fit is
    possible, so memory does not grow with the number of samples."""

    def __init__(self, n_components: int, min_batch: int = 0):
        self.n_components = n_components
        self.min_batch = max(n_components, min_batch)
        self.pcas: dict[float, StreamingPCA] = {}
        self.pending: dict[float, list[torch.Tensor]] = {}
        self.h_shape: tuple[int, ...] | None = None

    def record(self, h: torch.Tensor, row_timesteps: torch.Tensor, row_chunks: torch.Tensor) -> None:
        self.h_shape = tuple(h.shape[1:])
        keep = (row_chunks == 0).to(h.device)
        for t in row_timesteps[row_chunks == 0].unique().tolist():
            rows = h[keep & (row_timesteps == t).to(h.device)].reshape(-1, h[0].numel())
            t = round(float(t), 3)
            pending = self.pending.setdefault(t, [])
            pending.append(rows.detach().double())
            if sum(len(p) for p in pending) >= self.min_batch:
                self.pcas.setdefault(t, StreamingPCA(self.n_components)).partial_fit(torch.cat(pending))
                pending.clear()

    def finish(self) -> None:
        for t, pending in self.pending.items():
            if pending and (t in self.pcas or sum(len(p) for p in pending) >= self.n_components):
                self.pcas.setdefault(t, StreamingPCA(self.n_components)).partial_fit(torch.cat(pending))
            pending.clear()
        if not self.pcas:
            raise ValueError(f"n_components: {self.n_components} is more than the samples recorded per timestep")

    def directions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vectors [k, T, C, H, W], timesteps [T] high to low, explained-variance ratios [k, T]).
        Direction k is the k-th principal component at every timestep, scaled to one standard
        deviation, with its sign chosen to agree with the previous timestep's."""
        self.finish()
        timesteps = sorted(self.pcas, reverse=True)
        vectors, ratios, previous = [], [], None
        for t in timesteps:
            pca = self.pcas[t]
            comps = pca.components.clone()
            if previous is None:
                signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))).squeeze(1)
            else:
                signs = torch.sign((comps * previous).sum(1))
            comps *= torch.where(signs == 0, 1.0, signs).to(comps)[:, None]
            previous = comps
            vectors.append(comps * pca.explained_variance.sqrt()[:, None])
            ratios.append(pca.explained_variance_ratio)
        stacked = torch.stack(vectors, dim=1).float()  # [k, T, d]
        k, T = stacked.shape[:2]
        return stacked.reshape(k, T, *self.h_shape), torch.tensor(timesteps), torch.stack(ratios, 1).float()
