"""The fast relaxation loop behind :func:`ebmlib.relax` and :func:`ebmlib.run` (private).

The force fused with the Euler update on flat, layer-major buffers: each elementwise stage
(ρ, ρ'⊙pre, the update, the clip) is one call for all layers, the products write into the
layers' slices, and the calls are bound once per call of ``relax``/``run``, so a step allocates
nothing. The input drive ``b_1 + W_1ᵀx`` is computed once per call, ρ(h) once per step, and the
host is asked about convergence or divergence only every ``check_every`` steps (one sync for
both). Small CPU steps run on one intra-op thread (:data:`ONE_THREAD_MACS`). The loop is held to
the reference step :func:`ebmlib.dynamics.step` to 1e-12 in float64 (tests/test_perf.py) and timed
by ``python -m ebmlib bench``.
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
from .checks import DivergenceError, check_positive_int
from .network import LayeredEBM, State

# A CPU step with at most this many multiply-adds (B·Σ n_in·n_out over its products) runs its loop on one
# intra-op thread: on the 2-core development machine two threads save little or nothing on such a step, and
# when another process holds a core each parallel product waits for the descheduled thread. `make bench`
# times the step on the loop's threads (column `thr`) against the products alone on torch's or the loop's,
# whichever is faster (roofline_ratio). Set it to 0 to keep torch's thread count everywhere.
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
        # products with small n_k faster that way (bench_step lays its reference products out alike). The
        # trainer stores its W_k (k ≥ 2) column-major itself, so that this binds the live weights.
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
    max_abs: float
    beta_target: Optional[Tensor] = None  # β·d, hoisted out of the loop
    schedule: str = "synchronous"  # or "odd_even": odd layers, then even layers
    ws: Optional[_Workspace] = None
    threads: Optional[int] = None  # intra-op threads for the loop (None: torch's setting); see ONE_THREAD_MACS
    chunks: dict = field(default_factory=dict)  # (i, n) → n steps' calls from buffer i (_chunk)
    # the caller guarantees every state is inside [0, 1] (clipped hard sigmoid, states from earlier clipped steps):
    # then ρ(h) = h and ρ'(h) = 1 there, so a step is its products, the update and the clip
    identity_rho: bool = False
    # identity_rho with a nudge only: the output's constant (b_N; the drive b_1 + W_1ᵀx when N = 1) plus β·d,
    # folded in since there is no ρ' to keep it out of
    out_drive: Optional[Tensor] = None



def configure(
    net: LayeredEBM,
    h: State,
    *,
    eps: float,
    beta: float,
    target: Optional[Tensor],
    noise_std: float,
    clip: bool,
    generator: Optional[torch.Generator],
    max_abs: float,
    states: int,
    schedule: str = "synchronous",
) -> _Config:
    """The bound loop for already-checked arguments (see :func:`ebmlib.dynamics.relax`)."""
    bounds = (net.activation.lo, net.activation.hi) if clip else None
    identity = identity_rho_holds(net, bounds, h)
    beta_target = beta * target if beta != 0.0 else None
    ws = _Workspace(net, net.input_drive(h[0]), states)
    out_drive = None
    if identity and beta_target is not None:  # the output's constant c_N (b_N, or the drive when N = 1) + β·d
        out_drive, beta_target = ws.plan[net.N][0] + beta_target, None
    return _Config(eps, beta, noise_std, bounds, generator, max_abs, beta_target, schedule,
                   ws=ws, threads=loop_threads(net, h[0].shape[0]), identity_rho=identity, out_drive=out_drive)


def identity_rho_holds(net: LayeredEBM, clip: Optional[tuple[float, float]], h: State) -> bool:
    """Whether every state of a run from ``h`` stays where ρ(h) = h and ρ'(h) = 1: the hard sigmoid clipped to
    [0, 1], with ``h_1 … h_N`` inside [0, 1] (each step ends with the clip). One host sync."""
    if net.activation is not _HARD_SIGMOID or clip != (0.0, 1.0):
        return False
    ends = [torch.stack([-t.amin(), t.amax()]) for t in h[1:] if t.numel()]
    if not ends:
        return True
    neg_lo, hi = torch.stack(ends).amax(dim=0).tolist()  # NaN compares False: the general path
    return -neg_lo >= 0.0 and hi <= 1.0


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

    With ``parity`` (1, then 0) the half step of an odd-even sweep from ``i`` into ``j``: only the layers
    ``k ≡ parity (mod 2)`` move, into ``j``, reading their neighbours from ``i`` (odd half) or from the odd
    layers just written into ``j`` (even half); their elementwise stages run per moving layer.
    """
    ws, act, N = cfg.ws, net.activation, net.N
    src, dst, P, Pv = ws.H[i], ws.H[j], ws.P, ws.Pv
    half = parity is not None
    moving = [k for k in range(1, N + 1) if not half or k % 2 == parity]
    if not moving:
        return ()
    nb = j if parity == 0 else i  # the buffer the moving layers' neighbours are read from
    ops: list[Callable[[], object]] = []
    if not cfg.identity_rho:  # ρ of the neighbours (and, odd half or synchronous, of the moving layers: ρ')
        ops += [_rho_into(act, src, ws.R)] if nb == i else \
            [_rho_into(act, ws.Hv[j][k], ws.Rv[k]) for k in range(1, N + 1, 2)]
    for k in moving:
        c, up, down = ws.plan[k]
        if k == N and cfg.out_drive is not None:
            c = cfg.out_drive  # c_N + β·d
        if cfg.identity_rho:  # ρ(h) = h: the products read the state buffer itself
            up = (ws.Hv[nb][k - 1], up[1]) if up is not None else None
            down = (ws.Hv[nb][k + 1], down[1]) if down is not None else None
        if up is not None:
            ops.append(partial(torch.addmm, c, *up, out=Pv[k]))
            if down is not None:
                ops.append(partial(Pv[k].addmm_, *down))
        elif down is not None:
            ops.append(partial(torch.addmm, c, *down, out=Pv[k]))
        else:
            ops.append(partial(Pv[k].copy_, c))
    if not cfg.identity_rho:
        ops += [_times_drho_(act, ws.Hv[i][k], ws.Rv[k], Pv[k]) for k in moving] if half else \
            [_times_drho_(act, src, ws.R, P)]
    if (cfg.beta_target is not None or cfg.out_drive is not None) and N in moving:
        # ρ'⊙pre + β(d − y) in the bracket: the lerp then subtracts εy, so f_N = ρ'⊙pre + β(d − y) − y
        if cfg.out_drive is None:
            ops.append(partial(Pv[N].add_, cfg.beta_target))
        ops.append(partial(Pv[N].sub_, ws.Hv[i][N], alpha=cfg.beta))
    for s_k, p_k, d_k in ([(ws.Hv[i][k], Pv[k], ws.Hv[j][k]) for k in moving] if half else [(src, P, dst)]):
        if cfg.eps == 1.0 and cfg.noise_std == 0.0 and cfg.clip is not None:
            ops.append(partial(torch.clamp, p_k, *cfg.clip, out=d_k))  # lerp(h, p, 1) = p exactly
            continue
        ops.append(partial(torch.lerp, s_k, p_k, cfg.eps, out=d_k))
        if cfg.noise_std > 0.0 and not half:  # ξ drawn layer by layer, k = 1 … N
            ops += [partial(_add_noise, ws.Hv[j][k], cfg.noise_std, cfg.generator) for k in moving]
        elif cfg.noise_std > 0.0:
            ops.append(partial(_add_noise, d_k, cfg.noise_std, cfg.generator))
        if cfg.clip is not None:
            ops.append(partial(d_k.clamp_, *cfg.clip))
    return tuple(ops)


