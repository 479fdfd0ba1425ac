"""The response to a nudge: the nudged run minus the free run from the same start (PAPER.md §4–5).

Everything here is built on one function, :func:`nudge_response`: start at the free fixed point
``h*`` (or a displaced state), run the nudged dynamics and, from ``h*``, the free dynamics, and take
``δ_k(t) = h^β_k(t) − h^0_k(t)``. The difference cancels the motion left by an imperfectly converged
free phase, which would otherwise swamp the deep layers' signal; it needs a second, unnudged copy of
the network, a construction rather than something one synapse sees.

- :func:`first_arrival`: for a layer at distance ``m = N − k`` from the output, (a) δ_k(t) = 0
  exactly for t ≤ m; (b) δ_k(m+1) = −β ε^{m+1} g_k + O(β²) (this book's discrete-time reconstruction
  of the note's argument); under other schedules and with top-down weights ``B``, at the step
  :func:`ebmlib.reach_steps` predicts, with the chain gradient through ``B``;
- :func:`displaced_arrival`: variant (b′), the output displaced once by −η g_N;
- :func:`state_response`: (δ_{t+1} − δ_t)/β along the whole nudged phase, to compare with −ε S̄_t;
- :func:`continuous_response`: δ_k(t) as ε → 0 at fixed t (Richardson extrapolation);
- :func:`noisy_arrival`: δ_k(m+1) for many pairs of Langevin chains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .checks import (
    check_eps,
    check_generator,
    check_nonzero_beta,
    check_positive_int,
    check_real,
    check_temperature,
    check_tensor,
)
from .dynamics import Schedule, reach_steps, run
from .gradients import chain_gradient
from .measures import cosine, magnitude_ratio, positive_series
from .network import Feedback, LayeredEBM, State

__all__ = [
    "nudge_response",
    "FirstArrival",
    "first_arrival",
    "displaced_arrival",
    "first_change_steps",
    "state_response",
    "continuous_response",
    "NoisyArrival",
    "noisy_arrival",
]


def nudge_response(
    net: LayeredEBM,
    h_star: State,
    *,
    steps: int,
    eps: float,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    start: Optional[State] = None,
    T: float = 0.0,
    generator: Optional[torch.Generator] = None,
    generator_free: Optional[torch.Generator] = None,
    clip: Optional[bool] = None,
    schedule: Schedule = "synchronous",
    feedback: Optional[Feedback] = None,
) -> list:
    """δ_k(t) = h^β_k(t) − h^0_k(t), t = 0 … steps: the one nudged-minus-free measurement.

    The first run starts at ``start`` (default ``h_star``; a displaced state for (b′)) with
    nudging ``beta`` toward ``target``; the second is the free run (β = 0) from ``h_star``. With
    ``T > 0`` both are Langevin chains, drawing from ``generator`` and ``generator_free``: two
    generators seeded alike give common random numbers. Returns per layer ``(steps + 1, B, n_k)``
    (index 0 None). Closed-form dynamics only, no autograd.
    """
    start = h_star if start is None else start
    T = check_temperature(T)
    kw = dict(steps=steps, eps=eps, T=T, clip=clip, schedule=schedule, feedback=feedback)
    if T > 0.0:
        check_generator("generator_free", generator_free)
    nudged = run(net, start, beta=beta, target=target, generator=generator, **kw)
    free = run(net, h_star, generator=generator_free, **kw)
    return [None] + [nudged.h[k] - free.h[k] for k in range(1, net.N + 1)]


@dataclass
class FirstArrival:
    """Per-layer results of :func:`first_arrival` (index k = layer k; index 0 unused).

    ``distance[k]``: m = N − k; ``delta[k]``: δ_k(t) for every step run, shape ``(steps + 1, B, n_k)``;
    ``arrival[k]``: δ_k at its predicted arrival step ``step_predicted[k]`` (m + 1 when synchronous);
    ``predicted[k]``: −β ε^{m+1} g_k (or −η ε^m g_k for the displacement); ``g``: the chain gradient
    used (masked or through ``B`` when asked); ``silent[k]``: δ_k exactly zero before the predicted
    step; ``step[k]``: the first step at which δ_k ≠ 0 (measured); ``cos[k]``, ``ratio[k]``: cosine
    and norm ratio of arrival to prediction; ``g_backprop``, ``cos_backprop``: the chain gradient
    through ``W`` and the cosine of the arrival with ``−g_k`` (differs from ``cos`` with feedback).
    """

    distance: list
    delta: list
    arrival: list
    predicted: list
    g: list
    silent: list
    cos: list
    ratio: list
    step: list
    step_predicted: list
    g_backprop: list
    cos_backprop: list

    @property
    def N(self) -> int:
        return len(self.distance) - 1

    def worst_cos(self) -> float:
        return min(c for c in self.cos[1:] if c is not None)

    def worst_ratio_error(self) -> float:
        return max(abs(r - 1.0) for r in self.ratio[1:] if r is not None)

    def steps_match(self) -> bool:
        """Whether every layer first moved at the step the chain graph predicts."""
        return self.step[1:] == self.step_predicted[1:]

    def reached_in_one_step(self) -> int:
        return sum(1 for t in self.step[1:] if t == 1)


def _compare(a: Tensor, b: Tensor) -> tuple[Optional[float], Optional[float]]:
    """(cosine, norm ratio) of ``a`` to ``b``; ``None`` where either is zero."""
    if float(a.norm()) > 0.0 and float(b.norm()) > 0.0:
        return cosine(a, b), magnitude_ratio(a, b)
    return None, None


def _arrival(
    net: LayeredEBM, delta: list, at: list, predicted: list, g: list, g_bp: list, silent_before: list
) -> FirstArrival:
    N = net.N
    arrival = [None] + [delta[k][at[k]] for k in range(1, N + 1)]
    pairs = [(None, None)] + [_compare(arrival[k], predicted[k]) for k in range(1, N + 1)]
    cos_bp = [None] + [_compare(arrival[k], -g_bp[k])[0] for k in range(1, N + 1)]
    silent = [None] + [bool(torch.all(delta[k][: silent_before[k]] == 0)) for k in range(1, N + 1)]
    return FirstArrival([None] + [N - k for k in range(1, N + 1)], delta, arrival, predicted, g, silent,
                        [c for c, _ in pairs], [r for _, r in pairs], first_change_steps(delta), at, g_bp, cos_bp)


def first_arrival(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    eps: float,
    beta: float,
    clip: Optional[bool] = None,
    mask: Optional[str] = None,
    schedule: Schedule = "synchronous",
    feedback: Optional[Feedback] = None,
) -> FirstArrival:
    """Measure δ_k at its arrival step against −β ε^{m+1} g_k for every layer (float64 recommended).

    ``mask="pinned"`` predicts with the chain gradient of the clipped dynamics (pinned units
    masked); ``feedback`` with the error carried down by ``B``; ``schedule`` changes the arrival
    step (:func:`ebmlib.reach_steps`). ``h_star`` must be a fixed point of the same dynamics.
    """
    eps = check_eps(eps)
    beta = check_nonzero_beta(beta)
    N = net.N
    at = reach_steps(N, schedule)
    delta = nudge_response(net, h_star, steps=max(at[1:]) + 1, eps=eps, beta=beta, target=target, clip=clip,
                           schedule=schedule, feedback=feedback)
    g = chain_gradient(net, h_star, target, mask=mask, feedback=feedback, clip=clip)
    g_bp = g if feedback is None and mask is None else chain_gradient(net, h_star, target)
    predicted = [None] + [-beta * eps ** (N - k + 1) * g[k] for k in range(1, N + 1)]
    return _arrival(net, delta, at, predicted, g, g_bp, at)


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

    h_k(m) − h_k(m−1) = −η ε^m g_k + O(η²) for the hidden layers (measured as the difference with a
    free run from ``h*``); the output's entry is its displacement.
    """
    eps = check_eps(eps)
    eta = check_real("eta", eta)
    if eta == 0.0:
        raise ValueError("eta: must be non-zero to displace the output")
    g = chain_gradient(net, h_star, target)
    N = net.N
    start = list(h_star)
    start[N] = h_star[N] - eta * g[N]
    delta = nudge_response(net, h_star, steps=N + 1, eps=eps, start=start, clip=clip)
    # the change at step m of layer k: δ_k(m) − δ_k(m − 1); the output's is its displacement δ_N(0)
    change = [None] + [delta[k][1:] - delta[k][:-1] if k < N else delta[k] for k in range(1, N + 1)]
    at = [None] + [N - k - 1 if k < N else 0 for k in range(1, N + 1)]
    predicted = [None] + [-eta * eps ** (N - k) * g[k] for k in range(1, N + 1)]
    fa = _arrival(net, change, at, predicted, g, g, [None] + [N - k for k in range(1, N + 1)])
    fa.delta = delta
    fa.silent = [None] + [bool(torch.all(delta[k][: N - k] == 0)) for k in range(1, N + 1)]
    fa.step, fa.step_predicted = first_change_steps(delta), [None] + [N - k for k in range(1, N + 1)]
    return fa


