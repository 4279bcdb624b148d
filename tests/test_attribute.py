"""Supervised directions: mean differences, disentangling, inversion and the nodes around them."""
import pytest
import torch

from comfy_hspace import directions as D
from comfy_hspace.attribute import (
    attribute_direction,
    disentangle,
    disentangle_directions,
    mean_difference,
    score_regression,
    top_and_bottom,
)
from comfy_hspace.directions import TIME_INVARIANT


def test_mean_difference_and_top_bottom():
    pos, neg = torch.randn(5, 3, 4) + 2, torch.randn(7, 3, 4)
    assert torch.allclose(mean_difference(pos, neg), pos.double().mean(0) - neg.double().mean(0))
    top, bottom = top_and_bottom(torch.tensor([0.1, 0.9, 0.5, 0.7, 0.2]), 2)
    assert set(top.tolist()) == {1, 3} and set(bottom.tolist()) == {0, 4}
    with pytest.raises(ValueError, match="negative: the set is empty"):
        mean_difference(pos, neg[:0])
    with pytest.raises(ValueError, match="count: expected 2 … 2"):
        top_and_bottom(torch.rand(5), 3)
    with pytest.raises(ValueError, match="count: expected 2 … 3 \\(at least two positives and two negatives"):
        top_and_bottom(torch.rand(6), 1)


def test_score_regression_holds_the_other_scores_fixed():
    # rows move with `a` along u and with `b` along v; a and b are correlated (like glasses and
    # blond), so the top-vs-bottom mean difference of `a` carries v too, the regression does not
    g = torch.Generator().manual_seed(0)
    n = 4000
    a = torch.randn(n, generator=g, dtype=torch.float64)
    b = -0.7 * a + 0.7 * torch.randn(n, generator=g, dtype=torch.float64)
    u, v = torch.zeros(2, 3, 8, dtype=torch.float64), torch.zeros(2, 3, 8, dtype=torch.float64)
    u[:, 0], v[:, 1] = 1.0, 1.0
    rows = a[:, None, None, None] * u + b[:, None, None, None] * v + 0.1 * torch.randn(n, 2, 3, 8, generator=g)
    scores = torch.stack([2.0 * a + 5.0, b], 1)  # scale and offset do not matter
    w = score_regression(lambda index: rows[index], scores, 0, count=400)
    top, bottom = top_and_bottom(a, 400)
    gap = a[top].mean() - a[bottom].mean()
    assert torch.allclose(w, gap * u, atol=0.02 * gap)
    plain = mean_difference(rows[top], rows[bottom])
    assert plain[0, 1, 0] < -0.3 * gap  # the plain difference also moves b
    with pytest.raises(ValueError, match="scores: a regression on 2 scores needs at least 4 samples, got 3"):
        score_regression(lambda index: rows[index], scores[:3], 0, count=1)
    with pytest.raises(ValueError, match="scores: column 1 is the same for every sample"):
        score_regression(lambda index: rows[index], torch.stack([a, torch.ones(n)], 1), 1, count=10)


def test_disentangle_is_the_joint_projection():
    g = torch.Generator().manual_seed(0)
    others = torch.randn(3, 2, 50, generator=g, dtype=torch.float64)
    primary = torch.randn(2, 50, generator=g, dtype=torch.float64)
    out = disentangle(primary, others)
    for t in range(2):
        w = others[:, t].T
        assert torch.allclose(out[t], primary[t] - w @ torch.linalg.solve(w.T @ w, w.T @ primary[t]))
        assert (others[:, t] @ out[t]).abs().max() < 1e-10  # orthogonal to every other direction
    # one after another (Gram–Schmidt without re-orthogonalising) would not be orthogonal to all
    sequential = primary[0].clone()
    for k in range(3):
        o = others[k, 0]
        sequential -= (sequential @ o) / (o @ o) * o
    assert (others[:, 0] @ sequential).abs().max() > 1e-3
    late_only = primary.clone()
    late_only[0] = 0  # a direction that acts from half the schedule on
    out = disentangle(late_only, others)
    assert out[0].abs().max() == 0 and (others[:, 1] @ out[1]).abs().max() < 1e-10
    with pytest.raises(ValueError, match="primary: at timestep index 0 it lies inside the span"):
        disentangle((2 * others[0] - others[2]), others)


