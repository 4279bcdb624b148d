"""What the HSpace Hook and Invert Image record of the bottleneck h while ComfyUI samples
(called by the patch of ``host.patch.hspace_clone`` as ``record(h, row_timesteps, row_chunks)``):
``HSpaceRecorder`` keeps every h, ``HSpaceActivations`` keeps running statistics per model
timestep (mean, streaming PCA), so its memory does not grow with the number of samples."""
from __future__ import annotations

import torch

from .pca import StreamingPCA


class HSpaceRecorder:
    """Keeps every bottleneck h seen during sampling, with its model timestep and chunk
    (0 = cond, 1 = uncond), on ``device`` (ComfyUI's intermediate device)."""

    def __init__(self, device: torch.device | str = "cpu", chunks: tuple[int, ...] = (0, 1)):
        self.device = device
        self.chunks = chunks
        self.records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def record(self, h: torch.Tensor, row_timesteps: torch.Tensor, row_chunks: torch.Tensor) -> None:
        keep = torch.isin(row_chunks, torch.tensor(self.chunks, device=row_chunks.device))
        if keep.any():
            k = keep.to(h.device)
            self.records.append((h[k].detach().float().to(self.device), row_timesteps[keep].cpu(),
                                 row_chunks[keep].cpu()))

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h [N, C, H, W], timesteps [N], chunks [N]) over all calls so far."""
        return tuple(torch.cat(x) for x in zip(*self.records))  # type: ignore[return-value]


class HSpaceActivations:
    """HSPACE_ACTIVATIONS: what the HSpace Hook records of the bottleneck h of the cond rows,
    per model timestep, at the first model evaluation of each timestep in each batch:

    - always a running mean (and the mean starting noise);
    - with ``components`` > 0 a StreamingPCA of the top components;
    - with ``keep_samples`` every sample's h trajectory and noise (memory grows with the
      number of samples; needed to pick samples afterwards, e.g. by a classifier's scores).

    Incoming rows wait on ``storage_device`` (ComfyUI's intermediate device) only until a batch
    of ``min_batch`` is there; PCA updates run on ``compute_device``."""

    def __init__(self, components: int = 0, min_batch: int = 0, keep_samples: bool = False,
                 storage_device: torch.device | str = "cpu", compute_device: torch.device | str = "cpu"):
        if components < 0:
            raise ValueError(f"components: expected ≥ 0, got {components}")
        self.n_components, self.keep_samples = components, keep_samples
        self.min_batch = max(components, min_batch)
        self.storage_device, self.compute_device = storage_device, compute_device
        self.pcas: dict[float, StreamingPCA] = {}
        self.pending: dict[float, list[torch.Tensor]] = {}
        self.sums: dict[float, torch.Tensor] = {}
        self.counts: dict[float, int] = {}
        self.per_sample: dict[float, list[tuple[int, torch.Tensor]]] = {}
        self.noises: list[torch.Tensor] = []
        self.noise_sum: torch.Tensor | None = None
        self.noise_count = 0
        self.h_shape: tuple[int, ...] | None = None
        self.batch_start = 0
        self._seen: set[tuple[int, float]] = set()
        self.parameters: dict = {}  # how the activations were recorded, for the directions' metadata

    def begin_batch(self, start: int, noise: torch.Tensor | None = None) -> None:
        """Called before each batch: the index of its first sample (and its starting noise)."""
        self.batch_start = start
        if noise is not None:
            self.add_noise(noise)

    def add_noise(self, noise: torch.Tensor) -> None:
        """The starting noise of the current batch (after the batch, for inversion)."""
        noise = noise.detach().to(self.storage_device, torch.float64)
        self.noise_sum = noise.sum(0) if self.noise_sum is None else self.noise_sum + noise.sum(0)
        self.noise_count += noise.shape[0]
        if self.keep_samples:
            self.noises.append(noise.float())

    def record(self, h: torch.Tensor, row_timesteps: torch.Tensor, row_chunks: torch.Tensor) -> None:
        self.h_shape = tuple(h.shape[1:])
        keep = (row_chunks == 0).to(h.device)
        for t in row_timesteps[row_chunks == 0].unique().tolist():
            t = round(float(t), 3)
            if (self.batch_start, t) in self._seen:  # a second evaluation at the same timestep (e.g. Heun)
                continue
            self._seen.add((self.batch_start, t))
            rows = h[keep & (row_timesteps == t).to(h.device)].reshape(-1, h[0].numel()).detach()
            rows = rows.to(self.storage_device, torch.float64)
            self.sums[t] = rows.sum(0) + self.sums.get(t, 0)
            self.counts[t] = self.counts.get(t, 0) + rows.shape[0]
            if self.keep_samples:
                self.per_sample.setdefault(t, []).append((self.batch_start, rows.float()))
            if self.n_components:
                pending = self.pending.setdefault(t, [])
                pending.append(rows)
                if sum(len(p) for p in pending) >= self.min_batch:
                    self._fit(t)

    def _fit(self, t: float) -> None:
        batch = torch.cat(self.pending[t]).to(self.compute_device)
        self.pcas.setdefault(t, StreamingPCA(self.n_components)).partial_fit(batch)
        self.pending[t].clear()

    def finish(self) -> "HSpaceActivations":
        """Fits what is still waiting and moves the state to the storage device."""
        if not self.counts:
            raise ValueError("activations: nothing was recorded (no UNet call reached the bottleneck)")
        for t, pending in self.pending.items():
            if pending and (t in self.pcas or sum(len(p) for p in pending) >= self.n_components):
                self._fit(t)
            pending.clear()
        if self.n_components and not self.pcas:
            raise ValueError(f"components: {self.n_components} is more than the samples recorded per timestep")
        for pca in self.pcas.values():
            pca.mean, pca.components, pca.singular_values = (
                x.to(self.storage_device) for x in (pca.mean, pca.components, pca.singular_values))
        return self

    @property
    def n_samples(self) -> int:
        return min(self.counts.values())

    @property
    def timesteps(self) -> torch.Tensor:
        """Recorded model timesteps, high to low."""
        return torch.tensor(sorted(self.counts, reverse=True))

    def means(self) -> torch.Tensor:
        """Mean h per timestep [T, C, H, W], timesteps high to low."""
        return torch.stack([self.sums[t] / self.counts[t] for t in self.timesteps.tolist()]).reshape(
            -1, *self.h_shape)

    def mean_noise(self) -> torch.Tensor:
        return self.noise_sum / self.noise_count

    def trajectories(self) -> torch.Tensor:
        """Every sample's h [N, T, C, H, W] (timesteps high to low); needs ``keep_samples``."""
        if not self.keep_samples:
            raise ValueError("activations: per-sample trajectories were not kept; record with keep_samples on")
        per_t = []
        for t in self.timesteps.tolist():
            parts = sorted(self.per_sample[t], key=lambda p: p[0])
            per_t.append(torch.cat([rows for _, rows in parts]))
        n = min(len(x) for x in per_t)
        return torch.stack([x[:n] for x in per_t], 1).reshape(n, len(per_t), *self.h_shape)

    def sample_noises(self) -> torch.Tensor:
        """Every sample's starting noise [N, C, H, W]; needs ``keep_samples``."""
        if not self.keep_samples:
            raise ValueError("activations: per-sample noises were not kept; record with keep_samples on")
        return torch.cat(self.noises)

    def directions(self, n_components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vectors [k, T, C, H, W], timesteps [T] high to low, explained-variance ratios [k, T]).
        Direction k is the k-th principal component at every timestep, scaled to one standard
        deviation, with its sign chosen to agree with the previous timestep's."""
        self.finish()
        if not self.pcas or not 1 <= n_components <= self.n_components:
            raise ValueError(f"n_components: expected 1 … {self.n_components} (the HSpace Hook kept "
                             f"{self.n_components} components), got {n_components}")
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
