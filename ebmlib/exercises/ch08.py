"""Checks for chapter 08 (limits): the step at which a nudge first reaches each layer."""

from __future__ import annotations

from ..checks import check_positive_int
from ..dynamics import SCHEDULES, reach_steps
from .verdict import Verdict

__all__ = ["check_reach_steps"]


def check_reach_steps(answer: object, N: int, schedule: str) -> Verdict:
    """Is ``answer`` the list ``[t_1, …, t_N]`` of first-change steps of layers 1 … N under ``schedule``?

    The reference is the chain graph's prediction :func:`ebmlib.reach_steps` (index 0 dropped).
    """
    N = check_positive_int("N", N)
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {sorted(SCHEDULES)}, got {schedule!r}")
    ref = reach_steps(N, schedule)[1:]
    if answer is None:
        return Verdict(False, "the answer is None: the cell does not compute it yet.")
    try:
        got = [int(v) for v in answer]
    except (TypeError, ValueError):
        return Verdict(False, f"expected a list of {N} integers (layers 1 … N), got {answer!r}.")
    if len(got) != N:
        return Verdict(False, f"expected {N} steps, one per layer 1 … {N}, got {len(got)}.")
    wrong = [k for k in range(1, N + 1) if got[k - 1] != ref[k - 1]]
    if not wrong:
        return Verdict(True, f"under '{schedule}' the nudge reaches layers 1 … {N} at steps {ref}.")
    return Verdict(False, f"under '{schedule}' the step is wrong for layer(s) {wrong}. Hint: a layer changes at "
                          "its first update that sees a neighbour that has already changed.")