def first_change_steps(delta: Sequence[Optional[Tensor]]) -> list:
    """First step ``t`` with ``δ_k(t) ≠ 0`` (exactly) per layer; ``None`` if it never changes.

    ``delta[k]`` has time on axis 0 (as ``FirstArrival.delta``); index 0 is ``None``.
    """
    if not isinstance(delta, (list, tuple)) or len(delta) < 2:
        raise ValueError("delta: expected a list [None, δ_1, …, δ_N] with time on axis 0")
    out: list = [None]
    for k in range(1, len(delta)):
        d = check_tensor(f"delta[{k}]", delta[k])
        nz = (d != 0).flatten(1).any(1).nonzero().flatten()
        out.append(int(nz[0]) if nz.numel() else None)
    return out


def state_response(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    steps: int,
    eps: float,
    beta: float,
    clip: Optional[bool] = None,
) -> list:
    """(δ_{t+1} − δ_t)/β for t = 0 … steps−1 along the nudged phase from ``h_star``.

    Returns per layer ``(steps, B, n_k)`` (index 0 None), to compare with −ε S̄_t of
    :func:`ebmlib.adjoint` (Scellier & Bengio 2019; Ernoult et al. 2019).
    """
    net.check_state(h_star, "h_star")
    check_positive_int("steps", steps)
    beta = check_nonzero_beta(beta)
    target = net.check_target(target, h_star[0].shape[0])
    delta = nudge_response(net, h_star, steps=steps, eps=eps, beta=beta, target=target, clip=clip)
    return [None] + [(d[1:] - d[:-1]) / beta for d in delta[1:]]


