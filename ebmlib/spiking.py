"""Spiking units and the spike-timing window of the temporal-derivative rule (chapter 10).

The rate-level rule of the book, presynaptic rate × rate of change of the postsynaptic potential,
applied to spikes: ``ΔW = Σ_t S_pre(t) · D V_post(t)``, where ``D`` estimates dV/dt from the
postsynaptic potential around the presynaptic spike. Time is discrete, step ``dt`` (ms).

- :class:`SpikingNeuron`: a leaky, stochastic spiking unit. Its potential ``u`` integrates
  presynaptic spikes; it fires with probability ``p_max ρ(u)`` per step; a spike subtracts
  ``reset`` from ``u``; the potential the synapse reads is ``V = u + A S`` (the back-propagating
  action potential of area ``A``, one step long).
- :class:`TraceRule` and :class:`CentredRule`: the estimators ``D``. The centred difference
  ``(V(t+τ) − V(t−τ))/(2τ)``; the trace rule ``(V⁺(t) − V⁻(t))/(τ₊ + τ₋)`` with ``V⁺`` and ``V⁻``
  exponentially weighted means of V after and before t, which a synapse computes causally with a
  presynaptic trace and a trace of V (:func:`simulate_unit` does it online).
- :func:`pairing_protocol`: one presynaptic and one evoked postsynaptic spike Δt apart, many trials;
  :func:`window_kernel` and :func:`window_prediction` give the window in closed form.
- :func:`random_rates`, :func:`rate_unit`, :func:`rate_rule`, :func:`spike_rule_mean`: Poisson
  stimuli, the rate (mean-field) model of the unit, the rate-based rule, and the mean of the spike
  rule predicted from rates.
- :func:`spiking_network`: the layered energy-based model with every unit a population of spiking
  units, nudged at the output, with the spike rule accumulated online for every weight.

No autograd; every random number from an explicit ``torch.Generator``; tensors on the device of the
inputs; trials on batch axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from .activations import Activation, get_activation
from .checks import (
    check_eps,
    check_generator,
    check_positive_int,
    check_real,
    check_tensor,
)
from .network import LayeredEBM

__all__ = [
    "SpikingNeuron",
    "TraceRule",
    "CentredRule",
    "UnitRun",
    "simulate_unit",
    "trace_derivative",
    "spike_rule",
    "window_kernel",
    "window_prediction",
    "PairingWindow",
    "pairing_protocol",
    "fit_decay",
    "ou_process",
    "random_rates",
    "rate_unit",
    "rate_rule",
    "spike_rule_mean",
    "NetworkSpikes",
    "spiking_network",
    "group_cosines",
    "predicted_cosines",
    "bootstrap_correlation",
]


def _nonneg(name: str, v: object) -> float:
    v = check_real(name, v)
    if v < 0.0:
        raise ValueError(f"{name}: must be >= 0, got {v}")
    return v


def _positive(name: str, v: object) -> float:
    v = check_real(name, v)
    if not v > 0.0:
        raise ValueError(f"{name}: must be > 0, got {v}")
    return v


def _decay(name: str, tau: float, dt: float) -> float:
    """q = 1 − dt/τ: the per-step factor of a trace whose mean lag is τ (needs τ ≥ dt)."""
    if tau < dt:
        raise ValueError(f"{name}: must be >= dt = {dt}, got {tau}")
    return 1.0 - dt / tau


# ---------------------------------------------------------------- the unit and the rules
@dataclass(frozen=True)
class SpikingNeuron:
    """A leaky stochastic spiking unit (times in ms, potentials in units of ρ's scale).

    u_{t+1} = u_t + (dt/τ_m)(u_rest − u_t) + Σ_i w_i S_i(t) − a S(t) + σ ξ_t,  ξ_t ~ N(0, 1),
    S(t) ~ Bernoulli(p_max ρ(u_t)) (plus evoked spikes), V_t = u_t + A S(t).

    ``reset`` is a (subtractive), ``ap_area`` is A, ``noise_std`` is σ. ρ must map into [0, 1].
    """

    tau_m: float = 20.0
    dt: float = 1.0
    u_rest: float = -3.0
    p_max: float = 0.1
    ap_area: float = 40.0
    reset: float = 0.0
    noise_std: float = 0.0
    activation: Union[str, Activation] = "sigmoid"

    def __post_init__(self) -> None:
        dt = _positive("dt", self.dt)
        _decay("tau_m", _positive("tau_m", self.tau_m), dt)
        check_real("u_rest", self.u_rest)
        p = _positive("p_max", self.p_max)
        if p > 1.0:
            raise ValueError(f"p_max: a probability per step must be <= 1, got {p}")
        _nonneg("ap_area", self.ap_area)
        _nonneg("reset", self.reset)
        _nonneg("noise_std", self.noise_std)
        act = get_activation(self.activation)
        if act.lo < 0.0 or act.hi > 1.0:
            raise ValueError(f"activation: ρ must map into [0, 1] to be a firing probability, {act.name} "
                             f"spans [{act.lo}, {act.hi}]")
        object.__setattr__(self, "activation", act)

    @property
    def lam(self) -> float:
        """λ = 1 − dt/τ_m: the decay of u per step."""
        return 1.0 - self.dt / self.tau_m

    def stationary_std(self) -> float:
        """Standard deviation of u driven by the noise alone, σ / sqrt(1 − λ²)."""
        return self.noise_std / math.sqrt(1.0 - self.lam ** 2)


@dataclass(frozen=True)
class TraceRule:
    """D V(t) = (V⁺(t) − V⁻(t)) / (τ₊ + τ₋), the derivative estimate of the trace rule.

    V⁺(t) = Σ_{s≥1} (1 − q₊) q₊^{s−1} V(t + s), V⁻(t) = Σ_{s≥1} (1 − q₋) q₋^{s−1} V(t − s), with
    q = 1 − dt/τ: means of V after and before t whose mean lags are τ₊ and τ₋ (exact for V linear in t).
    """

    tau_plus: float = 10.0
    tau_minus: float = 20.0
    dt: float = 1.0

    def __post_init__(self) -> None:
        dt = _positive("dt", self.dt)
        _decay("tau_plus", _positive("tau_plus", self.tau_plus), dt)
        _decay("tau_minus", _positive("tau_minus", self.tau_minus), dt)

    @property
    def q_plus(self) -> float:
        return 1.0 - self.dt / self.tau_plus

    @property
    def q_minus(self) -> float:
        return 1.0 - self.dt / self.tau_minus

    @property
    def norm(self) -> float:
        return self.tau_plus + self.tau_minus

    def decay_times(self) -> tuple[float, float]:
        """The e-folding times (ms) of the window's two sides, −dt / ln q₊ and −dt / ln q₋."""
        return -self.dt / math.log(self.q_plus), -self.dt / math.log(self.q_minus)

    def tail(self, tol: float = 1e-6) -> int:
        """Steps after which the forward weights have fallen below ``tol`` (q₊^L ≤ tol)."""
        return int(math.ceil(math.log(tol) / math.log(self.q_plus))) if self.q_plus > 0 else 1


@dataclass(frozen=True)
class CentredRule:
    """D V(t) = (V(t + τ) − V(t − τ)) / (2τ), τ = ``span`` steps of ``dt`` ms."""

    span: int = 5
    dt: float = 1.0

    def __post_init__(self) -> None:
        check_positive_int("span", self.span)
        _positive("dt", self.dt)

    def tail(self, tol: float = 1e-6) -> int:
        return self.span


Rule = Union[TraceRule, CentredRule]


def _check_rule(rule: object) -> Rule:
    if not isinstance(rule, (TraceRule, CentredRule)):
        raise TypeError(f"rule: expected a TraceRule or CentredRule, got {type(rule).__name__}")
    return rule


# ---------------------------------------------------------------- one layer of units, simulated
@dataclass
class UnitRun:
    """What :func:`simulate_unit` returns; batch axes ``(*batch)``.

    ``dw``: the rule Σ_t S_pre(t) D V(t) per trial and synapse, ``(*batch, n_pre)`` (None without a rule);
    ``post_count``: postsynaptic spikes per trial; ``pre_count``: presynaptic spikes, ``(*batch, n_pre)``;
    ``u_end``: the potential after the last step. With ``record``: ``u``, ``spikes``, ``V`` of shape
    ``(steps, *batch)`` and ``pre`` of shape ``(steps, *batch, n_pre)``.
    """

    dw: Optional[Tensor]
    post_count: Tensor
    pre_count: Tensor
    u_end: Tensor
    u: Optional[Tensor] = None
    spikes: Optional[Tensor] = None
    V: Optional[Tensor] = None
    pre: Optional[Tensor] = None


def _forced_at(name: str, at: Optional[Tensor], shape: tuple, device: torch.device) -> Optional[Tensor]:
    if at is None:
        return None
    at = check_tensor(name, at, device=device)
    if at.dtype != torch.long:
        raise TypeError(f"{name}: expected an integer (torch.long) tensor of step indices, got {at.dtype}")
    if tuple(at.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(at.shape)}")
    return at


def simulate_unit(
    neuron: SpikingNeuron,
    weights: Tensor,
    *,
    steps: int,
    batch_shape: tuple,
    generator: torch.Generator,
    pre_prob: Optional[Tensor] = None,
    forced_pre_at: Optional[Tensor] = None,
    forced_post_at: Optional[Tensor] = None,
    rule: Optional[Rule] = None,
    rule_window: Optional[tuple[int, int]] = None,
    u0: Optional[Tensor] = None,
    drive: Optional[Tensor] = None,
    record: bool = False,
) -> UnitRun:
    """Simulate independent postsynaptic units driven by ``n_pre`` presynaptic spike trains.

    Presynaptic spikes: Bernoulli(``pre_prob[t]``) (broadcast to ``(*batch, n_pre)``; None: none)
    or the step ``forced_pre_at`` (``(*batch, n_pre)``, −1 for none). Evoked postsynaptic spikes at
    ``forced_post_at`` (``(*batch)``, −1 for none) add to the spontaneous ones. With a ``rule``, the
    update Σ_t S_pre(t) D V(t) is accumulated online (causal traces) over presynaptic spikes in
    ``rule_window = (t0, t1)`` (default all steps); values of V beyond the last step count as zero,
    so leave ``rule.tail()`` steps after the window. ``u0`` (``(*batch)``) defaults to u_rest; V
    before step 0 is taken equal to u0. ``drive`` (``(steps, *batch)``, broadcast) is added to u at
    every step (an injected current times dt/C, in units of u).
    """
    if not isinstance(neuron, SpikingNeuron):
        raise TypeError(f"neuron: expected a SpikingNeuron, got {type(neuron).__name__}")
    steps = check_positive_int("steps", steps)
    if not isinstance(batch_shape, tuple) or not all(isinstance(b, int) and b >= 1 for b in batch_shape):
        raise ValueError(f"batch_shape: expected a tuple of positive integers, got {batch_shape!r}")
    weights = check_tensor("weights", weights)
    if weights.dtype not in (torch.float32, torch.float64) or weights.dim() < 1:
        raise TypeError("weights: expected a floating tensor whose last axis is the presynaptic neurons")
    dev, dtype = weights.device, weights.dtype
    n_pre = weights.shape[-1]
    try:
        torch.broadcast_shapes(tuple(weights.shape), batch_shape + (n_pre,))
    except RuntimeError as e:
        raise ValueError(f"weights: shape {tuple(weights.shape)} does not broadcast to {batch_shape + (n_pre,)}") from e
    check_generator("generator", generator, dev)
    if pre_prob is not None:
        pre_prob = check_tensor("pre_prob", pre_prob, dtype=dtype, device=dev)
        if pre_prob.shape[0] != steps:
            raise ValueError(f"pre_prob: first axis must be the {steps} steps, got {tuple(pre_prob.shape)}")
        if float(pre_prob.min()) < 0.0 or float(pre_prob.max()) > 1.0:
            raise ValueError("pre_prob: probabilities per step must lie in [0, 1]")
        try:
            torch.broadcast_shapes(tuple(pre_prob.shape[1:]), batch_shape + (n_pre,))
        except RuntimeError as e:
            raise ValueError(f"pre_prob: shape {tuple(pre_prob.shape)} does not broadcast to "
                             f"(steps, *batch, n_pre) = {(steps,) + batch_shape + (n_pre,)}") from e
    fpre = _forced_at("forced_pre_at", forced_pre_at, batch_shape + (n_pre,), dev)
    fpost = _forced_at("forced_post_at", forced_post_at, batch_shape, dev)
    if rule is not None:
        rule = _check_rule(rule)
        if rule.dt != neuron.dt:
            raise ValueError(f"rule: its dt {rule.dt} differs from the neuron's {neuron.dt}")
    t0, t1 = (0, steps) if rule_window is None else rule_window
    if not (isinstance(t0, int) and isinstance(t1, int) and 0 <= t0 < t1 <= steps):
        raise ValueError(f"rule_window: expected integers 0 <= t0 < t1 <= steps = {steps}, got {rule_window!r}")
    if u0 is None:
        u = torch.full(batch_shape, neuron.u_rest, dtype=dtype, device=dev)
    else:
        u = check_tensor("u0", u0, shape=batch_shape, dtype=dtype, device=dev).clone()
    if drive is not None:
        drive = _check_drive(drive, steps, batch_shape, dtype, dev)
    return _simulate(neuron, weights, steps, batch_shape, generator, pre_prob, fpre, fpost, rule, (t0, t1), u,
                     drive, bool(record))


def _check_drive(drive: object, steps: int, batch_shape: tuple, dtype: torch.dtype, dev: torch.device) -> Tensor:
    drive = check_tensor("drive", drive, dtype=dtype, device=dev)
    if drive.dim() < 1 or drive.shape[0] != steps:
        raise ValueError(f"drive: first axis must be the {steps} steps, got {tuple(drive.shape)}")
    try:
        torch.broadcast_shapes(tuple(drive.shape[1:]), batch_shape)
    except RuntimeError as e:
        raise ValueError(f"drive: shape {tuple(drive.shape)} does not broadcast to (steps, *batch)") from e
    return drive


def _simulate(neuron, weights, steps, batch_shape, gen, pre_prob, fpre, fpost, rule, window, u, ext, record) -> UnitRun:
    dev, dtype = weights.device, weights.dtype
    n_pre = weights.shape[-1]
    rho = neuron.activation.rho
    lam, drift = neuron.lam, (neuron.dt / neuron.tau_m) * neuron.u_rest
    A, a, sigma, pm = neuron.ap_area, neuron.reset, neuron.noise_std, neuron.p_max
    zeros_pre = torch.zeros(batch_shape + (n_pre,), dtype=dtype, device=dev)
    dw = None if rule is None else zeros_pre.clone()
    trace_pre = zeros_pre.clone()                      # presynaptic trace x (trace rule)
    trace_v = u.clone()                                # V⁻, history at u0
    if isinstance(rule, CentredRule):
        buf_s = torch.zeros((rule.span,) + batch_shape + (n_pre,), dtype=dtype, device=dev)
        buf_v = u.unsqueeze(0).repeat((rule.span,) + (1,) * len(batch_shape))
    post_count = torch.zeros(batch_shape, dtype=dtype, device=dev)
    pre_count = zeros_pre.clone()
    rec = {k: [] for k in ("u", "spikes", "V", "pre")} if record else None
    for t in range(steps):
        s_pre = zeros_pre if pre_prob is None else (
            torch.rand(batch_shape + (n_pre,), generator=gen, dtype=dtype, device=dev) < pre_prob[t]).to(dtype)
        if fpre is not None:
            s_pre = torch.maximum(s_pre, (fpre == t).to(dtype))
        s = (torch.rand(batch_shape, generator=gen, dtype=dtype, device=dev) < pm * rho(u)).to(dtype)
        if fpost is not None:
            s = s + (fpost == t).to(dtype)
        V = u + A * s
        if rule is not None:
            gate = s_pre if window == (0, steps) else s_pre * float(window[0] <= t < window[1])
            if isinstance(rule, TraceRule):
                dw += trace_pre * V.unsqueeze(-1) - gate * trace_v.unsqueeze(-1)
                trace_pre.mul_(rule.q_plus).add_(gate, alpha=1.0 - rule.q_plus)
                trace_v.mul_(rule.q_minus).add_(V, alpha=1.0 - rule.q_minus)
            else:
                j = t % rule.span
                dw += buf_s[j] * V.unsqueeze(-1) - gate * buf_v[j].unsqueeze(-1)
                buf_s[j], buf_v[j] = gate, V
        post_count += s
        pre_count += s_pre
        if record:
            for k, v in (("u", u), ("spikes", s), ("V", V), ("pre", s_pre)):
                rec[k].append(v.clone())
        inp = (s_pre * weights).sum(-1)
        u = lam * u + drift + inp - a * s
        if ext is not None:
            u = u + ext[t]
        if sigma > 0.0:
            u = u + sigma * torch.randn(batch_shape, generator=gen, dtype=dtype, device=dev)
    if dw is not None:
        dw = dw / (rule.norm if isinstance(rule, TraceRule) else 2.0 * rule.span * rule.dt)
    out = UnitRun(dw, post_count, pre_count, u)
    if record:
        out.u, out.spikes, out.V, out.pre = (torch.stack(rec[k]) for k in ("u", "spikes", "V", "pre"))
    return out


# ---------------------------------------------------------------- offline derivative and rule
def trace_derivative(V: Tensor, rule: Rule, v0: Optional[Tensor] = None) -> Tensor:
    """D V(t) for a recorded V (time on axis 0), the same estimate :func:`simulate_unit` uses.

    Trace rule: (V⁺ − V⁻)/(τ₊ + τ₋); centred: (V(t+τ) − V(t−τ))/(2τ). V before step 0 equals ``v0``
    (default V[0]); V after the last step counts as zero (the online rule's truncation).
    """
    rule = _check_rule(rule)
    V = check_tensor("V", V)
    if V.dim() < 1 or V.shape[0] < 2:
        raise ValueError(f"V: expected time on axis 0 with at least 2 steps, got {tuple(V.shape)}")
    v0 = V[0] if v0 is None else check_tensor("v0", v0, shape=tuple(V.shape[1:]), dtype=V.dtype, device=V.device)
    T = V.shape[0]
    if isinstance(rule, CentredRule):
        s = rule.span
        back = torch.cat([v0.unsqueeze(0).expand((min(s, T),) + tuple(V.shape[1:])), V[: max(T - s, 0)]])[:T]
        fwd = torch.cat([V[s:], torch.zeros((min(s, T),) + tuple(V.shape[1:]), dtype=V.dtype, device=V.device)])[:T]
        return (fwd - back) / (2.0 * s * rule.dt)
    qp, qm = rule.q_plus, rule.q_minus
    plus, minus = torch.zeros_like(V), torch.empty_like(V)
    acc = torch.zeros_like(V[0])
    for t in range(T - 1, -1, -1):     # V⁺(t) = q₊ V⁺(t+1) + (1 − q₊) V(t+1)
        plus[t] = acc
        acc = qp * acc + (1.0 - qp) * V[t]
    acc = v0.clone()
    for t in range(T):                 # V⁻(t+1) = q₋ V⁻(t) + (1 − q₋) V(t)
        minus[t] = acc
        acc = qm * acc + (1.0 - qm) * V[t]
    return (plus - minus) / rule.norm


def spike_rule(pre: Tensor, V: Tensor, rule: Rule, v0: Optional[Tensor] = None) -> Tensor:
    """ΔW = Σ_t S_pre(t) D V(t) offline: ``pre`` ``(steps, *batch, n_pre)``, ``V`` ``(steps, *batch)``
    (or ``(steps, *batch, n_post)`` with ``pre`` ``(steps, *batch, n_pre)``: returns ``(*batch, n_pre, n_post)``)."""
    pre = check_tensor("pre", pre)
    V = check_tensor("V", V, dtype=pre.dtype, device=pre.device)
    D = trace_derivative(V, rule, v0)
    if V.dim() == pre.dim() - 1:
        if tuple(V.shape) != tuple(pre.shape[:-1]):
            raise ValueError(f"pre, V: shapes {tuple(pre.shape)} and {tuple(V.shape)} do not match")
        return (pre * D.unsqueeze(-1)).sum(0)
    if V.dim() != pre.dim() or tuple(V.shape[:-1]) != tuple(pre.shape[:-1]):
        raise ValueError(f"pre, V: shapes {tuple(pre.shape)} and {tuple(V.shape)} do not match")
    return torch.einsum("t...i,t...j->...ij", pre, D)


# ---------------------------------------------------------------- the window in closed form
def _lags(lags: object) -> np.ndarray:
    a = np.asarray(lags)
    if a.ndim != 1 or a.size < 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError("lags: expected a 1-D sequence of integers (steps, t_post − t_pre)")
    return a.astype(np.int64)


def window_kernel(lags: object, rule: Rule) -> np.ndarray:
    """K(Δt): the weight D puts on V at lag Δt = t_post − t_pre (in steps) from the presynaptic spike.

    Trace rule: (1 − q₊) q₊^{Δt−1} / (τ₊ + τ₋) for Δt ≥ 1, −(1 − q₋) q₋^{|Δt|−1} / (τ₊ + τ₋) for Δt ≤ −1,
    0 at Δt = 0. Centred rule: ±1/(2τ) at Δt = ±τ, 0 elsewhere. Σ K = 0 and Σ Δt K(Δt) = 1/dt.
    """
    rule = _check_rule(rule)
    d = _lags(lags)
    out = np.zeros(d.shape, dtype=float)
    if isinstance(rule, CentredRule):
        out[d == rule.span] = 1.0 / (2.0 * rule.span * rule.dt)
        out[d == -rule.span] = -1.0 / (2.0 * rule.span * rule.dt)
        return out
    qp, qm = rule.q_plus, rule.q_minus
    pos, neg = d >= 1, d <= -1
    out[pos] = (1.0 - qp) * qp ** (d[pos] - 1) / rule.norm
    out[neg] = -(1.0 - qm) * qm ** (-d[neg] - 1) / rule.norm
    return out


def window_prediction(lags: object, neuron: SpikingNeuron, rule: TraceRule) -> np.ndarray:
    """Predicted window W(Δt) − W(pre alone) of the pairing protocol, without spontaneous spikes.

    A K(Δt) (the evoked action potential) plus the reset's term, −a Σ_s K(s) λ^{s−Δt−1} over s > Δt:
    −a (1 − q₊) q₊^{Δt} / ((1 − q₊λ)(τ₊ + τ₋)) for Δt ≥ 0 and, for Δt = −n < 0,
    [−a (1 − q₊) λ^n / (1 − q₊λ) + a (1 − q₋) Σ_{s=1}^{n−1} q₋^{s−1} λ^{n−1−s}] / (τ₊ + τ₋).
    Exact when the unit does not fire spontaneously (or when a = 0: the reset is then absent and the
    spontaneous spikes do not depend on the evoked one).
    """
    if not isinstance(neuron, SpikingNeuron):
        raise TypeError(f"neuron: expected a SpikingNeuron, got {type(neuron).__name__}")
    if not isinstance(rule, TraceRule):
        raise TypeError(f"rule: expected a TraceRule, got {type(rule).__name__}")
    if rule.dt != neuron.dt:
        raise ValueError(f"rule: its dt {rule.dt} differs from the neuron's {neuron.dt}")
    d = _lags(lags)
    out = neuron.ap_area * window_kernel(d, rule)
    a, lam, qp, qm = neuron.reset, neuron.lam, rule.q_plus, rule.q_minus
    if a == 0.0:
        return out
    for i, n in enumerate(d):
        if n >= 0:
            out[i] -= a * (1 - qp) * qp ** n / ((1 - qp * lam) * rule.norm)
        else:
            m = -n
            inner = sum(qm ** (s - 1) * lam ** (m - 1 - s) for s in range(1, m))
            out[i] += (-a * (1 - qp) * lam ** m / (1 - qp * lam) + a * (1 - qm) * inner) / rule.norm
    return out


# ---------------------------------------------------------------- the pairing protocol
@dataclass
class PairingWindow:
    """The pairing protocol's result: ``values[j, r]`` is ΔW of trial r at lag ``lags[j]`` (steps,
    t_post − t_pre); ``control[r]`` the same with the presynaptic spike alone (its own trials)."""

    lags: np.ndarray
    dt: float
    values: Tensor
    control: Tensor

    @property
    def trials(self) -> int:
        return self.values.shape[1]

    def window(self) -> np.ndarray:
        """Mean over trials of paired minus control."""
        return (self.values.mean(1) - self.control.mean()).cpu().numpy()

    def se(self) -> np.ndarray:
        """Standard error of :meth:`window` (paired and control trials independent)."""
        v = self.values.var(1) / self.trials + self.control.var() / self.control.numel()
        return v.sqrt().cpu().numpy()

    def offset(self) -> tuple[float, float]:
        """Mean ΔW of the presynaptic spike alone and its standard error."""
        return float(self.control.mean()), float(self.control.std() / math.sqrt(self.control.numel()))

    def jackknife(self, stat, groups: int = 20) -> tuple[float, float]:
        """``stat(window)`` on all trials and its jackknife standard error: paired and control trials
        are each split into ``groups`` parts, and each part left out in turn."""
        groups = check_positive_int("groups", groups, minimum=2)
        if groups > min(self.trials, self.control.numel()):
            raise ValueError(f"groups: at most {min(self.trials, self.control.numel())} for these trials")
        vp = torch.arange(self.trials, device=self.values.device).chunk(groups)
        cp = torch.arange(self.control.numel(), device=self.control.device).chunk(groups)
        loo = []
        for i in range(groups):
            v = self.values[:, torch.cat([g for j, g in enumerate(vp) if j != i])].mean(1)
            c = self.control[torch.cat([g for j, g in enumerate(cp) if j != i])].mean()
            loo.append(float(stat((v - c).cpu().numpy())))
        loo_a = np.array(loo)
        return float(stat(self.window())), math.sqrt((groups - 1) / groups * ((loo_a - loo_a.mean()) ** 2).sum())


def pairing_protocol(
    neuron: SpikingNeuron,
    rule: Rule,
    lags: object,
    *,
    trials: int,
    weight: float,
    generator: torch.Generator,
    control_trials: Optional[int] = None,
    history: Optional[int] = None,
    dtype: torch.dtype = torch.float64,
    device: Union[str, torch.device] = "cpu",
) -> PairingWindow:
    """One presynaptic spike (synaptic weight ``weight``) and one evoked postsynaptic spike at
    t_post = t_pre + lag, ``trials`` independent trials per lag, and ``control_trials`` (default
    16 × trials: every lag subtracts the same control) with the presynaptic spike alone;
    ΔW = D V(t_pre) by the ``rule``. Each trial starts from u drawn from its noise-driven stationary
    law and runs ``history`` steps (default 8 τ₋ or 2 τ) before the earliest spike.
    """
    d = _lags(lags)
    trials = check_positive_int("trials", trials)
    control_trials = 16 * trials if control_trials is None else check_positive_int("control_trials", control_trials)
    if control_trials % trials:
        raise ValueError(f"control_trials: must be a multiple of trials = {trials}, got {control_trials}")
    rule = _check_rule(rule)
    weight = check_real("weight", weight)
    dev = torch.device(device)
    if history is None:
        history = int(math.ceil(8 * rule.tau_minus / rule.dt)) if isinstance(rule, TraceRule) else 2 * rule.span
    history = check_positive_int("history", history)
    span = int(np.abs(d).max())
    t_pre = history + span
    steps = t_pre + span + rule.tail() + 1
    extra = control_trials // trials
    rows = len(d) + extra                 # the last ``extra`` rows are control trials
    fpost = torch.full((rows, trials), -1, dtype=torch.long, device=dev)
    fpost[: len(d)] = torch.as_tensor(t_pre + d, dtype=torch.long, device=dev).unsqueeze(1)
    fpre = torch.full((rows, trials, 1), t_pre, dtype=torch.long, device=dev)
    check_generator("generator", generator, dev)
    u0 = neuron.u_rest + neuron.stationary_std() * torch.randn((rows, trials), generator=generator, dtype=dtype,
                                                               device=dev)
    w = torch.tensor([weight], dtype=dtype, device=dev)
    res = simulate_unit(neuron, w, steps=steps, batch_shape=(rows, trials), generator=generator,
                        forced_pre_at=fpre, forced_post_at=fpost, rule=rule, u0=u0)
    dw = res.dw[..., 0]
    return PairingWindow(d, neuron.dt, dw[: len(d)], dw[len(d):].flatten())


def fit_decay(x: object, y: object, se: object = None) -> tuple[float, float]:
    """Weighted least squares fit of y = C exp(−x/τ): returns (C, τ).

    For each τ the best C is closed-form; τ is found by golden-section search on log τ over
    [spacing/10, 100 × range] of x. ``se`` (standard errors) weight the points by 1/se².
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.ndim != 1 or xa.shape != ya.shape or xa.size < 3:
        raise ValueError("x, y: expected 1-D sequences of the same length, at least 3 points")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError("x, y: contain NaN or inf")
    if se is None:
        w = np.ones_like(xa)
    else:
        sa = np.asarray(se, dtype=float)
        if sa.shape != xa.shape or not np.all(np.isfinite(sa)) or not np.all(sa > 0):
            raise ValueError("se: expected positive, finite standard errors, one per point")
        w = sa ** -2.0
    span = float(np.ptp(xa))
    if span == 0.0:
        raise ValueError("x: needs at least two distinct values")

    def loss(log_tau: float) -> tuple[float, float]:
        e = np.exp(-xa / math.exp(log_tau))
        c = float((w * e * ya).sum() / (w * e * e).sum())
        return float((w * (ya - c * e) ** 2).sum()), c

    lo, hi = math.log(span / (10 * (xa.size - 1))), math.log(100 * span)
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(200):
        c1, c2 = b - g * (b - a), a + g * (b - a)
        if loss(c1)[0] < loss(c2)[0]:
            b = c2
        else:
            a = c1
    log_tau = (a + b) / 2
    return loss(log_tau)[1], math.exp(log_tau)


# ---------------------------------------------------------------- rates: stimuli, mean field, rules
def ou_process(
    steps: int,
    shape: tuple,
    *,
    tau_c: float,
    generator: torch.Generator,
    dt: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: Union[str, torch.device] = "cpu",
) -> Tensor:
    """A stationary Ornstein–Uhlenbeck process of unit variance, ``(steps, *shape)``:
    z_{t+1} = c z_t + sqrt(1 − c²) ξ_t, c = 1 − dt/τ_c, z_0 ~ N(0, 1)."""
    steps = check_positive_int("steps", steps)
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape: expected a tuple of positive integers, got {shape!r}")
    dt = _positive("dt", dt)
    c = _decay("tau_c", _positive("tau_c", tau_c), dt)
    dev = torch.device(device)
    check_generator("generator", generator, dev)
    z = torch.empty((steps,) + shape, dtype=dtype, device=dev)
    z[0] = torch.randn(shape, generator=generator, dtype=dtype, device=dev)
    s = math.sqrt(1.0 - c * c)
    for t in range(1, steps):
        z[t] = c * z[t - 1] + s * torch.randn(shape, generator=generator, dtype=dtype, device=dev)
    return z


def random_rates(
    steps: int,
    shape: tuple,
    *,
    tau_c: float,
    lo: float,
    hi: float,
    generator: torch.Generator,
    dt: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: Union[str, torch.device] = "cpu",
) -> Tensor:
    """Smooth random firing probabilities per step, ``(steps, *shape)`` in [lo, hi].

    p(t) = lo + (hi − lo) σ(2 z(t)), z a stationary Ornstein–Uhlenbeck process of unit variance and
    correlation time ``tau_c`` (ms), started from its stationary law.
    """
    lo, hi = check_real("lo", lo), check_real("hi", hi)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"lo, hi: expected 0 <= lo < hi <= 1 (probabilities per step), got {lo}, {hi}")
    z = ou_process(steps, shape, tau_c=tau_c, generator=generator, dt=dt, dtype=dtype, device=device)
    return lo + (hi - lo) * torch.sigmoid(2.0 * z)


def rate_unit(neuron: SpikingNeuron, pre_prob: Tensor, weights: Tensor, u0: Optional[Tensor] = None,
              drive: Optional[Tensor] = None) -> Tensor:
    """The rate (mean-field) potential ū(t), time on axis 0, with the spikes replaced by their rates:

    ū_{t+1} = λ ū_t + (dt/τ_m) u_rest + Σ_i w_i p_i(t) + I(t) − a p_max ρ(ū_t),  ū_0 = ``u0`` (default
    u_rest), I = ``drive``. ``pre_prob`` ``(steps, *batch, n_pre)``; returns ``(steps, *batch)``.
    """
    if not isinstance(neuron, SpikingNeuron):
        raise TypeError(f"neuron: expected a SpikingNeuron, got {type(neuron).__name__}")
    pre_prob = check_tensor("pre_prob", pre_prob)
    weights = check_tensor("weights", weights, dtype=pre_prob.dtype, device=pre_prob.device)
    drive_in = (pre_prob * weights).sum(-1)
    if drive is not None:
        drive_in = drive_in + _check_drive(drive, pre_prob.shape[0], tuple(drive_in.shape[1:]), pre_prob.dtype,
                                           pre_prob.device)
    drive = drive_in
    u = torch.full(drive.shape[1:], neuron.u_rest, dtype=drive.dtype, device=drive.device) if u0 is None else \
        check_tensor("u0", u0, shape=tuple(drive.shape[1:]), dtype=drive.dtype, device=drive.device)
    out = torch.empty_like(drive)
    drift = (neuron.dt / neuron.tau_m) * neuron.u_rest
    for t in range(drive.shape[0]):
        out[t] = u
        u = neuron.lam * u + drift + drive[t] - neuron.reset * neuron.p_max * neuron.activation.rho(u)
    return out


def rate_rule(pre_prob: Tensor, post: Tensor, rule: Rule, window: Optional[tuple[int, int]] = None) -> Tensor:
    """Σ_t p_pre(t) D post(t) over the steps of ``window``: a rate-based rule with the derivative
    estimate of ``rule`` (post = ρ(ū): Xie & Seung's ρ(pre)·dρ(post)/dt; post = ū: the state form).
    ``pre_prob`` ``(steps, *batch, n_pre)``, ``post`` ``(steps, *batch)``; returns ``(*batch, n_pre)``."""
    pre_prob = check_tensor("pre_prob", pre_prob)
    post = check_tensor("post", post, shape=tuple(pre_prob.shape[:-1]), dtype=pre_prob.dtype, device=pre_prob.device)
    D = trace_derivative(post, rule)
    t0, t1 = (0, post.shape[0]) if window is None else window
    if not (isinstance(t0, int) and isinstance(t1, int) and 0 <= t0 < t1 <= post.shape[0]):
        raise ValueError(f"window: expected integers 0 <= t0 < t1 <= {post.shape[0]}, got {window!r}")
    return (pre_prob[t0:t1] * D[t0:t1].unsqueeze(-1)).sum(0)


def spike_rule_mean(
    neuron: SpikingNeuron,
    rule: TraceRule,
    pre_prob: Tensor,
    weights: Tensor,
    window: Optional[tuple[int, int]] = None,
    drive: Optional[Tensor] = None,
) -> Tensor:
    """Mean of the spike rule predicted from rates (mean field, reset a = 0).

    E[ΔW_i] ≈ Σ_t p_i(t) [D V̄(t) + w_i c (1 + A p_max ρ'(ū(t)))], V̄ = ū + A p_max ρ(ū): the rate of the
    presynaptic spikes times the derivative of the mean potential, plus each spike's own effect on the
    potential after it (its PSP w_i λ^{s−1} and the extra postsynaptic spikes it causes), with
    c = (1 − q₊) / ((1 − q₊λ)(τ₊ + τ₋)). Neglects the fluctuations of u inside ρ (Jensen).
    """
    if not isinstance(rule, TraceRule):
        raise TypeError(f"rule: expected a TraceRule, got {type(rule).__name__}")
    if neuron.reset != 0.0:
        raise ValueError("neuron: the prediction assumes no reset (reset = 0)")
    u = rate_unit(neuron, pre_prob, weights, drive=drive)
    rho, drho = neuron.activation.rho_and_drho(u)
    A, pm = neuron.ap_area, neuron.p_max
    mean = rate_rule(pre_prob, u + A * pm * rho, rule, window)
    t0, t1 = (0, u.shape[0]) if window is None else window
    c = (1 - rule.q_plus) / ((1 - rule.q_plus * neuron.lam) * rule.norm)
    self_term = (pre_prob[t0:t1] * (1 + A * pm * drho[t0:t1]).unsqueeze(-1)).sum(0) * weights * c
    return mean + self_term


# ---------------------------------------------------------------- a layered network of spiking units
@dataclass
class NetworkSpikes:
    """What :func:`spiking_network` returns (lists indexed by layer, index 0 unused for weights).

    ``dw_free[k]``, ``dw_nudged[k]``: the spike rule for W_k per trial, ``(B, n_{k−1}, n_k)``, over
    the free window (before the nudge) and the nudged window (from the nudge on), each ``window``
    steps of presynaptic spikes; ``u_mean[k]``: the potential averaged over trials, ``(steps + 1, n_k)``;
    ``rate[k]``: spikes per unit and step averaged over trials and time, ``(n_k,)``.
    """

    dw_free: list
    dw_nudged: list
    u_mean: list
    rate: list
    nudge_step: int
    window: int

    def update(self) -> list:
        """Nudged minus free window, per trial: the single-network, two-phase estimate."""
        return [None] + [self.dw_nudged[k] - self.dw_free[k] for k in range(1, len(self.dw_free))]


def spiking_network(
    net: LayeredEBM,
    x: Tensor,
    h0: list,
    *,
    trials: int,
    eps: float,
    beta: float,
    target: Tensor,
    burn: int,
    window: int,
    population: int,
    p_max: float,
    ap_area: float,
    rule: TraceRule,
    generator: torch.Generator,
) -> NetworkSpikes:
    """The layered model with spiking units: layer k is ``population`` units per entry sharing the
    potential u_k; each fires with probability p_max ρ(u_k) per step, the input's with p_max x.

    With r̂_k = (spike count)/(population · p_max) (mean ρ(u_k)) in place of ρ(h_k), one Euler step:
    u_k ← u_k + ε[ρ'(u_k) ⊙ (b_k + W_kᵀ r̂_{k−1} + W_{k+1} r̂_{k+1}) − u_k] (+ εβ(d − u_N) nudged).
    ``trials`` independent copies start at ``h0`` (one input ``x`` (1, n_0), target (1, n_N)), run
    ``burn`` free steps, then ``window + tail`` nudged ones. The rule reads, per weight, the
    presynaptic population's spikes per unit and V = u + A · (postsynaptic spikes per unit); it is
    accumulated online over presynaptic spikes in [burn − tail − window, burn − tail) (free) and
    [burn, burn + window) (nudged), tail = ``rule.tail()``.
    """
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    act = net.activation
    if act.lo < 0.0 or act.hi > 1.0:
        raise ValueError(f"net: ρ must map into [0, 1] to be a firing probability ({act.name})")
    x = check_tensor("x", x, shape=(1, net.sizes[0]), dtype=net.dtype, device=net.device)
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError("x: input rates must lie in [0, 1]")
    target = check_tensor("target", target, shape=(1, net.sizes[-1]), dtype=net.dtype, device=net.device)
    h0 = net.check_state(h0, "h0")
    if h0[0].shape[0] != 1:
        raise ValueError("h0: expected one state (batch 1); trials are made here")
    trials = check_positive_int("trials", trials)
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    window = check_positive_int("window", window)
    population = check_positive_int("population", population)
    p_max = _positive("p_max", p_max)
    if p_max > 1.0:
        raise ValueError(f"p_max: a probability per step must be <= 1, got {p_max}")
    A = _nonneg("ap_area", ap_area)
    if not isinstance(rule, TraceRule) or rule.dt != 1.0:
        raise TypeError("rule: expected a TraceRule with dt = 1 (one Euler step)")
    tail = rule.tail()
    burn = check_positive_int("burn", burn, minimum=window + tail)
    check_generator("generator", generator, net.device)
    return _network(net, x, h0, trials, eps, beta, target, burn, window, tail, population, p_max, A, rule, generator)


def _network(net, x, h0, trials, eps, beta, target, burn, window, tail, P, pm, A, rule, gen) -> NetworkSpikes:
    N, dt, dev = net.N, net.dtype, net.device
    act = net.activation
    u = [None] + [h0[k].expand(trials, -1).clone() for k in range(1, N + 1)]
    sizes = net.sizes
    zeros = [torch.zeros(trials, n, dtype=dt, device=dev) for n in sizes]
    dw = {ph: [None] + [torch.zeros(trials, sizes[k - 1], sizes[k], dtype=dt, device=dev) for k in range(1, N + 1)]
          for ph in ("free", "nudged")}
    trace_pre = {ph: [z.clone() for z in zeros] for ph in dw}
    trace_v = [None] + [u[k].clone() for k in range(1, N + 1)]
    u_mean = [None] + [[] for _ in range(N)]
    counts = [z.clone() for z in zeros]
    x_prob = (pm * x).expand(trials, -1)
    starts = {"free": burn - tail - window, "nudged": burn}
    steps = burn + window + tail
    for t in range(steps + 1):
        for k in range(1, N + 1):
            u_mean[k].append(u[k].mean(0))
        if t == steps:
            break
        prob = [x_prob] + [pm * act.rho(u[k]) for k in range(1, N + 1)]
        s = [torch.binomial(torch.full_like(p, float(P)), p, generator=gen) / P for p in prob]
        V = [None] + [u[k] + A * s[k] for k in range(1, N + 1)]
        for ph, t0 in starts.items():
            gate = float(t0 <= t < t0 + window)
            for k in range(1, N + 1):
                dw[ph][k] += trace_pre[ph][k - 1].unsqueeze(-1) * V[k].unsqueeze(1)
                if gate:
                    dw[ph][k] -= s[k - 1].unsqueeze(-1) * trace_v[k].unsqueeze(1)
            for k in range(N):
                trace_pre[ph][k].mul_(rule.q_plus).add_(s[k] * gate, alpha=1.0 - rule.q_plus)
        for k in range(1, N + 1):
            trace_v[k].mul_(rule.q_minus).add_(V[k], alpha=1.0 - rule.q_minus)
            counts[k] += s[k]
        r_hat = [si / pm for si in s]
        new = []
        for k in range(1, N + 1):
            pre = net.b[k] + r_hat[k - 1] @ net.W[k]
            if k < N:
                pre = pre + r_hat[k + 1] @ net.W[k + 1].T
            f = act.drho(u[k]) * pre - u[k]
            if k == N and t >= burn:
                f = f + beta * (target - u[k])
            new.append(u[k] + eps * f)
        u = [None] + new
    for ph in dw:
        for k in range(1, N + 1):
            dw[ph][k] /= rule.norm
    rate = [None] + [counts[k].mean(0) / steps for k in range(1, N + 1)]
    return NetworkSpikes(dw["free"], dw["nudged"], [None] + [torch.stack(u_mean[k]) for k in range(1, N + 1)],
                         rate, burn, window)


# ---------------------------------------------------------------- statistics of trial averages
def _m_list(m_list: object, K: int) -> list[int]:
    if not isinstance(m_list, (list, tuple)) or not m_list:
        raise ValueError("m_list: expected a non-empty list of trial counts")
    out = [check_positive_int(f"m_list[{i}]", m) for i, m in enumerate(m_list)]
    if max(out) > K:
        raise ValueError(f"m_list: {max(out)} trials requested, only {K} available")
    return out


def group_cosines(samples: Tensor, direction: Tensor, m_list: object) -> tuple[np.ndarray, np.ndarray]:
    """cos(mean of M trials, direction) over the K // M disjoint groups of ``samples`` ``(K, n)``:
    per M, the mean over groups and its standard error (NaN with one group)."""
    samples = check_tensor("samples", samples, shape=(None, None))
    direction = check_tensor("direction", direction, shape=(samples.shape[1],), dtype=samples.dtype,
                             device=samples.device)
    if float(direction.norm()) == 0.0:
        raise ValueError("direction: zero vector")
    K = samples.shape[0]
    d = direction / direction.norm()
    means, ses = [], []
    for M in _m_list(m_list, K):
        R = K // M
        g = samples[: R * M].reshape(R, M, -1).mean(1)
        c = (g @ d) / g.norm(dim=1)
        means.append(float(c.mean()))
        ses.append(float(c.std() / math.sqrt(R)) if R > 1 else float("nan"))
    return np.array(means), np.array(ses)


def predicted_cosines(
    mean: Tensor,
    cov: Tensor,
    direction: Tensor,
    m_list: object,
    *,
    draws: int,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The law of cos(x̄_M, direction) for x̄_M ~ N(mean, cov / M) (the mean of M independent trials, by
    the central limit theorem), by ``draws`` Monte Carlo draws per M: its mean and its standard
    deviation (the Monte Carlo error of the mean is sd / sqrt(draws))."""
    mean = check_tensor("mean", mean, shape=(None,))
    n = mean.shape[0]
    cov = check_tensor("cov", cov, shape=(n, n), dtype=mean.dtype, device=mean.device)
    direction = check_tensor("direction", direction, shape=(n,), dtype=mean.dtype, device=mean.device)
    if float(direction.norm()) == 0.0:
        raise ValueError("direction: zero vector")
    draws = check_positive_int("draws", draws, minimum=2)
    check_generator("generator", generator, mean.device)
    lam, U = torch.linalg.eigh((cov + cov.T) / 2)
    root = U * lam.clamp(min=0.0).sqrt()
    d = direction / direction.norm()
    means, ses = [], []
    for M in _m_list(m_list, 2 ** 62):
        z = torch.randn(draws, n, generator=generator, dtype=mean.dtype, device=mean.device)
        x = mean + (z @ root.T) / math.sqrt(M)
        c = (x @ d) / x.norm(dim=1)
        means.append(float(c.mean()))
        ses.append(float(c.std()))
    return np.array(means), np.array(ses)


def bootstrap_correlation(
    a: Tensor,
    b: Tensor,
    *,
    resamples: int,
    generator: torch.Generator,
    level: float = 0.95,
) -> tuple[float, float, float, float]:
    """Pearson correlation of ``a`` and ``b`` (shape ``(S, n)``: S independent stimuli of n values
    each, flattened) and its bootstrap over stimuli: (r, lo, hi, se) with the ``level`` percentile
    interval; resampling whole stimuli keeps the dependence between values of one stimulus."""
    a = check_tensor("a", a, shape=(None, None))
    b = check_tensor("b", b, shape=tuple(a.shape), dtype=a.dtype, device=a.device)
    resamples = check_positive_int("resamples", resamples, minimum=10)
    level = check_real("level", level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must lie in (0, 1), got {level}")
    check_generator("generator", generator, a.device)
    S = a.shape[0]
    if S < 2:
        raise ValueError("a: need at least two stimuli (rows) to bootstrap")

    def corr(x: Tensor, y: Tensor) -> Tensor:
        x = x.flatten(-2) - x.flatten(-2).mean(-1, keepdim=True)
        y = y.flatten(-2) - y.flatten(-2).mean(-1, keepdim=True)
        return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))

    r = float(corr(a, b))
    idx = torch.randint(0, S, (resamples, S), generator=generator, device=a.device)
    boot = corr(a[idx], b[idx]).cpu().numpy()
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return r, float(lo), float(hi), float(boot.std(ddof=1))
