"""First arrival under Langevin noise: linearised covariance, SNR measurement, common random numbeeb."""

import math

import pytest
import torch
from conftest import random_net

import ebmlib as eb

f64 = torch.float64
EPS = 0.5


@pytest.fixture(scope="module")
def fixed():
    net = random_net([5, 6, 6, 3], "tanh", seed=1, gain=1.0, bias_std=0.3)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 5, generator=g, dtype=f64)
    d = torch.rand(1, 3, generator=g, dtype=f64)
    h = eb.relax(net, x, eps=EPS, tol=1e-13, max_steps=20000).h
    return net, x, d, h


def test_linear_covariance_matches_monte_carlo(fixed):
    net, _, _, h = fixed
    T, steps, K = 1e-8, 3, 40000
    S = eb.linear_noise_covariance(net, h, steps=steps, eps=EPS, T=T)[0]
    h0 = [t.expand(K, -1).contiguous() for t in h]
    tr = eb.run(net, h0, steps=steps, eps=EPS, T=T, generator=torch.Generator().manual_seed(3))
    free = eb.run(net, h, steps=steps, eps=EPS)
    n = torch.cat([tr.h[k][steps] - free.h[k][steps] for k in range(1, net.N + 1)], -1)
    emp = n.T @ n / K
    # 40000 samples: entries of the covariance to ~1.5% of the diagonal
    assert float((emp - S).abs().max()) <= 0.05 * float(S.diagonal().max())


def test_weak_coupling_limit():
    net = random_net([4, 5, 5, 3], "tanh", seed=0, gain=1e-4, bias_std=0.0)
    x = torch.zeros(1, 4, dtype=f64)
    h = eb.relax(net, x, eps=EPS, tol=1e-14, max_steps=20000).h
    T = 1e-6
    noise = eb.arrival_noise(net, h, eps=EPS, T=T)
    for k in range(1, net.N + 1):
        d = net.N - k
        c = sum((1 - EPS) ** (2 * s) for s in range(d + 1))
        assert float(noise[k][0]) == pytest.approx(math.sqrt(2 * 2 * EPS * T * c * net.sizes[k]), rel=1e-3)
    crn = eb.arrival_noise(net, h, eps=EPS, T=T, independent=False)
    assert all(float(v[0]) == 0.0 for v in crn[1:])


def test_zero_temperature_gives_the_noiseless_arrival(fixed):
    net, _, d, h = fixed
    a = eb.noisy_arrival(net, h, d, eps=EPS, beta=1e-3, T=0.0, chains=3,
                         gen_nudged=torch.Generator().manual_seed(0), gen_free=torch.Generator().manual_seed(1))
    fa = eb.first_arrival(net, h, d, eps=EPS, beta=1e-3)
    for k in range(1, net.N + 1):
        assert torch.allclose(a.delta[k], fa.arrival[k].expand(3, -1), rtol=0, atol=1e-15)
        assert torch.allclose(a.predicted[k], fa.predicted[k][0], rtol=0, atol=1e-15)


def test_common_random_numbers_cancel_the_noise(fixed):
    net, _, d, h = fixed
    a = eb.noisy_arrival(net, h, d, eps=EPS, beta=1e-2, T=1e-6, chains=16,
                         gen_nudged=torch.Generator().manual_seed(7), gen_free=torch.Generator().manual_seed(7))
    for k in range(1, net.N + 1):
        for c in range(16):
            assert eb.cosine(a.delta[k][c], a.predicted[k]) > 0.999


def test_measured_snr_matches_prediction(fixed):
    net, _, d, h = fixed
    beta, T, K = 1e-2, 1e-7, 16384
    a = eb.noisy_arrival(net, h, d, eps=EPS, beta=beta, T=T, chains=K,
                         gen_nudged=torch.Generator().manual_seed(8), gen_free=torch.Generator().manual_seed(9))
    noise = eb.arrival_noise(net, h, eps=EPS, T=T)
    k = net.N  # the output layer: well resolved
    pred = float(a.predicted[k].norm()) / float(noise[k][0])
    for M in (1, 16):
        s, _, _ = eb.group_snr(a.delta[k], M)
        assert 0.85 < s / (pred * math.sqrt(M)) < 1.18


def test_group_snr_on_gaussian_samples():
    g = torch.Generator().manual_seed(0)
    K, n, sigma = 20000, 10, 2.0
    mu = torch.full((n,), 0.3, dtype=f64)
    x = mu + sigma * torch.randn(K, n, generator=g, dtype=f64)
    for M in (1, 10, 100):
        s, sig, noise = eb.group_snr(x, M)
        assert sig == pytest.approx(float(mu.norm()), rel=0.05)
        assert noise == pytest.approx(sigma * math.sqrt(n / M), rel=0.1)


def test_validation_names_the_argument(fixed):
    net, _, d, h = fixed
    g0, g1 = torch.Generator(), torch.Generator()
    h2 = [t.expand(2, -1) for t in h]
    with pytest.raises(ValueError, match="h_star"):
        eb.noisy_arrival(net, h2, d, eps=EPS, beta=0.1, T=1e-6, chains=4, gen_nudged=g0, gen_free=g1)
    with pytest.raises(ValueError, match="beta"):
        eb.noisy_arrival(net, h, d, eps=EPS, beta=0.0, T=1e-6, chains=4, gen_nudged=g0, gen_free=g1)
    with pytest.raises(TypeError, match="gen_free"):
        eb.noisy_arrival(net, h, d, eps=EPS, beta=0.1, T=1e-6, chains=4, gen_nudged=g0, gen_free=3)
    with pytest.raises(ValueError, match="chains"):
        eb.noisy_arrival(net, h, d, eps=EPS, beta=0.1, T=1e-6, chains=0, gen_nudged=g0, gen_free=g1)
    with pytest.raises(ValueError, match="T"):
        eb.linear_noise_covariance(net, h, steps=2, eps=EPS, T=-1.0)
    with pytest.raises(ValueError, match="M"):
        eb.group_snr(torch.zeros(10, 3, dtype=f64), 6)
    with pytest.raises(TypeError, match="independent"):
        eb.arrival_noise(net, h, eps=EPS, T=1e-6, independent=1)
