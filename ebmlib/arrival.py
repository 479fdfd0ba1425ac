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

from .checks import check_eps, check_real
from .dynamics import run
from .gradients import chain_gradient
from .measures import cosine, magnitude_ratio
from .network import LayeredEBM, State

__all__ = ["FirstArrival", "first_arrival", "displaced_arrival"]


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


def first_arrival(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    eps: float,
    beta: float,
    clip: Optional[bool] = None,
) -> FirstArrival:
    """Measure δ_k(d+1) against −β ε^{d+1} g_k for every layer (float64 recommended)."""
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero to nudge the output")
    g = chain_gradient(net, h_star, target)
    N = net.N
    nudged = run(net, h_star, steps=N + 1, eps=eps, beta=beta, target=target, clip=clip)
    free = run(net, h_star, steps=N + 1, eps=eps, clip=clip)
    delta: list = [None] + [nudged.h[k] - free.h[k] for k in range(1, N + 1)]
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
