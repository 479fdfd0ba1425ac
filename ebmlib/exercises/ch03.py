"""Chapter 03 check: the free fixed point reached by a hand-written relaxation loop."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..checks import check_eps, check_tensor
from ..dynamics import relax
from ..network import LayeredEBM
from .verdict import Verdict, compare

__all__ = ["check_fixed_point", "compare_layers"]


def compare_layers(name: str, answer: object, expected: Sequence, *, first: int = 1, rtol: float = 1e-6,
                   atol: float = 1e-9, hint: str = "") -> Verdict:
    """Compare a per-layer list ``answer`` with ``expected`` (index 0 unused) layer by layer."""
    if answer is None:
        return Verdict(False, f"{name} is None: the cell does not compute it yet. {hint}".strip())
    if not isinstance(answer, (list, tuple)) or len(answer) != len(expected):
        return Verdict(False, f"{name}: expected a list of {len(expected)} entries "
                              f"(index 0 unused, then layers 1 ... {len(expected) - 1}). {hint}".strip())
    worst = 0.0
    for k in range(first, len(expected)):
        v = compare(f"{name}, layer {k}", answer[k], expected[k], rtol=rtol, atol=atol, hint=hint)
        if not v:
            return v
        worst = max(worst, float((torch.as_tensor(answer[k]).to(expected[k]) - expected[k]).abs().max()))
    return Verdict(True, f"{name} matches the reference on every layer (largest deviation {worst:.1e}).")


def check_fixed_point(net: LayeredEBM, x: torch.Tensor, answer: object, *, eps: float = 0.5) -> Verdict:
    """Is ``answer`` (a state ``[x, h_1, …, h_N]``) the free fixed point of ``net`` for the input ``x``?

    The reference is :func:`ebmlib.relax` run to a residual of 1e-13; a state within 1e-8 of it passes.
    """
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    x = check_tensor("x", x, shape=(None, net.sizes[0]))
    eps = check_eps(eps)
    expected = relax(net, x, eps=eps, tol=1e-13, max_steps=100_000).h
    return compare_layers("the fixed point", answer, expected, rtol=0.0, atol=1e-8,
                          hint="Iterate h_k <- h_k + eps * f_k(h) on every layer at once until the "
                               "largest |f| is below 1e-11.")
