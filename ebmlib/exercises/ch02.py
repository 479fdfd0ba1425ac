"""Chapter 02 check: the stationary covariance of the Euler–Maruyama chain near a minimum."""

from __future__ import annotations

from ..checks import check_eps, check_temperature
from ..langevin import linear_noise_covariance
from ..network import LayeredEBM
from .verdict import Verdict, compare

__all__ = ["check_stationary_covariance"]

STEPS = 4000   # steps of the linearised chain summed for the reference (Σ_t converges as r^(2t))


def noise_arguments(net: LayeredEBM, h_star: list, eps: float, T: float) -> tuple[list, float, float]:
    """The checked ``(h_star, eps, T)`` of a check on the linearised Langevin chain (T > 0: at T = 0 there is
    no noise to check)."""
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    h_star = net.check_state(h_star, "h_star")
    eps, T = check_eps(eps), check_temperature(T)
    if T == 0.0:
        raise ValueError("T: expected a temperature > 0 (at T = 0 there is no noise)")
    return h_star, eps, T


def check_stationary_covariance(net: LayeredEBM, h_star: list, eps: float, T: float,
                                answer: object) -> Verdict:
    """Is ``answer`` the stationary covariance ``Σ_ε`` of the linearised chain at ``h_star``?

    ``answer`` has shape ``(B, n, n)`` (layers 1 ... N flattened in order, as :func:`ebmlib.hessian`).
    The reference sums the chain's covariance step by step (:func:`ebmlib.linear_noise_covariance`),
    not the closed form the student derives.
    """
    h_star, eps, T = noise_arguments(net, h_star, eps, T)
    expected = linear_noise_covariance(net, h_star, steps=STEPS, eps=eps, T=T)
    return compare("the stationary covariance", answer, expected, rtol=1e-6, atol=1e-9 * T,
                   hint="Solve Σ = A Σ Aᵀ + 2εT I with A = I − εH: the step adds a correction to T H⁻¹.")
