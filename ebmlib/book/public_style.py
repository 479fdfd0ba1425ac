"""The benchmark's baseline: this book's dynamics and EP training written the way public code does it.

The public Equilibrium Propagation code bases (Ernoult et al. 2019; Laborieux et al. 2021) write a
*primitive function* Φ and run every step as ``autograd.grad(Φ, neurons)``: the graph is rebuilt each
step and the input product ``xW_1`` recomputed each step; the parameter update is ``backward()`` of
``(Φ(h^β) − Φ(h*))/β`` and an SGD optimizer step; the training loop reads its error count with
``.item()`` every minibatch. Here Φ is written for this book's energy, ``E = ½Σ‖h_k‖² − Φ``,

    Φ(h) = Σ_k (ρ(h_{k−1})W_k + b_k)·ρ(h_k) − β·½‖y − d‖²,   h_k ← clip(h_k + ε(∂Φ/∂h_k − h_k)),

so that its states equal :func:`ebmlib.relax`'s (tests/test_bench.py: float64 to 1e-12; the benchmark
reports the float32 gap). No code of those projects is used; only their structure is followed.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..network import LayeredEBM

__all__ = ["PublicStyleEP"]


class PublicStyleEP:
    """EP on ``net``'s architecture in the public code bases' style, with its own copy of the weights."""

    def __init__(self, net: LayeredEBM, lrs: tuple, *, eps: float, clip: bool = True):
        if not isinstance(net, LayeredEBM):
            raise TypeError(f"net: expected a LayeredEBM, got {type(net).__name__}")
        if len(lrs) != net.N:
            raise ValueError(f"lrs: expected {net.N} learning rates, got {len(lrs)}")
        self.act, self.eps, self.clip, self.N = net.activation, float(eps), bool(clip), net.N
        self.W = [torch.nn.Parameter(w.detach().clone().contiguous()) for w in net.W[1:]]
        self.b = [torch.nn.Parameter(b.detach().clone()) for b in net.b[1:]]
        self.opt = torch.optim.SGD([{"params": [w, b], "lr": lr} for w, b, lr in zip(self.W, self.b, lrs)], lr=0.0)

    def phi(self, x: Tensor, neurons: list, beta: float = 0.0, target: Optional[Tensor] = None) -> Tensor:
        """Φ summed over the batch (the input product recomputed, as the public code does)."""
        rho = self.act.rho
        layers = [x] + [rho(h) for h in neurons]
        phi = sum(((layers[k] @ self.W[k] + self.b[k]) * layers[k + 1]).sum() for k in range(self.N))
        if beta != 0.0:
            phi = phi - beta * 0.5 * ((neurons[-1] - target) ** 2).sum()
        return phi

    def phase(self, x: Tensor, h: list, steps: int, beta: float = 0.0, target: Optional[Tensor] = None) -> list:
        """``steps`` steps from the layers ``h`` (h_1 … h_N), each from ``autograd.grad(Φ, neurons)``."""
        neurons = [t.detach().clone().requires_grad_(True) for t in h]
        for _ in range(steps):
            grads = torch.autograd.grad(self.phi(x, neurons, beta, target), neurons)
            with torch.no_grad():
                new = [n + self.eps * (g - n) for n, g in zip(neurons, grads)]
                if self.clip:
                    new = [t.clamp(self.act.lo, self.act.hi) for t in new]
            neurons = [t.requires_grad_(True) for t in new]
        return [t.detach() for t in neurons]

    def train_step(self, x: Tensor, d: Tensor, h0: list, *, free_steps: int, nudged_steps: int, beta: float,
                   symmetric: bool = False) -> list:
        """Free phase, nudged phase(s), ``backward()`` of −(Φ(h^β) − Φ(h*))/(βB) (or of ±β for symmetric EP),
        an SGD step; returns the free state."""
        free = self.phase(x, h0, free_steps)
        self.opt.zero_grad()
        if symmetric:
            plus = self.phase(x, free, nudged_steps, beta, d)
            minus = self.phase(x, free, nudged_steps, -beta, d)
            loss = -(self.phi(x, plus) - self.phi(x, minus)) / (2.0 * beta * x.shape[0])
        else:
            nudged = self.phase(x, free, nudged_steps, beta, d)
            loss = -(self.phi(x, nudged) - self.phi(x, free)) / (beta * x.shape[0])
        loss.backward()
        self.opt.step()
        return free

    def epoch(self, X: Tensor, D: Tensor, labels: Tensor, persistent: list, order: Tensor, signs: list, *,
              batch: int, free_steps: int, nudged_steps: int, beta: float, symmetric: bool = False) -> int:
        """The public code's loop over minibatches ``order`` (sign of β per minibatch from ``signs``), persistent
        free states gathered and scattered, the error count read with ``.item()`` every minibatch."""
        wrong = 0
        for m, i in enumerate(range(0, len(order), batch)):
            idx = order[i:i + batch]
            x, d = X[idx], D[idx]
            free = self.train_step(x, d, [p[idx] for p in persistent], free_steps=free_steps,
                                   nudged_steps=nudged_steps, beta=signs[m] * beta, symmetric=symmetric)
            for p, h in zip(persistent, free):
                p[idx] = h
            wrong += (free[-1].argmax(1) != labels[idx]).sum().item()
        return wrong
