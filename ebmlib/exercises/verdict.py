"""The verdict of an exercise check, the comparison behind most checks, and numbers for a sentence."""


from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Verdict", "compare", "sci"]

_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def sci(x: float, digits: int = 1) -> str:
    """``x`` as ``a × 10ⁿ`` for prose (``0`` as ``0``; exponents −2…2 as plain decimals)."""
    x = float(x)
    if x == 0.0 or not abs(x) < float("inf"):
        return f"{x:g}"
    mant, exp = f"{x:.{digits}e}".split("e")
    e = int(exp)
    if -2 <= e <= 2:
        return f"{x:.{max(digits - e, 0)}f}"
    return f"{mant} × 10{str(e).translate(_SUP)}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``ok`` and a sentence for the student."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return ("Correct: " if self.ok else "Not yet: ") + self.message

    def __repr__(self) -> str:  # what a notebook shows as plain text: the sentence, in lines of at most 100
        import textwrap

        return textwrap.fill(str(self), width=100)

    def _repr_markdown_(self) -> str:
        return ("**Correct.** " if self.ok else "**Not yet.** ") + self.message


def compare(name: str, answer, expected: torch.Tensor, *, rtol: float = 1e-6, atol: float = 1e-9,
            hint: str = "") -> Verdict:
    """Compare ``answer`` (a tensor or array) with ``expected`` elementwise: shape first, then values
    with ``|answer - expected| <= atol + rtol |expected|``; the verdict names ``name`` and, when wrong,
    the largest deviation and ``hint``."""
    if not isinstance(expected, torch.Tensor):
        raise TypeError(f"expected: a torch.Tensor, got {type(expected).__name__}")
    if answer is None:
        return Verdict(False, f"{name} is None: the cell does not compute it yet. {hint}".strip())
    try:
        a = torch.as_tensor(answer).to(dtype=expected.dtype, device=expected.device)
    except (TypeError, ValueError, RuntimeError) as e:
        return Verdict(False, f"{name} is not a number array ({e}).")
    if tuple(a.shape) != tuple(expected.shape):
        return Verdict(False, f"{name} has shape {tuple(a.shape)}, expected {tuple(expected.shape)}. {hint}".strip())
    if not bool(torch.isfinite(a).all()):
        return Verdict(False, f"{name} contains NaN or infinite values. {hint}".strip())
    err = (a - expected).abs()
    tol = atol + rtol * expected.abs()
    if bool((err <= tol).all()):
        return Verdict(True, f"{name} matches the reference (largest deviation {sci(float(err.max()))}).")
    return Verdict(False, f"{name} differs from the reference by up to {sci(float(err.max()), 2)} "
                          f"(tolerance {sci(atol)} + {sci(rtol)}·|reference|). {hint}".strip())
