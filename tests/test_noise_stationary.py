"""Langevin noise at stationarity (chapter 05): what holds by construction, checked here rather than claimed.

- the √M gain of averaging is a property of means of independent samples (was the claim ``snr_slope``);
- the stationary covariance and the covariance of a stationary chain's one-step change (linear algebra);
- a nudge cannot reach layer k before step m + 1 even in a noisy chain, so the raw change of one nudged
  chain is the free change plus the first arrival;
- a stationary chain's one-step change has mean zero and the predicted covariance (Monte Carlo);
- common random numbers leave a noise of first order in β in the paired difference.
"""

import math

import torch
from conftest import random_net

import ebmlib as eb

f64 = torch.float64
EPS = 0.5


def _fixed(seed=1):
    net = random_net([5, 6, 6, 3], "tanh", seed=seed, gain=1.0, bias_std=0.3)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 5, generator=g, dtype=f64)
    d = torch.rand(1, 3, generator=g, dtype=f64)
    h = eb.relax(net, x, eps=EPS, tol=1e-13, max_steps=20000).h
    return net, d, h


def _stationary(net, h, T, K, seed, steps=120):
    """K chains burned in for ``steps`` steps from h* (ample: the slowest factor here is below 0.85)."""
    h0 = [t.expand(K, -1).contiguous() for t in h]
    return eb.langevin_moments(net, h0, steps=steps, burn_in=steps, eps=EPS, T=T,
                               generator=torch.Generator().manual_seed(seed)).h


def test_group_snr_gains_sqrt_m_on_iid_samples():
    # Means of M iid samples have noise sigma*sqrt(n/M): the log-log slope of the SNR against M is 1/2.
    # With K = 65536 samples the noise estimate at M = 256 (R = 256 groups, n = 5) has a relative SE of
    # 1/sqrt(2*255*5) = 2%; the slope over M = 1 ... 256 is then within 0.02 of 1/2 (about 5 SE).
    g = torch.Generator().manual_seed(0)
    K, n = 65536, 5
    x = 0.05 + torch.randn(K, n, generator=g, dtype=f64)
    ms = [1, 4, 16, 64, 256]
    snrs = [eb.group_snr(x, M)[0] for M in ms]
    assert abs(eb.loglog_slope(ms, snrs) - 0.5) < 0.02
    # and the level: SNR(1) = |mu| / sqrt(n sigma^2) = 0.05, within 3 SE of the signal estimate
    assert abs(snrs[0] / 0.05 - 1) < 3 / math.sqrt(K * 0.05 ** 2 * n)


def test_stationary_and_step_covariance_identities():
    # Proposition "stationary noise and the one-step change": for symmetric H with 0 < eps*lambda < 2,
    # Sigma_inf = T (H (I - eps H/2))^-1 solves Sigma = A Sigma A + 2 eps T I, and
    # (A - I) Sigma_inf (A - I)^T + 2 eps T I = 2 eps T (I - eps H/2)^-1. Round-off only (n = 12, float64).
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=f64))
    lam = torch.linspace(0.2, 3.5, 12, dtype=f64)          # eps*lambda up to 1.75 < 2
    H = Q @ torch.diag(lam) @ Q.T
    T, eye = 0.3, torch.eye(12, dtype=f64)
    A = eye - EPS * H
    S = T * torch.linalg.inv(H @ (eye - EPS / 2 * H))
    assert torch.allclose(A @ S @ A.T + 2 * EPS * T * eye, S, rtol=0, atol=1e-12)
    step = (A - eye) @ S @ (A - eye).T + 2 * EPS * T * eye
    assert torch.allclose(step, 2 * EPS * T * torch.linalg.inv(eye - EPS / 2 * H), rtol=0, atol=1e-12)


def test_linear_noise_covariance_converges_to_the_stationary_one():
    net, _, h = _fixed()
    H = eb.hessian(net, h)[0]
    eye = torch.eye(H.shape[0], dtype=f64)
    r = float((1 - EPS * torch.linalg.eigvalsh(H)).abs().max())
    assert r < 1
    steps = math.ceil(math.log(1e-14) / math.log(r))
    S = eb.linear_noise_covariance(net, h, steps=steps, eps=EPS, T=1.0)[0]
    closed = torch.linalg.inv(H @ (eye - EPS / 2 * H))
    assert float((S - closed).abs().max()) <= 1e-12 * float(closed.abs().max()) * steps


