import numpy as np
import pytest
import torch

from core.errors import ModelLoadError
from core.gan.base import LatentSpace
from core.models.io import load_generator, save_generator
from tests.conftest import tiny_dcgan, tiny_stylegan


def test_stylegan_interface_shapes(G):
    z = torch.randn(3, G.z_dim)
    w = G.mapping(z)
    assert w.shape == (3, G.w_dim)
    ws = G.broadcast(w)
    assert ws.shape == (3, G.num_ws, G.w_dim)
    img = G.synthesis(ws)
    assert img.shape == (3, 3, G.resolution, G.resolution)
    assert G.num_ws == 2 * int(np.log2(G.resolution)) - 2  # official count for the skip architecture


def test_synthesis_rejects_wrong_ws_shape(G):
    with pytest.raises(ValueError, match="ws must be"):
        G.synthesis(torch.zeros(1, G.num_ws + 1, G.w_dim))


def test_synthesis_is_deterministic_and_per_layer(G):
    ws = G.broadcast(G.mapping(torch.randn(1, G.z_dim)))
    assert torch.equal(G.synthesis(ws), G.synthesis(ws))
    ws2 = ws.clone()
    ws2[:, -1] += 1.0  # the last toRGB's w changes the image: w+ layers are really separate
    assert not torch.allclose(G.synthesis(ws), G.synthesis(ws2))


def test_mean_w_is_cached_and_seeded(G):
    m = G.mean_w()
    assert m.shape == (G.w_dim,)
    assert G.mean_w() is m
    assert torch.allclose(G.mean_w(n=10_000, seed=0), m)


def test_dcgan_has_only_z(dcgan):
    assert dcgan.latent_spaces == (LatentSpace.Z,)
    img = dcgan(torch.randn(2, dcgan.z_dim))
    assert img.shape == (2, 3, 16, 16) and img.abs().max() <= 1


@pytest.mark.parametrize("make", [tiny_stylegan, tiny_dcgan])
def test_safetensors_roundtrip(tmp_path, make):
    G = make(seed=3)
    G.mean_w()
    path = save_generator(G, tmp_path / "g.safetensors")
    G2 = load_generator(path)
    z = torch.randn(2, G.z_dim)
    assert torch.allclose(G(z), G2(z))
    assert torch.allclose(G.mean_w(), G2.mean_w())


def test_bad_model_files_raise_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_generator(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="junk.safetensors"):
        load_generator(junk)
    with pytest.raises(ModelLoadError, match="unsupported"):
        load_generator(tmp_path / "x.onnx")


@pytest.mark.parametrize("batch", [1, 3])
def test_unfused_modconv_equals_fused(batch):
    """The fast unfused modulated conv computes the official fused (grouped) one, values and grads."""
    torch.manual_seed(0)
    G = tiny_stylegan()
    ws = G.broadcast(G.mapping(torch.randn(batch, G.z_dim))).detach()
    outs, grads = [], []
    for fused in (True, False):
        G.set_fused_modconv(fused)
        x = ws.clone().requires_grad_(True)
        img = G.synthesis(x)
        img.square().mean().backward()
        outs.append(img.detach())
        grads.append(x.grad)
    G.set_fused_modconv(False)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-3)


def _upfirdn2d_reference(x, f, up, padding, gain):
    """The textbook order (official ``_upfirdn2d_ref``): zero insertion, pad or crop, flipped-FIR."""
    n, c, h, w = x.shape
    u = x.new_zeros(n, c, h * up, w * up)
    u[:, :, ::up, ::up] = x
    x0, x1, y0, y1 = padding
    u = torch.nn.functional.pad(u, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    u = u[:, :, max(-y0, 0) : u.shape[2] - max(-y1, 0), max(-x0, 0) : u.shape[3] - max(-x1, 0)]
    k = (f * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    return torch.nn.functional.conv2d(u, k, groups=c)


@pytest.mark.parametrize(
    "up, padding",
    [(2, (2, 1, 2, 1)), (2, (1, 1, 1, 1)), (2, (1, 2, 1, 2)), (2, (2, 1, 1, 2)), (1, (1, 1, 1, 1)),
     (1, (2, 1, 2, 1)), (1, (-1, -1, -1, -1)), (1, (0, 0, 0, 0))],
)  # fmt: skip
def test_upfirdn2d_equals_the_textbook_order(up, padding):
    """upfirdn2d takes shortcuts (one transposed conv for up-sampling, the conv's own padding); each
    must equal zero insertion + pad + FIR, values and gradients, for a filter that is not symmetric."""
    from core.gan.stylegan2 import upfirdn2d

    gen = torch.Generator().manual_seed(0)
    f = torch.rand(4, generator=gen)[:, None] * torch.rand(4, generator=gen)[None]  # [4, 4], asymmetric
    x = torch.randn(2, 3, 7, 7, generator=gen, requires_grad=True)
    out = upfirdn2d(x, f, up=up, padding=padding, gain=up**2)
    ref = _upfirdn2d_reference(x, f, up, padding, up**2)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)
    g = torch.randn(ref.shape, generator=gen)
    (gx,) = torch.autograd.grad(out, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    assert torch.allclose(gx, gr, atol=1e-5)


def test_frozen_weight_terms_never_go_stale():
    """The generator keeps weight-only terms while frozen (core.gan.frozen.frozen): an in-place
    weight change, an inference-mode call, and training (weights needing grads) must all still see
    the current weights and gradients."""
    G, other = tiny_stylegan(seed=0), tiny_stylegan(seed=1)
    ws = G.broadcast(G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))))
    with torch.inference_mode():  # a preview fills the cache in inference mode first ...
        preview = G.synthesis(ws)
    x = ws.clone().requires_grad_(True)  # ... and the next gradient step must not reuse it
    G.synthesis(x).square().mean().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    first = G.synthesis(ws)
    assert torch.equal(preview, first)

    G.load_state_dict(other.state_dict())  # in-place copy into the same parameters
    assert torch.allclose(G.synthesis(ws), other.synthesis(ws), atol=1e-6)
    assert not torch.allclose(G.synthesis(ws), first, atol=1e-3)

    G.requires_grad_(True)  # training: every weight gets its gradient through the scaled terms
    G.synthesis(ws.detach()).square().mean().backward()
    layer = G.synthesis_net.b8.conv1
    assert all(p.grad is not None for p in (layer.weight, layer.affine.weight, layer.noise_strength))
    with torch.no_grad():
        layer.affine.weight.mul_(3.0)  # an optimiser-style in-place update
    G.requires_grad_(False)
    assert not torch.allclose(G.synthesis(ws), other.synthesis(ws), atol=1e-4)
