"""Which back-propagation? The four error signals of one network side by side (PAPER.md §4–5, §8).

For one network, inputs ``x`` and targets ``d``, per layer k, all with the sign and scale of
``∂C/∂h_k`` (so that each is compared with the others by a cosine and a norm ratio):

- ``chain``: ``g_k`` at the free fixed point h*, back-propagation through the one-way maps frozen
  there (:func:`ebmlib.chain_gradient`): what early inference approximates;
- ``feedforward``: back-propagation of the feedforward network of the same weights at its *own*
  forward pass: what "back-propagation" means to most readers. For the hard sigmoid (clipping) it is
  the multilayer perceptron (:func:`ebmlib.mlp_backprop`, errors at the pre-activations); for other
  activations the energy model's own one-way network with the top-down terms removed
  (:func:`ebmlib.feedforward`, the γ → 0 limit of the model), differentiated exactly at its state:
  ``−J₀⁻ᵀ ∂C/∂h`` with ``J₀`` the force's Jacobian without top-down terms (for the logistic sigmoid
  this differs from :func:`ebmlib.chain_gradient` there, which holds ρ'(h_k) fixed);
- ``implicit``: recurrent back-propagation, ``H⁻¹ ∂C/∂h`` at h* (minus the fixed point's linear
  response :func:`ebmlib.implicit_gradient`): what the fixed point's gradient is;
- what the dynamics deliver: ``arrival``, the first arrival of a small nudge, ``−δ_k(m+1)/(β ε^{m+1})``
  (:func:`ebmlib.nudge_response`), and ``ep``, the Equilibrium Propagation signal ``−(h^β_k − h*_k)/β``
  at the (finite) β of training.

With Xie & Seung's γ-scaled feedback (:func:`ebmlib.gamma_feedback`) every signal but the
feedforward one carries a factor ``γ^{m}``, m = N − k: :meth:`FourGradients.ratio` divides it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .checks import check_eps, check_nonzero_beta, check_positive_int, check_real, resolve_clip
from .dynamics import relax, run
from .gradients import chain_gradient, cost_gradient, flatten, force_jacobian, implicit_gradient, unflatten
from .measures import cosine
from .network import Feedback, LayeredEBM, State, gamma_feedback
from .oneway import feedforward, mlp_backprop, mlp_forward
from .response import nudge_response

__all__ = ["SIGNALS", "FourGradients", "four_gradients"]

SIGNALS = ("chain", "feedforward", "implicit", "arrival", "ep")


@dataclass
class FourGradients:
    """The signals of :func:`four_gradients`, per layer ``[None, s_1, …, s_N]`` (batch-first), with the
    states they were read from: ``h_star`` (free fixed point), ``h_ff`` (feedforward pass), ``h_beta``
    (the end of the EP nudged phase)."""

    chain: list
    feedforward: list
    implicit: list
    arrival: list
    ep: list
    h_star: State
    h_ff: list
    h_beta: State
    gamma: float = 1.0

    @property
    def N(self) -> int:
        return len(self.chain) - 1

    def _get(self, name: str) -> list:
        if name not in SIGNALS:
            raise ValueError(f"name: unknown signal {name!r}; choose one of {SIGNALS}")
        return getattr(self, name)

    def cos(self, a: str, b: str) -> list:
        """Per-layer cosine between signals ``a`` and ``b`` over the batch (flattened), k = 1 … N."""
        sa, sb = self._get(a), self._get(b)
        return [cosine(sa[k], sb[k]) for k in range(1, self.N + 1)]

    def ratio(self, a: str, b: str) -> list:
        """Per-layer norm ratio ``‖a_k‖ / ‖b_k‖``, each signal but the feedforward one divided by ``γ^{N−k}``."""
        sa, sb = self._get(a), self._get(b)
        out = []
        for k in range(1, self.N + 1):
            s = [1.0 if n == "feedforward" else self.gamma ** (self.N - k) for n in (a, b)]
            out.append(float((sa[k].norm() / s[0]) / (sb[k].norm() / s[1])))
        return out

    def table(self) -> dict:
        """The comparisons of the book's table: per-layer lists keyed ``cos_<a>_<b>`` and ``ratio_<a>_<b>``."""
        pairs = [("chain", "feedforward"), ("chain", "implicit"), ("arrival", "chain"), ("ep", "implicit"),
                 ("implicit", "feedforward"), ("ep", "feedforward")]
        out: dict = {}
        for a, b in pairs:
            out[f"cos_{a}_{b}"] = self.cos(a, b)
            out[f"ratio_{a}_{b}"] = self.ratio(a, b)
        out["ff_distance"] = [float((self.h_star[k] - self.h_ff[k]).norm() / self.h_ff[k].norm().clamp_min(1e-300))
                              for k in range(1, self.N + 1)]
        return out


