"""Synchronous Euler / Langevin dynamics on F = E + βC (PAPER.md §3).

    h_{t+1} = h_t − ε ∂F/∂h(h_t) + sqrt(2εT) ξ_t,   ξ_t ~ N(0, I)

Every layer is updated from the previous state (synchronous). Forces are in
closed form (no autograd), the input drive ``b_1 + W_1ᵀx`` is computed once per
call, ρ(h) once per step, and the host is asked about convergence or
divergence only every ``check_every`` steps (one sync for both).

The hot loop (``_step``) fuses the force with the Euler update; it is checked
against the straightforward step ``ebmlib.bench.reference_step`` to 1e-12 in
float64 (tests/test_perf.py) and timed by ``python -m ebmlib bench``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from .activations import ACTIVATIONS, Activation
from .checks import DivergenceError, check_eps, check_positive_int, check_real, check_temperature
from .network import LayeredEBM, State

__all__ = ["Relaxation", "Trajectory", "step", "relax", "run"]


@dataclass
class _Config:
    eps: float
    beta: float
    target: Optional[Tensor]
    noise_std: float
    clip: Optional[tuple[float, float]]
    generator: Optional[torch.Generator]
    drive: Tensor
    max_abs: float
    beta_target: Optional[Tensor] = None  # β·d, hoisted out of the loop
    schedule: str = "synchronous"  # or "alternate": odd layers, then even layers (relax only)
    WT: list = field(default_factory=list)  # [None, W_1ᵀ, …, W_Nᵀ]: transposed views, made once per call
    # bottom-up operands W_k stored column-major (a contiguous copy of W_kᵀ, viewed back): BLAS runs the
    # skinny products ρ(h_{k−1}) W_k with small n_k 1.5–2.3× faster that way (python -m ebmlib bench)
    WB: list = field(default_factory=list)


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
    return _Config(eps, beta, target, math.sqrt(2.0 * eps * T), bounds, generator, net.input_drive(h[0]), max_abs,
                   beta_target, WT=[None] + [net.W[k].T for k in range(1, net.N + 1)],
                   WB=[None, None] + [net.W[k].T.contiguous().T for k in range(2, net.N + 1)])


def _rho(act: Activation, h: Tensor) -> Tensor:
    """ρ(h) alone for the library's activations (ρ' is applied later by :func:`_times_drho`)."""
    if act is _SIGMOID:
        return torch.sigmoid(h)
    if act is _TANH:
        return torch.tanh(h)
    if act is _HARD_SIGMOID:
        return h.clamp(0.0, 1.0)
    return act.rho(h)


def _times_drho(act: Activation, h: Tensor, r: Tensor, pre: Tensor) -> Tensor:
    """``ρ'(h) ⊙ pre`` with ``r = ρ(h)``: one elementwise pass, no ρ' tensor (may reuse ``pre``).

    sigmoid: ρ' = r(1 − r); tanh: ρ' = 1 − r² (each one fused aten kernel, autograd's own derivative);
    hard sigmoid: ρ' = 1 where 0 ≤ h ≤ 1 (inclusive), i.e. where ``clip(h) == h``. Other
    activations use their own ``drho``. Same values as ``act.drho(h) * pre`` up to rounding.
    """
    if act is _SIGMOID:  # pre·r(1 − r) in one kernel (autograd's own sigmoid derivative)
        return torch.ops.aten.sigmoid_backward(pre, r)
    if act is _TANH:  # pre·(1 − r²) in one kernel
        return torch.ops.aten.tanh_backward(pre, r)
    if act is _HARD_SIGMOID:
        return pre.mul_(r == h)
    return pre.mul_(act.drho(h))


_SIGMOID, _TANH, _HARD_SIGMOID = ACTIVATIONS["sigmoid"], ACTIVATIONS["tanh"], ACTIVATIONS["hard_sigmoid"]


def _step(
    net: LayeredEBM, h: State, cfg: _Config, out: Optional[State] = None, parity: Optional[int] = None
) -> State:
    """One synchronous step; returns a new state list (``h`` is not modified).

    With ``parity`` (0 or 1) only the layers ``k ≡ parity (mod 2)`` move; the others are
    passed through (the same tensors). ``out`` is not supported together with ``parity``.

    ``h_k ← h_k + ε(ρ'(h_k) ⊙ pre_k − h_k)`` with ``pre_k = b_k + W_kᵀρ(h_{k−1}) + W_{k+1}ρ(h_{k+1})``
    (+ ``β(d − y)`` on the output), i.e. ``net.force`` fused with the Euler update: ρ and ρ' once per
    layer, ρ' folded into ``pre``, one ``addmm`` per coupling accumulated in place, the hoisted drive
    and β·d, and the new
    state written by one ``lerp`` (into ``out[k]`` when given, e.g. a slot of a trajectory).
    """
    N = net.N
    WB, WT, b = cfg.WB, cfg.WT, net.b
    eps = cfg.eps
    act = net.activation
    rho: list[Tensor] = [h[0]] + [_rho(act, h[k]) for k in range(1, N + 1)]
    new = [h[0]]
    for k in range(1, N + 1):
        hk = h[k]
        if parity is not None and k % 2 != parity:
            new.append(hk)
            continue
        if k == 1:
            # a new tensor: never write into the hoisted drive
            pre = torch.addmm(cfg.drive, rho[2], WT[2]) if N > 1 else cfg.drive.clone()
        else:
            pre = torch.addmm(b[k], rho[k - 1], WB[k])
            if k < N:
                pre.addmm_(rho[k + 1], WT[k + 1])
        pre = _times_drho(act, hk, rho[k], pre)
        dst = out[k] if out is not None else None
        if k == N and cfg.beta_target is not None:
            # f_N = ρ'⊙pre + βd − (1 + β) y
            pre.add_(cfg.beta_target).sub_(hk, alpha=1.0 + cfg.beta)
            hk = torch.add(hk, pre, alpha=eps, out=dst) if dst is not None else torch.add(hk, pre, alpha=eps)
        else:
            hk = torch.lerp(hk, pre, eps, out=dst) if dst is not None else torch.lerp(hk, pre, eps)
        if cfg.noise_std > 0.0:
            noise = torch.randn(hk.shape, generator=cfg.generator, dtype=hk.dtype, device=hk.device)
            hk.add_(noise, alpha=cfg.noise_std)
        if cfg.clip is not None:
            hk.clamp_(cfg.clip[0], cfg.clip[1])
        new.append(hk)
    return new


def _advance(net: LayeredEBM, h: State, cfg: _Config) -> State:
    """One step of ``cfg.schedule``: synchronous, or an odd-layer half step then an even-layer one."""
    if cfg.schedule == "alternate":
        return _step(net, _step(net, h, cfg, parity=1), cfg, parity=0)
    return _step(net, h, cfg)


def _max_abs(t: Tensor) -> Tensor:
    """max |t| as a 0-d tensor; NaN if ``t`` holds a NaN (amax propagates it), 0 if ``t`` is empty."""
    return t.abs().amax() if t.numel() else t.new_zeros(())


def _layer_stats(h: State, prev: Optional[State] = None) -> list[float]:
    """``max|h_k|`` for k = 1…N, then ``max|h_k − prev_k|`` when ``prev`` is given: one host sync."""
    vals = [_max_abs(h[k]) for k in range(1, len(h))]
    if prev is not None:
        vals += [_max_abs(h[k] - prev[k]) for k in range(1, len(h))]
    return torch.stack(vals).tolist()


def _first_bad(maxima: list[float], max_abs: float) -> Optional[int]:
    """First layer whose ``max|h_k|`` is NaN, infinite or beyond ``max_abs``."""
    for k, m in enumerate(maxima, start=1):
        if not m <= max_abs:
            return k
    return None


def _bad_layer(h: State, max_abs: float) -> Optional[int]:
    """First layer holding a non-finite value or one beyond ``max_abs`` (one host sync)."""
    return _first_bad(_layer_stats(h), max_abs)


def _locate_divergence(
    net: LayeredEBM, h: State, cfg: _Config, start: int, stop: int, gen_state: Optional[Tensor]
) -> None:
    """Replay from the last good check point, one step at a time, and raise at the first bad step."""
    if cfg.generator is not None and gen_state is not None:
        cfg.generator.set_state(gen_state)
    for t in range(start + 1, stop + 1):
        h = _advance(net, h, cfg)
        layer = _bad_layer(h, cfg.max_abs)
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
    cfg = _configure(net, h, eps=eps, beta=beta, target=target, T=T, clip=clip, generator=generator, max_abs=1e300)
    return _step(net, h, cfg)


@dataclass
class Relaxation:
    """Result of :func:`relax`: the state, steps taken, final residual and its history.

    ``residual`` is max |h_{t+1} − h_t| / ε over units and batch at the last check,
    i.e. the size of the (projected) force (for ``schedule="alternate"``: of one sweep's move).
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
        h = net.check_state([x] + [t.clone() for t in h0[1:]], "h0")
    cfg = _configure(net, h, eps=eps, beta=beta, target=target, T=0.0, clip=clip, generator=None, max_abs=max_abs)
    if schedule not in ("synchronous", "alternate"):
        raise ValueError(f"schedule: expected 'synchronous' or 'alternate', got {schedule!r}")
    cfg.schedule = schedule
    tol = check_real("tol", tol)
    check_positive_int("max_steps", max_steps, minimum=0)
    check_positive_int("check_every", check_every)
    history: list[tuple[int, float]] = []
    t, residual = 0, math.inf
    last_good, last_good_t = h, 0
    while t < max_steps:
        n = min(check_every, max_steps - t)
        for _ in range(n - 1):
            h = _advance(net, h, cfg)
        prev = h
        h = _advance(net, prev, cfg)
        t += n
        stats = _layer_stats(h, prev)  # divergence and residual with one host sync
        if _first_bad(stats[: net.N], cfg.max_abs) is not None:
            _locate_divergence(net, last_good, cfg, last_good_t, t, None)
        last_good, last_good_t = h, t
        residual = max(stats[net.N:]) / cfg.eps
        history.append((t, residual))
        if residual <= tol:
            return Relaxation(h, t, residual, True, history)
    return Relaxation(h, t, residual, False, history)


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
                     max_abs=max_abs, name="h0")
    B = h0[0].shape[0]
    rec = [None] + [torch.empty((steps + 1, B, n), dtype=net.dtype, device=net.device) for n in net.sizes[1:]]
    for k in range(1, net.N + 1):
        rec[k][0] = h0[k]
    h = list(h0)
    last_good, last_good_t = h, 0
    gen_state = generator.get_state() if cfg.generator is not None else None
    for t in range(1, steps + 1):
        h = _step(net, h, cfg, out=[None] + [rec[k][t] for k in range(1, net.N + 1)])  # written in place
        if t % check_every == 0 or t == steps:
            if _bad_layer(h, cfg.max_abs) is not None:
                _locate_divergence(net, last_good, cfg, last_good_t, t, gen_state)
            last_good, last_good_t = h, t
            gen_state = generator.get_state() if cfg.generator is not None else None
    rec[0] = h0[0].unsqueeze(0).expand(steps + 1, *h0[0].shape)
    return Trajectory(rec)