def continuous_response(
    net: LayeredEBM,
    h_star: State,
    *,
    times: Sequence[float],
    eps: float,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    start: Optional[State] = None,
    clip: Optional[bool] = None,
) -> list:
    """δ_k(t) in the limit ε → 0 at fixed t, for every layer (index 0 is None).

    :func:`nudge_response` at steps ``eps`` and ``eps/2``; per layer ``(len(times), B, n_k)``
    holding the Richardson extrapolation ``2 δ^{ε/2}(t) − δ^{ε}(t)``, whose error is O(ε²).
    Prediction (c): δ_k(t) = −β t^{m+1}/(m+1)! g_k + O(t^{m+2}); displaced start: −η t^m/m! g_k.
    Every time must be a multiple of ``eps``.
    """
    eps = check_eps(eps)
    check_real("beta", beta)
    net.check_state(h_star, "h_star")
    start = h_star if start is None else net.check_state(start, "start")
    tt = positive_series("times", times)
    idx = np.rint(tt / eps).astype(int)
    if not np.allclose(idx * eps, tt, rtol=1e-9, atol=0.0):
        raise ValueError(f"times: every time must be a multiple of eps = {eps:g}")
    steps = int(idx.max())
    deltas = []
    for e, m in ((eps, 1), (eps / 2, 2)):
        delta = nudge_response(net, h_star, steps=m * steps, eps=e, beta=beta, target=target, start=start, clip=clip)
        sel = torch.as_tensor(m * idx, device=net.device)
        deltas.append([None] + [delta[k][sel] for k in range(1, net.N + 1)])
    return [None] + [2.0 * deltas[1][k] - deltas[0][k] for k in range(1, net.N + 1)]


@dataclass
class NoisyArrival:
    """``delta[k]``: δ_k(m+1) for each of the chains, shape ``(chains, n_k)`` (index 0 unused);
    ``predicted[k]``: the noiseless arrival −β ε^{m+1} g_k, shape ``(n_k,)``."""

    delta: list
    predicted: list
    g: list


def noisy_arrival(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    eps: float,
    beta: float,
    T: float,
    chains: int,
    gen_nudged: torch.Generator,
    gen_free: torch.Generator,
) -> NoisyArrival:
    """δ_k(m+1) for ``chains`` pairs of Langevin chains from one ``h*`` (batch 1), run as one batch.

    The nudged chains draw from ``gen_nudged``, the free ones from ``gen_free``: two generators
    seeded alike give common random numbers.
    """
    net.check_state(h_star, "h_star")
    if h_star[0].shape[0] != 1:
        raise ValueError(f"h_star: expected a single input (batch 1), got batch {h_star[0].shape[0]}")
    target = net.check_target(target, 1)
    eps = check_eps(eps)
    beta = check_nonzero_beta(beta)
    check_positive_int("chains", chains)
    check_generator("gen_nudged", gen_nudged)
    check_generator("gen_free", gen_free)
    N = net.N
    h0 = [h.expand(chains, -1).contiguous() for h in h_star]
    delta = nudge_response(net, h0, steps=N + 1, eps=eps, beta=beta, target=target.expand(chains, -1).contiguous(),
                           T=T, generator=gen_nudged, generator_free=gen_free)
    g = chain_gradient(net, h_star, target)
    return NoisyArrival([None] + [delta[k][N - k + 1] for k in range(1, N + 1)],
                        [None] + [(-beta * eps ** (N - k + 1) * g[k])[0] for k in range(1, N + 1)], g)
