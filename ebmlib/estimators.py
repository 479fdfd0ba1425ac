"""Weight-update estimators for θ = (W_k, b_k) behind one interface (PAPER.md §5–6).

Every estimate is a *gradient* of the objective J = mean over the batch of C — a list indexed by
layer, ``grads[k] = (∂J/∂W_k, ∂J/∂b_k)`` (index 0 None) — so that learning is always
``θ ← θ − lr_k · grad``.

**Formulas from states** (the building blocks, also used by the chapters):

- :func:`ep_gradient`: Equilibrium Propagation, one-sided, (1/β)(∂E/∂θ(h^β) − ∂E/∂θ(h*)), with
  ∂E/∂W_k = −ρ(h_{k−1})ρ(h_k)ᵀ, ∂E/∂b_k = −ρ(h_k). Bias O(β).
- :func:`ep_symmetric_gradient`: (1/2β)(∂E/∂θ(h^{+β}) − ∂E/∂θ(h^{−β})) (Laborieux et al. 2021). Bias O(β²).
- :func:`implicit_param_gradient`: the exact gradient through the fixed point (autograd reference).
- :func:`chain_param_gradient`: through the chain of one-way maps, ρ(h_{k−1})ᵀ(ρ'(h_k) ⊙ g_k).
- :func:`plasticity_gradient`: rate-based STDP-like rules integrated over a recorded nudged
  trajectory (the state form ρ(pre)·u̇; the firing-rate form ρ(pre)·dρ(post)/dt of Xie & Seung 2000;
  tied), minus the same rule on a paired free trajectory or, not paired, on one trajectory alone.
- :func:`ep_param_steps`: EP's update per step of the nudged phase (to compare with BPTT's).
- :func:`first_arrival_gradient`: the first-arrival rule, ĝ_k = −δ_k(m+1)/(β ε^{m+1}), paired or from one trajectory.
- :func:`bp_gradient`: back-propagation of the feedforward network of the same weights.

**The interface the trainer uses**: an :class:`Estimator`, registered by name in
:data:`ESTIMATORS`, called as ``estimator(net, x, target, h0=..., phases=..., generator=...)`` and
returning an :class:`Estimate` (the gradients, the prediction made on the way, the free state
reached). The trainer looks the estimator up by name and never branches on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from .checks import check_bool, check_eps, check_nonzero_beta, check_positive_int
from .dynamics import Trajectory, relax, run
from .gradients import chain_gradient, implicit_gradient
from .network import LayeredEBM, State
from .oneway import mlp_layers
from .response import nudge_response

__all__ = [
    "Grads",
    "RULES",
    "energy_param_gradient",
    "ep_gradient",
    "ep_symmetric_gradient",
    "implicit_param_gradient",
    "chain_param_gradient",
    "plasticity_gradient",
    "ep_param_steps",
    "first_arrival_gradient",
    "bp_gradient",
    "Phases",
    "Estimate",
    "Estimator",
    "ESTIMATORS",
    "register",
    "get_estimator",
]

Grads = list  # [None, (dW_1, db_1), …, (dW_N, db_N)]
RULES = ("bengio", "xie_seung", "tied")


# ====================================================================== formulas from states
def energy_param_gradient(net: LayeredEBM, h: State) -> Grads:
    """∂E/∂θ at state ``h``, averaged over the batch: (−ρ(h_{k−1})ᵀρ(h_k)/B, −mean ρ(h_k))."""
    net.check_state(h)
    B = h[0].shape[0]
    rho = [h[0]] + [net.activation.rho(h[k]) for k in range(1, net.N + 1)]
    return [None] + [(-(rho[k - 1].T @ rho[k]) / B, -rho[k].mean(0)) for k in range(1, net.N + 1)]


def _diff(a: Grads, b: Grads, scale: float) -> Grads:
    return [None] + [((wa - wb) * scale, (ba - bb) * scale) for (wa, ba), (wb, bb) in zip(a[1:], b[1:])]


def ep_gradient(net: LayeredEBM, h_free: State, h_nudged: State, beta: float) -> Grads:
    """One-sided EP estimate of ∂J/∂θ: (1/β)(∂E/∂θ(h^β) − ∂E/∂θ(h*)) (the cost does not depend on θ)."""
    beta = check_nonzero_beta(beta)
    return _diff(energy_param_gradient(net, h_nudged), energy_param_gradient(net, h_free), 1.0 / beta)


def ep_symmetric_gradient(net: LayeredEBM, h_plus: State, h_minus: State, beta: float) -> Grads:
    """Symmetric EP estimate (Laborieux et al. 2021): (1/2β)(∂E/∂θ(h^{+β}) − ∂E/∂θ(h^{−β}))."""
    beta = check_nonzero_beta(beta)
    return _diff(energy_param_gradient(net, h_plus), energy_param_gradient(net, h_minus), 0.5 / beta)


def implicit_param_gradient(
    net: LayeredEBM, h_star: State, target: Tensor, *, mask: Optional[str] = None, clip: Optional[bool] = None
) -> Grads:
    """Exact dJ/dθ through the fixed point (implicit differentiation, autograd; small nets).

    With u = −H⁻¹ ∂C/∂h (per sample), dJ/dθ = (1/B) Σ_b u_bᵀ ∂²E/∂h∂θ. ``mask="pinned"``: u solved on
    the units the clipped dynamics do not hold on a bound, 0 on the others (they do not move when θ
    changes a little): the true gradient of the clipped hard-sigmoid network
    (:func:`ebmlib.implicit_gradient`).
    """
    u = implicit_gradient(net, h_star, target, mask=mask, clip=clip)
    B = h_star[0].shape[0]
    tmp = net.clone()
    params = tmp.parameters()
    for p in params:
        p.requires_grad_(True)
    hs = [h_star[0]] + [t.detach().clone().requires_grad_(True) for t in h_star[1:]]
    E = tmp.energy(hs).sum()
    dEdh = torch.autograd.grad(E, hs[1:], create_graph=True)
    s = sum((g * uk.detach()).sum() for g, uk in zip(dEdh, u[1:])) / B
    grads = torch.autograd.grad(s, params)
    return [None] + [(grads[2 * (k - 1)].detach(), grads[2 * (k - 1) + 1].detach()) for k in range(1, net.N + 1)]


def _from_errors(net: LayeredEBM, h: State, e: list) -> Grads:
    """(ρ(h_{k−1})ᵀ e_k / B, mean e_k) per layer: the gradient of a layer whose error signal is ``e_k``."""
    B = h[0].shape[0]
    out: Grads = [None]
    for k in range(1, net.N + 1):
        r_prev = h[0] if k == 1 else net.activation.rho(h[k - 1])
        out.append((r_prev.T @ e[k] / B, e[k].mean(0)))
    return out


def chain_param_gradient(net: LayeredEBM, h_star: State, target: Tensor) -> Grads:
    """∂C/∂θ through the one-way maps at h*: ∂C/∂W_k = ρ(h_{k−1})ᵀ(ρ'(h_k) ⊙ g_k)/B, ∂C/∂b_k = mean ρ'(h_k) ⊙ g_k."""
    g = chain_gradient(net, h_star, target)
    return _from_errors(net, h_star, [None] + [net.activation.drho(h_star[k]) * g[k] for k in range(1, net.N + 1)])


def plasticity_gradient(
    net: LayeredEBM,
    nudged: Trajectory,
    beta: float,
    rule: str,
    *,
    free: Optional[Trajectory] = None,
    t0: int = 0,
    t1: Optional[int] = None,
) -> Grads:
    """A rate-based STDP-like rule integrated over steps t0 … t1 of a nudged trajectory.

    ``bengio``:    ΔW_k ∝ Σ_t ρ(h_{k−1}(t)) (h_k(t+1) − h_k(t))ᵀ, the state form ρ(pre)·u̇ (Equilibrium
                   Propagation's paraphrase; Bengio et al. 2017 state the rule with the firing rate)
    ``xie_seung``: ΔW_k ∝ Σ_t ρ(h_{k−1}(t)) (ρ(h_k(t+1)) − ρ(h_k(t)))ᵀ, the firing-rate form
                   ρ(pre)·dρ(post)/dt (Xie & Seung 2000); dρ(u)/dt = ρ'(u) u̇ is the difference
    ``tied``:      ΔW_k ∝ Σ_t d/dt[ρ(h_{k−1})ρ(h_k)ᵀ] = ρρᵀ(t1) − ρρᵀ(t0), the EP update.
    The result is scaled by −1/β (a gradient of J, like ``ep_gradient``) and, when ``free`` is
    given, the same rule on the free trajectory is subtracted.
    """
    if rule not in RULES:
        raise ValueError(f"rule: unknown plasticity rule {rule!r}; choose one of {RULES}")
    beta = check_nonzero_beta(beta)
    n_steps = nudged.steps
    t1 = n_steps if t1 is None else t1
    if not (0 <= t0 < t1 <= n_steps):
        raise ValueError(f"t0, t1: need 0 <= t0 < t1 <= {n_steps}, got {t0}, {t1}")

    def integrate(tr: Trajectory) -> Grads:
        B = tr.h[0].shape[1]
        rho = [tr.h[0]] + [net.activation.rho(tr.h[k]) for k in range(1, net.N + 1)]
        out: Grads = [None]
        for k in range(1, net.N + 1):
            pre = rho[k - 1]
            if rule == "tied":
                w = (pre[t1].T @ rho[k][t1] - pre[t0].T @ rho[k][t0]) / B
                b = (rho[k][t1] - rho[k][t0]).mean(0)
            else:
                post = tr.h[k] if rule == "bengio" else rho[k]
                dpost = post[t0 + 1 : t1 + 1] - post[t0:t1]
                w = torch.einsum("tbi,tbj->ij", pre[t0:t1], dpost) / B
                b = dpost.sum(0).mean(0)
            out.append((w, b))
        return out

    g = integrate(nudged)
    if free is not None:
        g = _diff(g, integrate(free), 1.0)
    return [None] + [(-w / beta, -b / beta) for w, b in g[1:]]


def ep_param_steps(net: LayeredEBM, nudged: Trajectory, beta: float, free: Optional[Trajectory] = None) -> list:
    """EP's update per step, (1/β)(∂E/∂θ(h^β_{t+1}) − ∂E/∂θ(h^β_t)), t = 0 … steps−1.

    When ``free`` (a free trajectory from the same start) is given, its own per-step change is
    subtracted. Returns per layer a pair ``(dW, db)`` of shapes ``(steps, n_{k−1}, n_k)`` and
    ``(steps, n_k)`` (index 0 None), batch-averaged; it tends to BPTT's per-step gradient
    (:func:`ebmlib.bptt_param_steps`) as β → 0.
    """
    if not isinstance(nudged, Trajectory):
        raise TypeError(f"nudged: expected a Trajectory, got {type(nudged).__name__}")
    beta = check_nonzero_beta(beta)
    if free is not None:
        if not isinstance(free, Trajectory):
            raise TypeError(f"free: expected a Trajectory, got {type(free).__name__}")
        if free.steps != nudged.steps:
            raise ValueError(f"free: {free.steps} steps, nudged has {nudged.steps}")

    def per_step(tr: Trajectory) -> list:
        grads = [energy_param_gradient(net, tr.at(t)) for t in range(tr.steps + 1)]
        out: list = [None]
        for k in range(1, net.N + 1):
            W = torch.stack([g[k][0] for g in grads])
            b = torch.stack([g[k][1] for g in grads])
            out.append((W[1:] - W[:-1], b[1:] - b[:-1]))
        return out

    ep = per_step(nudged)
    if free is not None:
        ep = _diff(ep, per_step(free), 1.0)
    return [None] + [(w / beta, b / beta) for w, b in ep[1:]]


def first_arrival_gradient(
    net: LayeredEBM, h_free: State, target: Tensor, *, eps: float, beta: float, drho: bool = True,
    clip: Optional[bool] = None, paired: bool = True,
) -> Grads:
    """∂J/∂θ from the first arrival of the nudge at each layer (PAPER.md §4 (b)).

    ``paired`` (a construction with two networks): ``ĝ_k = −δ_k(m+1) / (β ε^{m+1})``, m = N − k, with
    δ the nudged-minus-free difference from ``h_free`` (:func:`ebmlib.nudge_response`). Not
    ``paired`` (what one synapse sees): the raw temporal change of the one nudged trajectory,
    ``ĝ_k = −(h^β_k(m+1) − h^β_k(m)) / (β ε^{m+1})``; it equals the paired estimate minus the free
    drift ``h_k(m+1) − h_k(m)`` of an unconverged ``h_free``, divided by ``β ε^{m+1}``.
    ``∂J/∂W_k ≈ ρ(h_{k−1})ᵀ(ρ'(h_k) ⊙ ĝ_k)/B`` (without ``ρ'(h_k)`` when ``drho`` is False: the plain
    Bengio et al. rule), ``∂J/∂b_k ≈ mean(ρ'(h_k) ⊙ ĝ_k)``.
    """
    eps = check_eps(eps)
    beta = check_nonzero_beta(beta)
    check_bool("drho", drho)
    check_bool("paired", paired)
    N = net.N
    if paired:
        delta = nudge_response(net, h_free, steps=N + 1, eps=eps, beta=beta, target=target, clip=clip)
    else:
        h = run(net, h_free, steps=N + 1, eps=eps, beta=beta, target=target, clip=clip).h
        delta = [None] + [torch.cat([torch.zeros_like(h[k][:1]), h[k][1:] - h[k][:-1]]) for k in range(1, N + 1)]
    e: list = [None]
    for k in range(1, N + 1):
        g_hat = -delta[k][N - k + 1] / (beta * eps ** (N - k + 1))
        e.append(net.activation.drho(h_free[k]) * g_hat if drho else g_hat)
    return _from_errors(net, h_free, e)


def bp_gradient(net: LayeredEBM, x: Tensor, target: Tensor, state_drho: bool = True) -> tuple[Grads, Tensor]:
    """Back-propagation of the feedforward network ``r_k = ρ(r_{k−1} W_k + b_k)``: (grads of mean ½‖r_N − d‖², r_N).

    ``state_drho``: ρ' taken at the state ``h_k = ρ(pre_k)`` for activations that clip the state (the
    hard sigmoid: ``h_k = clip(pre_k, 0, 1)``, where the book's inclusive ρ' is 1, as the energy
    model sees it: a straight-through gradient); otherwise at ``pre_k`` (plain back-propagation,
    zero for saturated units).
    """
    act = net.activation
    B = x.shape[0]
    pre, r = mlp_layers(net, x)
    grads: Grads = [None] * (net.N + 1)
    delta = (r[-1] - target) / B
    for k in range(net.N, 0, -1):
        at = r[k] if (state_drho and act.clip_by_default) else pre[k]
        e = act.drho(at) * delta
        grads[k] = (r[k - 1].T @ e, e.sum(0))
        delta = e @ net.W[k].T
    return grads, r[-1]


# ====================================================================== the interface
@dataclass(frozen=True)
class Phases:
    """How an energy-based estimator runs its phases (β in this book's ½‖·‖² convention).

    ``free_steps`` Euler steps of the free phase from ``h0`` (persistent states) or zeros,
    ``nudged_steps`` of each nudged phase; ``random_sign``: the sign of β drawn per minibatch by
    the one-sided estimators, from the caller's generator; ``drho`` for the first-arrival rule; ``bp_state_drho`` for ``bp``.
    ``paired``: the temporal-derivative rules (first arrival, plasticity) read the nudged run minus a
    paired free run from the same state (a construction with two networks); False: the raw temporal
    change of the one nudged trajectory, what a synapse sees.
    """

    eps: float = 0.5
    free_steps: int = 20
    nudged_steps: int = 4
    beta: float = 1.0
    random_sign: bool = True
    drho: bool = True
    bp_state_drho: bool = True
    clip: Optional[bool] = None
    paired: bool = True

    def __post_init__(self) -> None:
        check_eps(self.eps)
        check_positive_int("free_steps", self.free_steps)
        check_positive_int("nudged_steps", self.nudged_steps)
        check_nonzero_beta(self.beta)
        for name in ("random_sign", "drho", "bp_state_drho", "paired"):
            check_bool(name, getattr(self, name))
        if self.clip is not None:
            check_bool("clip", self.clip)


@dataclass
class Estimate:
    """What an estimator returns: ``grads`` (∂J/∂θ per layer), ``output`` (the prediction made on the
    way: y at the free state, or r_N of the feedforward pass) and ``free`` (the free state reached,
    None for estimators without a free phase)."""

    grads: Grads
    output: Tensor
    free: Optional[State] = None


@dataclass(frozen=True)
class Estimator:
    """A weight-update method: ``estimate(net, x, target, h0, phases, generator) -> Estimate``.

    ``free_phase``: whether it relaxes the energy model (and so keeps persistent free states and
    predicts at the fixed point) or uses the feedforward network of the same weights.
    """

    name: str
    estimate: Callable[..., Estimate] = field(repr=False)
    free_phase: bool = True
    summary: str = ""

    def __call__(
        self,
        net: LayeredEBM,
        x: Tensor,
        target: Tensor,
        *,
        h0: Optional[State] = None,
        phases: Phases = Phases(),
        generator: Optional[torch.Generator] = None,
    ) -> Estimate:
        if not isinstance(net, LayeredEBM):
            raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
        if not isinstance(phases, Phases):
            raise TypeError(f"phases: expected ebmlib.Phases, got {type(phases).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected torch.Generator, got {type(generator).__name__}")
        x = net.check_input(x)
        target = net.check_target(target, x.shape[0])
        return self.estimate(net, x, target, h0, phases, generator)


ESTIMATORS: dict[str, Estimator] = {}


def register(name: str, *, free_phase: bool = True, summary: str = "") -> Callable:
    """Decorator: register ``fn(net, x, target, h0, phases, generator) -> Estimate`` as ``name``."""

    def deco(fn: Callable[..., Estimate]) -> Callable[..., Estimate]:
        if name in ESTIMATORS:
            raise ValueError(f"name: an estimator {name!r} is already registered")
        ESTIMATORS[name] = Estimator(name, fn, free_phase, summary or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def get_estimator(name: str) -> Estimator:
    """The estimator registered as ``name``."""
    if name not in ESTIMATORS:
        raise ValueError(f"method: unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name]


def _free(net: LayeredEBM, x: Tensor, h0: Optional[State], ph: Phases) -> State:
    """The free phase: ``free_steps`` steps from ``h0`` (or zeros), no convergence test."""
    return relax(net, x, h0, eps=ph.eps, tol=0.0, max_steps=ph.free_steps, check_every=ph.free_steps,
                 clip=ph.clip).h


def _nudged(net: LayeredEBM, x: Tensor, free: State, beta: float, target: Tensor, ph: Phases) -> State:
    """A nudged phase of ``nudged_steps`` steps from the free state."""
    return relax(net, x, free, eps=ph.eps, beta=beta, target=target, tol=0.0, max_steps=ph.nudged_steps,
                 check_every=ph.nudged_steps, clip=ph.clip).h


def _signed_beta(ph: Phases, gen: Optional[torch.Generator]) -> float:
    """β, with a random sign drawn from ``gen`` when ``random_sign`` (one draw per minibatch)."""
    if not ph.random_sign:
        return ph.beta
    if gen is None:
        raise ValueError("generator: an explicit torch.Generator is required to draw the sign of beta "
                         "(random_sign=True; seeds are parameters)")
    return ph.beta if bool(torch.randint(0, 2, (1,), generator=gen)) else -ph.beta


@register("bp", free_phase=False)
def _bp(net, x, target, h0, ph, gen) -> Estimate:
    """Back-propagation of the feedforward network of the same weights (``bp_state_drho``: straight-through)."""
    grads, y = bp_gradient(net, x, target, ph.bp_state_drho)
    return Estimate(grads, y)


@register("ep")
def _ep(net, x, target, h0, ph, gen) -> Estimate:
    """One-sided EP (Scellier & Bengio 2017): free phase, one nudged phase with ±β."""
    beta = _signed_beta(ph, gen)
    free = _free(net, x, h0, ph)
    nudged = _nudged(net, x, free, beta, target, ph)
    return Estimate(ep_gradient(net, free, nudged, beta), free[net.N], free)


@register("ep_symmetric")
def _ep_symmetric(net, x, target, h0, ph, gen) -> Estimate:
    """Symmetric EP (Laborieux et al. 2021): nudged phases with +β and −β from the same free state."""
    free = _free(net, x, h0, ph)
    plus = _nudged(net, x, free, ph.beta, target, ph)
    minus = _nudged(net, x, free, -ph.beta, target, ph)
    return Estimate(ep_symmetric_gradient(net, plus, minus, ph.beta), free[net.N], free)


@register("first_arrival")
def _first_arrival(net, x, target, h0, ph, gen) -> Estimate:
    """First-arrival rule, read at step m + 1: nudged minus paired free run (``paired``) or the raw temporal change."""
    beta = _signed_beta(ph, gen)
    free = _free(net, x, h0, ph)
    grads = first_arrival_gradient(net, free, target, eps=ph.eps, beta=beta, drho=ph.drho, clip=ph.clip,
                                   paired=ph.paired)
    return Estimate(grads, free[net.N], free)


def _plasticity(rule: str) -> Callable[..., Estimate]:
    def estimate(net, x, target, h0, ph, gen) -> Estimate:
        beta = _signed_beta(ph, gen)
        free = _free(net, x, h0, ph)
        kw = dict(steps=ph.nudged_steps, eps=ph.eps, clip=ph.clip)
        nudged = run(net, free, beta=beta, target=target, **kw)
        still = run(net, free, **kw) if ph.paired else None
        return Estimate(plasticity_gradient(net, nudged, beta, rule, free=still), free[net.N], free)

    estimate.__doc__ = (f"The {rule} plasticity rule over the nudged phase, minus the same rule on a paired free run "
                        "(``paired``; otherwise the one nudged trajectory alone).")
    return estimate


for _rule in RULES:
    register(f"plasticity_{_rule}")(_plasticity(_rule))
