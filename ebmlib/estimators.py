"""Gradient estimators for the parameters θ = (W_k, b_k) (PAPER.md §5).

Every function returns *gradients* of the objective J = mean over the batch of
C(h*) — a list indexed by layer, ``grads[k] = (∂J/∂W_k, ∂J/∂b_k)`` (index 0 is
None) — so that learning is always ``θ ← θ − lr · grad``.

- ``ep_gradient``: Equilibrium Propagation, one-sided,
  ∂J/∂θ ≈ (1/β)(∂F/∂θ(h^β) − ∂F/∂θ(h*)), with ∂E/∂W_k = −ρ(h_{k−1})ρ(h_k)ᵀ,
  ∂E/∂b_k = −ρ(h_k). Bias O(β).
- ``ep_symmetric_gradient``: (1/2β)(∂F/∂θ(h^{+β}) − ∂F/∂θ(h^{−β})). Bias O(β²).
- ``implicit_param_gradient``: the exact gradient of J through the fixed point,
  dJ/dθ = uᵀ ∂²E/∂h∂θ with u = −H⁻¹ ∂C/∂h (autograd reference).
- ``chain_param_gradient``: the gradient through the chain of one-way maps,
  ∂C/∂W_k = ρ(h_{k−1}) (ρ'(h_k) ⊙ g_k)ᵀ (what first arrival approximates).
- ``plasticity_gradient``: rate-based STDP-like rules integrated over a recorded
  nudged trajectory (Bengio et al.; Xie & Seung; tied), each the difference with
  a free trajectory from the same start.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .checks import check_real
from .dynamics import Trajectory
from .gradients import chain_gradient, implicit_gradient
from .network import LayeredEBM, State

__all__ = [
    "Grads",
    "energy_param_gradient",
    "ep_gradient",
    "ep_symmetric_gradient",
    "implicit_param_gradient",
    "chain_param_gradient",
    "plasticity_gradient",
    "RULES",
    "grads_cosine",
    "grads_flat",
]

Grads = list  # [None, (dW_1, db_1), …, (dW_N, db_N)]
RULES = ("bengio", "xie_seung", "tied")


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
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero")
    return _diff(energy_param_gradient(net, h_nudged), energy_param_gradient(net, h_free), 1.0 / beta)


def ep_symmetric_gradient(net: LayeredEBM, h_plus: State, h_minus: State, beta: float) -> Grads:
    """Symmetric EP estimate (Laborieux et al. 2021): (1/2β)(∂E/∂θ(h^{+β}) − ∂E/∂θ(h^{−β}))."""
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero")
    return _diff(energy_param_gradient(net, h_plus), energy_param_gradient(net, h_minus), 0.5 / beta)


def implicit_param_gradient(net: LayeredEBM, h_star: State, target: Tensor) -> Grads:
    """Exact dJ/dθ through the fixed point (implicit differentiation, autograd; small nets).

    With u = −H⁻¹ ∂C/∂h (per sample), dJ/dθ = (1/B) Σ_b u_bᵀ ∂²E/∂h∂θ.
    """
    u = implicit_gradient(net, h_star, target)
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


def chain_param_gradient(net: LayeredEBM, h_star: State, target: Tensor) -> Grads:
    """∂C/∂θ through the one-way maps at h*: ∂C/∂W_k = ρ(h_{k−1})ᵀ(ρ'(h_k) ⊙ g_k)/B, ∂C/∂b_k = mean ρ'(h_k) ⊙ g_k."""
    g = chain_gradient(net, h_star, target)
    B = h_star[0].shape[0]
    out: Grads = [None]
    for k in range(1, net.N + 1):
        r_prev = h_star[0] if k == 1 else net.activation.rho(h_star[k - 1])
        e = net.activation.drho(h_star[k]) * g[k]
        out.append((r_prev.T @ e / B, e.mean(0)))
    return out


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

    ``bengio``:    ΔW_k ∝ Σ_t ρ(h_{k−1}(t)) (h_k(t+1) − h_k(t))ᵀ
    ``xie_seung``: ΔW_k ∝ Σ_t ρ(h_{k−1}(t)) (ρ(h_k(t+1)) − ρ(h_k(t)))ᵀ
    ``tied``:      ΔW_k ∝ Σ_t d/dt[ρ(h_{k−1})ρ(h_k)ᵀ] = ρρᵀ(t1) − ρρᵀ(t0), the EP update.
    The result is scaled by −1/β (a gradient of J, like ``ep_gradient``) and,
    when ``free`` is given, the same rule on the free trajectory is subtracted.
    """
    if rule not in RULES:
        raise ValueError(f"rule: unknown plasticity rule {rule!r}; choose one of {RULES}")
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero")
    T = nudged.steps
    t1 = T if t1 is None else t1
    if not (0 <= t0 < t1 <= T):
        raise ValueError(f"t0, t1: need 0 <= t0 < t1 <= {T}, got {t0}, {t1}")

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


def grads_flat(g: Grads, layer: Optional[int] = None, weights_only: bool = True) -> Tensor:
    """Flatten a gradient list (all layers, or one ``layer``) into one vector."""
    layers = range(1, len(g)) if layer is None else [layer]
    parts = []
    for k in layers:
        parts.append(g[k][0].flatten())
        if not weights_only:
            parts.append(g[k][1].flatten())
    return torch.cat(parts)


def grads_cosine(a: Grads, b: Grads, layer: Optional[int] = None) -> float:
    """Cosine between two weight gradients (one layer or all)."""
    from .measures import cosine

    return cosine(grads_flat(a, layer), grads_flat(b, layer))
