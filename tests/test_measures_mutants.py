"""Measures (ebmlib.measures): error messages matched in full, boundaries of every check, and values
computed by hand where an operator or an axis matters (the cases mutation testing found unchecked)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_raises_exactly

import ebmlib as eb
from ebmlib.langevin import Density1D
from ebmlib.measures import positive_series

f64 = torch.float64


def t(*v):
    return torch.tensor(v, dtype=f64)


def uniform(n=5):
    """The uniform density on [0, 1] on an n-point grid (cdf(h) = h, exact on dyadic points)."""
    grid = torch.linspace(0.0, 1.0, n, dtype=f64)
    return Density1D(grid, torch.ones_like(grid), grid.clone())


META_MASK = torch.ones(3, dtype=torch.bool, device="meta")

# (callable, exception type, full message)
ERRORS = [
    # tensors and shapes (the default name "a, b" of every pairwise measure)
    (lambda: eb.cosine(t(1, 2), [1.0, 2.0]), TypeError, "a, b: expected tensors"),
    (lambda: eb.cosine([1.0, 2.0], t(1, 2)), TypeError, "a, b: expected tensors"),
    (lambda: eb.cosine(t(1, 2), t(1, 2, 3)), ValueError, "a, b: shapes differ, (2,) vs (3,)"),
    (lambda: eb.cosine(t(0, 0), t(1, 1)), ValueError, "a, b: cosine of a zero vector is undefined"),
    # the mask: shape, dtype, device
    (lambda: eb.cosine(torch.eye(2, dtype=f64), torch.eye(2, dtype=f64), mask=torch.tensor([True, False])),
     ValueError, "mask: expected shape (2, 2), got (2,)"),
    (lambda: eb.cosine(t(1, 2, 3), t(1, 2, 3), mask=t(1, 0, 1)), TypeError,
     "mask: expected dtype torch.bool, got torch.float64"),
    (lambda: eb.cosine(t(1, 2, 3), t(1, 2, 3), mask=META_MASK), ValueError,
     "mask: expected device cpu, got meta"),
    # sign agreement
    (lambda: eb.sign_agreement(t(1), t(1), rtol="x"), ValueError, "rtol: must lie in [0, 1), got 'x'"),
    (lambda: eb.sign_agreement(t(1), t(1), rtol=False), ValueError, "rtol: must lie in [0, 1), got False"),
    (lambda: eb.sign_agreement(t(1), t(1), rtol=True), ValueError, "rtol: must lie in [0, 1), got True"),
    (lambda: eb.sign_agreement(t(1), t(1), rtol=1.0), ValueError, "rtol: must lie in [0, 1), got 1.0"),
    (lambda: eb.sign_agreement(t(1), t(1), rtol=1.5), ValueError, "rtol: must lie in [0, 1), got 1.5"),
    (lambda: eb.sign_agreement(t(1), t(1), rtol=-0.1), ValueError, "rtol: must lie in [0, 1), got -0.1"),
    (lambda: eb.sign_agreement(t(1, 2), t(0, 0), rtol=0.5), ValueError, "b: no entry above rtol * max|b|"),
    # SNRs
    (lambda: eb.snr(t(1.0), t(0.0)), ValueError, "noise: zero noise, SNR undefined"),
    (lambda: eb.group_snr(t(1, 2, 3, 4), 2), ValueError, "samples: expected shape (*, *), got (4,)"),
    (lambda: eb.group_snr([[1.0], [2.0]], 1), TypeError, "samples: expected a torch.Tensor, got list"),
    (lambda: eb.group_snr(torch.zeros(4, 2, dtype=f64), 0), ValueError, "M: must be >= 1, got 0"),
    (lambda: eb.group_snr(torch.zeros(4, 2, dtype=f64), 2.0), TypeError, "M: expected an integer, got float"),
    (lambda: eb.group_snr(torch.zeros(3, 2, dtype=f64), 2), ValueError,
     "M: need at least two groups of M samples, got K = 3 samples for M = 2"),
    (lambda: eb.group_snr(torch.ones(4, 2, dtype=f64), 2), ValueError,
     "samples: no spread between groups, SNR undefined"),
    # positive series and slopes
    (lambda: eb.loglog_slope([1.0], [1.0, 2.0]), ValueError,
     "x: expected a 1-D sequence of at least 2 numbers, got shape (1,)"),
    (lambda: eb.loglog_slope([1.0, 2.0], [1.0]), ValueError,
     "y: expected a 1-D sequence of at least 2 numbers, got shape (1,)"),
    (lambda: eb.loglog_slope([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0]), ValueError,
     "x: expected a 1-D sequence of at least 2 numbers, got shape (2, 2)"),
    (lambda: eb.loglog_slope([1.0, 2.0], [0.0, 1.0]), ValueError, "y: every value must be > 0 for a logarithm"),
    (lambda: eb.loglog_slope([1.0, float("inf")], [1.0, 2.0]), ValueError, "x: contains NaN or inf"),
    (lambda: eb.loglog_slope([1.0, 2.0, 4.0], [1.0, 2.0]), ValueError, "x, y: lengths differ, 3 vs 2"),
    (lambda: eb.loglog_slope([2.0, 2.0], [1.0, 2.0]), ValueError, "x: needs at least two distinct values"),
    (lambda: eb.log_rate([0.0, 1.0], [1.0]), ValueError,
     "y: expected a 1-D sequence of at least 2 numbers, got shape (1,)"),
    (lambda: eb.log_rate([0.0, 1.0, 2.0], [1.0, 2.0]), ValueError, "t, y: lengths differ, 3 vs 2"),
    (lambda: eb.log_rate([1.0, 1.0], [1.0, 2.0]), ValueError, "t: needs at least two distinct finite values"),
    (lambda: eb.log_rate([0.0, float("nan")], [1.0, 2.0]), ValueError,
     "t: needs at least two distinct finite values"),
    (lambda: eb.log_rate([0.0, None], [1.0, 2.0]), ValueError, "t: needs at least two distinct finite values"),
    (lambda: eb.small_time_exponent([1.0], [1.0, 2.0]), ValueError,
     "t: expected a 1-D sequence of at least 2 numbers, got shape (1,)"),
    (lambda: eb.small_time_exponent([1.0, 2.0, 3.0], [1.0]), ValueError,
     "y: expected a 1-D sequence of at least 2 numbers, got shape (1,)"),
    (lambda: eb.small_time_exponent([1.0, 2.0, 3.0], [1.0, 2.0]), ValueError, "t, y: lengths differ, 3 vs 2"),
    (lambda: eb.small_time_exponent([1.0, 2.0], [1.0, 2.0]), ValueError,
     "t: needs at least three distinct times to fit c, s and a"),
    (lambda: eb.small_time_exponent([1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]), ValueError,
     "t: needs at least three distinct times to fit c, s and a"),
    # samples against a density
    (lambda: eb.ks_distance(t(0.5), uniform()), ValueError, "samples: need at least 2 samples, got 1"),
    (lambda: eb.ks_distance(torch.tensor([0.1, 0.2]), uniform()), TypeError,
     "samples: expected dtype torch.float64, got torch.float32"),
    (lambda: eb.ks_distance(torch.zeros(2, dtype=f64, device="meta"), uniform()), ValueError,
     "samples: expected device cpu, got meta"),
    (lambda: eb.tv_distance(torch.zeros(2, dtype=f64, device="meta"), uniform()), ValueError,
     "samples: expected device cpu, got meta"),
    (lambda: eb.ks_critical(0), ValueError, "M: expected a positive integer, got 0"),
    (lambda: eb.ks_critical(1.5), ValueError, "M: expected a positive integer, got 1.5"),
    (lambda: eb.ks_critical(True), ValueError, "M: expected a positive integer, got True"),
    (lambda: eb.ks_critical(10, "x"), TypeError, "alpha: expected a real number, got str"),
    (lambda: eb.ks_critical(10, 0.0), ValueError, "alpha: must lie in (0, 1), got 0.0"),
    (lambda: eb.ks_critical(10, 1.0), ValueError, "alpha: must lie in (0, 1), got 1.0"),
    (lambda: eb.tv_distance(t(0.1, 0.2), uniform(), bins=0), ValueError,
     "bins: expected a positive integer, got 0"),
    (lambda: eb.tv_distance(t(0.1, 0.2), uniform(), bins=True), ValueError,
     "bins: expected a positive integer, got True"),
    (lambda: eb.tv_distance(t(0.1, 0.2), uniform(), bins=2.5), ValueError,
     "bins: expected a positive integer, got 2.5"),
]


@pytest.mark.parametrize("call, exc, msg", ERRORS, ids=[m for _, _, m in ERRORS])
def test_error_messages_in_full(call, exc, msg):
    assert_raises_exactly(call, exc, msg)


def test_trajectory_metric_per_unit_and_small_energies():
    # two steps, two units; per unit: num = Σ_t (a − b)², den = max(Σ_t a², Σ_t b²)
    a = t(0.3, 2.0, 0.0, 0.0).reshape(2, 2)
    b = t(0.0, 0.0, 0.4, 1.0).reshape(2, 2)
    # unit 0: num = 0.09 + 0.16, den = max(0.09, 0.16) (below 1);  unit 1: num = 4 + 1, den = max(4, 1)
    want = t(math.sqrt(0.25 / 0.16), math.sqrt(5.0 / 4.0))
    assert torch.allclose(eb.trajectory_metric(a, b), want, rtol=0, atol=1e-14)
    assert torch.allclose(eb.trajectory_metric(b, a), want, rtol=0, atol=1e-14)


def test_sign_agreement_threshold_is_strict_and_relative():
    # rtol · max|b| = 0.5 · 2 = 1: the entries with |b| = 1 are not above it, only the first counts
    a, b = t(1, -1, 1), t(2, 1, -1)
    assert eb.sign_agreement(a, b, rtol=0.5) == 1.0
    assert eb.sign_agreement(a, b) == pytest.approx(1 / 3, abs=1e-15)
    # a small rtol keeps everything above rtol · max|b| = 0.3 (with max|b| = 3: 0.1 · 3)
    assert eb.sign_agreement(t(1, 1, 1), t(3, -0.5, -0.2), rtol=0.1) == pytest.approx(0.5, abs=1e-15)


def test_group_snr_several_components_and_unit_noise():
    # K = 4 draws of a 2-vector, M = 2: group means (0, 0) and (1, 1), deviations ±(½, ½): noise = 1 exactly
    s = t(0, 0, 0, 0, 1, 1, 1, 1).reshape(4, 2)
    snr, signal, noise = eb.group_snr(s, 2)
    # per-component unbiased variance of (0, 0, 1, 1) is 1/3, trace 2/3; ‖mean‖² = ½
    assert noise == 1.0
    assert signal == pytest.approx(math.sqrt(0.5 - (2 / 3) / 4), abs=1e-15)
    assert snr == pytest.approx(signal, abs=1e-15)


def test_positive_series_returns_floats():
    a = positive_series("x", [1, 2, 3])
    assert a.dtype == np.float64
    assert np.array_equal(a, [1.0, 2.0, 3.0])


def test_slopes_at_exact_boundaries():
    # log-range of x exactly 1 (x = 1, e) and time range exactly 1 (t = 0, 1) are fine
    assert eb.loglog_slope([1.0, math.e], [1.0, math.e**2]) == pytest.approx(2.0, abs=1e-12)
    assert eb.log_rate([0, 1], [1.0, math.e**-0.5]) == pytest.approx(-0.5, abs=1e-12)
    # three distinct times determine c, s and a exactly
    tt = [1.0, 2.0, 3.0]
    y = [2 * v**1.5 * math.exp(0.3 * v) for v in tt]
    assert eb.small_time_exponent(tt, y) == pytest.approx(1.5, abs=1e-10)


def test_ks_distance_by_hand():
    d = uniform()  # F(h) = h on [0, 1]
    # M = 2 is enough: sorted (0.25, 0.75): max(i/M − F, F − (i−1)/M) = max(¼, ¼, ¼, ¼) = ¼
    assert eb.ks_distance(t(0.75, 0.25), d) == 0.25
    # M = 3, (0, 0.875, 0.9375): the largest gap is F(0.875) − 1/3, just after the first step
    assert eb.ks_distance(t(0.0, 0.875, 0.9375), d) == pytest.approx(0.875 - 1 / 3, abs=1e-15)
    # M = 3, (0, 0.5, 0.75): the largest gap is 1/3 − F(0) = 1/3 (in float64)
    assert eb.ks_distance(t(0.0, 0.5, 0.75), d) == pytest.approx(1 / 3, abs=1e-15)


def test_ks_critical_values():
    assert eb.ks_critical(100) == pytest.approx(math.sqrt(-math.log(0.005) / 2) / 10, abs=1e-15)
    assert eb.ks_critical(1, 0.05) == pytest.approx(math.sqrt(math.log(40) / 2), abs=1e-15)
    # the classical 5 % value 1.358 / sqrt(M)
    assert eb.ks_critical(4, 0.05) == pytest.approx(1.358 / 2, abs=1e-3)


def test_tv_distance_by_hand():
    d = uniform()
    s = t(0.1, 0.3, 0.6, 0.9, 0.9, 0.9)
    # 4 bins of mass ¼: counts (1, 1, 1, 3) / 6 → ½ (3 · 1/12 + 1/4) = ¼
    assert eb.tv_distance(s, d, bins=4) == pytest.approx(0.25, abs=1e-15)
    # 2 bins: (2, 4) / 6 against (½, ½) → ½ (1/6 + 1/6) = 1/6
    assert eb.tv_distance(s, d, bins=2) == pytest.approx(1 / 6, abs=1e-15)
    # 1 bin holds everything
    assert eb.tv_distance(s, d, bins=1) == pytest.approx(0.0, abs=1e-15)
    # default: 50 bins of mass 1/50; everything in the first → ½ (49/50 + 49/50) = 49/50
    assert eb.tv_distance(t(0.01, 0.01), d) == pytest.approx(0.98, abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ks_and_tv_on_cuda_match_cpu():
    d = uniform()
    dc = Density1D(d.grid.cuda(), d.p.cuda(), d.cdf.cuda())
    s = t(0.1, 0.3, 0.6, 0.9, 0.9, 0.9)
    assert eb.ks_distance(s.cuda(), dc) == pytest.approx(eb.ks_distance(s, d), abs=1e-15)
    assert eb.tv_distance(s.cuda(), dc, bins=4) == pytest.approx(eb.tv_distance(s, d, bins=4), abs=1e-15)
