"""Streaming PCA of h (paper 000 §IV-A): one incremental PCA per timestep, memory O(k·d)
whatever the number of samples. The update is the one of scikit-learn's IncrementalPCA
(Ross et al. 2008): the SVD of the current components scaled by their singular values, the
new centred batch and a mean-correction row. Runs in float64 on the device it is given.

``HSpaceActivations`` is what the HSpace Hook fills while ComfyUI samples: per model timestep
a running mean and a streaming PCA of h. Memory O(T·k·d) whatever the number of samples."""
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
        k = self.n_components
        self.components, self.singular_values = _top_right_singular(stacked, k)
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


class HSpaceActivations:
    """HSPACE_ACTIVATIONS: running statistics of the bottleneck h of the cond rows, one
    StreamingPCA (mean, count, top ``components``) per model timestep, filled as
    ``hspace_clone``'s recorder. Incoming rows wait on ``storage_device`` (ComfyUI's
    intermediate device) only until a batch of ``min_batch`` is there; the update runs on
    ``compute_device``. Memory does not grow with the number of samples."""

    def __init__(self, components: int, min_batch: int = 0, storage_device: torch.device | str = "cpu",
                 compute_device: torch.device | str = "cpu"):
        if components < 1:
            raise ValueError(f"components: expected ≥ 1, got {components}")
        self.n_components = components
        self.min_batch = max(components, min_batch)
        self.storage_device, self.compute_device = storage_device, compute_device
        self.pcas: dict[float, StreamingPCA] = {}
        self.pending: dict[float, list[torch.Tensor]] = {}
        self.h_shape: tuple[int, ...] | None = None
        self.parameters: dict = {}  # how the activations were recorded, for the directions' metadata

    def record(self, h: torch.Tensor, row_timesteps: torch.Tensor, row_chunks: torch.Tensor) -> None:
        self.h_shape = tuple(h.shape[1:])
        keep = (row_chunks == 0).to(h.device)
        for t in row_timesteps[row_chunks == 0].unique().tolist():
            rows = h[keep & (row_timesteps == t).to(h.device)].reshape(-1, h[0].numel())
            t = round(float(t), 3)
            pending = self.pending.setdefault(t, [])
            pending.append(rows.detach().to(self.storage_device, torch.float64))
            if sum(len(p) for p in pending) >= self.min_batch:
                self._fit(t)

    def _fit(self, t: float) -> None:
        batch = torch.cat(self.pending[t]).to(self.compute_device)
        self.pcas.setdefault(t, StreamingPCA(self.n_components)).partial_fit(batch)
        self.pending[t].clear()

    def finish(self) -> "HSpaceActivations":
        """Fits what is still waiting and moves the state to the storage device."""
        for t, pending in self.pending.items():
            if pending and (t in self.pcas or sum(len(p) for p in pending) >= self.n_components):
                self._fit(t)
            pending.clear()
        if not self.pcas:
            raise ValueError(f"components: {self.n_components} is more than the samples recorded per timestep")
        for pca in self.pcas.values():
            pca.mean, pca.components, pca.singular_values = (
                x.to(self.storage_device) for x in (pca.mean, pca.components, pca.singular_values))
        return self

    @property
    def n_samples(self) -> int:
        return min(pca.n_seen for pca in self.pcas.values())

    def directions(self, n_components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vectors [k, T, C, H, W], timesteps [T] high to low, explained-variance ratios [k, T]).
        Direction k is the k-th principal component at every timestep, scaled to one standard
        deviation, with its sign chosen to agree with the previous timestep's."""
        self.finish()
        if not 1 <= n_components <= self.n_components:
            raise ValueError(f"n_components: expected 1 … {self.n_components} (the components the HSpace Hook "
                             f"kept), got {n_components}")
        timesteps = sorted(self.pcas, reverse=True)
        vectors, ratios, previous = [], [], None
        for t in timesteps:
            pca = self.pcas[t]
            comps = pca.components[:n_components].clone()
            if previous is None:
                signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))).squeeze(1)
            else:
                signs = torch.sign((comps * previous).sum(1))
            comps *= torch.where(signs == 0, 1.0, signs).to(comps)[:, None]
            previous = comps
            vectors.append(comps * pca.explained_variance[:n_components].sqrt()[:, None])
            ratios.append(pca.explained_variance_ratio[:n_components])
        stacked = torch.stack(vectors, dim=1).float()  # [k, T, d]
        k, T = stacked.shape[:2]
        return stacked.reshape(k, T, *self.h_shape), torch.tensor(timesteps), torch.stack(ratios, 1).float()
