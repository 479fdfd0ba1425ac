"""Checks for chapter 07 (learning): the paired first-arrival signal of one layer."""

from __future__ import annotations

from torch import Tensor

from ..checks import check_eps, check_nonzero_beta
from ..response import nudge_response
from ._late import check_layer, check_net, check_state
from .verdict import Verdict, compare

__all__ = ["check_first_arrival_signal"]


def check_first_arrival_signal(answer: object, net, h_free: list, target: Tensor, *, eps: float, beta: float,
                               layer: int) -> Verdict:
    """Is ``answer`` the first-arrival rule's error signal ``−δ_k(m+1) / (β ε^{m+1})`` of layer ``k``?

    ``m = N − k`` is the layer's distance to the output and ``δ`` the nudged-minus-free difference from
    ``h_free`` (:func:`ebmlib.nudge_response`); shape ``(B, n_k)``.
    """
    net = check_net(net)
    h_free = check_state("h_free", h_free, net)
    if not isinstance(target, Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(target).__name__}")
    eps, beta = check_eps(eps), check_nonzero_beta(beta)
    k = check_layer(layer, net)
    m = net.N - k
    delta = nudge_response(net, h_free, steps=m + 1, eps=eps, beta=beta, target=target)[k]
    ref = -delta[m + 1] / (beta * eps ** (m + 1))
    return compare(f"the first-arrival signal of layer {k}", answer, ref, rtol=1e-6,
                   atol=1e-9 * float(ref.abs().max()),
                   hint=f"Read δ at step m + 1 = {m + 1} and divide by −β ε^(m+1).")
