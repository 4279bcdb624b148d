"""The streaming PCA against scikit-learn's IncrementalPCA on the same data."""
import numpy as np
import pytest
import torch
from conftest import cancelled_at
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


def hook(pack, model, cond, **kw):
    inputs = dict(model=model, positive=cond, negative=cond, latent_image={"samples": torch.zeros(1, 3, 32, 32)},
                  n_samples=24, batch_size=8, components=3, seed=0, steps=4, cfg=1.0, sampler_name="ddim",
                  scheduler="ddim_uniform", latent_is_noise=False)
    return pack.nodes.HSpaceHook.execute(**{**inputs, **kw}).args[0]


def test_pca_directions_node_on_the_embedded_model(pack):
    """Streaming per-timestep PCA inside real ComfyUI sampling agrees with a PCA of all recorded h."""
    import comfy.sample

    from comfy_hspace.host import embedded
    from comfy_hspace.host.architectures import site_of
    from comfy_hspace.host.patch import hspace_clone
    from comfy_hspace.recorder import HSpaceRecorder

    model, _ = embedded.load_model()
    null = embedded.conditioning("null")
    activations = hook(pack, model, null)
    assert activations.n_samples == 24 and activations.h_shape == (96, 8, 8)
    d = pack.nodes.PCADirections.execute(activations=activations, n_components=3).args[0]
    assert d.vectors.shape == (3, 4, 96, 8, 8) and d.units == "std" and d.names == ["pc1", "pc2", "pc3"]
    assert torch.all(d.timesteps[:-1] > d.timesteps[1:])
    ratios = torch.tensor(d.parameters["explained_variance_ratio"])
    assert torch.all(ratios[0] >= ratios[1]) and torch.all(ratios[1] >= ratios[2])
    # signs agree between neighbouring timesteps
    flat = d.vectors.flatten(2)
    assert torch.all((flat[:, 1:] * flat[:, :-1]).sum(-1) > 0)

    # the same samples (seeds 0 … 23, one at a time) recorded in full: the top component per
    # timestep matches an offline SVD
    recorder = HSpaceRecorder(chunks=(0,))
    clone = hspace_clone(model, site_of(model), recorder=recorder)
    for seed in range(24):
        latent = torch.zeros(1, 3, 32, 32)
        comfy.sample.sample(clone, comfy.sample.prepare_noise(latent, seed), 4, 1.0, "ddim", "ddim_uniform", null,
                            null, latent, seed=seed, disable_pbar=True)
    h, t, _ = recorder.stacked()
    for i, ts in enumerate(d.timesteps.tolist()):
        x = h[(t - ts).abs() < 1e-3].flatten(1).double()
        _, s, vt = torch.linalg.svd(x - x.mean(0), full_matrices=False)
        cos = torch.nn.functional.cosine_similarity(vt[0], flat[0, i].double(), dim=0).abs()
        assert cos > 0.95, (ts, cos)  # a wrong row or timestep would give ≈ 0.01 in 6144 dimensions
        # one standard deviation; incremental PCA truncated to k components is approximate (≈1% here)
        assert torch.allclose(flat[0, i].double().norm(), s[0] / (len(x) - 1) ** 0.5, rtol=0.03)

    # the mean per timestep is the mean of the recorded h
    for ts, pca in activations.pcas.items():
        assert torch.allclose(pca.mean.float(), h[(t - ts).abs() < 1e-3].flatten(1).mean(0), atol=1e-4)


def test_hook_over_given_noises_and_bad_counts(pack):
    from comfy_hspace.host import embedded

    model, _ = embedded.load_model()
    null = embedded.conditioning("null")
    noises = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = hook(pack, model, null, latent_image={"samples": noises}, latent_is_noise=True, n_samples=999, batch_size=4,
             components=2, steps=3)
    b = hook(pack, model, null, latent_image={"samples": noises}, latent_is_noise=True, batch_size=6, components=2,
             steps=3)
    assert a.n_samples == 6 and len(a.pcas) == 3
    for ts in a.pcas:  # the same noises give the same statistics, whatever the batching
        assert torch.allclose(a.pcas[ts].mean, b.pcas[ts].mean, atol=1e-5)
    with pytest.raises(ValueError, match="components: 8 is more than the 6 samples"):
        hook(pack, model, null, latent_image={"samples": noises}, latent_is_noise=True, components=8)
    with pytest.raises(ValueError, match="n_components: expected 1 … 2"):
        pack.nodes.PCADirections.execute(activations=a, n_components=3)
    d = pack.nodes.PCADirections.execute(activations=a, n_components=2).args[0]
    assert d.parameters["n_samples"] == 6 and d.parameters["seed"] is None


def test_cancelled_hook_leaves_the_model_without_patches(pack):
    from comfy_hspace.host import embedded

    model, _ = embedded.load_model()
    null = embedded.conditioning("null")
    options = repr(model.model_options)

    with cancelled_at(5):  # in the second batch
        hook(pack, model, null)
    assert repr(model.model_options) == options and not model.model_options["transformer_options"].get("patches")


def test_hook_refuses_a_run_that_would_not_fit_in_memory_before_sampling(pack, tmp_path):
    """Keeping every h trajectory of a million samples would need far more disk than the machine has, and
    the million samples themselves more memory: the Hook says so, with the estimate and what to lower,
    before it samples anything."""
    from tiny_models import save_pixel_ddpm

    from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm

    model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "ddpm"))
    import comfy.utils

    def sampling_started(*args, **kw):
        raise RuntimeError("the Hook started sampling")

    null = [[torch.zeros(1, 1, 1), {}]]
    comfy.utils.set_progress_bar_global_hook(sampling_started)
    try:
        big = {"samples": torch.zeros(1, 3, 256, 256)}  # h 32×64×64: 5 TB of trajectories, 730 GiB of samples
        with pytest.raises(ValueError, match=r"n_samples: keeping every sample's h trajectory \(1000000 samples × "
                                             r"20 steps\) needs about \d+\.\d GiB on disk in .+, \d+\.\d GiB are "
                                             r"free there; lower n_samples or turn keep_samples off"):
            hook(pack, model, null, latent_image=big, n_samples=1_000_000, steps=20, keep_samples=True, components=0)
        with pytest.raises(ValueError, match=r"n_samples: keeping 1000000 samples needs about \d+\.\d GiB on cpu, "
                                             r"\d+\.\d GiB are free; lower n_samples$"):
            hook(pack, model, null, latent_image=big, n_samples=1_000_000, steps=20, keep_samples=False, components=0)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)


def test_recorder_keeps_rows_whose_timestep_is_not_whole():
    """A flow model's timestep is σ·1000, e.g. 501.99998 where a DDPM's is whole: every row is still
    counted, under the timestep rounded to 3 decimals."""
    from comfy_hspace.recorder import HSpaceActivations

    activations = HSpaceActivations(keep_samples=False)
    activations.begin_batch(0)
    for t in (951.99997, 900.958, 501.99998, 2.0):  # 900.958 is not a float32
        activations.record(torch.ones(4, 2, 1, 1) * t, torch.full((4,), t), torch.zeros(4, dtype=torch.long))
    activations.finish()
    assert activations.counts == {952.0: 4, 900.958: 4, 502.0: 4, 2.0: 4} and activations.n_samples == 4
    assert torch.allclose(activations.means()[:, 0, 0, 0].float(), torch.tensor([951.99997, 900.958, 501.99998, 2.0]),
                          rtol=0, atol=1e-3)
