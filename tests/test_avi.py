"""AVI (paper 003) groundwork: the singular-vector integration of Algorithm 1 and the Grassmann
distance, on random latents of the SD (4-channel) and embedded pixel (3-channel) shapes."""
import math

import pytest
import torch

from comfy_hspace import avi


@pytest.mark.parametrize("shape", [(4, 8, 8), (2, 3, 32, 32), (3, 12, 16)])
def test_no_integration_gives_x_back(shape):
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    n = min(shape[-2:])
    assert torch.allclose(avi.merge(x, z, n // 2, 0.0), x, atol=1e-5)


def test_full_integration_puts_z_reversed_after_x():
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
    u_hat, vh_hat, _, _ = avi.integrate(x, z, 4, 1.0)
    ux, _, vhx = avi.channel_svd(x)
    uz, _, vhz = avi.channel_svd(z)
    assert torch.equal(u_hat[..., :4], ux[..., :4]) and torch.equal(vh_hat[..., :4, :], vhx[..., :4, :])
    # column 4 is z's last (smallest) vector, column 7 z's fifth
    assert torch.allclose(u_hat[..., 4], uz[..., 7]) and torch.allclose(u_hat[..., 7], uz[..., 4])
    assert torch.allclose(vh_hat[..., 4, :], vhz[..., 7, :])
    # a merge with z's singular values differs from x and keeps the shape
    y = avi.merge(x, z, 4, 1.0, avi.channel_svd(z)[1])
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-2)


def test_bad_input_names_the_input():
    x = torch.randn(4, 8, 8)
    with pytest.raises(ValueError, match=r"z: shape \[4, 8, 16\] differs"):
        avi.merge(x, torch.randn(4, 8, 16), 4, 0.5)
    for k in (0, 8):
        with pytest.raises(ValueError, match=r"k: expected 1 … 7"):
            avi.merge(x, x, k, 0.5)
    with pytest.raises(ValueError, match=r"rho: expected a value in \[0, 1\]"):
        avi.merge(x, x, 4, 1.5)


def test_grassmann_distance():
    g = torch.Generator().manual_seed(2)
    q = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    a = (q[:, :2] * torch.tensor([3.0, 2.0])) @ torch.randn(2, 8, generator=g)
    b = (q[:, 2:4] * torch.tensor([3.0, 2.0])) @ torch.randn(2, 8, generator=g)
    assert avi.grassmann_distance(a[None], a[None], 2).item() == pytest.approx(0.0, abs=1e-6)
    assert avi.grassmann_distance(a[None], b[None], 2).item() == pytest.approx(math.pi / 2 * math.sqrt(2), rel=1e-4)
