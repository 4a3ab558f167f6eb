import numpy as np
import pytest
import torch

from core.gan.base import LatentSpace
from core.imaging import to_uint8
from core.jobs.interpolate import Interpolator, lerp, path_latents, slerp


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(5, 16), torch.randn(5, 16)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    # Slerp keeps the norm on the interpolated shell; lerp shrinks it between random vectors.
    assert torch.allclose(mid.norm(dim=-1), (a.norm(dim=-1) + b.norm(dim=-1)) / 2, atol=1e-4)
    assert (lerp(a, b, 0.5).norm(dim=-1) < mid.norm(dim=-1)).all()


def test_slerp_parallel_falls_back_to_lerp():
    a = torch.ones(4)
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)


def test_path_hits_every_latent():
    lats = [torch.randn(3, 8) for _ in range(3)]
    p = path_latents(lats, 5, LatentSpace.W_PLUS)
    assert torch.allclose(p[0], lats[0]) and torch.allclose(p[2], lats[1]) and torch.allclose(p[4], lats[2])


@pytest.mark.slow
def test_interpolator_endpoints_equal_inputs(G):
    for space in LatentSpace:
        if space is LatentSpace.Z:
            a, b = torch.randn(G.z_dim), torch.randn(G.z_dim)
            ws_a, ws_b = (G.broadcast(G.mapping(x[None])) for x in (a, b))
        elif space is LatentSpace.W:
            a, b = G.mapping(torch.randn(2, G.z_dim))
            ws_a, ws_b = G.broadcast(a[None]), G.broadcast(b[None])
        else:
            ws_a, ws_b = (G.broadcast(G.mapping(torch.randn(1, G.z_dim))) for _ in range(2))
            a, b = ws_a[0], ws_b[0]
            if space is LatentSpace.S:  # the same images from their styles
                a, b = G.styles(ws_a)[0], G.styles(ws_b)[0]
        it = Interpolator(G, [a, b], space)
        np.testing.assert_array_equal(it.image_at(0.0), to_uint8(G.synthesis(ws_a))[0])
        np.testing.assert_array_equal(it.image_at(1.0), to_uint8(G.synthesis(ws_b))[0])
        frames = it.frames(4)
        assert frames.shape == (4, G.resolution, G.resolution, 3)
        np.testing.assert_array_equal(frames[-1], it.image_at(1.0))
        assert not np.array_equal(it.image_at(0.5), it.image_at(0.0))
