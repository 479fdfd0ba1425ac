"""Checks for chapter 10 (STDP): the pairing window of a unit without reset."""

from __future__ import annotations

import numpy as np
import torch

from ..spiking import SpikingNeuron, TraceRule, window_prediction
from .verdict import Verdict, compare

__all__ = ["check_window"]


def check_window(answer: object, lags: object, neuron: SpikingNeuron, rule: TraceRule) -> Verdict:
    """Is ``answer`` the predicted window ``W(Δt)`` of the pairing protocol at ``lags`` (ms steps)?

    The reference is :func:`ebmlib.window_prediction`: ``A K(Δt)`` for a unit without reset.
    """
    if not isinstance(neuron, SpikingNeuron):
        raise TypeError(f"neuron: expected an ebmlib.SpikingNeuron, got {type(neuron).__name__}")
    if not isinstance(rule, TraceRule):
        raise TypeError(f"rule: expected an ebmlib.TraceRule, got {type(rule).__name__}")
    arr = np.asarray(lags)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lags: expected a non-empty 1-d sequence of integers, got {lags!r}")
    ref = torch.as_tensor(window_prediction(arr, neuron, rule), dtype=torch.float64)
    return compare("the window", answer, ref, rtol=1e-6, atol=1e-9 * float(ref.abs().max()),
                   hint="W(Δt) = A K(Δt): K is (1 − q₊) q₊^(Δt−1) / (τ₊ + τ₋) for Δt ≥ 1, "
                        "−(1 − q₋) q₋^(|Δt|−1) / (τ₊ + τ₋) for Δt ≤ −1 and 0 at Δt = 0.")
