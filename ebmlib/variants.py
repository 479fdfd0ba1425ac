"""Model variants that break the assumptions of the first-arrival result (PAPER.md §4, §7).

Two departures from the layered energy model, implemented with closed-form updates
(no autograd in the loops):

* **Separate top-down weights.** Layer ``k`` hears layer ``k+1`` through ``B_{k+1}``
  instead of ``W_{k+1}``:

      f_k(h) = ρ'(h_k) ⊙ (b_k + W_kᵀ ρ(h_{k−1}) + B_{k+1} ρ(h_{k+1})) − h_k  (+ β(d − y) on h_N).

  With ``B ≠ W`` the Jacobian of ``f`` is not symmetric and no energy has ``f`` as its
  gradient: the dynamics are a vector field. The asymmetry knob ``a ∈ [0, 1]`` of
  :func:`feedback_weights` mixes ``W`` with an independent random matrix of the same norm.

* **Asynchronous schedules.** One step updates groups of layers in a fixed order, each
  group from the current state (Gauss–Seidel); the synchronous step is the single group
  ``[1, …, N]``. :func:`reach_steps` counts, on the chain graph alone, the step at which the
  nudge first reaches each layer; :func:`first_change_steps` measures it on the dynamics.

First arrival through ``B`` (any schedule that updates every layer once per step): at the
first step at which ``δ_k ≠ 0``, ``δ_k = −β ε^{d+1} g̃_k + O(β²)`` with ``d = N − k``,
``g̃_N = y* − d`` and ``g̃_k = D_k B_{k+1} D_{k+1} g̃_{k+1}`` (:func:`feedback_chain`); with
``B = W`` this is the back-propagated ``g_k``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from .arrival import FirstArrival, _summarise
from .checks import check_eps, check_positive_int, check_real, check_tensor
from .dynamics import Relaxation, Trajectory, check_step_args
from .gradients import chain_gradient
from .measures import cosine
from .network import LayeredEBM, State

__all__ = [
    "SCHEDULES",
    "feedback_weights",
    "schedule_groups",
    "vf_force",
    "schedule_step",
    "schedule_run",
    "schedule_relax",
    "feedback_chain",
    "reach_steps",
    "first_change_steps",
    "FeedbackArrival",
    "schedule_arrival",
]

SCHEDULES = ("synchronous", "top_down", "bottom_up", "odd_even", "even_odd")

Schedule = Union[str, Sequence[Sequence[int]]]


# ---------------------------------------------------------------- feedback weights
def feedback_weights(net: LayeredEBM, a: float, *, seed: int) -> list:
    """Top-down weights with asymmetry ``a``: ``B_k = ‖W_k‖ M_k / ‖M_k‖``, ``M_k = (1 − a) W_k + a Q_k``.

    ``Q_k`` has i.i.d. standard normal entries (drawn from a generator seeded with ``seed``, the
    same ``Q`` for every ``a``) rescaled to ``‖Q_k‖ = ‖W_k‖`` (Frobenius). ``a = 0`` gives
    ``B = W`` (symmetric, an energy exists); ``a = 1`` gives random feedback of the same norm.
    Returns a list indexed like ``net.W``; ``B[0]`` and ``B[1]`` are ``None`` (the clamped input
    receives no top-down signal).
    """
    a = check_real("a", a)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"a: the asymmetry must lie in [0, 1], got {a}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an integer, got {type(seed).__name__}")
    gen = torch.Generator().manual_seed(seed)
    B: list = [None, None]
    for k in range(2, net.N + 1):
        W = net.W[k]
        Q = torch.randn(tuple(W.shape), generator=gen, dtype=torch.float64).to(device=W.device, dtype=W.dtype)
        nW = W.norm()
        Q = Q * (nW / Q.norm())
        M = (1.0 - a) * W + a * Q
        B.append(M * (nW / M.norm()) if float(M.norm()) > 0.0 else M)
    return B


def _check_feedback(net: LayeredEBM, B: Optional[Sequence[Optional[Tensor]]]) -> list:
    """``B`` as a list ``[None, None, B_2, …, B_N]``; ``None`` means ``B = W`` (symmetric)."""
    if B is None:
        return [None, None] + [net.W[k] for k in range(2, net.N + 1)]
    if not isinstance(B, (list, tuple)) or len(B) != net.N + 1:
        raise ValueError(f"B: expected a list of length N+1 = {net.N + 1} with indices 0 and 1 unused")
    out: list = [None, None]
    for k in range(2, net.N + 1):
        out.append(check_tensor(f"B[{k}]", B[k], shape=tuple(net.W[k].shape), dtype=net.dtype, device=net.device))
    return out


# ---------------------------------------------------------------- schedules
def schedule_groups(N: int, schedule: Schedule) -> list[list[int]]:
    """The ordered groups of layers one step updates.

    ``synchronous``: ``[[1, …, N]]``; ``top_down``: ``[[N], [N−1], …, [1]]``; ``bottom_up``:
    ``[[1], …, [N]]``; ``odd_even``: odd layers, then even layers; ``even_odd``: the reverse.
    An explicit list of groups must cover every layer 1…N exactly once.
    """
    N = check_positive_int("N", N)
    if isinstance(schedule, str):
        if schedule == "synchronous":
            groups = [list(range(1, N + 1))]
        elif schedule == "top_down":
            groups = [[k] for k in range(N, 0, -1)]
        elif schedule == "bottom_up":
            groups = [[k] for k in range(1, N + 1)]
        elif schedule in ("odd_even", "even_odd"):
            odd = [k for k in range(1, N + 1) if k % 2 == 1]
            even = [k for k in range(1, N + 1) if k % 2 == 0]
            groups = [odd, even] if schedule == "odd_even" else [even, odd]
        else:
            raise ValueError(f"schedule: expected one of {SCHEDULES} or a list of groups, got {schedule!r}")
        return [g for g in groups if g]
    if not isinstance(schedule, (list, tuple)):
        raise TypeError(f"schedule: expected a name or a list of groups, got {type(schedule).__name__}")
    groups = [[int(k) for k in g] for g in schedule]
    flat = sorted(k for g in groups for k in g)
    if flat != list(range(1, N + 1)) or any(not g for g in groups):
        raise ValueError(f"schedule: the groups must be non-empty and cover layers 1..{N} exactly once, got {groups}")
    return groups


# ---------------------------------------------------------------- dynamics
@dataclass
class _Setup:
    eps: float
    beta: float
    target: Optional[Tensor]
    bounds: Optional[tuple[float, float]]
    drive: Tensor
    B: list
    groups: list[list[int]]


def _setup(net, h, B, *, eps, beta, target, clip, schedule, name="h") -> _Setup:
    h, eps, beta, target, clip = check_step_args(net, h, eps=eps, beta=beta, target=target, clip=clip, name=name)
    bounds = (net.activation.lo, net.activation.hi) if clip else None
    return _Setup(eps, beta, target, bounds, net.input_drive(h[0]), _check_feedback(net, B),
                  schedule_groups(net.N, schedule))


def _layer_force(net: LayeredEBM, s: _Setup, h: State, rho: list, k: int) -> Tensor:
    """f_k = ρ'(h_k) ⊙ (b_k + W_kᵀρ(h_{k−1}) + B_{k+1}ρ(h_{k+1})) − h_k (+ β(d − y) if k = N)."""
    N = net.N
    pre = s.drive if k == 1 else net.b[k] + rho[k - 1] @ net.W[k]
    if k < N:
        pre = pre + rho[k + 1] @ s.B[k + 1].T
    f = net.activation.drho(h[k]) * pre - h[k]
    if k == N and s.beta != 0.0:
        f = f + s.beta * (s.target - h[k])
    return f


