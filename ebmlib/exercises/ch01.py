"""Chapter 01 check: the closed-form force on one layer."""

from __future__ import annotations

from ..checks import check_positive_int
from ..network import LayeredEBM
from .verdict import Verdict, compare

__all__ = ["check_force"]


def check_force(net: LayeredEBM, h: list, k: int, answer: object) -> Verdict:
    """Is ``answer`` the force ``-∂E/∂h_k = R_k(h) - h_k`` on hidden layer ``k`` at the state ``h``?

    The reference is :meth:`ebmlib.LayeredEBM.force` (β = 0); ``answer`` has the shape of ``h[k]``.
    """
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    h = net.check_state(h, "h")
    k = check_positive_int("k", k)
    if not 1 <= k <= net.N:
        raise ValueError(f"k: expected a layer 1 ... {net.N}, got {k}")
    expected = net.force(h)[k]
    return compare(f"the force on layer {k}", answer, expected, rtol=1e-9, atol=1e-12,
                   hint="R_k = rho'(h_k) * (b_k + rho(h_{k-1}) W_k + rho(h_{k+1}) W_{k+1}^T), "
                        "no last term on the output; the force is R_k - h_k.")
