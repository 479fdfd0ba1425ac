"""Comparison measures between a measured signal and its prediction."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cosine", "magnitude_ratio", "trajectory_metric", "sign_agreement", "snr"]


def _pair(a: Tensor, b: Tensor, name: str = "a, b") -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name}: expected tensors")
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def cosine(a: Tensor, b: Tensor) -> float:
    """cos(a, b) = a·b / (‖a‖‖b‖) over all entries (flattened)."""
    a, b = _pair(a, b)
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

    sqrt( Σ_t (a_t − b_t)² / max(Σ_t a_t², Σ_t b_t²) ), time on axis 0;
    returns one value per unit (shape ``a.shape[1:]``). Units where both
    trajectories are identically zero get 0.
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
    """‖mean signal‖ / RMS noise: ``signal`` is the mean response, ``noise`` the fluctuations."""
    signal, noise = signal.flatten(), noise.flatten()
    rms = float(noise.pow(2).mean().sqrt())
    if rms == 0.0:
        raise ValueError("noise: zero noise, SNR undefined")
    return float(signal.pow(2).mean().sqrt()) / rms
