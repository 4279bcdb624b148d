"""The streaming PCA against scikit-learn's IncrementalPCA on the same data."""
import numpy as np
import pytest
import torch
from sklearn.decomposition import IncrementalPCA

from comfy_hspace.pca import StreamingPCA


def principal_angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    qa, _ = np.linalg.qr(a.T)
    qb, _ = np.linalg.qr(b.T)
    return np.degrees(np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1)))


def test_matches_incremental_pca_of_scikit_learn():
    g = torch.Generator().manual_seed(0)
    d, k = 600, 5
    basis = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0].T
    scales = torch.tensor([10.0, 7.0, 5.0, 3.0, 2.0], dtype=torch.float64)
    data = (torch.randn(1000, k, generator=g, dtype=torch.float64) * scales) @ basis
    data += 0.3 * torch.randn(1000, d, generator=g, dtype=torch.float64) + 4.0
    ours, theirs = StreamingPCA(k), IncrementalPCA(n_components=k)
    for batch in data.split(100):
        ours.partial_fit(batch)
        theirs.partial_fit(batch.numpy())
    assert principal_angles_deg(ours.components.numpy(), theirs.components_).max() < 0.1
    assert np.allclose(ours.explained_variance.numpy(), theirs.explained_variance_, rtol=1e-6)
    assert np.allclose(ours.explained_variance_ratio.numpy(), theirs.explained_variance_ratio_, rtol=1e-6)
    assert np.allclose(ours.mean.numpy(), theirs.mean_)
    # and both find the planted subspace, up to the sampling error of the weakest direction
    # (≈ √(d·σ²/(n·λ₅)) = √(600·0.09/(1000·4)) rad ≈ 7°)
    angles = principal_angles_deg(ours.components.numpy(), basis.numpy())
    assert angles.max() < 10.0 and angles.min() < 2.0


def test_bad_component_counts_are_refused():
    with pytest.raises(ValueError, match="more than the first batch's 3 samples"):
        StreamingPCA(4).partial_fit(torch.randn(3, 10))
    with pytest.raises(ValueError, match="more than the h dimension 10"):
        StreamingPCA(12).partial_fit(torch.randn(20, 10))