def vf_force(
    net: LayeredEBM,
    h: State,
    B: Optional[Sequence[Optional[Tensor]]] = None,
    *,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
) -> State:
    """The vector field with top-down weights ``B`` (module docstring); ``f[0]`` is zero.

    With ``B = None`` (or ``B = W``) it equals ``net.force``.
    """
    s = _setup(net, h, B, eps=1.0, beta=beta, target=target, clip=False, schedule="synchronous")
    rho = [h[0]] + [net.activation.rho(h[k]) for k in range(1, net.N + 1)]
    return [torch.zeros_like(h[0])] + [_layer_force(net, s, h, rho, k) for k in range(1, net.N + 1)]


def _sweep(net: LayeredEBM, s: _Setup, h: State) -> State:
    """One step: each group in turn, ``h_k ← h_k + ε f_k(current state)`` (then clip)."""
    h = list(h)
    rho = [h[0]] + [net.activation.rho(h[k]) for k in range(1, net.N + 1)]
    for group in s.groups:
        new = {k: h[k] + s.eps * _layer_force(net, s, h, rho, k) for k in group}
        for k, hk in new.items():
            if s.bounds is not None:
                hk = hk.clamp(s.bounds[0], s.bounds[1])
            h[k] = hk
            rho[k] = net.activation.rho(hk)
    return h


