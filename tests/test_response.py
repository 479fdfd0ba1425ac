"""Linear response along the whole nudged trajectory: neurons and weights against BPTT."""

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb

EPS = 0.5
K = 12


@pytest.fixture(scope="module")
def fixed():
    net = random_net([5, 6, 4, 3], "sigmoid", seed=3, gain=2.5, bias_std=0.3)
    x, d, _ = random_batch(net, B=3, seed=4)
    h = eb.relax(net, x, eps=EPS, tol=1e-14, max_steps=20000).h
    return net, x, d, h


def test_state_response_is_minus_eps_adjoint(fixed):
    net, _, d, h = fixed
    r = eb.state_response(net, h, d, steps=K, eps=EPS, beta=1e-7)
    S = eb.adjoint(net, h, d, K, EPS)
    for k in range(1, net.N + 1):
        assert r[k].shape == S[k].shape
        assert float(eb.trajectory_metric(r[k], -EPS * S[k]).max()) < 1e-5
        # silent before the arrival (exact zeros)
        assert torch.all(r[k][: net.N - k] == 0)


def test_ep_steps_match_bptt_steps(fixed):
    net, _, d, h = fixed
    beta = 1e-6  # small enough for O(beta) < 1e-4, large enough for float64 rounding
    nudged = eb.run(net, h, steps=K, eps=EPS, beta=beta, target=d)
    free = eb.run(net, h, steps=K, eps=EPS)
    ep = eb.ep_param_steps(net, nudged, beta, free=free)
    bp = eb.bptt_param_steps(net, h, d, steps=K, eps=EPS)
    for k in range(1, net.N + 1):
        for i in (0, 1):
            assert ep[k][i].shape == bp[k][i].shape
            assert float(eb.trajectory_metric(ep[k][i], bp[k][i]).max()) < 1e-4


def test_bptt_param_steps_sum_to_finite_differences(fixed):
    net, _, d, h = fixed
    bp = eb.bptt_param_steps(net, h, d, steps=K, eps=EPS)

    def cost(n):
        return float(n.cost(eb.run(n, h, steps=K, eps=EPS).at(K), d).mean())

    for k, (i, j) in [(1, (0, 1)), (2, (3, 2)), (3, (1, 0))]:
        step = 1e-6
        plus, minus = net.clone(), net.clone()
        plus.W[k][i, j] += step
        minus.W[k][i, j] -= step
        fd = (cost(plus) - cost(minus)) / (2 * step)
        assert abs(fd - float(bp[k][0][:, i, j].sum())) <= 1e-8 + 1e-5 * abs(fd)


def test_ep_steps_telescope_to_one_sided_ep(fixed):
    net, _, d, h = fixed
    beta = 1e-3
    nudged = eb.run(net, h, steps=K, eps=EPS, beta=beta, target=d)
    steps = eb.ep_param_steps(net, nudged, beta)
    one = eb.ep_gradient(net, h, nudged.at(K), beta)
    for k in range(1, net.N + 1):
        assert torch.allclose(steps[k][0].sum(0), one[k][0], atol=1e-12)
        assert torch.allclose(steps[k][1].sum(0), one[k][1], atol=1e-12)


def test_validation_names_the_argument(fixed):
    net, _, d, h = fixed
    nudged = eb.run(net, h, steps=3, eps=EPS, beta=0.1, target=d)
    with pytest.raises(ValueError, match="beta"):
        eb.state_response(net, h, d, steps=3, eps=EPS, beta=0.0)
    with pytest.raises(ValueError, match="steps"):
        eb.state_response(net, h, d, steps=0, eps=EPS, beta=0.1)
    with pytest.raises(TypeError, match="nudged"):
        eb.ep_param_steps(net, [h], 0.1)
    with pytest.raises(ValueError, match="free"):
        eb.ep_param_steps(net, nudged, 0.1, free=eb.run(net, h, steps=2, eps=EPS))
    with pytest.raises(ValueError, match="eps"):
        eb.bptt_param_steps(net, h, d, steps=3, eps=1.5)
    with pytest.raises(ValueError, match="target"):
        eb.bptt_param_steps(net, h, d[:1], steps=3, eps=EPS)
