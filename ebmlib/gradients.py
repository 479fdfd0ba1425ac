"""The gradients the dynamics are compared with (PAPER.md §4–5), each written once.

- :func:`chain_gradient`: back-propagation through the one-way maps at the fixed point
  (closed form; optional mask of pinned units and top-down ``feedback``);
- :func:`implicit_gradient`: the fixed point's response −H⁻¹∂C/∂h (recurrent back-propagation);
- :func:`adjoint` and :func:`bptt`: the whole-trajectory gradients, and :func:`bptt_param_steps`
  for the parameters;
- the autograd references they are checked against: :func:`autograd_force`, :func:`hvp`,
  :func:`hessian`.

They build autograd graphs (or solve linear systems) and are never called inside the relaxation
loop.

Per-layer lists follow the state convention: index ``k`` is layer ``h_k``;
index 0 (the clamped input) is ``None`` for quantities undefined there.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .checks import check_eps, check_positive_int, check_real, resolve_clip
from .dynamics import pinned_units, step
from .network import Feedback, LayeredEBM, State

__all__ = [
    "autograd_force",
    "chain_gradient",
    "cost_gradient",
    "hvp",
    "hessian",
    "implicit_gradient",
    "force_jacobian",
    "adjoint",
    "bptt",
    "bptt_param_steps",
    "flatten",
    "unflatten",
]


def _leaf_state(h: State) -> State:
    return [h[0].detach()] + [t.detach().clone().requires_grad_(True) for t in h[1:]]


def flatten(v: list) -> Tensor:
    """Concatenate layers 1…N of a per-layer list into ``(B, Σ n_k)``."""
    return torch.cat([t for t in v[1:]], dim=-1)


def unflatten(net: LayeredEBM, z: Tensor, first=None) -> list:
    """Inverse of :func:`flatten`; ``first`` goes at index 0."""
    return [first] + list(torch.split(z, list(net.sizes[1:]), dim=-1))


def autograd_force(net: LayeredEBM, h: State, beta: float = 0.0, target: Optional[Tensor] = None) -> State:
    """−∂F/∂h by autograd (``f[0]`` is zero: the input is clamped)."""
    net.check_state(h)
    beta = check_real("beta", beta)
    hs = _leaf_state(h)
    F = net.total_energy(hs, beta, target).sum()
    grads = torch.autograd.grad(F, hs[1:])
    return [torch.zeros_like(h[0])] + [-g for g in grads]


def cost_gradient(net: LayeredEBM, h: State, target: Tensor) -> list:
    """∂C/∂h: zero on hidden layers, ``y − d`` on the output (index 0 is None)."""
    net.check_state(h)
    target = net.check_target(target, h[0].shape[0])
    g: list = [None] + [torch.zeros_like(t) for t in h[1:]]
    g[net.N] = h[net.N] - target
    return g


def chain_gradient(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    mask: Optional[str] = None,
    feedback: Optional[Feedback] = None,
    clip: Optional[bool] = None,
) -> list:
    """Back-propagation through the one-way maps at the fixed point (PAPER.md §4).

    g_N = y* − d,  g_k = J_k g_{k+1},  J_k = D_k W_{k+1} D_{k+1} = ∂R_k/∂h_{k+1},  D_k = diag ρ'(h*_k);
    batch-first ``g_k = ρ'(h_k) ⊙ ((ρ'(h_{k+1}) ⊙ g_{k+1}) W_{k+1}ᵀ)``. Options:

    - ``feedback``: the error carried down by top-down weights ``B`` instead of ``W``
      (``J_k = D_k B_{k+1} D_{k+1}``), what the first arrival carries in a vector field;
    - ``mask="pinned"``: ``g_k`` set to 0 on :func:`ebmlib.pinned_units` (ρ' taken as 0 where the
      clipped step holds a unit on its bound), the chain gradient of the clipped dynamics.

    Checked against autograd's vector–Jacobian products of the force in the tests.
    """
    net.check_state(h_star, "h_star")
    target = net.check_target(target, h_star[0].shape[0])
    if mask not in (None, "pinned"):
        raise ValueError(f"mask: expected None or 'pinned', got {mask!r}")
    down = net.top_down(feedback)
    keep = None
    if mask == "pinned":
        clip = resolve_clip(clip, net.activation.clip_by_default)
        keep = [None] + [~p for p in pinned_units(net, h_star, clip, feedback)[1:]]
    N = net.N
    drho = [None] + [net.activation.drho(h_star[k]) for k in range(1, N + 1)]
    g: list = [None] * (N + 1)
    for k in range(N, 0, -1):
        gk = h_star[N] - target if k == N else drho[k] * ((drho[k + 1] * g[k + 1]) @ down[k + 1].T)
        g[k] = (gk * keep[k] if keep is not None else gk).detach()
    return g


def hvp(net: LayeredEBM, h: State, v: list, beta: float = 0.0, target: Optional[Tensor] = None) -> list:
    """Hessian-vector product ``H v`` with ``H = ∂²F/∂h²`` at ``h`` (per sample)."""
    hs = _leaf_state(h)
    F = net.total_energy(hs, beta, target).sum()
    grads = torch.autograd.grad(F, hs[1:], create_graph=True)
    dot = sum((gk * vk).sum() for gk, vk in zip(grads, v[1:]))
    Hv = torch.autograd.grad(dot, hs[1:])
    return [None] + list(Hv)


def hessian(net: LayeredEBM, h: State, beta: float = 0.0, target: Optional[Tensor] = None) -> Tensor:
    """Dense Hessian ``∂²F/∂h²`` per sample, shape ``(B, n, n)`` with ``n = Σ_{k≥1} n_k``.

    Built column by column from Hessian-vector products (fine for the small
    networks of the identities; use :func:`hvp` for large ones).
    """
    net.check_state(h)
    B, n = h[0].shape[0], sum(net.sizes[1:])
    hs = _leaf_state(h)
    F = net.total_energy(hs, beta, target).sum()
    grads = torch.cat(torch.autograd.grad(F, hs[1:], create_graph=True), dim=-1)  # (B, n)
    H = torch.empty(B, n, n, dtype=net.dtype, device=net.device)
    eye = torch.eye(n, dtype=net.dtype, device=net.device)
    for i in range(n):
        cols = torch.autograd.grad(grads, hs[1:], grad_outputs=eye[i].expand(B, n), retain_graph=True)
        H[:, :, i] = torch.cat(cols, dim=-1)
    return H


def force_jacobian(net: LayeredEBM, h: State, *, feedback: Optional[Feedback] = None) -> Tensor:
    """Dense Jacobian ``J = ∂f/∂h`` of the closed-form force per sample, shape ``(B, n, n)``.

    ``J = −H`` when ``feedback`` is None (an energy's Hessian); with top-down ``feedback`` the
    vector field's Jacobian, not symmetric in general. Built row by row from vector–Jacobian
    products (small networks).
    """
    net.check_state(h)
    B, n = h[0].shape[0], sum(net.sizes[1:])
    hs = _leaf_state(h)
    f = torch.cat(net.force(hs, feedback=feedback)[1:], dim=-1)  # (B, n)
    J = torch.empty(B, n, n, dtype=net.dtype, device=net.device)
    eye = torch.eye(n, dtype=net.dtype, device=net.device)
    for i in range(n):
        rows = torch.autograd.grad(f, hs[1:], grad_outputs=eye[i].expand(B, n), retain_graph=True)
        J[:, i, :] = torch.cat(rows, dim=-1)
    return J


def implicit_gradient(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    feedback: Optional[Feedback] = None,
    mask: Optional[str] = None,
    clip: Optional[bool] = None,
) -> list:
    """The fixed point's linear response ``u = dh*/dβ = −H⁻¹ ∂C/∂h`` (PAPER.md §5, late time).

    This is ``lim_{β→0} (h^β_* − h*)/β``, the recurrent back-propagation of Almeida–Pineda, to
    compare with the chain gradient ``−g_k``. With ``feedback``: ``u = J⁻¹ ∂C/∂h`` with ``J`` the
    force's Jacobian (:func:`force_jacobian`), from ``f(h) + β(d − y) = 0``. ``mask="pinned"``: the
    units the clipped dynamics hold on a bound (:func:`ebmlib.pinned_units`) do not move; the system
    is solved on the others (the response of the clipped dynamics).
    """
    net.check_state(h_star, "h_star")
    target = net.check_target(target, h_star[0].shape[0])
    if mask not in (None, "pinned"):
        raise ValueError(f"mask: expected None or 'pinned', got {mask!r}")
    c = flatten(cost_gradient(net, h_star, target))
    A = -hessian(net, h_star) if feedback is None else force_jacobian(net, h_star, feedback=feedback)
    if mask == "pinned":
        pinned = flatten(pinned_units(net, h_star, resolve_clip(clip, net.activation.clip_by_default), feedback))
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        free = (~pinned).to(A.dtype)
        # pinned rows become identity rows and their right-hand side 0: u = 0 there
        A = free.unsqueeze(-1) * A * free.unsqueeze(-2) + (1 - free).unsqueeze(-1) * eye
        c = c * free
    u = torch.linalg.solve(A, c.unsqueeze(-1)).squeeze(-1)
    return unflatten(net, u)


def adjoint(net: LayeredEBM, h_star: State, target: Tensor, steps: int, eps: float) -> list:
    """S̄_t for t = 0 … steps−1: ``S̄_0 = ∂C/∂h(h*)``, ``S̄_{t+1} = (I − εH) S̄_t``.

    Returns per layer a tensor ``(steps, B, n_k)`` (index 0 is None).
    """
    check_positive_int("steps", steps)
    eps = check_eps(eps)
    S = cost_gradient(net, h_star, target)
    out = [[] for _ in range(net.N + 1)]
    for _ in range(steps):
        for k in range(1, net.N + 1):
            out[k].append(S[k])
        HS = hvp(net, h_star, S)
        S = [None] + [S[k] - eps * HS[k] for k in range(1, net.N + 1)]
    return [None] + [torch.stack(out[k]) for k in range(1, net.N + 1)]


def bptt(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    steps: int,
    eps: float,
    clip: Optional[bool] = None,
) -> list:
    """∂C(h_T)/∂h_{T−t} for t = 0 … steps−1 through an unrolled free phase from ``h_star``.

    The free phase is unrolled for ``steps − 1`` steps of :func:`ebmlib.step` with autograd;
    for a converged ``h_star`` this equals the adjoint ``S̄_t`` (PAPER.md §5).
    Returns per layer a tensor ``(steps, B, n_k)`` (index 0 is None).
    """
    net.check_state(h_star, "h_star")
    check_positive_int("steps", steps)
    eps = check_eps(eps)
    n_unrolled = steps - 1
    states = [_leaf_state(h_star)]
    for _ in range(n_unrolled):
        states.append(step(net, states[-1], eps=eps, clip=clip))
    C = net.cost(states[-1], target).sum()
    flat_inputs = [s[k] for s in states for k in range(1, net.N + 1)]
    grads = torch.autograd.grad(C, flat_inputs, allow_unused=True)
    out = []
    for k in range(1, net.N + 1):
        per_t = []
        for t in range(steps):
            s = n_unrolled - t
            gk = grads[s * net.N + (k - 1)]
            per_t.append(torch.zeros_like(h_star[k]) if gk is None else gk)
        out.append(torch.stack(per_t))
    return [None] + out


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

    The free phase from ``h_star`` is unrolled for K steps of :func:`ebmlib.step` with autograd,
    step s using its own copy θ_s of the weights and biases; C is averaged over the batch. Returns
    per layer ``(dW, db)`` of shapes ``(steps, n_{k−1}, n_k)`` and ``(steps, n_k)`` (index 0 None).
    Their sum over t is ∂C(h_K)/∂θ.
    """
    net.check_state(h_star, "h_star")
    check_positive_int("steps", steps)
    eps = check_eps(eps)
    target = net.check_target(target, h_star[0].shape[0])
    copies = [net.clone() for _ in range(steps)]
    leaves = []
    for c in copies:
        for p in c.parameters():
            p.requires_grad_(True)
            leaves.append(p)
    h = [h_star[0]] + [t.detach() for t in h_star[1:]]
    for s in range(steps):
        h = step(copies[s], h, eps=eps, clip=clip)
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