def test_disentangle_directions_refuse_other_models_and_spaces():
    a = D.Directions(torch.randn(1, 2, 4, 2, 2), torch.tensor([900.0, 100.0]), ["a"], model_fingerprint="m1")
    b = D.Directions(torch.randn(2, 1, 4, 2, 2), torch.tensor([TIME_INVARIANT]), ["b", "c"], model_fingerprint="m1")
    out = disentangle_directions(a, b)
    assert out.names == ["a ⊥ b, c"] and out.vectors.shape == a.vectors.shape
    assert (out.vectors[0].flatten(1) @ b.vectors[:, 0].flatten(1).T).abs().max() < 1e-5
    with pytest.raises(D.DirectionsError, match="others: found on another model"):
        disentangle_directions(a, D.Directions(b.vectors, b.timesteps, b.names, model_fingerprint="m2"))
    with pytest.raises(D.DirectionsError, match="others: lives in x_T"):
        disentangle_directions(a, D.Directions(b.vectors, b.timesteps, b.names, model_fingerprint="m1", space="x_T"))


@pytest.fixture(scope="module")
def faces_model(pack):
    from comfy_hspace.host import embedded

    return embedded.load_model()


def labels(pack, text):
    return pack.nodes.FaceLabels.execute(labels=text).args[0]


def hook(pack, model, cond, **kw):
    inputs = dict(model=model, positive=cond, negative=cond, latent_image={"samples": torch.zeros(1, 3, 32, 32)},
                  n_samples=16, batch_size=8, components=0, seed=0, steps=6, cfg=1.0, sampler_name="ddim",
                  scheduler="ddim_uniform", latent_is_noise=False, keep_samples=False)
    return pack.nodes.HSpaceHook.execute(**{**inputs, **kw}).args


