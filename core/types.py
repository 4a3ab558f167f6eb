"""Small torch-free types shared by core and the GUI (the GUI imports these without loading torch)."""

from __future__ import annotations

import enum


class LatentSpace(enum.StrEnum):
    Z = "z"  # input noise, [N, z_dim]
    W = "w"  # one intermediate latent shared by every layer, [N, w_dim]
    W_PLUS = "w+"  # one intermediate latent per synthesis layer, [N, num_ws, w_dim]
