"""Golden outputs of NVlabs' StyleGAN3 (alias-free) generator for the loader tests (run once; the
outputs are committed beside this script).

Reference: https://github.com/NVlabs/stylegan3 at commit c233a919a6faee6e36a316ddd4eddababad1adf9,
``training/networks_stylegan3.py``. Run with that checkout on PYTHONPATH (its custom ops fall back to
their reference implementations on the CPU; scipy designs the filters):

    PYTHONPATH=/path/to/stylegan3 python tests/data/golden/make_stylegan3_sg3.py

Writes, for the two configs of that repository's train.py, ``sg3-t.pkl`` (``--cfg=stylegan3-t``:
separable Kaiser filters, 3x3 convs) and ``sg3-r.pkl`` (``--cfg=stylegan3-r``: radial filters, 1x1
convs, doubled channels), small and pickled as its training loop does, and ``sg3-*.npz``: z, ws and
what the reference renders from them (float32), with w_avg and the magnitude EMAs set away from their
initial values so that they matter.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from training.networks_stylegan3 import Generator  # from the stylegan3 checkout

OUT = Path(__file__).resolve().parent


def make(cfg: str) -> Generator:
    torch.manual_seed(0)
    kw = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
              mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16, num_layers=6,
              magnitude_ema_beta=0.999)  # fmt: skip
    if cfg == "r":  # as train.py --cfg=stylegan3-r
        kw.update(conv_kernel=1, channel_base=512, channel_max=32, use_radial_filters=True)
    G = Generator(**kw).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for name, buf in G.named_buffers():
            if name.endswith("magnitude_ema"):
                buf.fill_(float(torch.rand([]) + 0.5))
        for name, p in G.named_parameters():
            if name.endswith(".bias") and "affine" not in name:
                p.normal_(0, 0.1)
    return G


def main() -> None:
    for cfg in ("t", "r"):
        G = make(cfg)
        z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1))
        ws = torch.randn(3, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            img_z = G(z, None, truncation_psi=0.7)
            img_ws = G.synthesis(ws)
            w_mapped = G.mapping(z, None)
        with open(OUT / f"sg3-{cfg}.pkl", "wb") as f:
            pickle.dump({"G_ema": G}, f)
        np.savez(OUT / f"sg3-{cfg}.npz", z=z.numpy(), ws=ws.numpy(), img_z_psi07=img_z.numpy(),
                 img_ws=img_ws.numpy(), w_mapped=w_mapped.numpy())  # fmt: skip
        print(cfg, G.synthesis.layer_names, float(img_ws.abs().max()))


if __name__ == "__main__":
    main()
