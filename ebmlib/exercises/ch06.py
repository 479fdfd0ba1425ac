"""Checks for chapter 06 (the whole trajectory): the step response of the nudged phase."""

from __future__ import annotations

from torch import Tensor

from ..checks import check_eps, check_nonzero_beta, check_positive_int
from ..response import state_response
from ._late import check_layer, check_net, check_state
from .verdict import Verdict, compare

__all__ = ["check_step_response"]


def check_step_response(answer: object, net, h_star: list, target: Tensor, *, steps: int, eps: float,
                        beta: float, layer: int) -> Verdict:
    """Is ``answer`` the step response ``(δ_{t+1} − δ_t)/β`` of ``layer``, t = 0 … steps−1?

    ``δ_t`` is the nudged run minus the free run, both from ``h_star``; the reference is
    :func:`ebmlib.state_response`, shape ``(steps, B, n_layer)``.
    """
    net = check_net(net)
    h_star = check_state("h_star", h_star, net)
    if not isinstance(target, Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(target).__name__}")
    steps = check_positive_int("steps", steps)
    eps, beta = check_eps(eps), check_nonzero_beta(beta)
    layer = check_layer(layer, net)
    ref = state_response(net, h_star, target, steps=steps, eps=eps, beta=beta)[layer]
    return compare(f"the step response of layer {layer}", answer, ref, rtol=1e-6, atol=1e-8 * float(ref.abs().max()),
                   hint="Take the difference of consecutive steps of (nudged − free), then divide by β.")
