"""Euler / Langevin dynamics on F = E + βC (PAPER.md §3): the step, relax, run, schedules.

    h_{t+1} = h_t − ε ∂F/∂h(h_t) + sqrt(2εT) ξ_t,   ξ_t ~ N(0, I)

:func:`step` is the definition, written plainly: one step of every group of layers of a
``schedule`` in turn, each group from the current state (the synchronous step is the single
group ``[1, …, N]``), then the clip to ρ's range. :func:`relax` and :func:`run` run it; for the
synchronous and odd/even schedules with symmetric weights they use the fused loop of
:mod:`ebmlib._loop`, which the tests hold to :func:`step` to 1e-12 in float64.

Variants are parameters: ``feedback`` (top-down weights ``B``, :func:`ebmlib.feedback_weights`;
a vector field, no energy) and ``schedule`` (:data:`SCHEDULES` or explicit groups).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import Tensor

from . import _loop
from ._loop import ONE_THREAD_MACS, intra_op_threads, loop_threads
from .checks import (
    DivergenceError,
    check_eps,
    check_generator,
    check_positive_int,
    check_real,
    check_temperature,
    resolve_clip,
)
from .network import Feedback, LayeredEBM, State

__all__ = [
    "SCHEDULES",
    "Relaxation",
    "Trajectory",
    "step",
    "relax",
    "run",
    "schedule_groups",
    "reach_steps",
    "pinned_units",
    "loop_threads",
    "intra_op_threads",
    "ONE_THREAD_MACS",
]

SCHEDULES = ("synchronous", "top_down", "bottom_up", "odd_even", "even_odd")
_FAST = ("synchronous", "odd_even")  # the schedules the fused loop runs (with B = W)

Schedule = Union[str, Sequence[Sequence[int]]]


# ---------------------------------------------------------------- schedules
def schedule_groups(N: int, schedule: Schedule) -> list[list[int]]:
    """The ordered groups of layers one step updates.

    ``synchronous``: ``[[1, …, N]]``; ``top_down``: ``[[N], [N−1], …, [1]]``; ``bottom_up``:
    ``[[1], …, [N]]``; ``odd_even``: odd layers, then even layers; ``even_odd``: the reverse.
    An explicit list of groups must cover every layer 1…N exactly once.
    """
    N = check_positive_int("N", N)
    if isinstance(schedule, str):
        odd = [k for k in range(1, N + 1) if k % 2 == 1]
        even = [k for k in range(1, N + 1) if k % 2 == 0]
        named = {
            "synchronous": [list(range(1, N + 1))],
            "top_down": [[k] for k in range(N, 0, -1)],
            "bottom_up": [[k] for k in range(1, N + 1)],
            "odd_even": [odd, even],
            "even_odd": [even, odd],
        }
        if schedule not in named:
            raise ValueError(f"schedule: expected one of {SCHEDULES} or a list of groups, got {schedule!r}")
        return [g for g in named[schedule] if g]
    if not isinstance(schedule, (list, tuple)):
        raise TypeError(f"schedule: expected a name or a list of groups, got {type(schedule).__name__}")
    groups = [[int(k) for k in g] for g in schedule]
    flat = sorted(k for g in groups for k in g)
    if flat != list(range(1, N + 1)) or any(not g for g in groups):
        raise ValueError(f"schedule: the groups must be non-empty and cover layers 1..{N} exactly once, got {groups}")
    return groups


def reach_steps(N: int, schedule: Schedule) -> list:
    """Step at which a nudge of the output first reaches each layer, from the chain graph alone.

    The output changes at its first update; any other layer at its first update that sees a changed
    neighbour. Index ``k`` is layer ``k`` (index 0 is ``None``). Closed forms, with ``m = N − k``
    the distance to the output: synchronous and bottom-up ``m + 1``; top-down ``1``.
    """
    groups = schedule_groups(N, schedule)
    first: list = [None] * (N + 1)
    changed: set[int] = set()
    t = 0
    while len(changed) < N and t < N:  # every sweep reaches at least one more layer
        t += 1
        for group in groups:
            # the nudge enters at the output and can only come from above: k hears k + 1
            new = {k for k in group if k == N or (k + 1) in changed}
            for k in new - changed:
                first[k] = t
            changed |= new
    return first


# ---------------------------------------------------------------- the step
@dataclass
class _Setup:
    """Checked arguments of a stepping call (made once per call)."""

    eps: float
    beta: float
    target: Optional[Tensor]
    noise_std: float
    generator: Optional[torch.Generator]
    clip: bool
    bounds: Optional[tuple[float, float]]
    down: list
    groups: list[list[int]]
    symmetric: bool


def _setup(
    net: LayeredEBM,
    h: State,
    *,
    eps: float,
    beta: float,
    target: Optional[Tensor],
    T: float,
    clip: Optional[bool],
    generator: Optional[torch.Generator],
    schedule: Schedule,
    feedback: Optional[Feedback],
    name: str = "h",
) -> _Setup:
    """Validate what every stepping function takes (written once); resolve the defaults."""
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    h = net.check_state(h, name)
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    if beta != 0.0 and target is None:
        raise ValueError("target: required when beta != 0")
    if target is not None:
        target = net.check_target(target, h[0].shape[0])
    T = check_temperature(T)
    if T > 0.0:
        if generator is None:
            raise ValueError("generator: an explicit torch.Generator is required when T > 0 (seeds are parameters)")
        check_generator("generator", generator, net.device)
    clip = resolve_clip(clip, net.activation.clip_by_default)
    bounds = (net.activation.lo, net.activation.hi) if clip else None
    return _Setup(eps, beta, target, math.sqrt(2.0 * eps * T), generator, clip, bounds, net.top_down(feedback),
                  schedule_groups(net.N, schedule), feedback is None)


def _step(net: LayeredEBM, s: _Setup, h: State) -> State:
    """The step of :func:`step` for checked arguments."""
    h = list(h)
    for group in s.groups:
        f = net._force(h, s.beta, s.target, None, s.down)  # from the current state
        for k in group:
            hk = h[k] + s.eps * f[k]
            if s.noise_std > 0.0:
                hk = hk + s.noise_std * torch.randn(hk.shape, generator=s.generator, dtype=hk.dtype,
                                                    device=hk.device)
            h[k] = hk.clamp(*s.bounds) if s.bounds is not None else hk
    return h


def step(
    net: LayeredEBM,
    h: State,
    *,
    eps: float,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    T: float = 0.0,
    clip: Optional[bool] = None,
    generator: Optional[torch.Generator] = None,
    schedule: Schedule = "synchronous",
    feedback: Optional[Feedback] = None,
) -> State:
    """One Euler (T = 0) or Langevin (T > 0) step: the definition of the dynamics (PAPER.md §3).

    For each group of ``schedule`` in turn, ``h_k ← h_k + ε f_k(h) + sqrt(2εT) ξ_k`` from the
    current state, ``f = −∂F/∂h`` (:meth:`LayeredEBM.force`, through ``feedback`` when given),
    then the clip to ρ's range when ``clip`` (default: the activation's). Differentiable: BPTT
    unrolls this function.
    """
    s = _setup(net, h, eps=eps, beta=beta, target=target, T=T, clip=clip, generator=generator,
               schedule=schedule, feedback=feedback)
    return _step(net, s, h)


# ---------------------------------------------------------------- results
@dataclass
class Relaxation:
    """Result of :func:`relax`: the state, steps taken, final residual and its history.

    ``residual`` is max |h_{t+1} − h_t| / ε over units and batch at the last check, i.e. the
    size of the (projected) force (for a schedule of several groups: of one sweep's move).
    ``h[1:]`` are owned by this result (``h[0]`` is the caller's ``x``); no later call writes
    into them.
    """

    h: State
    steps: int
    residual: float
    converged: bool
    history: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Trajectory:
    """States recorded by :func:`run`: ``h[k]`` has shape ``(steps + 1, B, n_k)``.

    ``h[0]`` is the clamped input, repeated (a view, no copy).
    """

    h: list[Tensor]

    @property
    def steps(self) -> int:
        return self.h[1].shape[0] - 1

    def at(self, t: int) -> State:
        """The state at step ``t`` as a list ``[x, h_1(t), …, h_N(t)]``."""
        return [layer[t] for layer in self.h]


def _check_max_abs(max_abs: object) -> float:
    max_abs = check_real("max_abs", max_abs)
    if max_abs <= 0:
        raise ValueError(f"max_abs: must be > 0, got {max_abs}")
    return max_abs


def _bad_layer(h: State, max_abs: float) -> Optional[int]:
    """First layer holding a non-finite value or one beyond ``max_abs``."""
    for k in range(1, len(h)):
        if not float(h[k].abs().max()) <= max_abs:
            return k
    return None


# ---------------------------------------------------------------- relax
def relax(
    net: LayeredEBM,
    x: Tensor,
    h0: Optional[State] = None,
    *,
    eps: float = 0.5,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    tol: float = 1e-10,
    max_steps: int = 100_000,
    check_every: int = 10,
    clip: Optional[bool] = None,
    max_abs: float = 1e6,
    schedule: Schedule = "synchronous",
    feedback: Optional[Feedback] = None,
) -> Relaxation:
    """Run the deterministic dynamics from ``h0`` (default zeros) until the residual is ≤ ``tol``.

    The residual is read every ``check_every`` steps only (one host sync each); at most
    ``max_steps`` steps. Raises :class:`DivergenceError` naming the step if the state blows up.
    ``schedule`` other than synchronous stops at fixed points of the same dynamics (the force
    vanishes at all of them) by a different trajectory, so never for early-step studies; where the
    energy has several minima it may reach another one than the synchronous steps. With ``feedback``
    the dynamics are a vector field that need not have an attracting fixed point: check
    ``converged``.
    """
    if h0 is None:
        h = net.init_state(x)
    else:
        if not isinstance(h0, (list, tuple)) or len(h0) != net.N + 1:
            raise ValueError(f"h0: expected a list [x, h_1, ..., h_N] of length {net.N + 1}")
        h = [x] + list(h0[1:])
    tol = check_real("tol", tol)
    check_positive_int("max_steps", max_steps, minimum=0)
    check_positive_int("check_every", check_every)
    max_abs = _check_max_abs(max_abs)
    s = _setup(net, h, eps=eps, beta=beta, target=target, T=0.0, clip=clip, generator=None,
               schedule=schedule, feedback=feedback, name="h0")  # (zeros when h0 is None: always valid)
    if s.symmetric and isinstance(schedule, str) and schedule in _FAST:
        cfg = _loop.configure(net, h, eps=s.eps, beta=s.beta, target=s.target, noise_std=0.0, clip=s.clip,
                              generator=None, max_abs=max_abs, states=3, schedule=schedule)
        if h0 is not None:
            cfg.ws.load(0, h)
        return Relaxation(*_loop.relax_loop(net, x, cfg, tol, max_steps, check_every))
    history: list[tuple[int, float]] = []
    t, residual = 0, math.inf
    while t < max_steps:
        n = min(check_every, max_steps - t)
        good = h
        for _ in range(n):
            prev, h = h, _step(net, s, h)
        t += n
        if _bad_layer(h, max_abs) is not None:
            _replay_divergence(net, s, good, t - n, n, max_abs)
        residual = max(float((h[k] - prev[k]).abs().max()) for k in range(1, net.N + 1)) / s.eps
        history.append((t, residual))
        if residual <= tol:
            return Relaxation(h, t, residual, True, history)
    return Relaxation(h, t, residual, False, history)


def _replay_divergence(net: LayeredEBM, s: _Setup, good: State, t0: int, n: int, max_abs: float) -> None:
    """Step again from the last good state ``good`` (at step ``t0``) and raise at the first bad step."""
    h = good
    for t in range(t0 + 1, t0 + n + 1):
        h = _step(net, s, h)
        layer = _bad_layer(h, max_abs)
        if layer is not None:
            raise DivergenceError(t, layer, f"non-finite or |h| > {max_abs:g}")
    raise DivergenceError(t0 + n, 0, "the replay did not reproduce it")  # pragma: no mutate (deterministic: unreachable)


# ---------------------------------------------------------------- run
def run(
    net: LayeredEBM,
    h0: State,
    *,
    steps: int,
    eps: float,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    T: float = 0.0,
    clip: Optional[bool] = None,
    generator: Optional[torch.Generator] = None,
    check_every: int = 10,
    max_abs: float = 1e6,
    schedule: Schedule = "synchronous",
    feedback: Optional[Feedback] = None,
) -> Trajectory:
    """Run ``steps`` steps of :func:`step` from ``h0`` and record every state.

    Nudged phase: ``beta != 0`` with a ``target``. Langevin: ``T > 0`` with an explicit
    ``generator``. Divergence is checked every ``check_every`` steps and reported with the
    exact step.
    """
    check_positive_int("steps", steps, minimum=0)
    check_positive_int("check_every", check_every)
    max_abs = _check_max_abs(max_abs)
    s = _setup(net, h0, eps=eps, beta=beta, target=target, T=T, clip=clip, generator=generator,
               schedule=schedule, feedback=feedback, name="h0")
    if s.symmetric and isinstance(schedule, str) and schedule in _FAST:
        cfg = _loop.configure(net, h0, eps=s.eps, beta=s.beta, target=s.target, noise_std=s.noise_std,
                              clip=s.clip, generator=s.generator, max_abs=max_abs, states=2, schedule=schedule)
        rec = _loop.run_loop(net, cfg, h0, steps, check_every)
    else:
        rec = [None] + [torch.empty((steps + 1, *h0[k].shape), dtype=net.dtype, device=net.device)
                        for k in range(1, net.N + 1)]
        h, checked = list(h0), 0
        for k in range(1, net.N + 1):
            rec[k][0] = h[k]
        for t in range(1, steps + 1):
            h = _step(net, s, h)
            for k in range(1, net.N + 1):
                rec[k][t] = h[k]
            if t % check_every == 0 or t == steps:
                _check_recorded(rec, checked + 1, t, max_abs)
                checked = t
    rec[0] = h0[0].unsqueeze(0).expand(steps + 1, *h0[0].shape)
    return Trajectory(rec)


def _check_recorded(rec: list, t0: int, t1: int, max_abs: float) -> None:
    """Raise at the first recorded step in ``t0 … t1`` that diverged."""
    for t in range(t0, t1 + 1):
        layer = _bad_layer([None] + [rec[k][t] for k in range(1, len(rec))], max_abs)
        if layer is not None:
            raise DivergenceError(t, layer, f"non-finite or |h| > {max_abs:g}")


# ---------------------------------------------------------------- clipped units
def pinned_units(net: LayeredEBM, h: State, clip: Optional[bool] = None, feedback: Optional[Feedback] = None) -> list:
    """Units held at a clip boundary: per layer a bool tensor (index 0 is None).

    With clipping (the hard sigmoid's default), a unit at the lower bound whose force is
    negative, or at the upper bound whose force is positive, is put back on the bound by every
    step: a small push does not move it, although ρ' (inclusive at the bounds, like autograd of
    ``clamp``) is 1 there. Without clipping no unit is pinned. ``feedback``: the force through
    top-down weights ``B`` (:meth:`LayeredEBM.force`).
    """
    net.check_state(h, "h")
    clip = resolve_clip(clip, net.activation.clip_by_default)
    f = net.force(h, feedback=feedback)
    lo, hi = net.activation.lo, net.activation.hi
    out: list = [None]
    for k in range(1, net.N + 1):
        pinned = ((h[k] <= lo) & (f[k] < 0)) | ((h[k] >= hi) & (f[k] > 0))
        out.append(pinned if clip else torch.zeros_like(h[k], dtype=torch.bool))
    return out
