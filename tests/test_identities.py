"""The identities of PAPER.md §4–5, in float64 on random networks."""

import pytest
from conftest import random_batch, random_net

import ebmlib as eb

EPS, BETA = 0.5, 1e-6


@pytest.fixture(scope="module")
def five_layer():
    net = random_net([6, 8, 7, 6, 5, 4], "sigmoid", seed=1, gain=2.0, bias_std=0.5)
    x, d, _ = random_batch(net, B=3, seed=11)
    r = eb.relax(net, x, eps=EPS, tol=1e-13)
    assert r.converged
    return net, x, d, r.h


def test_first_arrival(five_layer):
    """(a) δ_k(t) = 0 exactly for t ≤ d; (b) δ_k(d+1) = −β ε^{d+1} g_k to first order."""
    net, x, d, h_star = five_layer
    N = net.N
    g = eb.chain_gradient(net, h_star, d)
    nudged = eb.run(net, h_star, steps=N + 1, eps=EPS, beta=BETA, target=d)
    free = eb.run(net, h_star, steps=N + 1, eps=EPS)
    for k in range(1, N + 1):
        dist = N - k
        delta = nudged.h[k] - free.h[k]
        assert float(delta[: dist + 1].abs().max()) == 0.0, f"layer {k} moved before step {dist + 1}"
        pred = -BETA * EPS ** (dist + 1) * g[k]
        assert eb.cosine(delta[dist + 1], pred) >= 1 - 1e-6
        assert abs(eb.magnitude_ratio(delta[dist + 1], pred) - 1) <= 1e-3


def test_first_arrival_displacement_variant(five_layer):
    """(b′) displace the output by −η g_N once, then let it go: h_k(d) − h_k(d−1) = −η ε^d g_k."""
    net, x, d, h_star = five_layer
    N, eta = net.N, 1e-6
    g = eb.chain_gradient(net, h_star, d)
    start = list(h_star)
    start[N] = h_star[N] - eta * g[N]
    moved = eb.run(net, start, steps=N, eps=EPS)
    free = eb.run(net, h_star, steps=N, eps=EPS)
    for k in range(1, N):
        dist = N - k
        change = (moved.h[k][dist] - moved.h[k][dist - 1]) - (free.h[k][dist] - free.h[k][dist - 1])
        pred = -eta * EPS**dist * g[k]
        assert eb.cosine(change, pred) >= 1 - 1e-6
        assert abs(eb.magnitude_ratio(change, pred) - 1) <= 1e-3


def test_whole_trajectory_matches_adjoint_and_bptt(five_layer):
    """lim (h_{t+1} − h_t)/β = −ε S̄_t for every t, and S̄_t is the BPTT gradient."""
    net, x, d, h_star = five_layer
    steps = 12
    S = eb.adjoint(net, h_star, d, steps, EPS)
    Sb = eb.bptt(net, h_star, d, steps, EPS)
    nudged = eb.run(net, h_star, steps=steps, eps=EPS, beta=BETA, target=d)
    free = eb.run(net, h_star, steps=steps, eps=EPS)
    for k in range(1, net.N + 1):
        meas = ((nudged.h[k][1:] - nudged.h[k][:-1]) - (free.h[k][1:] - free.h[k][:-1])) / BETA
        pred = -EPS * S[k]
        assert float((meas - pred).norm() / pred.norm()) <= 1e-3
        assert float((Sb[k] - S[k]).norm() / S[k].norm()) <= 1e-3


def test_fixed_point_response_is_implicit_gradient(five_layer):
    net, x, d, h_star = five_layer
    u = eb.implicit_gradient(net, h_star, d)
    rb = eb.relax(net, x, h_star, eps=EPS, beta=BETA, target=d, tol=1e-15, max_steps=5000)
    for k in range(1, net.N + 1):
        resp = (rb.h[k] - h_star[k]) / BETA
        assert float((resp - u[k]).norm() / u[k].norm()) <= 1e-3


def test_arrival_module_matches(five_layer):
    net, x, d, h_star = five_layer
    fa = eb.first_arrival(net, h_star, d, eps=EPS, beta=BETA)
    assert all(fa.silent[1:])
    assert fa.worst_cos() >= 1 - 1e-6 and fa.worst_ratio_error() <= 1e-3
    da = eb.displaced_arrival(net, h_star, d, eps=EPS, eta=1e-6)
    assert all(da.silent[1:]) and da.worst_cos() >= 1 - 1e-6 and da.worst_ratio_error() <= 1e-3
    with pytest.raises(ValueError, match="beta"):
        eb.first_arrival(net, h_star, d, eps=EPS, beta=0.0)