def test_attribute_direction_from_scores_and_from_a_label_pair(pack, faces_model):
    model, vae = faces_model
    null = labels(pack, "null")
    activations, samples = hook(pack, model, null, keep_samples=True)
    images = vae.decode(samples["samples"])
    scores = pack.nodes.FaceScores.execute(images=images).args[0]
    node = pack.nodes.AttributeDirection
    d = node.execute(activations=activations, scores=scores, attribute="smile", count=4, space="h",
                     method="mean difference", start_percent=0.0).args[0]
    T = len(activations.timesteps)  # ddim_uniform may give one more point than steps
    assert d.vectors.shape == (1, T, 96, 8, 8) and d.names == ["smile"] and d.units == "mean difference"
    # by hand: the top and bottom four samples' recorded trajectories
    column = scores["names"].index("smile")
    smile = scores["values"][:, column]
    order = smile.argsort(descending=True)
    h = activations.trajectories()
    assert torch.allclose(d.vectors[0], (h[order[:4]].mean(0) - h[order[-4:]].mean(0)).float(), atol=1e-5)
    # the default method by hand: least squares of h on all standardised scores, smile's coefficient × its
    # top-bottom gap; here acting from half the schedule on
    fitted = node.execute(activations=activations, scores=scores, attribute="smile", count=4, space="h",
                          start_percent=0.5).args[0]
    z = scores["values"].double()
    z = (z - z.mean(0)) / z.std(0)
    design = torch.cat([torch.ones(len(z), 1, dtype=torch.float64), z], 1)
    beta = torch.linalg.lstsq(design, h.flatten(1).double()).solution[1 + column]
    gap = z[order[:4], column].mean() - z[order[-4:], column].mean()
    assert fitted.parameters["method"] == "regression" and fitted.parameters["start_percent"] == 0.5
    late = activations.timesteps <= 499.5  # acts from half the schedule on, zero before
    assert late.any() and not late.all()
    assert fitted.vectors[0, ~late].abs().max() == 0
    expected = (beta * gap).reshape(T, -1)[late].float()
    assert torch.allclose(fitted.vectors[0, late].flatten(1), expected, atol=1e-4 * expected.abs().max().item())
    with pytest.raises(ValueError, match="start_percent: no recorded timestep lies after 0.9999"):
        attribute_direction(activations, scores=scores["values"], count=4, column=column, start_percent=0.9999)
    x_t = node.execute(activations=activations, scores=scores, attribute="smile", count=4, space="x_T").args[0]
    assert x_t.space == "x_T" and x_t.vectors.shape == (1, 1, 3, 32, 32)

    pos, _ = hook(pack, model, labels(pack, "smile"))
    neg, _ = hook(pack, model, labels(pack, ""))
    pair = node.execute(activations=pos, negative=neg, attribute="smile", count=1, space="h",
                        start_percent=0.0).args[0]
    assert torch.allclose(pair.vectors[0], (pos.means() - neg.means()).float())
    with pytest.raises(ValueError, match="same seeds starts from the same noise"):
        node.execute(activations=pos, negative=neg, attribute="smile", count=1, space="x_T")
    with pytest.raises(ValueError, match="attribute: 'moustache' is not among the scores"):
        node.execute(activations=activations, scores=scores, attribute="moustache", count=4, space="h")
    with pytest.raises(ValueError, match="per-sample noises were not kept; record with keep_samples on"):
        node.execute(activations=pos, scores=scores, attribute="smile", count=4, space="h")
    with pytest.raises(ValueError, match="connect scores"):
        node.execute(activations=pos, attribute="smile", count=4, space="h")
    small, _ = hook(pack, model, labels(pack, ""), latent_image={"samples": torch.zeros(1, 3, 16, 16)})
    with pytest.raises(ValueError, match="images of different sizes"):
        node.execute(activations=pos, negative=small, attribute="smile", count=1, space="h")


def test_inversion_gives_the_image_back_and_edits_start_from_it(pack, faces_model):
    model, vae = faces_model
    null = labels(pack, "null")
    images = pack.nodes.FaceImages.execute(count=2, seed=3, factors="smile=1").args[0]
    noise, activations = pack.nodes.InvertImage.execute(model=model, vae=vae, images=images, positive=null,
                                                        negative=null, steps=30, cfg=1.0, scheduler="ddim_uniform",
                                                        batch_size=2, keep_samples=True).args
    assert activations.n_samples == 2 and torch.allclose(activations.sample_noises(), noise["samples"])
    d = D.Directions(torch.zeros(1, 1, 96, 8, 8), torch.tensor([TIME_INVARIANT]), ["zero"])
    inputs = dict(model=model, positive=null, negative=null, latent_image={"samples": torch.zeros(2, 3, 32, 32)},
                  directions=d, seed=0, steps=30, cfg=1.0, sampler_name="ddim", scheduler="ddim_uniform",
                  strengths="1", sweep="", start_percent=0.0, end_percent=1.0, apply_to="both", mode="both terms",
                  eta=0.0, denoise=1.0, noise=noise)
    out = pack.nodes.EditedSampler.execute(**inputs).args[0]
    mse = ((vae.decode(out["samples"]) - images) ** 2).mean(dim=(1, 2, 3))
    psnr = 10 * torch.log10(1 / mse)
    assert psnr.min() > 18, psnr  # the seed's own noise gives an unrelated face: ≈ 8–10 dB
    other = pack.nodes.EditedSampler.execute(**{**inputs, "noise": None}).args[0]
    assert (10 * torch.log10(1 / ((vae.decode(other["samples"]) - images) ** 2).mean())) < 14
    with pytest.raises(ValueError, match="noise: shape"):
        pack.nodes.EditedSampler.execute(**{**inputs, "latent_image": {"samples": torch.zeros(1, 3, 32, 32)}})
