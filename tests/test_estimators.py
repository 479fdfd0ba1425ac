"""Parameter-gradient estimators against the exact gradient through the fixed point."""

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb

EPS = 0.5


@pytest.fixture(scope="module")
def fixed():
    net = random_net([5, 6, 4, 3], "sigmoid", seed=3, gain=1.5, bias_std=0.3)
    x, d, _ = random_batch(net, B=4, seed=5)
    h = eb.relax(net, x, eps=EPS, tol=1e-14, max_steps=20000).h
    return net, x, d, h


def test_implicit_param_gradient_matches_finite_differences(fixed):
    net, x, d, h = fixed
    g = eb.implicit_param_gradient(net, h, d)

    def J(n):
        hs = eb.relax(n, x, h, eps=EPS, tol=1e-14, max_steps=20000).h
        return float(n.cost(hs, d).mean())

    for k, (i, j) in [(1, (0, 0)), (2, (3, 1)), (3, (2, 2))]:
        step = 1e-5
        plus, minus = net.clone(), net.clone()
        plus.W[k][i, j] += step
        minus.W[k][i, j] -= step
        fd = (J(plus) - J(minus)) / (2 * step)
        assert abs(fd - float(g[k][0][i, j])) <= 1e-7 + 1e-5 * abs(fd)


def test_ep_one_sided_and_symmetric_converge_with_orders_1_and_2(fixed):
    net, x, d, h = fixed
    exact = eb.grads_flat(eb.implicit_param_gradient(net, h, d), weights_only=False)
    errs1, errs2, betas = [], [], [1e-1, 1e-2]
    for beta in betas:
        hp = eb.relax(net, x, h, eps=EPS, beta=beta, target=d, tol=1e-14, max_steps=20000).h
        hm = eb.relax(net, x, h, eps=EPS, beta=-beta, target=d, tol=1e-14, max_steps=20000).h
        g1 = eb.grads_flat(eb.ep_gradient(net, h, hp, beta), weights_only=False)
        g2 = eb.grads_flat(eb.ep_symmetric_gradient(net, hp, hm, beta), weights_only=False)
        errs1.append(float((g1 - exact).norm()))
        errs2.append(float((g2 - exact).norm()))
    # one decade of beta: the one-sided error drops ~10x, the symmetric ~100x
    assert 7 < errs1[0] / errs1[1] < 13
    assert 70 < errs2[0] / errs2[1] < 130


def test_tied_rule_telescopes_to_ep(fixed):
    net, x, d, h = fixed
    beta = 1e-3
    nudged = eb.run(net, h, steps=30, eps=EPS, beta=beta, target=d)
    tied = eb.plasticity_gradient(net, nudged, beta, "tied")
    ep = eb.ep_gradient(net, h, nudged.at(30), beta)
    for k in range(1, net.N + 1):
        assert torch.allclose(tied[k][0], ep[k][0], atol=1e-12)


def test_first_arrival_bengio_rule_vs_chain_gradient(fixed):
    """At first arrival, the Bengio rule ρ(h_{k-1}) Δh_k equals ρ(h_{k-1}) (−β ε^{d+1} g_k): it lacks ρ'."""
    net, x, d, h = fixed
    beta, N = 1e-6, net.N
    nudged = eb.run(net, h, steps=N + 1, eps=EPS, beta=beta, target=d)
    free = eb.run(net, h, steps=N + 1, eps=EPS)
    g = eb.chain_gradient(net, h, d)
    for k in range(1, N + 1):
        dist = N - k
        rule = eb.plasticity_gradient(net, nudged, beta, "bengio", free=free, t0=dist, t1=dist + 1)
        r_prev = x if k == 1 else net.activation.rho(h[k - 1])
        expect = EPS ** (dist + 1) * (r_prev.T @ g[k]) / x.shape[0]
        assert torch.allclose(rule[k][0], expect, rtol=1e-3, atol=1e-12)


def test_validation():
    net = random_net([3, 2])
    x, d, h = random_batch(net)
    tr = eb.run(net, h, steps=2, eps=0.5, beta=0.1, target=d)
    with pytest.raises(ValueError, match="rule"):
        eb.plasticity_gradient(net, tr, 0.1, "hebb")
    with pytest.raises(ValueError, match="beta"):
        eb.ep_gradient(net, h, h, 0.0)
    with pytest.raises(ValueError, match="t0, t1"):
        eb.plasticity_gradient(net, tr, 0.1, "tied", t0=2, t1=1)


def test_masked_implicit_param_gradient_is_the_true_gradient_of_the_clipped_network():
    """With pinned units, only ``mask="pinned"`` gives dJ/dθ of the clipped hard-sigmoid network."""
    net = random_net([6, 8, 5], "hard_sigmoid", seed=3, gain=2.0, bias_std=0.5, bias_mean=0.3)
    x, d, _ = random_batch(net, B=8, seed=4)

    def cost(n):
        h = eb.relax(n, x, eps=0.5, tol=1e-14, max_steps=100_000).h
        return float(n.cost(h, d).mean())

    h = eb.relax(net, x, eps=0.5, tol=1e-14, max_steps=100_000).h
    assert any(bool(p.any()) for p in eb.pinned_units(net, h)[1:])
    gen = torch.Generator().manual_seed(0)
    v = [None] + [(torch.randn(W.shape, generator=gen, dtype=W.dtype), torch.randn(b.shape, generator=gen, dtype=b.dtype))
                  for W, b in zip(net.W[1:], net.b[1:])]
    s = 1e-6  # the clipped network is piecewise smooth: small enough that no unit changes its pinned state

    def moved(sign):
        m = net.clone()
        for k in range(1, net.N + 1):
            m.W[k] = m.W[k] + sign * s * v[k][0]
            m.b[k] = m.b[k] + sign * s * v[k][1]
        return m

    fd = (cost(moved(1)) - cost(moved(-1))) / (2 * s)

    def along(g):
        return sum(float((gw * vw).sum() + (gb * vb).sum()) for (gw, gb), (vw, vb) in zip(g[1:], v[1:]))

    masked = along(eb.implicit_param_gradient(net, h, d, mask="pinned"))
    assert masked == pytest.approx(fd, rel=1e-6)
    assert abs(along(eb.implicit_param_gradient(net, h, d)) - fd) > 1e-3 * abs(fd)
