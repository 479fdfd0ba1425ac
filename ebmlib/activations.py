"""Activation functions ρ and their derivatives ρ' (PAPER.md §2).

Each activation maps a membrane potential ``h`` to a firing rate ``ρ(h)``. The
library only ever needs ``ρ`` and ``ρ'`` together, so each activation exposes
``rho_and_drho`` that computes both with one pass over the tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Activation", "ACTIVATIONS", "get_activation"]


@dataclass(frozen=True)
class Activation:
    """A rate function ρ with derivative ρ' and its range ``(lo, hi)``.

    ``clip_by_default`` says whether the Euler step clips states to the range
    after each step (the Equilibrium Propagation practice for the hard sigmoid).
    """

    name: str
    rho: Callable[[Tensor], Tensor]
    drho: Callable[[Tensor], Tensor]
    rho_and_drho: Callable[[Tensor], tuple[Tensor, Tensor]]
    lo: float
    hi: float
    clip_by_default: bool = False

    def __repr__(self) -> str:  # short form for sidecars and messages
        return f"Activation({self.name!r})"


def _sigmoid_both(h: Tensor) -> tuple[Tensor, Tensor]:
    r = torch.sigmoid(h)
    return r, r * (1.0 - r)


def _hard_sigmoid(h: Tensor) -> Tensor:
    return h.clamp(0.0, 1.0)


def _hard_sigmoid_drho(h: Tensor) -> Tensor:
    # Inclusive at the boundaries, like autograd of clamp (and Theano's clip used
    # by the original EP code): a unit pinned at 0 or 1 still passes its drive.
    return ((h >= 0.0) & (h <= 1.0)).to(h.dtype)


def _hard_sigmoid_both(h: Tensor) -> tuple[Tensor, Tensor]:
    return _hard_sigmoid(h), _hard_sigmoid_drho(h)


def _tanh_both(h: Tensor) -> tuple[Tensor, Tensor]:
    r = torch.tanh(h)
    return r, 1.0 - r * r


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(
        "sigmoid",
        torch.sigmoid,
        lambda h: _sigmoid_both(h)[1],
        _sigmoid_both,
        0.0,
        1.0,
    ),
    "hard_sigmoid": Activation(
        "hard_sigmoid",
        _hard_sigmoid,
        _hard_sigmoid_drho,
        _hard_sigmoid_both,
        0.0,
        1.0,
        clip_by_default=True,
    ),
    "tanh": Activation(
        "tanh", torch.tanh, lambda h: _tanh_both(h)[1], _tanh_both, -1.0, 1.0
    ),
}


def get_activation(activation: str | Activation) -> Activation:
    """Return the activation named ``activation`` (or pass one through)."""
    if isinstance(activation, Activation):
        return activation
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(
            f"activation: unknown activation {activation!r}; "
            f"choose one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[activation]
