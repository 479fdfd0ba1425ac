"""Comparison measures between a measured signal and its prediction (PAPER.md §4–5).

Cosines and norm ratios (of tensors or of per-layer gradient lists), sign agreement, Ernoult et
al.'s trajectory metric, signal-to-noise ratios, log-log slopes and small-time exponents, and the
Kolmogorov–Smirnov and total-variation distances between samples and a density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .checks import check_positive_int, check_real, check_tensor

__all__ = [
    "cosine",
    "magnitude_ratio",
    "trajectory_metric",
    "sign_agreement",
    "snr",
    "group_snr",
    "grads_flat",
    "grads_cosine",
    "loglog_slope",
    "log_rate",
    "small_time_exponent",
    "ks_distance",
    "ks_critical",
    "tv_distance",
]


def _pair(a: Tensor, b: Tensor, name: str = "a, b") -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name}: expected tensors")
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def cosine(a: Tensor, b: Tensor, mask: Optional[Tensor] = None) -> float:
    """cos(a, b) = a·b / (‖a‖‖b‖) over all entries (flattened); only where ``mask`` is true if given."""
    a, b = _pair(a, b)
    if mask is not None:
        mask = check_tensor("mask", mask, shape=tuple(a.shape), dtype=torch.bool, device=a.device)
        a, b = a[mask], b[mask]
    a, b = a.flatten(), b.flatten()
    na, nb = a.norm(), b.norm()
    if float(na) == 0.0 or float(nb) == 0.0:
        raise ValueError("a, b: cosine of a zero vector is undefined")
    return float(a @ b / (na * nb))


def magnitude_ratio(a: Tensor, b: Tensor) -> float:
    """‖a‖ / ‖b‖ (flattened)."""
    a, b = _pair(a, b)
    nb = float(b.norm())
    if nb == 0.0:
        raise ValueError("b: zero norm")
    return float(a.norm()) / nb


def trajectory_metric(a: Tensor, b: Tensor) -> Tensor:
    """Per-unit distance between two trajectories (Ernoult et al. 2019).

    sqrt( Σ_t (a_t − b_t)² / max(Σ_t a_t², Σ_t b_t²) ), time on axis 0; one value per unit
    (shape ``a.shape[1:]``). Units where both trajectories are identically zero get 0.
    """
    a, b = _pair(a, b)
    num = ((a - b) ** 2).sum(0)
    den = torch.maximum((a * a).sum(0), (b * b).sum(0))
    out = torch.zeros_like(num)
    nz = den > 0
    out[nz] = torch.sqrt(num[nz] / den[nz])
    return out


def sign_agreement(a: Tensor, b: Tensor, rtol: float = 0.0) -> float:
    """Fraction of entries whose signs agree (entries where both are 0 count as agreeing).

    ``b`` is the reference. With ``rtol > 0`` only the entries where ``|b| > rtol · max|b|``
    count: an entry of the reference that is numerically zero (a decayed adjoint, say) has
    no meaningful sign, and its measured counterpart is round-off.
    """
    a, b = _pair(a, b)
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0.0 <= rtol < 1.0:
        raise ValueError(f"rtol: must lie in [0, 1), got {rtol!r}")
    agree = torch.sign(a) == torch.sign(b)
    if rtol > 0.0:
        keep = b.abs() > rtol * b.abs().max()
        if not bool(keep.any()):
            raise ValueError("b: no entry above rtol * max|b|")
        agree = agree[keep]
    return float(agree.double().mean())


def snr(signal: Tensor, noise: Tensor) -> float:
    """RMS of the mean signal / RMS of the noise: ``signal`` the mean response, ``noise`` its fluctuations."""
    signal, noise = signal.flatten(), noise.flatten()
    rms = float(noise.pow(2).mean().sqrt())
    if rms == 0.0:
        raise ValueError("noise: zero noise, SNR undefined")
    return float(signal.pow(2).mean().sqrt()) / rms


def group_snr(samples: Tensor, M: int) -> tuple[float, float, float]:
    """Measured SNR of the mean of ``M`` samples: (snr, signal, noise).

    ``samples`` has shape ``(K, n)`` (K independent draws of an n-vector). The signal is ‖mean‖
    over all K draws, debiased: sqrt(max(‖x̄‖² − tr Σ̂ / K, 0)); the noise is the RMS norm of the
    deviation of a mean of M draws, measured on the R = K // M disjoint groups:
    sqrt(Σ_r ‖x̄_r − x̄‖² / (R − 1)).
    """
    samples = check_tensor("samples", samples, shape=(None, None))
    check_positive_int("M", M)
    K = samples.shape[0]
    R = K // M
    if R < 2:
        raise ValueError(f"M: need at least two groups of M samples, got K = {K} samples for M = {M}")
    mean = samples.mean(0)
    var_tr = float(samples.var(0, unbiased=True).sum())
    signal = max(float(mean @ mean) - var_tr / K, 0.0) ** 0.5
    groups = samples[: R * M].reshape(R, M, -1).mean(1)
    dev = groups - groups.mean(0)
    noise = (float((dev * dev).sum()) / (R - 1)) ** 0.5
    if noise == 0.0:
        raise ValueError("samples: no spread between groups, SNR undefined")
    return signal / noise, signal, noise


def grads_flat(g: list, layer: Optional[int] = None, weights_only: bool = True) -> Tensor:
    """Flatten a per-layer gradient list ``[None, (dW_1, db_1), …]`` (all layers, or one) into a vector."""
    layers = range(1, len(g)) if layer is None else [layer]
    parts = []
    for k in layers:
        parts.append(g[k][0].flatten())
        if not weights_only:
            parts.append(g[k][1].flatten())
    return torch.cat(parts)


def grads_cosine(a: list, b: list, layer: Optional[int] = None) -> float:
    """Cosine between two weight gradients (one layer or all)."""
    return cosine(grads_flat(a, layer), grads_flat(b, layer))


# ---------------------------------------------------------------- slopes
def positive_series(name: str, v: object) -> np.ndarray:
    """A 1-D array of at least two finite, positive numbers (for logarithms)."""
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
    xa, ya = positive_series("x", x), positive_series("y", y)
    if xa.shape != ya.shape:
        raise ValueError(f"x, y: lengths differ, {xa.size} vs {ya.size}")
    if np.ptp(np.log(xa)) == 0.0:
        raise ValueError("x: needs at least two distinct values")
    return float(np.polyfit(np.log(xa), np.log(ya), 1)[0])


def log_rate(t: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``t`` (y ∝ e^{s t} gives s; per step, e^s is the contraction factor)."""
    ta, ya = np.asarray(t, dtype=float), positive_series("y", y)
    if ta.shape != ya.shape:
        raise ValueError(f"t, y: lengths differ, {ta.size} vs {ya.size}")
    if not np.all(np.isfinite(ta)) or np.ptp(ta) == 0.0:
        raise ValueError("t: needs at least two distinct finite values")
    return float(np.polyfit(ta, np.log(ya), 1)[0])


