"""Our inversion against NVlabs' projector (stylegan2-ada-pytorch ``projector.py``), per step.

The real peer for "project an image into W": the official projector loop, run from a checkout the
person points at (``python -m bench --only projector --official-repo PATH``; skipped otherwise, and
never in tests). Both sides get the same generator: built with the official code at a real
configuration (random weights: the compute is the same), pickled the way its training does, and
loaded into ours through our pickle loader. Both use an LPIPS on VGG16 at 256 px:

- official: ``projector.project`` as it is, with one substitution: it downloads NVlabs' traced
  ``vgg16.pt`` (no network here), so ``dnnlib.util.open_url`` is answered with a TorchScript module of
  the same layers (VGG16 to relu5_3, channel-normalised, weighted, flattened; random weights). Its
  step also optimises the noise buffers and adds their regulariser, as it always does.
- ours: the inversion job in W from the mean w (``perceptual="lpips-vgg"`` as a random-trunk LPIPS
  with the package's linear layers, weight 1, no L1), previews included, ``perceptual_size`` 256.

Per-step time is the difference between a run of ``a`` and of ``b`` steps divided by ``b - a``, so
each side's one-off setup (the official one maps 10 000 z for its W statistics) cancels.

The official code needs two small stand-ins on a modern stack: ``pkg_resources.parse_version``
(setuptools may be absent) and the ``imageio`` module projector.py imports for its video (unused
here). Both are put in ``sys.modules`` only when missing.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

from bench.common import Table

# (label, resolution, official synthesis kwargs, mapping layers): the configs of their paper
CONFIGS = {
    256: dict(channel_base=16384, channel_max=512, num_fp16_res=0, conv_clamp=None),  # paper256
    1024: dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None),  # config-f
}
QUICK = {32: dict(channel_base=512, channel_max=32, num_fp16_res=0, conv_clamp=None)}


def _stand_ins() -> None:
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            from packaging.version import parse

            sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)  # type: ignore[assignment]
    if "imageio" not in sys.modules:
        try:
            import imageio  # noqa: F401
        except ImportError:
            sys.modules["imageio"] = types.ModuleType("imageio")


def import_official(repo: str | Path):
    """``(dnnlib, projector, Generator)`` from a stylegan2-ada-pytorch checkout."""
    repo = Path(repo).resolve()
    if not (repo / "projector.py").is_file() or not (repo / "training" / "networks.py").is_file():
        raise FileNotFoundError(f"{repo} is not a stylegan2-ada-pytorch checkout (no projector.py)")
    _stand_ins()
    sys.path.insert(0, str(repo))
    import dnnlib
    import projector
    from training.networks import Generator

    return dnnlib, projector, Generator


class VGG16LPIPSStandIn(nn.Module):
    """The layers of NVlabs' traced ``metrics/vgg16.pt`` in its ``return_lpips=True`` mode, random
    weights: VGG16 to relu5_3 on [0, 255] images, each of the five stages' maps unit-normalised over
    channels, weighted per channel, flattened and concatenated (a squared distance is then LPIPS)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        from torchvision.models import vgg16

        torch.manual_seed(seed)
        f = vgg16(weights=None).features
        self.s1, self.s2, self.s3, self.s4, self.s5 = f[0:4], f[4:9], f[9:16], f[16:23], f[23:30]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)
        for i, c in enumerate((64, 128, 256, 512, 512)):
            self.register_buffer(f"lin{i}", torch.rand(1, c, 1, 1).sqrt())

    def _flat(self, x: torch.Tensor, lin: torch.Tensor) -> torch.Tensor:
        x = x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10) * lin
        return x.flatten(1) / float(x.shape[2] * x.shape[3]) ** 0.5

    def forward(
        self, img: torch.Tensor, resize_images: bool = False, return_lpips: bool = True
    ) -> torch.Tensor:
        h1 = self.s1((img - self.mean) / self.std)
        h2 = self.s2(h1)
        h3 = self.s3(h2)
        h4 = self.s4(h3)
        h5 = self.s5(h4)
        parts = [self._flat(h1, self.lin0), self._flat(h2, self.lin1), self._flat(h3, self.lin2)]
        return torch.cat(parts + [self._flat(h4, self.lin3), self._flat(h5, self.lin4)], 1)


@contextlib.contextmanager
def _vgg_without_download(dnnlib):
    buf = io.BytesIO()
    torch.jit.save(
        torch.jit.script(VGG16LPIPSStandIn().eval().requires_grad_(False)), buf
    )  # frozen, as theirs
    real = dnnlib.util.open_url

    def open_url(url, *args, **kwargs):
        if url.endswith("/vgg16.pt"):
            return io.BytesIO(buf.getvalue())
        raise RuntimeError(f"the benchmark downloads nothing (asked for {url})")

    dnnlib.util.open_url = open_url
    try:
        yield
    finally:
        dnnlib.util.open_url = real