def schedule_step(
    net: LayeredEBM,
    h: State,
    *,
    eps: float,
    schedule: Schedule = "synchronous",
    B: Optional[Sequence[Optional[Tensor]]] = None,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    clip: Optional[bool] = None,
) -> State:
    """One Euler step ``h_k ← h_k + ε f_k`` of the groups of ``schedule`` in order (deterministic)."""
    s = _setup(net, h, B, eps=eps, beta=beta, target=target, clip=clip, schedule=schedule)
    return _sweep(net, s, h)


def schedule_run(
    net: LayeredEBM,
    h0: State,
    *,
    steps: int,
    eps: float,
    schedule: Schedule = "synchronous",
    B: Optional[Sequence[Optional[Tensor]]] = None,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    clip: Optional[bool] = None,
) -> Trajectory:
    """Run ``steps`` steps of :func:`schedule_step` and record every state (as :func:`ebmlib.run`)."""
    check_positive_int("steps", steps, minimum=0)
    s = _setup(net, h0, B, eps=eps, beta=beta, target=target, clip=clip, schedule=schedule, name="h0")
    rec = [None] + [torch.empty((steps + 1, *h0[k].shape), dtype=net.dtype, device=net.device)
                    for k in range(1, net.N + 1)]
    for k in range(1, net.N + 1):
        rec[k][0] = h0[k]
    h = list(h0)
    for t in range(1, steps + 1):
        h = _sweep(net, s, h)
        for k in range(1, net.N + 1):
            rec[k][t] = h[k]
    if not all(bool(torch.isfinite(rec[k]).all()) for k in range(1, net.N + 1)):
        raise ValueError("h0: the dynamics diverged (non-finite states); lower eps or the weights")
    rec[0] = h0[0].unsqueeze(0).expand(steps + 1, *h0[0].shape)
    return Trajectory(rec)


def schedule_relax(
    net: LayeredEBM,
    x: Tensor,
    *,
    eps: float = 0.5,
    schedule: Schedule = "synchronous",
    B: Optional[Sequence[Optional[Tensor]]] = None,
    tol: float = 1e-12,
    max_steps: int = 100_000,
    check_every: int = 10,
    clip: Optional[bool] = None,
) -> Relaxation:
    """Free relaxation (β = 0) from ``h = 0`` under ``schedule`` and feedback ``B``.

    Stops when ``max_k |f_k(h)|`` (the size of the vector field, read every ``check_every``
    steps) is ≤ ``tol``. A vector field need not have an attracting fixed point: check
    ``converged``. Raises ``ValueError`` if the state becomes non-finite.
    """
    h = net.init_state(x)
    s = _setup(net, h, B, eps=eps, beta=0.0, target=None, clip=clip, schedule=schedule, name="x")
    tol = check_real("tol", tol)
    check_positive_int("max_steps", max_steps, minimum=0)
    check_positive_int("check_every", check_every)
    history: list[tuple[int, float]] = []
    t, residual = 0, math.inf
    while t < max_steps:
        n = min(check_every, max_steps - t)
        for _ in range(n):
            h = _sweep(net, s, h)
        t += n
        rho = [h[0]] + [net.activation.rho(h[k]) for k in range(1, net.N + 1)]
        f = [_layer_force(net, s, h, rho, k) for k in range(1, net.N + 1)]
        if s.bounds is not None:  # the projected force: what a clipped step can still do
            f = [((h[k] + fk).clamp(*s.bounds) - h[k]) for k, fk in zip(range(1, net.N + 1), f)]
        residual = max(float(fk.abs().max()) for fk in f)
        if not math.isfinite(residual):
            raise ValueError(f"x: the relaxation diverged by step {t}; lower eps or the weights")
        history.append((t, residual))
        if residual <= tol:
            return Relaxation(h, t, residual, True, history)
    return Relaxation(h, t, residual, False, history)


# ---------------------------------------------------------------- first arrival
def feedback_chain(
    net: LayeredEBM, h_star: State, target: Tensor, B: Optional[Sequence[Optional[Tensor]]] = None
) -> list:
    """The error carried down by the top-down weights: g̃_N = y* − d, g̃_k = D_k B_{k+1} D_{k+1} g̃_{k+1}.

    ``D_k = diag(ρ'(h*_k))``; batch-first, ``g̃_k = ρ'(h_k) ⊙ ((ρ'(h_{k+1}) ⊙ g̃_{k+1}) B_{k+1}ᵀ)``.
    With ``B = W`` (or ``None``) it is the back-propagated ``g_k`` of :func:`ebmlib.chain_gradient`.
    """
    net.check_state(h_star, "h_star")
    target = net.check_target(target, h_star[0].shape[0])
    Bs = _check_feedback(net, B)
    N = net.N
    drho = [None] + [net.activation.drho(h_star[k]) for k in range(1, N + 1)]
    g: list = [None] * (N + 1)
    g[N] = h_star[N] - target
    for k in range(N - 1, 0, -1):
        g[k] = drho[k] * ((drho[k + 1] * g[k + 1]) @ Bs[k + 1].T)
    return g


