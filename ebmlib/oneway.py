"""The feedforward network of a layered energy model's weights (PAPER.md §2, §4 caveat, §8).

Two one-way maps share the weights ``W_k, b_k``:

- :func:`mlp_forward`: the usual multilayer perceptron ``r_k = ρ(b_k + W_kᵀ r_{k−1})``, ``r_0 = x``
  (what back-propagation means to most readers; :func:`ebmlib.bp_gradient` differentiates it);
- :func:`feedforward`: the energy model's own dynamics with the top-down terms removed, below.

Remove the top-down terms ``W_{k+1} ρ(h_{k+1})`` from ``R_k``: each layer then relaxes given only the
layer below, and the network becomes a one-way map computed layer by layer,

    h_k = ρ'(h_k) ⊙ a_k,   a_k = b_k + W_kᵀ ρ(h_{k−1}),   ρ(h_0) := x.

Each layer solves a unit-wise scalar equation, by the same leaky (Euler) iteration that inference uses,
``h_k ← h_k + ε(ρ'(h_k) ⊙ a_k − h_k)`` from ``h_k = 0`` (clipped to ρ's range when ``clip``). For the
hard sigmoid with clipping the solution is exactly ``clip(a_k, 0, 1)``: the usual multilayer
perceptron. For the logistic sigmoid it is the state ``h`` with ``h = σ'(h) a``, whose rate ``σ(h)``
is a one-way (but not the usual ``σ(a)``) function of the drive.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .checks import check_bool, check_eps, check_positive_int, check_real, resolve_clip
from .dynamics import Relaxation
from .network import LayeredEBM, State

__all__ = ["feedforward", "layer_drive", "mlp_backprop", "mlp_forward", "mlp_layers"]


def layer_drive(net: LayeredEBM, h: State, k: int) -> Tensor:
    """The bottom-up drive ``a_k = b_k + W_kᵀ ρ(h_{k−1})`` of layer ``k`` (batch-first)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= net.N:
        raise ValueError(f"k: expected a layer index in 1..{net.N}, got {k!r}")
    r_prev = h[0] if k == 1 else net.activation.rho(h[k - 1])
    return torch.addmm(net.b[k], r_prev, net.W[k])


def feedforward(
    net: LayeredEBM,
    x: Tensor,
    *,
    eps: float = 0.5,
    tol: float = 1e-12,
    max_steps: int = 10_000,
    clip: Optional[bool] = None,
) -> Relaxation:
    """The feedforward state ``[x, h_1, …, h_N]`` of ``net``'s weights (no top-down terms).

    Returns a :class:`Relaxation` whose ``residual`` is the largest ``max |h_k − ρ'(h_k)⊙a_k|`` over
    layers (projected onto ρ's range when clipping), ``steps`` the most iterations a layer took and
    ``history`` the pairs ``(k, residual of layer k)``. ``converged`` is False when a layer did not
    reach ``tol`` within ``max_steps``. No autograd.
    """
    x = net.check_input(x)
    eps = check_eps(eps)
    tol = check_real("tol", tol)
    if tol <= 0:
        raise ValueError(f"tol: must be > 0, got {tol}")
    check_positive_int("max_steps", max_steps)
    clip = resolve_clip(clip, net.activation.clip_by_default)
    act = net.activation
    lo, hi = act.lo, act.hi
    h: State = [x]
    worst_steps, worst_res, history = 0, 0.0, []
    for k in range(1, net.N + 1):
        a = layer_drive(net, h, k)
        if clip and act.name == "hard_sigmoid":
            hk = a.clamp(lo, hi)  # closed form: the projected fixed point of h = 1[0<=h<=1] a
            steps = 0
        else:
            hk = torch.zeros_like(a)
            steps, res = 0, math.inf
            while steps < max_steps:
                n = min(10, max_steps - steps)
                for _ in range(n):
                    hk = torch.lerp(hk, act.drho(hk) * a, eps)
                    if clip:
                        hk.clamp_(lo, hi)
                steps += n
                target = act.drho(hk) * a
                if clip:
                    target = target.clamp(lo, hi)
                res = float((target - hk).abs().max())
                if not math.isfinite(res):
                    raise FloatingPointError(f"x: the feedforward iteration diverged at layer {k}")
                if res <= tol:
                    break
        target = act.drho(hk) * a
        if clip:
            target = target.clamp(lo, hi)
        res = float((target - hk).abs().max())
        history.append((k, res))
        worst_steps, worst_res = max(worst_steps, steps), max(worst_res, res)
        h.append(hk)
    return Relaxation(h, worst_steps, worst_res, worst_res <= tol, history)


def mlp_layers(net: LayeredEBM, x: Tensor) -> tuple[list, list]:
    """The multilayer perceptron of ``net``'s weights: pre-activations ``[None, a_1, …]`` and rates
    ``[x, r_1, …, r_N]``, ``a_k = b_k + W_kᵀ r_{k−1}``, ``r_k = ρ(a_k)``."""
    x = net.check_input(x)
    pre, r = [None], [x]
    for k in range(1, net.N + 1):
        pre.append(torch.addmm(net.b[k], r[-1], net.W[k]))
        r.append(net.activation.rho(pre[k]))
    return pre, r


def mlp_forward(net: LayeredEBM, x: Tensor) -> list[Tensor]:
    """Rates of the multilayer perceptron with the energy model's weights: ``r_k = ρ(r_{k−1} W_k + b_k)``, ``r_0 = x``."""
    return mlp_layers(net, x)[1]


def mlp_backprop(net: LayeredEBM, x: Tensor, target: Tensor, *, state_drho: bool = False) -> list:
    """Back-propagation of the multilayer perceptron at its own forward pass: the errors ``δ_k = ∂C/∂a_k``.

    With ``C = ½‖r_N − d‖²``: ``δ_N = ρ'(a_N) ⊙ (r_N − d)``, ``δ_k = ρ'(a_k) ⊙ (W_{k+1} δ_{k+1})``, ρ' at
    the perceptron's pre-activations ``a_k`` (zero on saturated units: the true gradient), so that
    ``∂C/∂W_k = r_{k−1}ᵀ δ_k``. The same recursion as :func:`ebmlib.chain_gradient` with ρ' taken at
    the perceptron's pass instead of the fixed point. ``state_drho``: ρ' at the rates ``r_k``
    instead (the straight-through choice of :func:`ebmlib.bp_gradient` for the hard sigmoid).
    Returns ``[None, δ_1, …, δ_N]``, batch-first.
    """
    x = net.check_input(x)
    target = net.check_target(target, x.shape[0])
    check_bool("state_drho", state_drho)
    pre, r = mlp_layers(net, x)
    act = net.activation
    delta: list = [None] * (net.N + 1)
    for k in range(net.N, 0, -1):
        back = r[k] - target if k == net.N else delta[k + 1] @ net.W[k + 1].T
        delta[k] = act.drho(r[k] if state_drho else pre[k]) * back
    return delta
