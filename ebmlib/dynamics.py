"""Synchronous Euler / Langevin dynamics on F = E + βC (PAPER.md §3).

    h_{t+1} = h_t − ε ∂F/∂h(h_t) + sqrt(2εT) ξ_t,   ξ_t ~ N(0, I)

Every layer is updated from the previous state (synchronous). Forces are in
closed form (no autograd), the input drive ``b_1 + W_1ᵀx`` is computed once per
call, ρ(h) once per step, and the host is asked about convergence or
divergence only every ``check_every`` steps (one sync for both).

The hot loop (:func:`_program`) fuses the force with the Euler update on flat,
layer-major buffers: each elementwise stage (ρ, ρ'⊙pre, the update, the clip) is
one call for all layers, the products write into the layers' slices, and the
calls are bound once per call of :func:`relax` / :func:`run`, so a step allocates
nothing. Small CPU steps run on one intra-op thread (:data:`ONE_THREAD_MACS`). The
loop is checked against the straightforward step ``ebmlib.bench.reference_step``
to 1e-12 in float64 (tests/test_perf.py) and timed by ``python -m ebmlib bench``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch
from torch import Tensor

from .activations import ACTIVATIONS, Activation
from .checks import DivergenceError, check_eps, check_positive_int, check_real, check_temperature
from .network import LayeredEBM, State

__all__ = ["Relaxation", "Trajectory", "step", "relax", "run", "loop_threads", "intra_op_threads", "ONE_THREAD_MACS"]

# A CPU step with at most this many multiply-adds (B·Σ n_in·n_out over its products) runs its loop on one
# intra-op thread. Measured on the 2-core development machine: two threads save little or nothing there
# (784-500-10 at B = 20: 23.9 µs a step on one, 23.0 on two; 64-64-10 at B = 20: 10.3 and 12.0), and when
# another process holds a core each parallel product waits for the descheduled thread (63 µs a step on two
# threads against 24 on one). Set it to 0 to keep torch's thread count everywhere.
ONE_THREAD_MACS = 250_000


class _Workspace:
    """Flat, layer-major buffers for one call: a ring of states, ρ(h) and the pre-activations.

    Layer ``k`` of a buffer is the contiguous slice ``[o_{k−1}, o_k)`` viewed as ``(B, n_k)``,
    so the elementwise part of a step (ρ, ρ', the Euler update, the clip) is one kernel for
    all layers together, and the matrix products write into the slices (``out=``). Views
    and the product operands are made once per call: a step allocates nothing.
    """

    def __init__(self, net: LayeredEBM, drive: Tensor, states: int):
        B = drive.shape[0]
        self.offsets = [0]
        for n in net.sizes[1:]:
            self.offsets.append(self.offsets[-1] + B * n)
        self.B, self.sizes = B, net.sizes

        def buffer() -> Tensor:
            return torch.zeros(self.offsets[-1], dtype=net.dtype, device=net.device)

        self.H = [buffer() for _ in range(states)]  # states: h_1 … h_N of one time
        self.R, self.P = buffer(), buffer()  # ρ(h) and pre_k (then ρ'(h_k) ⊙ pre_k)
        self.Hv = [self.views(t) for t in self.H]
        self.Rv, self.Pv = self.views(self.R), self.views(self.P)
        N = net.N
        # pre_k = c_k + ρ(h_{k−1}) W_k [+ ρ(h_{k+1}) W_{k+1}ᵀ]: (c, bottom-up operands, top-down operands) per layer.
        # Bottom-up W_k is stored column-major (a contiguous copy of W_kᵀ, viewed back): BLAS runs the skinny
        # products with small n_k 1.5–2.3× faster that way (python -m ebmlib bench).
        self.plan: list = [None]
        for k in range(1, N + 1):
            up = (self.Rv[k - 1], net.W[k].T.contiguous().T) if k > 1 else None
            down = (self.Rv[k + 1], net.W[k + 1].T) if k < N else None
            self.plan.append((drive if k == 1 else net.b[k], up, down))

    def views(self, buf: Tensor) -> list:
        """``[None, h_1, …, h_N]``: the layers of a flat buffer as ``(B, n_k)`` views."""
        o = self.offsets
        return [None] + [buf[o[k - 1]:o[k]].view(self.B, n) for k, n in enumerate(self.sizes[1:], start=1)]

    def load(self, i: int, h: State) -> None:
        """Copy the layers of the state list ``h`` into state buffer ``i``."""
        for k in range(1, len(h)):
            self.Hv[i][k].copy_(h[k])

    def state(self, x: Tensor, i: int) -> State:
        """State buffer ``i`` as a state list ``[x, h_1, …, h_N]`` (views, no copy)."""
        return [x] + self.Hv[i][1:]


@dataclass
class _Config:
    eps: float
    beta: float
    noise_std: float
    clip: Optional[tuple[float, float]]
    generator: Optional[torch.Generator]
    drive: Tensor
    max_abs: float
    beta_target: Optional[Tensor] = None  # β·d, hoisted out of the loop
    schedule: str = "synchronous"  # or "alternate": odd layers, then even layers (relax only)
    ws: Optional[_Workspace] = None
    threads: Optional[int] = None  # intra-op threads for the loop (None: torch's setting); see ONE_THREAD_MACS
    chunks: dict = field(default_factory=dict)  # (i, n) → n steps' calls from buffer i (_chunk)


def check_step_args(
    net: LayeredEBM,
    h: State,
    *,
    eps: float,
    beta: float,
    target: Optional[Tensor],
    clip: Optional[bool],
    name: str = "h",
) -> tuple[State, float, float, Optional[Tensor], bool]:
    """Validate what every step function takes: the state, ε ∈ (0, 1], β, the target, the clip flag.

    Returns them checked, with ``clip=None`` resolved to the activation's default. Every
    stepping function of the library (and the variants and benchmark references) uses it.
    """
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    h = net.check_state(h, name)
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    if beta != 0.0 and target is None:
        raise ValueError("target: required when beta != 0")
    if target is not None:
        target = net.check_target(target, h[0].shape[0])
    if clip is None:
        clip = net.activation.clip_by_default
    if not isinstance(clip, bool):
        raise TypeError(f"clip: expected bool or None, got {type(clip).__name__}")
    return h, eps, beta, target, clip


def _configure(
    net: LayeredEBM,
    h: State,
    *,
    eps: float,
    beta: float,
    target: Optional[Tensor],
    T: float,
    clip: Optional[bool],
    generator: Optional[torch.Generator],
    max_abs: float,
    states: int,
    name: str = "h",
) -> _Config:
    h, eps, beta, target, clip = check_step_args(net, h, eps=eps, beta=beta, target=target, clip=clip, name=name)
    T = check_temperature(T)
    max_abs = check_real("max_abs", max_abs)
    if max_abs <= 0:
        raise ValueError(f"max_abs: must be > 0, got {max_abs}")
    if T > 0.0:
        if generator is None:
            raise ValueError("generator: an explicit torch.Generator is required when T > 0 (seeds are parameters)")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected torch.Generator, got {type(generator).__name__}")
        if generator.device.type != net.device.type:
            raise ValueError(f"generator: on device {generator.device}, the network is on {net.device}")
    bounds = (net.activation.lo, net.activation.hi) if clip else None
    beta_target = beta * target if beta != 0.0 else None
    drive = net.input_drive(h[0])
    return _Config(eps, beta, math.sqrt(2.0 * eps * T), bounds, generator, drive, max_abs, beta_target,
                   ws=_Workspace(net, drive, states), threads=loop_threads(net, h[0].shape[0]))


def loop_threads(net: LayeredEBM, batch: int) -> Optional[int]:
    """Intra-op threads of the relaxation loop for ``batch`` samples: 1 for a small CPU step, else ``None``
    (torch's own setting). Small: at most :data:`ONE_THREAD_MACS` multiply-adds, ``B · 2Σ_{k≥2} n_{k−1}n_k``."""
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    check_positive_int("batch", batch, minimum=0)
    macs = batch * 2 * sum(net.sizes[k - 1] * net.sizes[k] for k in range(2, net.N + 1))
    return 1 if net.device.type == "cpu" and macs <= ONE_THREAD_MACS else None


@contextmanager
def intra_op_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block on at most ``n`` torch intra-op threads (``None``: unchanged); the setting is restored."""
    if n is not None:
        check_positive_int("n", n)
    old = torch.get_num_threads()
    if n is None or old <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


_SIGMOID, _TANH, _HARD_SIGMOID = ACTIVATIONS["sigmoid"], ACTIVATIONS["tanh"], ACTIVATIONS["hard_sigmoid"]


def _rho_into(act: Activation, h: Tensor, out: Tensor) -> Callable[[], object]:
    """The call ``out ← ρ(h)`` (ρ' is applied later, by :func:`_times_drho_`)."""
    if act is _SIGMOID:
        return partial(torch.sigmoid, h, out=out)
    if act is _TANH:
        return partial(torch.tanh, h, out=out)
    if act is _HARD_SIGMOID:
        return partial(torch.clamp, h, 0.0, 1.0, out=out)
    return lambda: out.copy_(act.rho(h))


def _times_drho_(act: Activation, h: Tensor, r: Tensor, pre: Tensor) -> Callable[[], object]:
    """The call ``pre ← ρ'(h) ⊙ pre`` in place, with ``r = ρ(h)``: one elementwise pass, no ρ' tensor.

    sigmoid: ρ' = r(1 − r); tanh: ρ' = 1 − r² (each one fused aten kernel, autograd's own derivative);
    hard sigmoid: ρ' = 1 where 0 ≤ h ≤ 1 (inclusive), i.e. where ``clip(h) == h``. Other
    activations use their own ``drho``. Same values as ``act.drho(h) * pre`` up to rounding.
    """
    if act is _SIGMOID:
        return partial(torch.ops.aten.sigmoid_backward.grad_input, pre, r, grad_input=pre)
    if act is _TANH:
        return partial(torch.ops.aten.tanh_backward.grad_input, pre, r, grad_input=pre)
    if act is _HARD_SIGMOID:
        return lambda: pre.mul_(r == h)
    return lambda: pre.mul_(act.drho(h))


def _add_noise(h: Tensor, std: float, generator: torch.Generator) -> None:
    h.add_(torch.randn(h.shape, generator=generator, dtype=h.dtype, device=h.device), alpha=std)


def _program(net: LayeredEBM, cfg: _Config, i: int, j: int, parity: Optional[int]) -> tuple:
    """The calls of one synchronous step from state buffer ``i`` of ``cfg.ws`` into buffer ``j``, bound once.

    ``h_k ← h_k + ε(ρ'(h_k) ⊙ pre_k − h_k)`` with ``pre_k = b_k + W_kᵀρ(h_{k−1}) + W_{k+1}ρ(h_{k+1})``
    (+ ``β(d − y)`` inside the bracket on the output), i.e. ``net.force`` fused with the Euler
    update. ρ, ρ'⊙pre, the update (one ``lerp``) and the clip each run once over all layers
    (flat buffers); the products write into the layers' slices; the drive and β·d are hoisted.
    Running a step is a loop over these calls: no allocation, no argument handling, no host sync.

    With ``parity`` (0 or 1) only the layers ``k ≡ parity (mod 2)`` move; the others are copied.
    """
    ws, act, N = cfg.ws, net.activation, net.N
    src, dst, P, Pv = ws.H[i], ws.H[j], ws.P, ws.Pv
    moving = [k for k in range(1, N + 1) if parity is None or k % 2 == parity]
    ops: list[Callable[[], object]] = [_rho_into(act, src, ws.R)]
    for k in moving:
        c, up, down = ws.plan[k]
        if up is not None:
            ops.append(partial(torch.addmm, c, *up, out=Pv[k]))
            if down is not None:
                ops.append(partial(Pv[k].addmm_, *down))
        elif down is not None:
            ops.append(partial(torch.addmm, c, *down, out=Pv[k]))
        else:
            ops.append(partial(Pv[k].copy_, c))
    ops.append(_times_drho_(act, src, ws.R, P))
    if cfg.beta_target is not None and N in moving:
        # ρ'⊙pre + β(d − y) in the bracket: the lerp then subtracts εy, so f_N = ρ'⊙pre + β(d − y) − y
        ops += [partial(Pv[N].add_, cfg.beta_target), partial(Pv[N].sub_, ws.Hv[i][N], alpha=cfg.beta)]
    ops.append(partial(torch.lerp, src, P, cfg.eps, out=dst))
    if cfg.noise_std > 0.0:  # ξ drawn layer by layer, k = 1 … N
        ops += [partial(_add_noise, ws.Hv[j][k], cfg.noise_std, cfg.generator) for k in moving]
    if cfg.clip is not None:
        ops.append(partial(dst.clamp_, *cfg.clip))
    ops += [partial(ws.Hv[j][k].copy_, ws.Hv[i][k]) for k in range(1, N + 1) if k not in moving]
    return tuple(ops)


def _chunk(net: LayeredEBM, cfg: _Config, i: int, n: int) -> tuple[tuple, int, int]:
    """``n`` steps of ``cfg.schedule`` from state buffer ``i``, as one tuple of bound calls (made once).

    Returns ``(calls, p, j)``: the state is in buffer ``j`` after the calls and was in ``p`` one
    step before. synchronous: one :func:`_program` per step, to the next buffer of the ring;
    alternate: an odd-layer half step, then an even-layer one (a ring of three, so that the
    result is not written over the step's start).
    """
    key = (i, n)
    hit = cfg.chunks.get(key)
    if hit is None:
        R = len(cfg.ws.H)
        calls: list = []
        p = i
        for _ in range(n):
            p = i
            moves = [(i, (i + 1) % R, 1), ((i + 1) % R, (i + 2) % R, 0)] if cfg.schedule == "alternate" else \
                [(i, (i + 1) % R, None)]
            for move in moves:
                calls += _program(net, cfg, *move)
                i = move[1]
        hit = cfg.chunks[key] = (tuple(calls), p, i)
    return hit


def _advance(net: LayeredEBM, cfg: _Config, i: int, n: int = 1) -> tuple[int, int]:
    """Run ``n`` steps from state buffer ``i``; returns the buffers of the last two states (see :func:`_chunk`)."""
    calls, p, j = _chunk(net, cfg, i, n)
    for call in calls:
        call()
    return p, j


def _max_abs(t: Tensor) -> Tensor:
    """max |t| as a 0-d tensor; NaN if ``t`` holds a NaN (amax propagates it), 0 if ``t`` is empty."""
    return t.abs().amax() if t.numel() else t.new_zeros(())


def _first_bad(maxima: list[float], max_abs: float) -> Optional[int]:
    """First layer whose ``max|h_k|`` is NaN, infinite or beyond ``max_abs``."""
    for k, m in enumerate(maxima, start=1):
        if not m <= max_abs:
            return k
    return None


def _bad_layer(h: State, max_abs: float) -> Optional[int]:
    """First layer holding a non-finite value or one beyond ``max_abs`` (one host sync)."""
    return _first_bad(torch.stack([_max_abs(h[k]) for k in range(1, len(h))]).tolist(), max_abs)


def _locate_divergence(
    net: LayeredEBM, cfg: _Config, good: State, start: int, stop: int, gen_state: Optional[Tensor]
) -> None:
    """Replay from the last good check point ``good``, one step at a time, and raise at the first bad step."""
    if cfg.generator is not None and gen_state is not None:
        cfg.generator.set_state(gen_state)
    ws = cfg.ws
    ws.load(0, good)
    i = 0
    for t in range(start + 1, stop + 1):
        _, i = _advance(net, cfg, i)
        layer = _bad_layer(ws.Hv[i], cfg.max_abs)
        if layer is not None:
            raise DivergenceError(t, layer, f"non-finite or |h| > {cfg.max_abs:g}")
    raise DivergenceError(stop, 0, "detected at this check point; the replay did not reproduce it")


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
) -> State:
    """One synchronous Euler (T = 0) or Langevin (T > 0) step of ``dh/dt = −∂F/∂h``."""
    cfg = _configure(net, h, eps=eps, beta=beta, target=target, T=T, clip=clip, generator=generator,
                     max_abs=1e300, states=2)
    cfg.ws.load(0, h)
    with intra_op_threads(cfg.threads):
        _, j = _advance(net, cfg, 0)
    return cfg.ws.state(h[0], j)


@dataclass
class Relaxation:
    """Result of :func:`relax`: the state, steps taken, final residual and its history.

    ``residual`` is max |h_{t+1} − h_t| / ε over units and batch at the last check,
    i.e. the size of the (projected) force (for ``schedule="alternate"``: of one sweep's move).
    ``h[1:]`` are contiguous ``(B, n_k)`` views of one flat buffer owned by this result (``h[0]``
    is the caller's ``x``); no later call writes into them.
    """

    h: State
    steps: int
    residual: float
    converged: bool
    history: list[tuple[int, float]] = field(default_factory=list)


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
    schedule: str = "synchronous",
) -> Relaxation:
    """Run the deterministic dynamics until the residual is ≤ ``tol`` or ``max_steps``.

    Starts from ``h0`` (default: zeros). The residual is read every
    ``check_every`` steps only (one host sync each). Raises
    :class:`DivergenceError` naming the step if the state blows up.

    ``schedule="alternate"`` updates the odd layers, then the even layers from the
    new odd ones (one step = one such sweep, the same matrix products as a
    synchronous step): the same fixed points (the force vanishes at both), usually
    in fewer steps, but a different trajectory, so never for early-step studies.
    """
    if h0 is None:
        h = net.init_state(x)
    else:
        if not isinstance(h0, (list, tuple)) or len(h0) != net.N + 1:
            raise ValueError(f"h0: expected a list [x, h_1, ..., h_N] of length {net.N + 1}")
        h = [x] + list(h0[1:])  # checked by _configure, copied into the workspace, never written
    if schedule not in ("synchronous", "alternate"):
        raise ValueError(f"schedule: expected 'synchronous' or 'alternate', got {schedule!r}")
    tol = check_real("tol", tol)
    check_positive_int("max_steps", max_steps, minimum=0)
    check_positive_int("check_every", check_every)
    cfg = _configure(net, h, eps=eps, beta=beta, target=target, T=0.0, clip=clip, generator=None,
                     max_abs=max_abs, states=3, name="h" if h0 is None else "h0")
    cfg.schedule = schedule
    ws = cfg.ws
    if h0 is not None:
        ws.load(0, h)
    with intra_op_threads(cfg.threads):
        return _relax_loop(net, x, cfg, tol, max_steps, check_every)


def _relax_loop(net: LayeredEBM, x: Tensor, cfg: _Config, tol: float, max_steps: int, check_every: int) -> Relaxation:
    """The loop of :func:`relax`, from state buffer 0 of ``cfg.ws``."""
    ws = cfg.ws
    good = ws.H[0].clone()  # the state at the last check point, where a divergence replay starts
    history: list[tuple[int, float]] = []
    t, residual, i, last_good_t = 0, math.inf, 0, 0
    while t < max_steps:
        n = min(check_every, max_steps - t)
        prev, i = _advance(net, cfg, i, n)
        t += n
        # divergence and residual over all layers with one host sync
        big, move = torch.stack([_max_abs(ws.H[i]), _max_abs(ws.H[i] - ws.H[prev])]).tolist()
        if not big <= cfg.max_abs:
            _locate_divergence(net, cfg, [x] + ws.views(good)[1:], last_good_t, t, None)
        good.copy_(ws.H[i])
        last_good_t = t
        residual = move / cfg.eps
        history.append((t, residual))
        if residual <= tol:
            return Relaxation(ws.state(x, i), t, residual, True, history)
    return Relaxation(ws.state(x, i), t, residual, False, history)


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
) -> Trajectory:
    """Run ``steps`` synchronous steps from ``h0`` and record every state.

    Nudged phase: ``beta != 0`` with a ``target``. Langevin: ``T > 0`` with an
    explicit ``generator``. Divergence is checked every ``check_every`` steps
    and reported with the exact step.
    """
    check_positive_int("steps", steps, minimum=0)
    check_positive_int("check_every", check_every)
    cfg = _configure(net, h0, eps=eps, beta=beta, target=target, T=T, clip=clip, generator=generator,
                     max_abs=max_abs, states=2, name="h0")
    ws = cfg.ws
    B = h0[0].shape[0]
    rec = [None] + [torch.empty((steps + 1, B, n), dtype=net.dtype, device=net.device) for n in net.sizes[1:]]
    for k in range(1, net.N + 1):
        rec[k][0] = h0[k]
    ws.load(0, h0)
    i, last_good_t = 0, 0
    gen_state = generator.get_state() if cfg.generator is not None else None
    with intra_op_threads(cfg.threads):
        for t in range(1, steps + 1):
            _, i = _advance(net, cfg, i)
            for k in range(1, net.N + 1):
                rec[k][t].copy_(ws.Hv[i][k])
            if t % check_every == 0 or t == steps:
                if not _max_abs(ws.H[i]).item() <= cfg.max_abs:
                    good = [h0[0]] + [rec[k][last_good_t] for k in range(1, net.N + 1)]
                    _locate_divergence(net, cfg, good, last_good_t, t, gen_state)
                last_good_t = t
                gen_state = generator.get_state() if cfg.generator is not None else None
    rec[0] = h0[0].unsqueeze(0).expand(steps + 1, *h0[0].shape)
    return Trajectory(rec)
