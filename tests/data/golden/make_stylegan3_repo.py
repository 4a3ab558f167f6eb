"""Golden outputs of NVlabs' stylegan3 repository for the loader tests (run once; the outputs are
committed beside this script).

Reference: https://github.com/NVlabs/stylegan3 at commit c233a919a6faee6e36a316ddd4eddababad1adf9.
Run with that checkout on PYTHONPATH (its custom CUDA ops fall back to their reference
implementations on the CPU):

    PYTHONPATH=/path/to/stylegan3 python tests/data/golden/make_stylegan3_repo.py

(its conv2d_gradfix imports ``pkg_resources.parse_version``; without setuptools, a one-line
``pkg_resources.py`` with ``from packaging.version import parse as parse_version`` on the path does.)

Writes ``sg3repo-stylegan2.pkl``: a small ``--cfg=stylegan2`` generator
(``training/networks_stylegan2.py``, synthesis options passed flat, as that repository's training
does) pickled the way its training loop does, and ``sg3repo-stylegan2.npz``: z, ws, and what the
reference renders from them (noise_mode="const", float32); and ``sg3repo-stylegan2-cond.*``: the same
with 3 class labels, rendered for z_i with class i.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from training.networks_stylegan2 import Generator  # from the stylegan3 checkout

OUT = Path(__file__).resolve().parent


def make(c_dim: int) -> Generator:
    torch.manual_seed(0)
    G = Generator(
        z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        # flat, as train.py --cfg=stylegan2 passes them; conv_clamp left at that repository's default
        channel_base=128, channel_max=16, num_fp16_res=4, fused_modconv_default="inference_only",
    ).eval().requires_grad_(False)  # fmt: skip
    with torch.no_grad():  # make the noise inputs and w_avg matter, unlike a fresh network
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        G.mapping.w_avg.normal_()
    return G


def main() -> None:
    G = make(c_dim=0)
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1))
    ws = torch.randn(3, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        img_z = G(z, None, noise_mode="const", force_fp32=True)
        img_ws = G.synthesis(ws, noise_mode="const", force_fp32=True)
        w_mapped = G.mapping(z, None)
    with open(OUT / "sg3repo-stylegan2.pkl", "wb") as f:
        pickle.dump({"G_ema": G}, f)  # what training_loop.py's snapshot holds for G_ema
    np.savez(
        OUT / "sg3repo-stylegan2.npz",
        z=z.numpy(),
        ws=ws.numpy(),
        img_z=img_z.numpy(),
        img_ws=img_ws.numpy(),
        w_mapped=w_mapped.numpy(),
    )
    print("wrote", OUT / "sg3repo-stylegan2.pkl", OUT / "sg3repo-stylegan2.npz")
    # A conditional one (3 classes): z through the mapping with each one-hot label.
    G = make(c_dim=3)
    c = torch.eye(3)
    with torch.no_grad():
        w_c = G.mapping(z, c)  # sample i with class i
        img_c = G.synthesis(w_c, noise_mode="const", force_fp32=True)
    with open(OUT / "sg3repo-stylegan2-cond.pkl", "wb") as f:
        pickle.dump({"G_ema": G}, f)
    np.savez(OUT / "sg3repo-stylegan2-cond.npz", z=z.numpy(), w=w_c.numpy(), img=img_c.numpy())
    print("wrote", OUT / "sg3repo-stylegan2-cond.pkl", OUT / "sg3repo-stylegan2-cond.npz")


if __name__ == "__main__":
    main()