def _chunk(net: LayeredEBM, cfg: _Config, i: int, n: int) -> tuple[tuple, int, int]:
    """``n`` steps of ``cfg.schedule`` from state buffer ``i``, as one tuple of bound calls (made once).

    Returns ``(calls, p, j)``: the state is in buffer ``j`` after the calls and was in ``p`` one
    step before. synchronous: one :func:`_program` per step, to the next buffer of the ring;
    odd_even: one sweep per step, to the next buffer: the odd-layer half step, then the even-layer one.
    """
    key = (i, n)
    hit = cfg.chunks.get(key)
    if hit is None:
        R = len(cfg.ws.H)
        calls: list = []
        p = i
        for _ in range(n):
            p, i = i, (i + 1) % R
            for parity in ((1, 0) if cfg.schedule == "odd_even" else (None,)):
                calls += _program(net, cfg, p, i, parity)
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


def relax_loop(net: LayeredEBM, x: Tensor, cfg: _Config, tol: float, max_steps: int, check_every: int) -> tuple:
    """The loop of :func:`ebmlib.relax` from state buffer 0 of ``cfg.ws``: ``(h, steps, residual, converged, history)``."""
    with intra_op_threads(cfg.threads):
        return _relax_loop(net, x, cfg, tol, max_steps, check_every)


def _relax_loop(net: LayeredEBM, x: Tensor, cfg: _Config, tol: float, max_steps: int, check_every: int) -> tuple:
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
            return ws.state(x, i), t, residual, True, history
    return ws.state(x, i), t, residual, False, history


def run_loop(net: LayeredEBM, cfg: _Config, h0: State, steps: int, check_every: int) -> list:
    """``steps`` steps from ``h0``, every state recorded: per layer ``(steps + 1, B, n_k)`` (index 0 None)."""
    ws = cfg.ws
    B = h0[0].shape[0]
    rec = [None] + [torch.empty((steps + 1, B, n), dtype=net.dtype, device=net.device) for n in net.sizes[1:]]
    for k in range(1, net.N + 1):
        rec[k][0] = h0[k]
    ws.load(0, h0)
    i, last_good_t = 0, 0
    gen = cfg.generator
    gen_state = gen.get_state() if gen is not None else None
    with intra_op_threads(cfg.threads):
        for t in range(1, steps + 1):
            _, i = _advance(net, cfg, i)
            for k in range(1, net.N + 1):
                rec[k][t].copy_(ws.Hv[i][k])
            if t % check_every == 0 or t == steps:  # every state recorded since the last check (one sync)
                seen = torch.stack([_max_abs(rec[k][last_good_t + 1:t + 1]) for k in range(1, net.N + 1)])
                if not _max_abs(seen).item() <= cfg.max_abs:
                    good = [h0[0]] + [rec[k][last_good_t] for k in range(1, net.N + 1)]
                    _locate_divergence(net, cfg, good, last_good_t, t, gen_state)
                last_good_t = t
                gen_state = gen.get_state() if gen is not None else None
    return rec
