"""Task-guided diffusion: classifier guidance with a task loss in place of a classifier.

The seed paper's proposed future work: start from noise in W and guide every reverse step with the
task gradient. The task can only be judged on a clean latent, so it is evaluated on the denoiser's
estimate ``x0_hat(x_t)`` (Tweedie), ``log p(y | x_t) := -L_task(G(x0_hat(x_t)))``. Two forms:

- ``"xt"``, classifier guidance as Dhariwal & Nichol (2021, Algorithm 2 / eq. 14), with the gradient
  taken through the denoiser::

      eps_hat = eps_theta(x_t, t) + scale * sqrt(1 - alpha_bar_t) * grad_{x_t} L_task(x0_hat(x_t))

- ``"x0"`` (default), the gradient taken on the clean estimate and turned into a noise offset that
  moves ``x0_hat`` by one gradient step of size ``scale`` (Bansal et al. 2023, "Universal Guidance",
  eq. 7-8 with one inner step)::

      eps_hat = eps_theta(x_t, t) + scale * sqrt(alpha_bar_t) / sqrt(1 - alpha_bar_t) * grad_{x0} L_task

  Near t = 1 the denoiser's estimate hardly depends on ``x_t`` (it is about the data mean), so the
  "xt" gradient is mostly the network's Jacobian noise there, and its sqrt(1 - alpha_bar) ** 2 weight
  on ``x0_hat`` all but vanishes as t -> 0; on our prior the "xt" form raised the task loss as its scale
  grew (docs/prior.md). The "x0" form spends the same step at every noise level.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from core.prior import schedule
from core.prior.samplers.ddim import EpsModel

TaskLoss = Callable[[torch.Tensor], torch.Tensor]  # clean normalised latent x_0 [N, D] -> loss [N]
GUIDANCE = ("x0", "xt")


def guided_eps(
    model: EpsModel, x_t: torch.Tensor, t: float, task_loss: TaskLoss, *, scale: float, mode: str = "x0"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The guided noise prediction at ``t`` and, for reporting, the task loss [N] and ``x0_hat`` [N, D].

    Args:
        model: the denoiser (frozen).
        x_t: normalised noisy latents [N, D].
        task_loss: per-sample loss of a clean normalised latent; summed, so each sample's gradient is
            its own.
        scale: guidance scale (0 = unguided sampling).
        mode: "x0" or "xt" (see the module docstring).
    """
    if mode not in GUIDANCE:
        raise ValueError(f"guidance mode must be one of {GUIDANCE}, got {mode!r}")
    x = x_t.detach().requires_grad_(mode == "xt")
    tv = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    ab = float(schedule.alpha_bar(t))
    with torch.enable_grad():
        eps = model(x, tv)
        x0 = schedule.predict_x0(eps, t, x)  # [N, D]
        if mode == "x0":
            x0 = x0.detach().requires_grad_(True)
        loss = task_loss(x0)  # [N]
        (grad,) = torch.autograd.grad(loss.sum(), x if mode == "xt" else x0)
    weight = (1 - ab) ** 0.5 if mode == "xt" else ab**0.5 / max(1 - ab, 1e-12) ** 0.5
    return (eps + scale * weight * grad).detach(), loss.detach(), x0.detach()
