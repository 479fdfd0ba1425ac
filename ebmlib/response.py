"""Linear response along the whole nudged trajectory (PAPER.md §5, successors).

Scellier & Bengio (2019), Ernoult et al. (2019): from the free fixed point h*,

    lim_{β→0} (h^β_{t+1} − h^β_t)/β = −ε S̄_t,   S̄_0 = ∂C/∂h(h*),  S̄_{t+1} = (I − εH) S̄_t,

and S̄_t = ∂C(h_K)/∂h_{K−t} through an unrolled, converged free phase (BPTT). For
the parameters θ, EP's update per step

    Δθ^EP_t = (1/β)(∂E/∂θ(h^β_{t+1}) − ∂E/∂θ(h^β_t))

tends to BPTT's per-step gradient ∂C(h_K)/∂θ_{K−1−t}, where θ_s is the copy of θ
used by free step s (the "gradient-descending updates" property). Signs: both are
gradients of J = mean C, as in :mod:`ebmlib.estimators`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .checks import check_eps, check_positive_int, check_real
from .dynamics import Trajectory, run
from .estimators import energy_param_gradient
from .network import LayeredEBM, State

__all__ = ["state_response", "ep_param_steps", "bptt_param_steps"]


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
    """(δ_{t+1} − δ_t)/β for t = 0 … steps−1, δ = h^β − h^0 (nudged minus free run from ``h_star``).

    Taking the difference with the free run cancels the motion left by an
    imperfectly converged free phase. Returns per layer ``(steps, B, n_k)``
    (index 0 None), to compare with −ε S̄_t of :func:`ebmlib.adjoint`.
    """
    net.check_state(h_star, "h_star")
    check_positive_int("steps", steps)
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero to nudge the output")
    target = net.check_target(target, h_star[0].shape[0])
    nudged = run(net, h_star, steps=steps, eps=eps, beta=beta, target=target, clip=clip)
    free = run(net, h_star, steps=steps, eps=eps, clip=clip)
    out: list = [None]
    for k in range(1, net.N + 1):
        delta = nudged.h[k] - free.h[k]
        out.append((delta[1:] - delta[:-1]) / beta)
    return out


def ep_param_steps(net: LayeredEBM, nudged: Trajectory, beta: float, free: Optional[Trajectory] = None) -> list:
    """EP's update per step, (1/β)(∂E/∂θ(h^β_{t+1}) − ∂E/∂θ(h^β_t)), t = 0 … steps−1.

    When ``free`` (a free trajectory from the same start) is given, its own per-step
    change is subtracted. Returns per layer a pair ``(dW, db)`` of shapes
    ``(steps, n_{k−1}, n_k)`` and ``(steps, n_k)`` (index 0 None), batch-averaged.
    """
    if not isinstance(nudged, Trajectory):
        raise TypeError(f"nudged: expected a Trajectory, got {type(nudged).__name__}")
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero")
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
        fr = per_step(free)
        ep = [None] + [(w - wf, b - bf) for (w, b), (wf, bf) in zip(ep[1:], fr[1:])]
    return [None] + [(w / beta, b / beta) for w, b in ep[1:]]


def bptt_param_steps(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    steps: int,
    eps: float,
    clip: Optional[bool] = None,
) -> list:
    """BPTT's per-step parameter gradient ∂C(h_K)/∂θ_{K−1−t}, t = 0 … steps−1 (K = ``steps``).

    The free phase from ``h_star`` is unrolled for K steps with autograd, step s
    using its own copy θ_s of the weights and biases; C is averaged over the
    batch. Returns per layer ``(dW, db)`` of shapes ``(steps, n_{k−1}, n_k)`` and
    ``(steps, n_k)`` (index 0 None). Their sum over t is ∂C(h_K)/∂θ.
    """
    net.check_state(h_star, "h_star")
    check_positive_int("steps", steps)
    eps = check_eps(eps)
    target = net.check_target(target, h_star[0].shape[0])
    if clip is None:
        clip = net.activation.clip_by_default
    copies = [net.clone() for _ in range(steps)]
    leaves = []
    for c in copies:
        for p in c.parameters():
            p.requires_grad_(True)
            leaves.append(p)
    h = [h_star[0]] + [t.detach() for t in h_star[1:]]
    for s in range(steps):
        f = copies[s].force(h)
        new = [h[0]]
        for k in range(1, net.N + 1):
            hk = h[k] + eps * f[k]
            if clip:
                hk = hk.clamp(net.activation.lo, net.activation.hi)
            new.append(hk)
        h = new
    C = net.cost(h, target).mean()
    grads = torch.autograd.grad(C, leaves, allow_unused=True)
    per = 2 * net.N
    out: list = [None]
    for k in range(1, net.N + 1):
        Ws, bs = [], []
        for t in range(steps):
            s = steps - 1 - t
            gW, gb = grads[s * per + 2 * (k - 1)], grads[s * per + 2 * (k - 1) + 1]
            Ws.append(torch.zeros_like(net.W[k]) if gW is None else gW)
            bs.append(torch.zeros_like(net.b[k]) if gb is None else gb)
        out.append((torch.stack(Ws), torch.stack(bs)))
    return out
