"""Checks for chapter 09 (four gradients): the chain gradient by its backward recursion."""

from __future__ import annotations

from torch import Tensor

from ..gradients import chain_gradient
from ._late import check_layer, check_net, check_state
from .verdict import Verdict, compare

__all__ = ["check_chain_gradient"]


def check_chain_gradient(answer: object, net, h_star: list, target: Tensor, *, layer: int) -> Verdict:
    """Is ``answer`` the chain gradient ``g_k`` of layer ``k`` at the fixed point ``h_star``?

    ``g_N = y* − d`` and ``g_k = ρ'(h_k) ⊙ ((ρ'(h_{k+1}) ⊙ g_{k+1}) W_{k+1}ᵀ)``; the reference is
    :func:`ebmlib.chain_gradient`, shape ``(B, n_k)``.
    """
    net = check_net(net)
    h_star = check_state("h_star", h_star, net)
    if not isinstance(target, Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(target).__name__}")
    k = check_layer(layer, net)
    ref = chain_gradient(net, h_star, target)[k]
    return compare(f"g_{k}", answer, ref, rtol=1e-6, atol=1e-10 * float(ref.abs().max()),
                   hint="Start from g_N = y* − d and apply J_k = D_k W_{k+1} D_{k+1} layer by layer.")
