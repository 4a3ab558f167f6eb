import os

import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_stylegan(seed: int = 0, resolution: int = 16):
    from core.gan.stylegan2 import StyleGAN2Generator

    torch.manual_seed(seed)
    G = StyleGAN2Generator(
        z_dim=16, w_dim=16, img_resolution=resolution, channel_base=128, channel_max=16, mapping_layers=2
    )
    return G.eval().requires_grad_(False)


def tiny_dcgan(seed: int = 0, resolution: int = 16):
    from core.gan.dcgan import DCGANGenerator

    torch.manual_seed(seed)
    return DCGANGenerator(z_dim=16, img_resolution=resolution, base_channels=8).eval().requires_grad_(False)


@pytest.fixture
def G():
    return tiny_stylegan()


@pytest.fixture
def dcgan():
    return tiny_dcgan()


@pytest.fixture(autouse=True)
def _release_qt_asyncio_loop():
    """A test that connected a ProcessWorker started an asyncio loop on Qt's (desktop.event_loop);
    take it down afterwards so that the next test's asyncio.run works."""
    yield
    import sys

    if "desktop.event_loop" in sys.modules:
        sys.modules["desktop.event_loop"].release()