def small_time_exponent(t: Sequence[float], y: Sequence[float]) -> float:
    """Exponent s of ``y ≈ c t^s e^{a t}`` by least squares on ``log y = log c + s log t + a t``.

    The factor e^{a t} absorbs the first correction of a response y = c t^s (1 + a t + O(t²)),
    so s is the small-time power of PAPER.md §4 (c) without a fit range shrinking to zero.
    """
    ta, ya = positive_series("t", t), positive_series("y", y)
    if ta.shape != ya.shape:
        raise ValueError(f"t, y: lengths differ, {ta.size} vs {ya.size}")
    if ta.size < 3 or np.unique(ta).size < 3:
        raise ValueError("t: needs at least three distinct times to fit c, s and a")
    A = np.stack([np.ones_like(ta), np.log(ta), ta], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.log(ya), rcond=None)
    return float(coef[1])


# ---------------------------------------------------------------- samples against a density
def _samples(samples: object, density: object) -> Tensor:
    grid = density.grid
    s = check_tensor("samples", samples, dtype=grid.dtype, device=grid.device).flatten()
    if s.numel() < 2:
        raise ValueError(f"samples: need at least 2 samples, got {s.numel()}")
    return s


def ks_distance(samples: Tensor, density: object) -> float:
    """Kolmogorov–Smirnov distance ``sup_h |F̂_M(h) − F(h)|`` between samples and a density
    (an :class:`ebmlib.Density1D`)."""
    s = torch.sort(_samples(samples, density)).values
    M = s.numel()
    F = density.cdf_at(s)
    i = torch.arange(1, M + 1, dtype=s.dtype, device=s.device)
    return float(torch.maximum(i / M - F, F - (i - 1) / M).max())


def ks_critical(M: int, alpha: float = 0.01) -> float:
    """Asymptotic KS critical value ``sqrt(−ln(α/2)/2) / sqrt(M)`` for M independent samples."""
    if isinstance(M, bool) or not isinstance(M, int) or M < 1:
        raise ValueError(f"M: expected a positive integer, got {M!r}")
    alpha = check_real("alpha", alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must lie in (0, 1), got {alpha}")
    return math.sqrt(-math.log(alpha / 2) / 2) / math.sqrt(M)


def tv_distance(samples: Tensor, density: object, bins: int = 50) -> float:
    """Total variation ``½ Σ_i |p̂_i − p_i|`` between a histogram of ``samples`` and the exact bin masses.

    The bins split the density's grid into ``bins`` equal parts; samples outside it count in the end bins.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    s = _samples(samples, density)
    g = density.grid
    edges = torch.linspace(float(g[0]), float(g[-1]), bins + 1, dtype=g.dtype, device=g.device)
    mass = density.cdf_at(edges)
    p = mass[1:] - mass[:-1]
    idx = torch.bucketize(s, edges[1:-1])
    counts = torch.bincount(idx, minlength=bins).to(g.dtype)
    return float(0.5 * (counts / s.numel() - p).abs().sum())
