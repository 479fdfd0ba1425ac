"""Chapter 05 check: the covariance of the one-step change of a stationary noisy chain."""

from __future__ import annotations

import torch

from ..gradients import hessian
from ..langevin import linear_noise_covariance
from ..network import LayeredEBM
from .ch02 import STEPS, noise_arguments
from .verdict import Verdict, compare

__all__ = ["check_step_covariance"]


def check_step_covariance(net: LayeredEBM, h_star: list, eps: float, T: float, answer: object) -> Verdict:
    """Is ``answer`` the covariance of ``Δ_t = h_{t+1} - h_t`` at stationarity, linearised at ``h_star``?

    ``answer`` has shape ``(B, n, n)``. The reference is ``(A - I) Σ_∞ (A - I)ᵀ + 2εT I`` with
    ``A = I - εH`` and ``Σ_∞`` summed step by step (:func:`ebmlib.linear_noise_covariance`), not the
    closed form of the chapter.
    """
    h_star, eps, T = noise_arguments(net, h_star, eps, T)
    H = hessian(net, h_star)
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    sig = linear_noise_covariance(net, h_star, steps=STEPS, eps=eps, T=T)
    expected = eps ** 2 * H @ sig @ H.transpose(-1, -2) + 2 * eps * T * eye
    return compare("the covariance of the one-step change", answer, expected, rtol=1e-6, atol=1e-9 * T,
                   hint="Δ = -εH n + noise, with n stationary: Cov(Δ) = ε² H Σ_∞ H + 2εT I.")
