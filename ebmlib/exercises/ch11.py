"""Checks for chapter 11 (published vs reproduced): the paired t-interval of two methods."""

from __future__ import annotations

import math

from ..selection import paired_interval
from .verdict import Verdict

__all__ = ["check_paired_interval"]


def check_paired_interval(answer: object, a: object, b: object, level: float) -> Verdict:
    """Is ``answer`` the pair ``(lo, hi)`` of the ``level`` t-interval of the mean of ``a − b``?

    ``a`` and ``b`` are paired values (the same seeds); the reference is :func:`ebmlib.paired_interval`.
    """
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    for name, v in (("a", a), ("b", b)):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) < 2:
            raise ValueError(f"{name}: expected at least two paired values, got {v!r}")
    if len(a) != len(b):
        raise ValueError(f"a, b: paired values need equal lengths, got {len(a)} and {len(b)}")
    ref = paired_interval(a, b, level)
    lo, hi = ref.mean - ref.half, ref.mean + ref.half
    if answer is None:
        return Verdict(False, "the answer is None: the cell does not compute it yet.")
    try:
        got_lo, got_hi = (float(v) for v in answer)
    except (TypeError, ValueError):
        return Verdict(False, f"expected a pair (lo, hi) of numbers, got {answer!r}.")
    tol = 1e-9 + 1e-6 * max(abs(lo), abs(hi))
    if math.isclose(got_lo, lo, abs_tol=tol) and math.isclose(got_hi, hi, abs_tol=tol):
        return Verdict(True, f"the interval is [{lo:.4g}, {hi:.4g}] (mean {ref.mean:.4g} ± {ref.half:.4g}).")
    hint = ("Pair the values: the interval is built from the differences a − b, their standard deviation "
            "with n − 1, divided by √n, times the t quantile with n − 1 degrees of freedom.")
    return Verdict(False, f"[{got_lo:.4g}, {got_hi:.4g}] is not the interval. {hint}")
