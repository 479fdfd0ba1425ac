"""First arrival of the nudge (PAPER.md §4): the measurement every later chapter reuses.

Start at the free fixed point ``h*``; run the nudged dynamics (β, target) and,
from the same start, the free dynamics; ``δ_k(t) = h^β_k(t) − h^0_k(t)``. For a
layer at distance ``d = N − k`` from the output:

(a) δ_k(t) = 0 exactly for t ≤ d;
(b) δ_k(d+1) = −β ε^{d+1} g_k + O(β²),  g_N = y* − d,  g_k = J_k g_{k+1}.

The difference from the free run cancels the motion left by an imperfectly
converged free phase, which would otherwise swamp the deep layers' signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .checks import check_eps, check_real, check_tensor
from .dynamics import run
from .gradients import chain_gradient
from .measures import cosine, magnitude_ratio
from .network import LayeredEBM, State

__all__ = [
    "FirstArrival",
    "nudge_response",
    "first_arrival",
    "displaced_arrival",
    "pinned_units",
    "one_sided_chain_gradient",
]


@dataclass
class FirstArrival:
    """Per-layer results (index k = layer k; index 0 unused).

    ``delta[k]``: δ_k(t) for t = 0 … N+1, shape ``(N+2, B, n_k)``;
    ``arrival[k]``: δ_k(d+1) (or the displacement variant's change);
    ``predicted[k]``: −β ε^{d+1} g_k (or −η ε^d g_k);
    ``silent[k]``: whether δ_k(t) is exactly zero before the arrival step;
    ``cos[k]``, ``ratio[k]``: cosine and norm ratio of arrival to prediction.
    """

    distance: list
    delta: list
    arrival: list
    predicted: list
    g: list
    silent: list
    cos: list
    ratio: list

    @property
    def N(self) -> int:
        return len(self.distance) - 1

    def worst_cos(self) -> float:
        return min(c for c in self.cos[1:] if c is not None)

    def worst_ratio_error(self) -> float:
        return max(abs(r - 1.0) for r in self.ratio[1:] if r is not None)


def _summarise(net: LayeredEBM, delta: list, arrival: list, predicted: list, g: list, silent: list) -> FirstArrival:
    N = net.N
    cos: list = [None] * (N + 1)
    ratio: list = [None] * (N + 1)
    for k in range(1, N + 1):
        if float(predicted[k].norm()) > 0.0 and float(arrival[k].norm()) > 0.0:
            cos[k] = cosine(arrival[k], predicted[k])
            ratio[k] = magnitude_ratio(arrival[k], predicted[k])
    return FirstArrival([None] + [N - k for k in range(1, N + 1)], delta, arrival, predicted, g, silent, cos, ratio)


def pinned_units(net: LayeredEBM, h: State, clip: Optional[bool] = None) -> list:
    """Units held at a clip boundary: per layer a bool tensor (index 0 is None).

    With clipping (the hard sigmoid's default), a unit at the lower bound whose force is
    negative, or at the upper bound whose force is positive, is put back on the bound by every
    step: a small push does not move it, although ρ' (inclusive at the bounds, like autograd of
    ``clamp``) is 1 there. Without clipping no unit is pinned.
    """
    net.check_state(h, "h")
    if clip is None:
        clip = net.activation.clip_by_default
    if not isinstance(clip, bool):
        raise TypeError(f"clip: expected bool or None, got {type(clip).__name__}")
    out: list = [None]
    f = net.force(h)
    lo, hi = net.activation.lo, net.activation.hi
    for k in range(1, net.N + 1):
        if clip:
            out.append(((h[k] <= lo) & (f[k] < 0)) | ((h[k] >= hi) & (f[k] > 0)))
        else:
            out.append(torch.zeros_like(h[k], dtype=torch.bool))
    return out


def one_sided_chain_gradient(net: LayeredEBM, h_star: State, target: Tensor, clip: Optional[bool] = None) -> list:
    """The chain gradient of the clipped dynamics: g̃_N = M_N ⊙ (y* − d), g̃_k = M_k ⊙ J_k g̃_{k+1}.

    ``M_k`` is 0 on :func:`pinned_units` and 1 elsewhere, i.e. ρ' taken as 0 at a pinned unit
    (the one-sided derivative of the clipped step). Equals :func:`chain_gradient` when no unit is
    pinned. Closed form: J_k g = ρ'(h_k) ⊙ W_{k+1} (ρ'(h_{k+1}) ⊙ g).
    """
    pinned = pinned_units(net, h_star, clip)
    target = check_tensor("target", target, shape=tuple(h_star[net.N].shape), dtype=net.dtype, device=net.device)
    N = net.N
    drho = [None] + [net.activation.drho(h_star[k]) for k in range(1, N + 1)]
    g: list = [None] * (N + 1)
    g[N] = torch.where(pinned[N], 0.0, h_star[N] - target)
    for k in range(N - 1, 0, -1):
        gk = drho[k] * ((drho[k + 1] * g[k + 1]) @ net.W[k + 1].T)
        g[k] = torch.where(pinned[k], 0.0, gk)
    return g


def nudge_response(
    net: LayeredEBM, h_star: State, target: Tensor, *, eps: float, beta: float, clip: Optional[bool] = None
) -> list:
    """δ_k(t) = h^β_k(t) − h^0_k(t) for t = 0 … N+1: the nudged run minus the free run from ``h_star``.

    Closed-form dynamics only (no autograd): the measurement behind the first arrival, also
    used by the first-arrival learning rule. Index k is layer k, shape ``(N+2, B, n_k)``.
    """
    N = net.N
    nudged = run(net, h_star, steps=N + 1, eps=eps, beta=beta, target=target, clip=clip)
    free = run(net, h_star, steps=N + 1, eps=eps, clip=clip)
    return [None] + [nudged.h[k] - free.h[k] for k in range(1, N + 1)]


def first_arrival(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    eps: float,
    beta: float,
    clip: Optional[bool] = None,
    one_sided: bool = False,
) -> FirstArrival:
    """Measure δ_k(d+1) against −β ε^{d+1} g_k for every layer (float64 recommended).

    ``one_sided=True`` predicts with :func:`one_sided_chain_gradient` (pinned units masked)
    instead of :func:`chain_gradient`.
    """
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero to nudge the output")
    if not isinstance(one_sided, bool):
        raise TypeError(f"one_sided: expected bool, got {type(one_sided).__name__}")
    g = one_sided_chain_gradient(net, h_star, target, clip) if one_sided else chain_gradient(net, h_star, target)
    N = net.N
    delta = nudge_response(net, h_star, target, eps=eps, beta=beta, clip=clip)
    arrival: list = [None] * (N + 1)
    predicted: list = [None] * (N + 1)
    silent: list = [None] * (N + 1)
    for k in range(1, N + 1):
        d = N - k
        arrival[k] = delta[k][d + 1]
        predicted[k] = -beta * eps ** (d + 1) * g[k]
        silent[k] = bool(torch.all(delta[k][: d + 1] == 0))
    return _summarise(net, delta, arrival, predicted, g, silent)


def displaced_arrival(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    eps: float,
    eta: float,
    clip: Optional[bool] = None,
) -> FirstArrival:
    """Variant (b′): displace the output once by −η g_N, then let it go free.

    h_k(d) − h_k(d−1) = −η ε^d g_k + O(η²) for the hidden layers (measured as the
    difference with a free run from ``h*``); the output's entry is its displacement.
    """
    eps = check_eps(eps)
    eta = check_real("eta", eta)
    if eta == 0.0:
        raise ValueError("eta: must be non-zero to displace the output")
    g = chain_gradient(net, h_star, target)
    N = net.N
    start = list(h_star)
    start[N] = h_star[N] - eta * g[N]
    moved = run(net, start, steps=N + 1, eps=eps, clip=clip)
    free = run(net, h_star, steps=N + 1, eps=eps, clip=clip)
    delta: list = [None] + [moved.h[k] - free.h[k] for k in range(1, N + 1)]
    arrival: list = [None] * (N + 1)
    predicted: list = [None] * (N + 1)
    silent: list = [None] * (N + 1)
    for k in range(1, N + 1):
        d = N - k
        if d == 0:
            arrival[k] = delta[k][0]
            silent[k] = True
        else:
            arrival[k] = delta[k][d] - delta[k][d - 1]
            silent[k] = bool(torch.all(delta[k][:d] == 0))
        predicted[k] = -eta * eps**d * g[k]
    return _summarise(net, delta, arrival, predicted, g, silent)
