"""What the HSpace Hook and Invert Image record of the bottleneck h while ComfyUI samples
(called by the patch of ``host.patch.hspace_clone`` as ``record(h, row_timesteps, row_chunks)``):
``HSpaceRecorder`` keeps every h, ``HSpaceActivations`` keeps running statistics per model
timestep (mean, streaming PCA), so its memory does not grow with the number of samples; what it
keeps per sample (``keep_samples``) goes to a ``SampleFile`` on disk."""
from __future__ import annotations

import math
import os
import tempfile

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


class SampleFile:
    """Rows kept per sample (h at one timestep, a starting noise) in an anonymous temporary file, read back
    by sample index: keeping every sample costs disk, not memory. The file goes when the object does."""

    def __init__(self, directory: str | None = None):
        self.file = tempfile.TemporaryFile(dir=directory)
        self.size = 0
        self.chunks: dict[object, list[tuple[int, int, int]]] = {}  # key -> [(first sample, count, offset)]
        self.formats: dict[object, tuple[torch.dtype, tuple[int, ...]]] = {}  # key -> (dtype, row shape)

    def write(self, key: object, first_sample: int, rows: torch.Tensor, dtype: torch.dtype) -> None:
        data = rows.detach().to("cpu", dtype).contiguous()
        self.formats.setdefault(key, (dtype, tuple(data.shape[1:])))
        os.pwrite(self.file.fileno(), data.view(torch.uint8).numpy().tobytes(), self.size)
        self.chunks.setdefault(key, []).append((first_sample, data.shape[0], self.size))
        self.size += data.numel() * data.element_size()

    def count(self, key: object) -> int:
        return sum(n for _, n, _ in self.chunks.get(key, []))

    def read(self, key: object, samples: list[int]) -> torch.Tensor:
        """Rows of ``samples`` (in that order) [len(samples), …] as float32."""
        dtype, shape = self.formats[key]
        row_bytes = math.prod(shape) * dtype.itemsize
        out = torch.empty((len(samples), *shape), dtype=torch.float32)
        for j, i in enumerate(samples):
            first, _, offset = next(c for c in self.chunks[key] if c[0] <= i < c[0] + c[1])
            raw = os.pread(self.file.fileno(), row_bytes, offset + (i - first) * row_bytes)
            out[j] = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).float()
        return out


