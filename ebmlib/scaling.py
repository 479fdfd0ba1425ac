"""Scaling laws of the first arrival (PAPER.md §4 (b), (b′), (c)), measured not asserted.

- :func:`loglog_slope`: least-squares slope of log y against log x (e.g. ‖δ_k(d+1)‖ against ε,
  whose slope is d + 1).
- :func:`small_time_exponent`: the exponent s of y(t) ≈ c t^s e^{a t} fitted on a range of small
  times, the t → 0 power of a response whose next term is one order higher in t.
- :func:`continuous_response`: δ_k(t) = h^β_k(t) − h^0_k(t) in continuous time, the Euler
  dynamics at step ε and ε/2 combined by Richardson extrapolation (ε → 0 at fixed t). Prediction
  (c): δ_k(t) = −β t^{d+1}/(d+1)! g_k + O(t^{d+2}); displacement variant: −η t^d/d! g_k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .checks import check_eps, check_real
from .dynamics import run
from .network import LayeredEBM, State

__all__ = ["loglog_slope", "small_time_exponent", "continuous_response"]


def _positive_series(name: str, v: object) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.ndim != 1 or a.size < 2:
        raise ValueError(f"{name}: expected a 1-D sequence of at least 2 numbers, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    if not np.all(a > 0):
        raise ValueError(f"{name}: every value must be > 0 for a logarithm")
    return a


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (y ∝ x^s gives s)."""
    xa, ya = _positive_series("x", x), _positive_series("y", y)
    if xa.shape != ya.shape:
        raise ValueError(f"x, y: lengths differ, {xa.size} vs {ya.size}")
    if np.ptp(np.log(xa)) == 0.0:
        raise ValueError("x: needs at least two distinct values")
    return float(np.polyfit(np.log(xa), np.log(ya), 1)[0])


def small_time_exponent(t: Sequence[float], y: Sequence[float]) -> float:
    """Exponent s of ``y ≈ c t^s e^{a t}`` by least squares on ``log y = log c + s log t + a t``.

    The factor e^{a t} absorbs the first correction of a response y = c t^s (1 + a t + O(t²)),
    so s is the small-time power of PAPER.md §4 (c) without a fit range shrinking to zero.
    """
    ta, ya = _positive_series("t", t), _positive_series("y", y)
    if ta.shape != ya.shape:
        raise ValueError(f"t, y: lengths differ, {ta.size} vs {ya.size}")
    if ta.size < 3 or np.unique(ta).size < 3:
        raise ValueError("t: needs at least three distinct times to fit c, s and a")
    A = np.stack([np.ones_like(ta), np.log(ta), ta], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.log(ya), rcond=None)
    return float(coef[1])


def continuous_response(
    net: LayeredEBM,
    h_star: State,
    *,
    times: Sequence[float],
    eps: float,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    start: Optional[State] = None,
    clip: Optional[bool] = None,
) -> list:
    """δ_k(t) in the limit ε → 0 at fixed t, for every layer (index 0 is None).

    Runs the nudged dynamics (``beta``, ``target``) from ``start`` (default ``h_star``; pass a
    displaced state for the variant (b′)) and the free dynamics from ``h_star``, at steps ``eps``
    and ``eps/2``; returns per layer a tensor ``(len(times), B, n_k)`` holding the Richardson
    extrapolation ``2 δ^{ε/2}(t) − δ^{ε}(t)``, whose error is O(ε²). Every time must be a
    multiple of ``eps``.
    """
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    net.check_state(h_star, "h_star")
    start = h_star if start is None else net.check_state(start, "start")
    tt = _positive_series("times", times)
    idx = np.rint(tt / eps).astype(int)
    if not np.allclose(idx * eps, tt, rtol=1e-9, atol=0.0):
        raise ValueError(f"times: every time must be a multiple of eps = {eps:g}")
    steps = int(idx.max())
    out: list = [None] + [None] * net.N
    deltas = []
    for e, m in ((eps, 1), (eps / 2, 2)):
        nudged = run(net, start, steps=m * steps, eps=e, beta=beta, target=target, clip=clip)
        free = run(net, h_star, steps=m * steps, eps=e, clip=clip)
        sel = torch.as_tensor(m * idx, device=net.device)
        deltas.append([None] + [nudged.h[k][sel] - free.h[k][sel] for k in range(1, net.N + 1)])
    for k in range(1, net.N + 1):
        out[k] = 2.0 * deltas[1][k] - deltas[0][k]
    return out