def reach_steps(N: int, schedule: Schedule) -> list:
    """Step at which the nudge first reaches each layer, from the chain graph alone.

    The output changes at its first update; any other layer changes at its first update that
    sees a changed neighbour. Index ``k`` is layer ``k`` (index 0 is ``None``). Closed forms:
    synchronous and bottom-up ``d + 1``; top-down ``1``; output's group first ``⌊d/2⌋ + 1``;
    output's group second ``⌈d/2⌉ + 1`` (``d = N − k``).
    """
    groups = schedule_groups(N, schedule)
    first: list = [None] * (N + 1)
    changed: set[int] = set()
    t = 0
    while len(changed) < N:
        t += 1
        for group in groups:
            new = {k for k in group if k == N or (k + 1) in changed or (k - 1) in changed}
            for k in new - changed:
                first[k] = t
            changed |= new
    return first


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


@dataclass
class FeedbackArrival(FirstArrival):
    """:class:`FirstArrival` under a schedule and top-down weights ``B``.

    ``arrival[k]`` is δ_k at its first non-zero step ``step[k]``; ``predicted[k]`` is
    ``−β ε^{d+1} g̃_k`` (``g`` holds ``g̃``); ``step_predicted[k]`` is :func:`reach_steps`;
    ``g_backprop[k]`` is the back-propagated ``g_k`` through ``W`` and ``cos_backprop[k]`` the
    cosine of the arrival with ``−g_k`` (over the whole batch). ``silent[k]`` is true when the
    layer stayed exactly still until, and moved at, its predicted step.
    """

    step: list
    step_predicted: list
    g_backprop: list
    cos_backprop: list

    def steps_match(self) -> bool:
        return self.step[1:] == self.step_predicted[1:]

    def reached_in_one_step(self) -> int:
        return sum(1 for t in self.step[1:] if t == 1)


def schedule_arrival(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    eps: float,
    beta: float,
    schedule: Schedule = "synchronous",
    B: Optional[Sequence[Optional[Tensor]]] = None,
    clip: Optional[bool] = None,
) -> FeedbackArrival:
    """First arrival of the nudge under ``schedule`` with top-down weights ``B`` (float64 recommended).

    Runs the nudged and free dynamics from ``h_star`` (a fixed point of the same vector field)
    for as many steps as the slowest layer needs, measures ``δ_k = h^β_k − h^0_k`` and compares
    it, at each layer's first non-zero step, with ``−β ε^{d+1} g̃_k`` (:func:`feedback_chain`).
    """
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero to nudge the output")
    N = net.N
    pred_steps = reach_steps(N, schedule)
    steps = max(pred_steps[1:]) + 1
    nudged = schedule_run(net, h_star, steps=steps, eps=eps, schedule=schedule, B=B, beta=beta, target=target,
                          clip=clip)
    free = schedule_run(net, h_star, steps=steps, eps=eps, schedule=schedule, B=B, clip=clip)
    delta: list = [None] + [nudged.h[k] - free.h[k] for k in range(1, N + 1)]
    step = first_change_steps(delta)
    gt = feedback_chain(net, h_star, target, B)
    g = chain_gradient(net, h_star, target)
    arrival: list = [None] * (N + 1)
    predicted: list = [None] * (N + 1)
    silent: list = [None] * (N + 1)
    cos_bp: list = [None] * (N + 1)
    for k in range(1, N + 1):
        t = step[k] if step[k] is not None else steps
        arrival[k] = delta[k][t]
        predicted[k] = -beta * eps ** (N - k + 1) * gt[k]
        silent[k] = step[k] is not None and step[k] == pred_steps[k]
        if float(arrival[k].norm()) > 0.0 and float(g[k].norm()) > 0.0:
            cos_bp[k] = cosine(arrival[k], -g[k])
    base = _summarise(net, delta, arrival, predicted, gt, silent)
    return FeedbackArrival(base.distance, base.delta, base.arrival, base.predicted, base.g, base.silent, base.cos,
                           base.ratio, step, pred_steps, g, cos_bp)
