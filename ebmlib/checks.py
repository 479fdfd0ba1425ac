"""Argument validation shared by every public function.

Every error names the argument it is about, so that a reader who passes a
wrong shape, dtype, device or value learns which one at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "DivergenceError",
    "check_tensor",
    "check_finite",
    "check_eps",
    "check_temperature",
    "check_real",
    "check_positive_int",
    "check_nonzero_beta",
    "check_bool",
    "check_generator",
    "resolve_clip",
    "resolve_device",
]


class DivergenceError(RuntimeError):
    """Raised when a state becomes non-finite or leaves ``max_abs``.

    ``step`` is the first step (counted from 1) whose result diverged.
    """

    def __init__(self, step: int, layer: int, detail: str):
        self.step = step
        self.layer = layer
        super().__init__(f"dynamics diverged at step {step} (layer h_{layer}: {detail})")


def check_tensor(
    name: str,
    t: object,
    *,
    shape: Sequence[int | None] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    finite: bool = True,
) -> Tensor:
    """Check that ``t`` is a tensor of the given shape (None = any), dtype, device."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if shape is not None:
        ok = t.dim() == len(shape) and all(
            s is None or s == ts for s, ts in zip(shape, t.shape)
        )
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    if finite:
        check_finite(name, t)
    return t


def check_finite(name: str, t: Tensor) -> None:
    """Raise if ``t`` holds NaN or inf (one host sync; not for hot loops).

    A finite sum proves every entry finite (a NaN or inf would make it NaN or inf), and costs a
    tenth of the elementwise ``isfinite`` test; that test runs only when the sum is not finite
    (a NaN or inf, or finite entries whose sum overflows).
    """
    if not t.is_complex() and math.isfinite(float(t.detach().sum())):
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def check_real(name: str, v: object) -> float:
    """A finite real number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {v}")
    return float(v)


def check_eps(eps: object, name: str = "eps") -> float:
    """The Euler step ε must lie in (0, 1]."""
    e = check_real(name, eps)
    if not 0.0 < e <= 1.0:
        raise ValueError(f"{name}: the step ε must lie in (0, 1], got {e}")
    return e


def check_temperature(T: object, name: str = "T") -> float:
    """The temperature must be ≥ 0."""
    t = check_real(name, T)
    if t < 0.0:
        raise ValueError(f"{name}: the temperature must be >= 0, got {t}")
    return t


def check_positive_int(name: str, v: object, *, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {v}")
    return v


def check_nonzero_beta(beta: object, name: str = "beta") -> float:
    """A finite, non-zero nudging strength β (a nudge of zero strength carries no signal)."""
    b = check_real(name, beta)
    if b == 0.0:
        raise ValueError(f"{name}: must be non-zero to nudge the output")
    return b


def check_bool(name: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name}: expected bool, got {type(v).__name__}")
    return v


def check_generator(name: str, gen: object, device: torch.device | None = None) -> torch.Generator:
    """An explicit ``torch.Generator`` (seeds are parameters), on ``device``'s type when given."""
    if not isinstance(gen, torch.Generator):
        raise TypeError(f"{name}: expected torch.Generator, got {type(gen).__name__}")
    if device is not None and gen.device.type != torch.device(device).type:
        raise ValueError(f"{name}: on device {gen.device}, the network is on {device}")
    return gen


def resolve_clip(clip: object, default: bool) -> bool:
    """``clip=None`` means the activation's default (the hard sigmoid clips); otherwise a bool."""
    if clip is None:
        return default
    return check_bool("clip", clip)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return dev