def four_gradients(
    net: LayeredEBM,
    x: Tensor,
    target: Tensor,
    *,
    beta: float = 1.0,
    arrival_beta: float = 1e-6,
    eps: float = 0.5,
    nudged_steps: Optional[int] = None,
    gamma: Optional[float] = None,
    feedback: Optional[Feedback] = None,
    tol: float = 1e-12,
    max_steps: int = 100_000,
    clip: Optional[bool] = None,
) -> FourGradients:
    """The four error signals of ``net`` on ``(x, target)`` (float64 recommended), see the module text.

    h* is relaxed from zero to ``tol`` (a :class:`RuntimeError` if it is not reached). ``beta``: the
    EP nudge (training's β), its nudged phase relaxed to ``tol`` or run ``nudged_steps`` steps;
    ``arrival_beta``: the small nudge of the first arrival. ``gamma``: Xie & Seung's feedback scale
    (``feedback = gamma_feedback(net, gamma)``); or any ``feedback``. With clipping (the hard
    sigmoid), the chain, implicit and arrival signals are those of the clipped dynamics (pinned units
    do not move).
    """
    x = net.check_input(x)
    target = net.check_target(target, x.shape[0])
    beta, arrival_beta = check_nonzero_beta(beta), check_nonzero_beta(arrival_beta, "arrival_beta")
    eps = check_eps(eps)
    if nudged_steps is not None:
        check_positive_int("nudged_steps", nudged_steps)
    if gamma is not None:
        if feedback is not None:
            raise ValueError("gamma, feedback: give one of them")
        feedback = gamma_feedback(net, gamma)
    gamma = 1.0 if gamma is None else check_real("gamma", gamma)
    clip = resolve_clip(clip, net.activation.clip_by_default)
    mask = "pinned" if clip else None
    kw = dict(eps=eps, tol=tol, max_steps=max_steps, clip=clip, feedback=feedback)
    free = relax(net, x, **kw)
    if not free.converged:
        raise RuntimeError(f"x: the free phase did not converge to tol={tol} in {max_steps} steps "
                           f"(residual {free.residual:.2e})")
    h = free.h
    N = net.N
    chain = chain_gradient(net, h, target, mask=mask, feedback=feedback, clip=clip)
    u = implicit_gradient(net, h, target, feedback=feedback, mask=mask, clip=clip)
    delta = nudge_response(net, h, steps=N + 1, eps=eps, beta=arrival_beta, target=target, clip=clip,
                           feedback=feedback)
    arrival = [None] + [-delta[k][N - k + 1] / (arrival_beta * eps ** (N - k + 1)) for k in range(1, N + 1)]
    if nudged_steps is None:
        nudged = relax(net, x, h, beta=beta, target=target, **kw)
        if not nudged.converged:
            raise RuntimeError(f"beta: the nudged phase did not converge to tol={tol} in {max_steps} steps")
        h_beta = nudged.h
    else:
        h_beta = run(net, h, steps=nudged_steps, eps=eps, beta=beta, target=target, clip=clip,
                     feedback=feedback).at(nudged_steps)
    ep = [None] + [-(h_beta[k] - h[k]) / beta for k in range(1, N + 1)]
    if clip:
        ff, h_ff = mlp_backprop(net, x, target), mlp_forward(net, x)
    else:
        h_ff = feedforward(net, x, eps=eps, tol=tol, max_steps=max_steps, clip=clip).h
        none = [None, None] + [torch.zeros_like(net.W[k]) for k in range(2, N + 1)]
        J0 = force_jacobian(net, h_ff, feedback=none)
        c = flatten(cost_gradient(net, h_ff, target))
        ff = unflatten(net, -torch.linalg.solve(J0.transpose(-1, -2), c.unsqueeze(-1)).squeeze(-1))
    return FourGradients(chain=chain, feedforward=ff, implicit=[None] + [-v for v in u[1:]],
                         arrival=arrival, ep=ep, h_star=h, h_ff=h_ff, h_beta=h_beta, gamma=gamma)
