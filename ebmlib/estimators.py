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
- :func:`first_arrival_gradient`: chain back-propagation by finite differences of two runs (the "first-arrival
  rule"), ĝ_k = −δ_k(m+1)/(β ε^{m+1}) with δ the nudged run minus a parallel free run; or from one trajectory.
- :func:`continual_ep_steps`: Continual EP (Ernoult et al. 2020), one trajectory, the parameters updated at
  every step of the nudged phase from the change since the previous step.
- :func:`bptt_param_gradient`: back-propagation through time through K steps of the free phase (tied θ).
- :func:`bp_gradient`: back-propagation of the feedforward network of the same weights.

**The interface the trainer uses**: an :class:`Estimator`, registered by name in
:data:`ESTIMATORS`, called as ``estimator(net, x, target, h0=..., phases=..., generator=...)`` and
returning an :class:`Estimate` (the gradients, the prediction made on the way, the free state
reached). An estimator with ``updates_params`` (``continual_ep``) changes the parameters itself during its
phases and is called with the learning rates, ``lrs=``; :func:`ebmlib.train_step` passes them and applies
no update of its own. The trainer looks the estimator up by name and never branches on its name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from .checks import (
    DivergenceError,
    check_bool,
    check_eps,
    check_nonzero_beta,
    check_positive_int,
    check_real,
    resolve_clip,
)
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
    "continual_ep_steps",
    "bptt_param_gradient",
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
    """The "first-arrival rule": chain back-propagation computed by finite differences of two runs (PAPER.md §4 (b)).

    The nudged run minus a parallel free run from ``h_free``, read at layer k's first-arrival step m + 1
    (m = N − k) and rescaled by ``ε^-(m+1)/β``, is to first order in β the back-propagated error ``−g_k``
    of the chain of one-way maps (:func:`ebmlib.chain_gradient`); the estimate is therefore chain
    back-propagation evaluated by a finite difference, not learning from the temporal derivative of one
    trajectory. ``paired`` (a construction with two networks): ``ĝ_k = −δ_k(m+1) / (β ε^{m+1})``, m = N − k, with
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


def _check_lrs(net: LayeredEBM, lrs: object) -> tuple[float, ...]:
    """One finite learning rate ``>= 0`` per layer k = 1 … N."""
    if not isinstance(lrs, (list, tuple)) or len(lrs) != net.N:
        raise ValueError(f"lrs: expected a list or tuple of one learning rate per layer, {net.N} in all, got {lrs!r}")
    out = tuple(check_real(f"lrs[{i}]", v) for i, v in enumerate(lrs))
    if any(v < 0 for v in out):
        raise ValueError(f"lrs: learning rates must be >= 0, got {out}")
    return out


def _continual_ep(
    net: LayeredEBM, h: State, target: Tensor, beta: float, eps: float, steps: int, lrs: tuple, clip: bool,
    keep_steps: bool = True,
) -> tuple[list, list, State]:
    """The loop of :func:`continual_ep_steps` for checked arguments: per layer the ĝ_t stacked over t,
    ``(steps, n_{k−1}, n_k)`` and ``(steps, n_k)`` (index 0 None), and h_K.

    Without ``keep_steps`` (the trainer, which needs only the sum), ``W_1`` is updated once, at the end, by
    the sum of its steps, ``−lr_1 Σ_t ĝ_{t,W_1} = lr_1 xᵀ(ρ(h_1(K)) − ρ(h_1(0)))/(Bβ)`` (the sum telescopes:
    ρ(h_0) = x is fixed), and the first entry of the returned ``W_1`` stack holds that sum. The dynamics see
    ``W_1`` only through the drive ``b_1 + W_1ᵀx``, which is updated at every step either way, so the
    trajectory and the final parameters are the same up to round-off, with one ``n_0 × n_1`` product instead
    of ``steps``.
    """
    x, N, B, act = h[0], net.N, h[0].shape[0], net.activation
    bounds = (act.lo, act.hi) if clip else None
    down = net.top_down()          # [None, None, W_2, …]: the same tensors, updated in place below
    scale = -1.0 / (B * beta)
    with torch.no_grad():
        gW = [None] + [torch.empty((steps if keep_steps or k > 1 else 1, *net.W[k].shape), dtype=net.dtype,
                                   device=net.device) for k in range(1, N + 1)]
        gb = [None] + [torch.empty((steps, net.sizes[k]), dtype=net.dtype, device=net.device)
                       for k in range(1, N + 1)]
        rho = [x] + [act.rho(h[k]) for k in range(1, N + 1)]
        rho1_start = rho[1]
        drive = net.input_drive(x)
        gram = x @ x.T if lrs[0] != 0.0 else None
        for t in range(steps):
            f = net._force(h, beta, target, drive, down)
            h_new = [x]
            for k in range(1, N + 1):
                hk = h[k] + eps * f[k]
                h_new.append(hk.clamp(*bounds) if bounds is not None else hk)
            rho_new = [x] + [act.rho(h_new[k]) for k in range(1, N + 1)]
            d_rho1 = rho_new[1] - rho[1]
            for k in range(1, N + 1):
                # ĝ = (1/β)(∂E/∂θ(h_{t+1}) − ∂E/∂θ(h_t)), ∂E/∂W_k = −ρ(h_{k−1})ᵀρ(h_k)/B, ∂E/∂b_k = −mean ρ(h_k)
                torch.mean(d_rho1 if k == 1 else rho_new[k] - rho[k], 0, out=gb[k][t])
                gb[k][t].mul_(-1.0 / beta)
                if lrs[k - 1] != 0.0:
                    net.b[k].sub_(gb[k][t], alpha=lrs[k - 1])
                if k == 1 and not keep_steps:
                    continue                                     # W_1: once, after the loop
                if k == 1:
                    torch.mm(x.T, d_rho1, out=gW[1][t])          # ρ(h_0) = x does not move
                else:
                    torch.mm(rho_new[k - 1].T, rho_new[k], out=gW[k][t])
                    gW[k][t].addmm_(rho[k - 1].T, rho[k], alpha=-1.0)
                gW[k][t].mul_(scale)
                if lrs[k - 1] != 0.0:
                    net.W[k].sub_(gW[k][t], alpha=lrs[k - 1])
            if gram is not None:   # drive ← b_1 + x W_1 at the new θ: −lr_1 (ĝ_{b_1} + x ĝ_{W_1})
                drive.sub_(torch.mm(gram, d_rho1).mul_(scale).add_(gb[1][t]), alpha=lrs[0])
            h, rho = h_new, rho_new
        if not keep_steps:
            torch.mm(x.T, rho[1] - rho1_start, out=gW[1][0]).mul_(scale)
            if lrs[0] != 0.0:
                net.W[1].sub_(gW[1][0], alpha=lrs[0])
    for k in range(1, N + 1):
        if not bool(torch.isfinite(h[k]).all()):
            raise DivergenceError(steps, k, "non-finite state in the continual EP nudged phase; lower lrs or beta")
    return gW, gb, h


def continual_ep_steps(
    net: LayeredEBM,
    x: Tensor,
    h_free: State,
    target: Tensor,
    *,
    beta: float,
    eps: float,
    steps: int,
    lrs: tuple,
    clip: Optional[bool] = None,
) -> tuple[list, State]:
    """Continual Equilibrium Propagation (Ernoult et al. 2020): the nudged phase of one trajectory, with the
    parameters of ``net`` updated **in place** at every step.

    From ``h_0 = h_free`` (its layers 1 … N; layer 0 is ``x``), for t = 0 … steps−1: one nudged Euler step of
    F = E + βC with the current θ_t, ``h_{t+1} = clip(h_t − ε ∂F/∂h(h_t; θ_t))``; the estimate from the change
    since the previous step, ``ĝ_t = (1/β)(∂E/∂θ(h_{t+1}) − ∂E/∂θ(h_t))`` (batch-averaged, the convention of
    :func:`ep_gradient`; for W_1, ``−xᵀ(ρ(h_1(t+1)) − ρ(h_1(t)))/(Bβ)``); then at once
    ``θ_{t+1,k} = θ_{t,k} − lr_k ĝ_{t,k}``. No free state is kept for a final comparison, no autograd.
    ∂E/∂θ does not depend on θ, so with ``lrs`` all 0 the ĝ_t sum to ``ep_gradient(net, h_0, h_K, beta)``.
    Returns the list of the ĝ_t (each a :data:`Grads`; views of one buffer per layer) and h_K.

    The input drive ``b_1 + W_1ᵀx`` is kept current by the exact update ``−lr_1 (ĝ_{b_1} + x ĝ_{W_1})``, with
    ``x ĝ_{W_1} = −(x xᵀ)(ρ(h_1(t+1)) − ρ(h_1(t))) / (Bβ)`` from the Gram matrix ``x xᵀ``: equal to recomputing
    it up to round-off, with ``B × B`` products instead of ``B × n_0``.
    """
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    beta = check_nonzero_beta(beta)
    eps = check_eps(eps)
    check_positive_int("steps", steps)
    lrs = _check_lrs(net, lrs)
    x = net.check_input(x)
    if not isinstance(h_free, (list, tuple)) or len(h_free) != net.N + 1:
        raise ValueError(f"h_free: expected a list [x, h_1, ..., h_N] of length {net.N + 1}")
    h = net.check_state([x] + list(h_free[1:]), "h_free")
    target = net.check_target(target, x.shape[0])
    clip = resolve_clip(clip, net.activation.clip_by_default)
    gW, gb, h_K = _continual_ep(net, h, target, beta, eps, steps, lrs, clip)
    per_step = [[None] + [(gW[k][t], gb[k][t]) for k in range(1, net.N + 1)] for t in range(steps)]
    return per_step, h_K


class _StraightThroughClip(torch.autograd.Function):
    """``clamp(v, lo, hi)`` forward, the identity backward (the straight-through gradient of the clip)."""

    @staticmethod
    def forward(ctx, v: Tensor, lo: float, hi: float) -> Tensor:  # noqa: D102
        return v.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:  # noqa: D102
        return grad, None, None


def bptt_param_gradient(
    net: LayeredEBM,
    h_start: State,
    target: Tensor,
    *,
    steps: int,
    eps: float,
    clip: Optional[bool] = None,
    straight_through: bool = False,
) -> tuple[Grads, State]:
    """Back-propagation through time: ∂J/∂θ with J = mean over the batch of C(h_K) = ½‖y_K − d‖², through
    K = ``steps`` free Euler steps ``h_{s+1} = clip(h_s − ε ∂E/∂h(h_s))`` from ``h_start``, θ tied across steps.

    Autograd through the K steps (a baseline, not a model of a synapse): the graph holds K states; the input
    drive ``b_1 + W_1ᵀx`` is formed once, so the first layer's gradient costs one product ``xᵀ(Σ_s ∂J/∂drive_s)``.
    With ``straight_through`` False it is the sum over s of :func:`ebmlib.bptt_param_steps` (one copy θ_s
    per step), the gradient of the clipped dynamics: a unit the clip holds on a bound passes no gradient.
    ``straight_through`` takes the clip's derivative as 1 (values unchanged), as ``bp_gradient(state_drho=True)``
    does for the feedforward network. Returns the gradients (index 0 None) and h_K (detached).
    """
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
    h_start = net.check_state(h_start, "h_start")
    check_positive_int("steps", steps)
    eps = check_eps(eps)
    target = net.check_target(target, h_start[0].shape[0])
    check_bool("straight_through", straight_through)
    clip = resolve_clip(clip, net.activation.clip_by_default)
    lo, hi = net.activation.lo, net.activation.hi

    def clipped(v: Tensor) -> Tensor:
        if not clip:
            return v
        return _StraightThroughClip.apply(v, lo, hi) if straight_through else v.clamp(lo, hi)

    leaf = copy.copy(net)   # shares sizes and activation; its W, b are leaves on the same storage
    leaf.W = [None] + [w.detach().requires_grad_(True) for w in net.W[1:]]
    leaf.b = [None] + [b.detach().requires_grad_(True) for b in net.b[1:]]
    x = h_start[0].detach()
    with torch.enable_grad():
        drive = leaf.input_drive(x)
        down = leaf.top_down()
        h = [x] + [t.detach() for t in h_start[1:]]
        for _ in range(steps):
            f = leaf._force(h, 0.0, None, drive, down)
            h = [x] + [clipped(h[k] + eps * f[k]) for k in range(1, net.N + 1)]
        J = net.cost(h, target).mean()
        grads = torch.autograd.grad(J, leaf.parameters())
    out: Grads = [None] + [(grads[2 * (k - 1)], grads[2 * (k - 1) + 1]) for k in range(1, net.N + 1)]
    return out, [x] + [t.detach() for t in h[1:]]


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
    the one-sided estimators, from the caller's generator; ``drho`` for the first-arrival rule;
    ``bp_state_drho`` for ``bp`` and ``bptt``: the straight-through gradient at the clip of the hard sigmoid
    (True) or the true one, zero through a unit held on a bound (False). ``bptt`` differentiates the last
    ``nudged_steps`` of its free phase of ``free_steps`` steps (it has no nudged phase).
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
    ``updates_params``: whether it changes the parameters itself during its phases (``continual_ep``);
    its function then takes the learning rates as a seventh argument, its ``Estimate.grads`` is the sum
    Σ_t ĝ_t of its per-step estimates (layer k moved by −lr_k times it; for logging), and the caller must
    not apply it again.
    """

    name: str
    estimate: Callable[..., Estimate] = field(repr=False)
    free_phase: bool = True
    summary: str = ""
    updates_params: bool = False

    def __call__(
        self,
        net: LayeredEBM,
        x: Tensor,
        target: Tensor,
        *,
        h0: Optional[State] = None,
        phases: Phases = Phases(),
        generator: Optional[torch.Generator] = None,
        lrs: Optional[tuple] = None,
    ) -> Estimate:
        if not isinstance(net, LayeredEBM):
            raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
        if not isinstance(phases, Phases):
            raise TypeError(f"phases: expected ebmlib.Phases, got {type(phases).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected torch.Generator, got {type(generator).__name__}")
        x = net.check_input(x)
        target = net.check_target(target, x.shape[0])
        if self.updates_params:
            if lrs is None:
                raise ValueError(f"lrs: required by {self.name!r}, which updates the parameters during its phases")
            return self.estimate(net, x, target, h0, phases, generator, _check_lrs(net, lrs))
        if lrs is not None:
            raise ValueError(f"lrs: {self.name!r} returns a gradient and does not update the parameters; "
                             "apply it with ebmlib.apply_update")
        return self.estimate(net, x, target, h0, phases, generator)


ESTIMATORS: dict[str, Estimator] = {}


def register(name: str, *, free_phase: bool = True, updates_params: bool = False, summary: str = "") -> Callable:
    """Decorator: register ``fn(net, x, target, h0, phases, generator) -> Estimate`` as ``name``
    (``fn(…, generator, lrs)`` when ``updates_params``)."""
    check_bool("free_phase", free_phase)
    check_bool("updates_params", updates_params)

    def deco(fn: Callable[..., Estimate]) -> Callable[..., Estimate]:
        if name in ESTIMATORS:
            raise ValueError(f"name: an estimator {name!r} is already registered")
        ESTIMATORS[name] = Estimator(name, fn, free_phase, summary or (fn.__doc__ or "").strip().split("\n")[0],
                                     updates_params)
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
    """Chain back-propagation by finite differences of two runs: nudged minus parallel free run at step m + 1, × ε^-(m+1)/β."""
    beta = _signed_beta(ph, gen)
    free = _free(net, x, h0, ph)
    grads = first_arrival_gradient(net, free, target, eps=ph.eps, beta=beta, drho=ph.drho, clip=ph.clip,
                                   paired=ph.paired)
    return Estimate(grads, free[net.N], free)


@register("continual_ep", updates_params=True)
def _continual_ep_estimate(net, x, target, h0, ph, gen, lrs) -> Estimate:
    """Continual EP (Ernoult et al. 2020): one trajectory, θ updated at every nudged step from the change since the last."""
    beta = _signed_beta(ph, gen)
    free = _free(net, x, h0, ph)
    gW, gb, _ = _continual_ep(net, free, target, beta, ph.eps, ph.nudged_steps, lrs,
                              resolve_clip(ph.clip, net.activation.clip_by_default), keep_steps=False)
    return Estimate([None] + [(gW[k].sum(0), gb[k].sum(0)) for k in range(1, net.N + 1)], free[net.N], free)


@register("bptt")
def _bptt(net, x, target, h0, ph, gen) -> Estimate:
    """BPTT (Ernoult et al. 2019): ∂C(h_T)/∂θ through the last nudged_steps of a free phase of free_steps steps
    (``bp_state_drho``: straight-through at the clip)."""
    if ph.free_steps <= ph.nudged_steps:
        raise ValueError(f"free_steps: BPTT runs free_steps - nudged_steps steps without gradient, then differentiates "
                         f"nudged_steps; need free_steps > nudged_steps, got {ph.free_steps} <= {ph.nudged_steps}")
    n0 = ph.free_steps - ph.nudged_steps
    start = relax(net, x, h0, eps=ph.eps, tol=0.0, max_steps=n0, check_every=n0, clip=ph.clip).h
    grads, h_T = bptt_param_gradient(net, start, target, steps=ph.nudged_steps, eps=ph.eps, clip=ph.clip,
                                     straight_through=ph.bp_state_drho)
    return Estimate(grads, h_T[net.N], h_T)


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
