"""Measures (ebmlib.measures) on values computed by hand: each definition, not just its shape."""

from __future__ import annotations

import math

import pytest
import torch

import ebmlib as eb

f64 = torch.float64


def t(*v):
    return torch.tensor(v, dtype=f64)


def test_cosine_and_ratio_by_hand():
    assert eb.cosine(t(1, 0), t(1, 1)) == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    assert eb.cosine(t(1, 2), t(-2, -4)) == pytest.approx(-1.0, abs=1e-15)
    assert eb.cosine(t(1, 5, 0), t(1, -5, 3), mask=torch.tensor([True, False, True])) == pytest.approx(
        1 / math.sqrt(10), abs=1e-15)
    assert eb.magnitude_ratio(t(3, 4), t(0, 1)) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="zero vector"):
        eb.cosine(t(0, 0), t(1, 1))
    with pytest.raises(ValueError, match="^b:"):
        eb.magnitude_ratio(t(1, 1), t(0, 0))


def test_trajectory_metric_normalises_by_the_larger_energy():
    # one unit, two steps: a = (3, 0), b = (0, 4): Σ(a−b)² = 25, max(Σa², Σb²) = max(9, 16) = 16
    a, b = t(3, 0).unsqueeze(1), t(0, 4).unsqueeze(1)
    assert float(eb.trajectory_metric(a, b)[0]) == pytest.approx(math.sqrt(25 / 16), abs=1e-15)
    assert float(eb.trajectory_metric(b, a)[0]) == pytest.approx(math.sqrt(25 / 16), abs=1e-15)
    # identical trajectories are at distance 0; a unit that never moves in either gets 0
    z = torch.zeros(3, 2, dtype=f64)
    assert torch.equal(eb.trajectory_metric(z, z), torch.zeros(2, dtype=f64))
    assert float(eb.trajectory_metric(t(1, 2).unsqueeze(1), t(1, 2).unsqueeze(1))[0]) == 0.0


def test_sign_agreement_by_hand():
    assert eb.sign_agreement(t(1, -1, 2, 0), t(2, 1, 3, 0)) == pytest.approx(0.75)
    assert eb.sign_agreement(t(1, -1, -5), t(1, 1, -1e-9), rtol=1e-3) == pytest.approx(0.5)


def test_snr_is_signal_over_noise():
    assert eb.snr(t(2, 2, 2, 2), t(1, -1, 1, -1)) == pytest.approx(2.0)
    assert eb.snr(t(3, 4), t(0.5, 0.5)) == pytest.approx(math.sqrt(12.5) / 0.5)
    with pytest.raises(ValueError, match="^noise:"):
        eb.snr(t(1.0), t(0.0))


def test_group_snr_by_hand():
    # K = 4 draws of a 1-vector, M = 2: groups (1, 3) and (5, 7) with means 2 and 6
    s = t(1, 3, 5, 7).unsqueeze(1)
    snr, signal, noise = eb.group_snr(s, 2)
    var = float(s.var(0, unbiased=True).sum())
    assert signal == pytest.approx(math.sqrt(16 - var / 4))
    assert noise == pytest.approx(math.sqrt(((2 - 4) ** 2 + (6 - 4) ** 2) / 1))
    assert snr == pytest.approx(signal / noise)


def test_grads_flat_and_cosine():
    a = [None, (t(1, 0), t(5)), (t(0, 1), t(7))]
    b = [None, (t(1, 0), t(-5)), (t(0, -1), t(0))]
    assert torch.equal(eb.grads_flat(a), t(1, 0, 0, 1))
    assert torch.equal(eb.grads_flat(a, layer=2, weights_only=False), t(0, 1, 7))
    assert eb.grads_cosine(a, b) == pytest.approx(0.0, abs=1e-15)
    assert eb.grads_cosine(a, b, layer=1) == pytest.approx(1.0)


def test_slopes_by_hand():
    x = [1.0, 2.0, 4.0]
    assert eb.loglog_slope(x, [3 * v**2.5 for v in x]) == pytest.approx(2.5, abs=1e-12)
    assert eb.log_rate([0, 1, 2, 5], [2 * 0.5**v for v in (0, 1, 2, 5)]) == pytest.approx(math.log(0.5), abs=1e-12)
    tt = [0.1, 0.2, 0.3, 0.4]
    assert eb.small_time_exponent(tt, [2 * v**3 * math.exp(0.7 * v) for v in tt]) == pytest.approx(3.0, abs=1e-9)
