"""Chapter 04 check: the chain gradient g_k, back-propagated through the one-way maps at h*."""

from __future__ import annotations

import torch

from ..gradients import chain_gradient
from ..network import LayeredEBM
from .ch03 import compare_layers
from .verdict import Verdict

__all__ = ["check_chain_gradient"]


def check_chain_gradient(net: LayeredEBM, h_star: list, target: torch.Tensor, answer: object) -> Verdict:
    """Is ``answer`` (a list ``[None, g_1, …, g_N]``) the chain gradient at the fixed point ``h_star``?

    The reference is :func:`ebmlib.chain_gradient` (autograd's vector–Jacobian products).
    """
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    h_star = net.check_state(h_star, "h_star")
    target = net.check_target(target, h_star[0].shape[0])
    expected = chain_gradient(net, h_star, target)
    return compare_layers("the chain gradient", answer, expected, rtol=1e-9, atol=1e-12,
                          hint="g_N = y* - d; g_k = rho'(h_k) * ((rho'(h_{k+1}) * g_{k+1}) W_{k+1}^T).")