def _pair(Generator, resolution: int, synthesis: dict, folder: Path):
    """The official generator and ours with its weights (through our pickle loader)."""
    from core.models.io import load_generator

    torch.manual_seed(0)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=8), synthesis_kwargs=synthesis).eval()  # fmt: skip
    path = folder / f"official-{resolution}.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": G}, f)
    return G, load_generator(path)


def _per_step(run, a: int, b: int) -> tuple[float, object]:
    """Seconds per step from runs of ``a`` and ``b`` steps, and what the ``b``-step run returned."""
    times, out = {}, None
    for n in (a, b):
        t = time.perf_counter()
        out = run(n)
        times[n] = time.perf_counter() - t
    return (times[b] - times[a]) / (b - a), out


def _our_perceptual():
    import lpips

    from core.losses import MaskedLPIPS

    torch.manual_seed(0)
    return MaskedLPIPS(lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False))


def _measure(projector, G_off, G_ours, perc, a: int, b: int) -> tuple[float, float, float, float, float]:
    """(official s/step, ours fp32, ours bf16, our LPIPS after ``b`` steps in fp32, in bf16)."""
    from core.jobs.invert import invert
    from core.jobs.params import InvertParams
    from core.jobs.runner import run_to_completion
    from core.types import LatentSpace

    with torch.no_grad():
        z = torch.randn(1, 512, generator=torch.Generator().manual_seed(1))
        img = G_off(z, None, noise_mode="const")
    target = ((img[0] + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)  # [3, R, R]
    target_hwc = target.permute(1, 2, 0).numpy()

    def official(n: int) -> None:
        projector.project(G_off, target, num_steps=n, w_avg_samples=1000, device=torch.device("cpu"))

    def ours(n: int, precision: str = "fp32") -> float:
        p = InvertParams(target=target_hwc, space=LatentSpace.W, init="mean", l1_weight=0.0,
                         perceptual_weight=1.0, steps=n, lr=0.1, precision=precision)  # fmt: skip
        return run_to_completion(invert(p, G_ours, perceptual_loss=perc)).loss_history[-1]["perceptual"]

    def ours_bf16(n: int) -> float:
        return ours(n, precision="bf16")

    for f in (official, ours, ours_bf16):  # warm-up (kernel selection, allocations) for every side
        f(1)
    (t_off, _), (t_ours, loss), (t_bf16, loss_bf16) = (
        _per_step(f, a, b) for f in (official, ours, ours_bf16)
    )
    return t_off, t_ours, t_bf16, loss, loss_bf16


def run(official_repo: str | Path | None, *, quick: bool = False) -> Table:
    columns = ["resolution", "config", "official projector", "ours", "ours faster by", "ours, bf16",
               "bf16 faster by", "LPIPS after the steps, fp32 / bf16"]  # fmt: skip
    table = Table(
        "NVlabs' projector vs ours: seconds per step (same generator, LPIPS-VGG16 at 256 px)", columns
    )
    if official_repo is None:
        table.add("-", "skipped: pass --official-repo PATH (a stylegan2-ada-pytorch checkout)", "", "", "")
        return table
    dnnlib, projector, Generator = import_official(official_repo)
    commit = official_commit(official_repo)
    table.title += f"; official code {commit[:7] or 'from ' + str(official_repo)}"
    perc = _our_perceptual()
    a, b = (1, 2) if quick else (2, 5)
    with tempfile.TemporaryDirectory() as tmp, _vgg_without_download(dnnlib):
        for res, synthesis in (QUICK if quick else CONFIGS).items():
            G_off, G_ours = _pair(Generator, res, synthesis, Path(tmp))
            t_off, t_ours, t_bf16, loss, loss_bf16 = _measure(projector, G_off, G_ours, perc, a, b)
            label = "quick" if quick else ("paper256" if res == 256 else "config-f")
            table.add(
                f"{res} px", label, round(t_off, 3), round(t_ours, 3), f"{t_off / t_ours:.2f}x",
                round(t_bf16, 3), f"{t_off / t_bf16:.2f}x", f"{loss:.4f} / {loss_bf16:.4f} ({b} steps)",
            )  # fmt: skip
    return table


def official_commit(repo: str | Path) -> str:
    """The checkout's commit, for the table's caption (empty when it is not a git checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return ""


__all__ = ["VGG16LPIPSStandIn", "import_official", "official_commit", "run"]
