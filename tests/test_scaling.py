"""Scaling laws of the first arrival (ebmlib.scaling) and the clipped case (ebmlib.arrival)."""

import math

import numpy as np
import pytest
import torch
from conftest import hard_sigmoid_fixed_point, random_batch, random_net

import ebmlib as eb

EPS = 0.5


@pytest.fixture(scope="module")
def sigmoid_case():
    net = random_net([5, 6, 5, 4], "sigmoid", seed=3, gain=2.0, bias_std=0.5)
    x, d, _ = random_batch(net, B=3, seed=4)
    r = eb.relax(net, x, eps=EPS, tol=1e-15, check_every=1)
    assert r.converged
    return net, x, d, r.h


@pytest.fixture(scope="module")
def hard_case():
    return hard_sigmoid_fixed_point(EPS)


def test_loglog_slope_and_exponent_recover_powers():
    x = np.geomspace(0.1, 1.0, 7)
    assert eb.loglog_slope(x, 3.0 * x**2.5) == pytest.approx(2.5, abs=1e-12)
    t = np.geomspace(0.05, 0.3, 9)
    y = 0.7 * t**4 * np.exp(-1.3 * t)
    assert eb.small_time_exponent(t, y) == pytest.approx(4.0, abs=1e-10)


def test_slope_validation_names_arguments():
    with pytest.raises(ValueError, match="y"):
        eb.loglog_slope([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="x"):
        eb.loglog_slope([1.0], [1.0])
    with pytest.raises(ValueError, match="x, y"):
        eb.loglog_slope([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="t"):
        eb.small_time_exponent([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="y"):
        eb.small_time_exponent([1.0, 2.0, 3.0], [1.0, float("nan"), 2.0])


def test_eps_slope_is_d_plus_one(sigmoid_case):
    net, x, d, h = sigmoid_case
    eps_list = [0.1, 0.2, 0.4, 0.8]
    for k in range(1, net.N + 1):
        norms = [float(eb.first_arrival(net, h, d, eps=e, beta=1e-4).arrival[k].norm()) for e in eps_list]
        assert abs(eb.loglog_slope(eps_list, norms) - (net.N - k + 1)) <= 0.01


def test_continuous_response_powers_and_coefficients(sigmoid_case):
    net, x, d, h = sigmoid_case
    N, e0 = net.N, 1e-3
    times = np.round(np.geomspace(0.05, 0.3, 8) / e0) * e0
    g = eb.chain_gradient(net, h, d)
    resp = eb.continuous_response(net, h, times=times, eps=e0, beta=1.0, target=d)
    for k in range(1, N + 1):
        dist = N - k
        norms = [float(resp[k][i].norm()) for i in range(len(times))]
        assert abs(eb.small_time_exponent(times, norms) - (dist + 1)) <= 0.05
        # direction: along −g_k at small t
        assert eb.cosine(resp[k][0], -g[k]) >= 0.99
        pred = times[0] ** (dist + 1) / math.factorial(dist + 1) * float(g[k].norm())
        assert 0.85 <= norms[0] / pred <= 1.05
    start = list(h)
    start[N] = h[N] - 0.1 * g[N]
    disp = eb.continuous_response(net, h, times=times, eps=e0, start=start)
    for k in range(1, N):
        norms = [float(disp[k][i].norm()) for i in range(len(times))]
        assert abs(eb.small_time_exponent(times, norms) - (N - k)) <= 0.05


def test_continuous_response_validation(sigmoid_case):
    net, x, d, h = sigmoid_case
    with pytest.raises(ValueError, match="times"):
        eb.continuous_response(net, h, times=[0.0105, 0.02], eps=1e-2, beta=1.0, target=d)
    with pytest.raises(ValueError, match="times"):
        eb.continuous_response(net, h, times=[0.01, -0.02], eps=1e-2, beta=1.0, target=d)
    with pytest.raises(ValueError, match="eps"):
        eb.continuous_response(net, h, times=[0.1, 0.2], eps=0.0, beta=1.0, target=d)
    with pytest.raises(ValueError, match="target"):
        eb.continuous_response(net, h, times=[0.1, 0.2], eps=0.1, beta=1.0)


def test_pinned_units_do_not_move_and_one_sided_gradient_is_exact(hard_case):
    net, x, d, h = hard_case
    pinned = eb.pinned_units(net, h)
    assert sum(int(p.sum()) for p in pinned[1:]) > 0, "the case should have pinned units"
    fa = eb.first_arrival(net, h, d, eps=EPS, beta=1e-6, mask="pinned")
    for k in range(1, net.N + 1):
        if pinned[k].any():
            assert float(fa.delta[k][:, pinned[k]].abs().max()) == 0.0
    assert fa.worst_cos() >= 1 - 1e-9 and fa.worst_ratio_error() <= 1e-5
    # without pinned units the one-sided gradient is the chain gradient
    g_one = eb.chain_gradient(net, h, d, mask="pinned", clip=False)
    g = eb.chain_gradient(net, h, d)
    for k in range(1, net.N + 1):
        assert torch.allclose(g_one[k], g[k], rtol=1e-12, atol=1e-15)
    assert not any(bool(p.any()) for p in eb.pinned_units(net, h, clip=False)[1:])


def test_one_sided_matches_chain_for_smooth_activation(sigmoid_case):
    net, x, d, h = sigmoid_case
    g_one, g = eb.chain_gradient(net, h, d, mask="pinned"), eb.chain_gradient(net, h, d)
    for k in range(1, net.N + 1):
        assert torch.allclose(g_one[k], g[k], rtol=1e-12, atol=1e-15)
    with pytest.raises(TypeError, match="clip"):
        eb.pinned_units(net, h, clip="yes")
    with pytest.raises(TypeError, match="one_sided"):
        eb.first_arrival(net, h, d, eps=EPS, beta=1e-6, one_sided=1)
    with pytest.raises(ValueError, match="target"):
        eb.chain_gradient(net, h, d[:, :2], mask="pinned")
