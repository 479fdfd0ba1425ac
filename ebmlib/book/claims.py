"""Claims: named numbers with the bound they must meet, recorded in every figure's sidecar.

``tests/`` re-checks each sidecar's claims with :func:`claim_holds` and fails when one does not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..checks import check_real

__all__ = ["OPS", "Claim", "claim_holds", "at_most", "at_least", "within"]

OPS = ("<=", ">=", "in")


@dataclass(frozen=True)
class Claim:
    """A named number with a bound. ``op`` is ``<=``, ``>=`` (number bound) or ``in`` ([lo, hi])."""

    name: str
    value: float
    bound: float | tuple[float, float]
    op: str
    statement: str

    @property
    def holds(self) -> bool:
        return claim_holds(self.value, self.bound, self.op)

    def to_json(self) -> dict[str, Any]:
        bound = list(self.bound) if isinstance(self.bound, tuple) else self.bound
        return {"value": self.value, "bound": bound, "op": self.op, "holds": self.holds, "statement": self.statement}


def claim_holds(value: float | None, bound: Any, op: str) -> bool:
    """Evaluate a claim (also used by the tests to re-check a sidecar); a non-finite value never holds."""
    if value is None or not math.isfinite(value):
        return False
    if op == "<=":
        return value <= bound
    if op == ">=":
        return value >= bound
    if op == "in":
        lo, hi = bound
        return lo <= value <= hi
    raise ValueError(f"op: unknown claim operator {op!r}; choose one of {OPS}")


def _num(v: Any) -> float:
    """A Python float from a number or a one-element tensor (NaN is kept: the claim then fails)."""
    if isinstance(v, torch.Tensor):
        v = v.item()
    return float(v)


def at_most(name: str, value: Any, bound: float, statement: str) -> Claim:
    """Claim ``value ≤ bound``."""
    return Claim(name, _num(value), check_real("bound", bound), "<=", statement)


def at_least(name: str, value: Any, bound: float, statement: str) -> Claim:
    """Claim ``value ≥ bound``."""
    return Claim(name, _num(value), check_real("bound", bound), ">=", statement)


def within(name: str, value: Any, lo: float, hi: float, statement: str) -> Claim:
    """Claim ``lo ≤ value ≤ hi``."""
    lo, hi = check_real("lo", lo), check_real("hi", hi)
    if lo > hi:
        raise ValueError(f"lo, hi: empty interval [{lo}, {hi}]")
    return Claim(name, _num(value), (lo, hi), "in", statement)