def test_nudge_cannot_reach_a_layer_before_its_arrival_in_a_noisy_chain():
    # With the same noise, a nudged and a free chain from the same (noisy) state agree exactly on layer
    # k up to step m = N - k and differ at step m + 1: the raw change of layer k in step m + 1 of the one
    # nudged chain is the free chain's change plus delta_k(m + 1).
    net, d, h = _fixed()
    K, T = 64, 1e-4
    h0 = _stationary(net, h, T, K, seed=4)
    tgt = d.expand(K, -1).contiguous()
    nudged = eb.run(net, h0, steps=net.N + 1, eps=EPS, beta=0.1, target=tgt, T=T, generator=torch.Generator().manual_seed(5))
    free = eb.run(net, h0, steps=net.N + 1, eps=EPS, T=T, generator=torch.Generator().manual_seed(5))
    for k in range(1, net.N + 1):
        m = net.N - k
        assert torch.equal(nudged.h[k][: m + 1], free.h[k][: m + 1])
        assert bool((nudged.h[k][m + 1] != free.h[k][m + 1]).all())


def test_stationary_step_has_zero_mean_and_the_predicted_covariance():
    # A burned-in chain's one-step change: mean 0 and trace of its layer blocks 2 eps T tr (I - eps H/2)^-1
    # (linearised; at T = 1e-6 the nonlinear correction is O(T), far below the sampling error).
    # Every comparison within 4 SE (K = 20000 chains).
    net, _, h = _fixed()
    K, T = 20000, 1e-6
    h0 = _stationary(net, h, T, K, seed=6)
    tr = eb.run(net, h0, steps=1, eps=EPS, T=T, generator=torch.Generator().manual_seed(7))
    H = eb.hessian(net, h)[0]
    cov = 2 * EPS * T * torch.linalg.inv(torch.eye(H.shape[0], dtype=f64) - EPS / 2 * H)
    lo = 0
    for k in range(1, net.N + 1):
        step = tr.h[k][1] - tr.h[k][0]
        hi = lo + net.sizes[k]
        assert float((step.mean(0) / (step.std(0) / math.sqrt(K))).abs().max()) < 4
        sq = (step ** 2).sum(-1)
        assert abs(float(sq.mean()) - float(cov[lo:hi, lo:hi].trace())) < 4 * float(sq.std()) / math.sqrt(K)
        lo = hi


def test_common_random_numbers_leave_noise_of_first_order_in_beta():
    # From stationary states, the spread over chains of delta_k(m + 1) with common random numbers comes
    # from the Jacobians along the noisy path: O(beta sqrt(T)). Doubling beta doubles it (log2 slope 1;
    # the O(beta^2) term moves the slope by about 0.003 at beta = 0.02). Independent noise gives an
    # O(sqrt(T)) spread that does not depend on beta: far larger.
    net, d, h = _fixed()
    K, T, beta = 4096, 1e-6, 0.01
    h0 = _stationary(net, h, T, K, seed=8)
    tgt = d.expand(K, -1).contiguous()
    free = eb.run(net, h0, steps=net.N + 1, eps=EPS, T=T, generator=torch.Generator().manual_seed(9))
    other = eb.run(net, h0, steps=net.N + 1, eps=EPS, T=T, generator=torch.Generator().manual_seed(10))
    spread = {}
    for b in (beta, 2 * beta):
        nudged = eb.run(net, h0, steps=net.N + 1, eps=EPS, beta=b, target=tgt, T=T,
                        generator=torch.Generator().manual_seed(9))
        for k in range(1, net.N + 1):
            m = net.N - k
            crn = nudged.h[k][m + 1] - free.h[k][m + 1]
            ind = nudged.h[k][m + 1] - other.h[k][m + 1]
            spread[(b, k)] = float((crn - crn.mean(0)).norm())
            assert spread[(b, k)] < 0.05 * float((ind - ind.mean(0)).norm())
    for k in range(1, net.N + 1):
        assert abs(math.log2(spread[(2 * beta, k)] / spread[(beta, k)]) - 1) < 0.02