class HSpaceActivations:
    """HSPACE_ACTIVATIONS: what the HSpace Hook records of the bottleneck h of the cond rows,
    per model timestep, at the first model evaluation of each timestep in each batch:

    - always a running mean (and the mean starting noise);
    - with ``components`` > 0 a StreamingPCA of the top components;
    - with ``keep_samples`` every sample's h trajectory (half precision) and starting noise, in a
      file in ``spill_directory``, not in memory; needed to pick samples afterwards, e.g. by a
      classifier's scores.

    Incoming rows wait on ``storage_device`` (ComfyUI's intermediate device) only until a batch
    of ``min_batch`` is there; PCA updates run on ``compute_device``."""

    def __init__(self, components: int = 0, min_batch: int = 0, keep_samples: bool = False,
                 storage_device: torch.device | str = "cpu", compute_device: torch.device | str = "cpu",
                 spill_directory: str | None = None):
        if components < 0:
            raise ValueError(f"components: expected ≥ 0, got {components}")
        self.n_components = components
        self.min_batch = max(components, min_batch)
        self.storage_device, self.compute_device = storage_device, compute_device
        self.pcas: dict[float, StreamingPCA] = {}
        self.pending: dict[float, list[torch.Tensor]] = {}
        self.sums: dict[float, torch.Tensor] = {}
        self.counts: dict[float, int] = {}
        self.kept = SampleFile(spill_directory) if keep_samples else None
        self.noise_sum: torch.Tensor | None = None
        self.noise_count = 0
        self.h_shape: tuple[int, ...] | None = None
        self.batch_start = 0
        self._seen: set[tuple[int, float]] = set()
        self.parameters: dict = {}  # how the activations were recorded, for the directions' metadata
        # the schedule percent of each recorded timestep (high to low), set by whoever knows the model's
        # sampling; what gates by time reads it, since timesteps mean other things under other samplings
        self.percents: torch.Tensor | None = None

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
        if self.kept is not None:
            self.kept.write("noise", self.batch_start, noise, torch.float32)

    def record(self, h: torch.Tensor, row_timesteps: torch.Tensor, row_chunks: torch.Tensor) -> None:
        self.h_shape = tuple(h.shape[1:])
        keep = (row_chunks == 0).to(h.device)
        for exact in row_timesteps[row_chunks == 0].unique().tolist():
            t = round(float(exact), 3)  # the key; rows are picked by the exact value (σ·1000 need not be whole)
            if (self.batch_start, t) in self._seen:  # a second evaluation at the same timestep (e.g. Heun)
                continue
            self._seen.add((self.batch_start, t))
            rows = h[keep & (row_timesteps == exact).to(h.device)].reshape(-1, h[0].numel()).detach()
            rows = rows.to(self.storage_device, torch.float64)
            self.sums[t] = rows.sum(0) + self.sums.get(t, 0)
            self.counts[t] = self.counts.get(t, 0) + rows.shape[0]
            if self.kept is not None:
                self.kept.write(t, self.batch_start, rows, torch.float16)
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
        return torch.tensor(self._keys())

    def _keys(self) -> list[float]:
        """The recorded timesteps as the keys they are stored under (float32 would round 900.958), high to low."""
        return sorted(self.counts, reverse=True)

    def means(self) -> torch.Tensor:
        """Mean h per timestep [T, C, H, W], timesteps high to low."""
        return torch.stack([self.sums[t] / self.counts[t] for t in self._keys()]).reshape(
            -1, *self.h_shape)

    def mean_noise(self) -> torch.Tensor:
        return self.noise_sum / self.noise_count

    def trajectories(self, samples: list[int] | torch.Tensor | None = None) -> torch.Tensor:
        """The h of ``samples`` (default: all) [n, T, C, H, W] (timesteps high to low), read back from the
        file; needs ``keep_samples``."""
        kept = self._kept("trajectories")
        samples = self._samples(samples, self.n_samples)
        return torch.stack([kept.read(t, samples) for t in self._keys()], 1).reshape(
            len(samples), -1, *self.h_shape)

    def sample_noises(self, samples: list[int] | torch.Tensor | None = None) -> torch.Tensor:
        """The starting noise of ``samples`` (default: all) [n, C, H, W]; needs ``keep_samples``."""
        return self._kept("noises").read("noise", self._samples(samples, self.kept_noises))

    @property
    def kept_noises(self) -> int:
        """How many starting noises were kept; needs ``keep_samples``."""
        return self._kept("noises").count("noise")

    def _kept(self, what: str) -> SampleFile:
        if self.kept is None:
            raise ValueError(f"activations: per-sample {what} were not kept; record with keep_samples on")
        return self.kept

    @staticmethod
    def _samples(samples: list[int] | torch.Tensor | None, n: int) -> list[int]:
        samples = list(range(n)) if samples is None else [int(i) for i in samples]
        outside = [i for i in samples if not 0 <= i < n]
        if outside:
            raise ValueError(f"activations: sample {outside[0]} was not recorded (0 … {n - 1})")
        return samples

    def directions(self, n_components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vectors [k, T, C, H, W], timesteps [T] high to low, explained-variance ratios [k, T]).
        Direction k is the k-th principal component at every timestep, scaled to one standard
        deviation, with its sign chosen to agree with the previous timestep's."""
        self.finish()
        if not self.n_components:
            raise ValueError(f"activations: the HSpace Hook kept no principal components (its components is 0); "
                             f"set components to at least {max(n_components, 1)}")
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
