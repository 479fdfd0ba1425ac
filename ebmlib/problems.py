"""A standard problem: a random network, inputs, targets and its free fixed point (PAPER.md §2–4).

Most experiments start the same way: draw a network, a batch of inputs ``x`` and targets ``d``
from an explicit generator, and relax to the free fixed point ``h*``. :func:`random_problem` does
that once, with every random number drawn from its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .activations import Activation
from .checks import check_generator, check_positive_int
from .dynamics import Relaxation, relax
from .network import LayeredEBM, State

__all__ = ["Problem", "random_problem"]


@dataclass
class Problem:
    """A network ``net``, inputs ``x``, targets ``target`` and the free relaxation ``fixed_point``."""

    net: LayeredEBM
    x: Tensor
    target: Tensor
    fixed_point: Relaxation

    @property
    def h_star(self) -> State:
        """The free fixed point ``h*`` (a state list)."""
        return self.fixed_point.h


def random_problem(
    sizes: Sequence[int],
    activation: str | Activation = "sigmoid",
    *,
    seed: int,
    generator: torch.Generator,
    batch: int,
    gain: float = 1.0,
    bias_std: float = 0.0,
    bias_mean: float = 0.0,
    eps: float = 0.5,
    tol: float = 1e-13,
    max_steps: int = 50_000,
    check_every: int = 10,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    require_converged: bool = True,
) -> Problem:
    """``LayeredEBM(sizes, activation, seed=seed, gain, bias_std, bias_mean)``; ``x`` then ``target``
    uniform in [0, 1) of shapes ``(batch, n_0)`` and ``(batch, n_N)`` from ``generator``; ``h*`` by
    :func:`ebmlib.relax` from zeros to ``tol``. Raises when it does not converge (unless
    ``require_converged`` is False)."""
    check_positive_int("batch", batch)
    net = LayeredEBM(list(sizes), activation, seed=seed, gain=gain, bias_std=bias_std, bias_mean=bias_mean,
                     dtype=dtype, device=device)
    check_generator("generator", generator, net.device)
    x = torch.rand(batch, net.sizes[0], generator=generator, dtype=dtype, device=net.device)
    target = torch.rand(batch, net.sizes[-1], generator=generator, dtype=dtype, device=net.device)
    fp = relax(net, x, eps=eps, tol=tol, max_steps=max_steps, check_every=check_every)
    if require_converged and not fp.converged:
        raise RuntimeError(f"tol: the free phase reached residual {fp.residual:.2e} > {tol:g} in {fp.steps} steps; "
                           "raise max_steps or tol")
    return Problem(net, x, target, fp)
