"""The checks of the scaffolded exercises of chapters 01-05: the solution passes, a plausible wrong
answer (a sign error, a missing factor) does not, and bad arguments raise an error naming the argument."""

from __future__ import annotations

import pytest
import torch

import ebmlib as eb
from ebmlib.exercises import Verdict, ch01, ch02, ch03, ch04, ch05

f64 = torch.float64


@pytest.fixture(scope="module")
def problem():
    net = eb.LayeredEBM([4, 5, 3, 2], "sigmoid", seed=3, gain=1.5, bias_std=0.3)
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(3, 4, generator=gen, dtype=f64)
    h = [x] + [torch.randn(3, n, generator=gen, dtype=f64) for n in net.sizes[1:]]
    h_star = eb.relax(net, x, eps=0.5, tol=1e-13).h
    d = torch.rand(3, 2, generator=gen, dtype=f64)
    return net, x, h, h_star, d


def force_by_hand(net, h, k, sign=1.0, drho=True):
    rho, drho_f = net.activation.rho, net.activation.drho
    below = h[0] if k == 1 else rho(h[k - 1])
    drive = net.b[k] + below @ net.W[k] + (rho(h[k + 1]) @ net.W[k + 1].T if k < net.N else 0.0)
    R = (drho_f(h[k]) if drho else 1.0) * drive
    return sign * (R - h[k])


def test_ch01_force(problem):
    net, _, h, _, _ = problem
    for k in (1, 2, 3):
        assert ch01.check_force(net, h, k, force_by_hand(net, h, k)).ok
    assert not ch01.check_force(net, h, 2, force_by_hand(net, h, 2, sign=-1.0))      # sign error
    assert not ch01.check_force(net, h, 2, force_by_hand(net, h, 2, drho=False))     # missing ρ'
    v = ch01.check_force(net, h, 2, None)
    assert isinstance(v, Verdict) and not v and str(v).startswith("Not yet")
    with pytest.raises(ValueError, match="k"):
        ch01.check_force(net, h, 4, h[1])
    with pytest.raises(TypeError, match="net"):
        ch01.check_force("net", h, 1, h[1])


def sigma_closed(net, h_star, eps, T, correction=True):
    H = eb.hessian(net, h_star)
    eye = torch.eye(H.shape[-1], dtype=f64)
    return T * torch.linalg.inv(H @ (eye - eps / 2 * H) if correction else H)


def test_ch02_stationary_covariance(problem):
    net, _, _, h_star, _ = problem
    eps, T = 0.5, 1e-3
    assert ch02.check_stationary_covariance(net, h_star, eps, T, sigma_closed(net, h_star, eps, T)).ok
    wrong = sigma_closed(net, h_star, eps, T, correction=False)                       # no step correction
    assert not ch02.check_stationary_covariance(net, h_star, eps, T, wrong)
    assert not ch02.check_stationary_covariance(net, h_star, eps, T, 2 * sigma_closed(net, h_star, eps, T))
    with pytest.raises(ValueError, match="T"):
        ch02.check_stationary_covariance(net, h_star, eps, 0.0, wrong)
    with pytest.raises(ValueError, match="eps"):
        ch02.check_stationary_covariance(net, h_star, -1.0, T, wrong)


def relax_by_hand(net, x, eps=0.5, flip=False):
    h = net.init_state(x)
    for _ in range(10_000):
        f = net.force(h)
        if flip:
            f = [None] + [-fk for fk in f[1:]]
        h = [h[0]] + [h[k] + eps * f[k] for k in range(1, net.N + 1)]
        if max(float(fk.abs().max()) for fk in f[1:]) < 1e-11:
            break
    return h


def test_ch03_fixed_point(problem):
    net, x, _, _, _ = problem
    assert ch03.check_fixed_point(net, x, relax_by_hand(net, x)).ok
    few = net.init_state(x)
    for _ in range(5):                                                                # stopped too early
        f = net.force(few)
        few = [few[0]] + [few[k] + 0.5 * f[k] for k in range(1, net.N + 1)]
    assert not ch03.check_fixed_point(net, x, few)
    assert not ch03.check_fixed_point(net, x, relax_by_hand(net, x)[1:])              # wrong length
    assert not ch03.check_fixed_point(net, x, None)
    with pytest.raises(ValueError, match="x"):
        ch03.check_fixed_point(net, torch.rand(3, 5, dtype=f64), None)


def chain_by_hand(net, h_star, d, transpose=True, drho_up=True):
    drho = [None] + [net.activation.drho(h_star[k]) for k in range(1, net.N + 1)]
    g = [None] * (net.N + 1)
    g[net.N] = h_star[net.N] - d
    for k in range(net.N - 1, 0, -1):
        up = (drho[k + 1] if drho_up else 1.0) * g[k + 1]
        W = net.W[k + 1].T if transpose else net.W[k + 1].T.flip(0)
        g[k] = drho[k] * (up @ W)
    return g


def test_ch04_chain_gradient(problem):
    net, _, _, h_star, d = problem
    assert ch04.check_chain_gradient(net, h_star, d, chain_by_hand(net, h_star, d)).ok
    assert not ch04.check_chain_gradient(net, h_star, d, chain_by_hand(net, h_star, d, drho_up=False))
    sign = [None] + [-g for g in chain_by_hand(net, h_star, d)[1:]]                   # d - y* instead
    assert not ch04.check_chain_gradient(net, h_star, d, sign)
    with pytest.raises(ValueError, match="target"):
        ch04.check_chain_gradient(net, h_star, torch.rand(3, 5, dtype=f64), None)


def test_ch05_step_covariance(problem):
    net, _, _, h_star, _ = problem
    eps, T = 0.5, 1e-4
    H = eb.hessian(net, h_star)
    eye = torch.eye(H.shape[-1], dtype=f64)
    right = 2 * eps * T * torch.linalg.inv(eye - eps / 2 * H)
    assert ch05.check_step_covariance(net, h_star, eps, T, right).ok
    assert not ch05.check_step_covariance(net, h_star, eps, T, 2 * eps * T * eye.expand_as(H))  # noise only
    assert not ch05.check_step_covariance(net, h_star, eps, T, right[:, :3, :3])                # wrong shape
    with pytest.raises(TypeError, match="net"):
        ch05.check_step_covariance(None, h_star, eps, T, right)
