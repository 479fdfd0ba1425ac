"""Quadrature density exp(−E/T)/Z of one unit, and the KS / TV distances to samples."""

import math

import pytest
import torch

import ebmlib as eb

f64 = torch.float64


def one_unit(W=2.0, b=-0.5):
    return eb.LayeredEBM([1, 1], "sigmoid", W=[None, torch.tensor([[W]])], b=[None, torch.tensor([b])])


def test_zero_weights_give_the_gaussian():
    # W = 0, b = 0: E = h²/2, so exp(−E/T)/Z is N(0, T)
    net = one_unit(0.0, 0.0)
    T = 0.3
    grid = torch.linspace(-5, 5, 20001, dtype=f64)
    dens = eb.boltzmann_density_1d(net, torch.zeros(1, 1, dtype=f64), T, grid)
    exact = torch.exp(-grid**2 / (2 * T)) / math.sqrt(2 * math.pi * T)
    assert float((dens.p - exact).abs().max()) < 1e-8
    assert abs(dens.mean()) < 1e-10 and abs(dens.var() - T) < 1e-8
    assert abs(float(dens.cdf_at(torch.tensor([0.0], dtype=f64))) - 0.5) < 1e-8


def test_ks_and_tv_accept_exact_samples_and_reject_wrong_ones():
    net = one_unit(0.0, 0.0)
    grid = torch.linspace(-6, 6, 20001, dtype=f64)
    dens = eb.boltzmann_density_1d(net, torch.zeros(1, 1, dtype=f64), 0.5, grid)
    g = torch.Generator().manual_seed(0)
    M = 20_000
    good = torch.randn(M, generator=g, dtype=f64) * math.sqrt(0.5)
    bad = torch.randn(M, generator=g, dtype=f64) * math.sqrt(0.5 * 1.3)
    assert eb.ks_distance(good, dens) < eb.ks_critical(M, 0.001)
    assert eb.ks_distance(bad, dens) > 2 * eb.ks_critical(M, 0.001)
    assert eb.tv_distance(good, dens, bins=40) < 0.03
    assert eb.tv_distance(bad, dens, bins=40) > 0.05


def test_langevin_samples_match_the_quadrature_density():
    net = one_unit()
    x = torch.full((1, 1), 0.8, dtype=f64)
    M = 10_000
    traj = eb.run(net, net.init_state(x.expand(M, 1).contiguous()), steps=800, eps=0.01, T=0.5,
                  generator=torch.Generator().manual_seed(3), check_every=200)
    dens = eb.boltzmann_density_1d(net, x, 0.5, torch.linspace(-6, 8, 40001, dtype=f64))
    assert eb.ks_distance(traj.h[1][-1, :, 0], dens) < eb.ks_critical(M, 0.001)


def test_validation_names_the_argument():
    net = one_unit()
    x = torch.zeros(1, 1, dtype=f64)
    grid = torch.linspace(-6, 6, 101, dtype=f64)
    with pytest.raises(ValueError, match="net"):
        eb.boltzmann_density_1d(eb.LayeredEBM([1, 2], "sigmoid"), x, 0.5, grid)
    with pytest.raises(ValueError, match="T"):
        eb.boltzmann_density_1d(net, x, 0.0, grid)
    with pytest.raises(ValueError, match="grid"):
        eb.boltzmann_density_1d(net, x, 0.5, torch.linspace(-0.5, 0.5, 101, dtype=f64))
    with pytest.raises(ValueError, match="grid"):
        eb.boltzmann_density_1d(net, x, 0.5, grid.flip(0))
    with pytest.raises(ValueError, match="x"):
        eb.boltzmann_density_1d(net, torch.zeros(2, 1, dtype=f64), 0.5, grid)
    dens = eb.boltzmann_density_1d(net, x, 0.5, grid)
    with pytest.raises(TypeError, match="samples"):
        eb.ks_distance(torch.zeros(10), dens)
    with pytest.raises(ValueError, match="samples"):
        eb.ks_distance(torch.tensor([float("nan"), 0.0], dtype=f64), dens)
    with pytest.raises(ValueError, match="bins"):
        eb.tv_distance(torch.zeros(10, dtype=f64), dens, bins=0)
    with pytest.raises(ValueError, match="alpha"):
        eb.ks_critical(100, 1.5)


def test_langevin_moments_gaussian_discretisation_and_chunking():
    # E = h²/2: the Euler–Maruyama chain has stationary variance T / (1 − ε/2)
    net = one_unit(0.0, 0.0)
    x = torch.zeros(4000, 1, dtype=f64)
    T, eps = 0.4, 0.5
    mom = eb.langevin_moments(net, net.init_state(x), steps=230, burn_in=30, eps=eps, T=T,
                              generator=torch.Generator().manual_seed(5), chunk=64)
    assert mom.samples == 200 * 4000
    assert abs(float(mom.mean[1][0])) < 0.01
    assert abs(float(mom.var[1][0]) / (T / (1 - eps / 2)) - 1) < 0.02
    again = eb.langevin_moments(net, net.init_state(x), steps=230, burn_in=30, eps=eps, T=T,
                                generator=torch.Generator().manual_seed(5), chunk=1000)
    assert torch.allclose(mom.mean[1], again.mean[1], rtol=0, atol=1e-12)
    assert torch.equal(mom.h[1], again.h[1])
    final = eb.langevin_moments(net, net.init_state(x), steps=50, burn_in=50, eps=eps, T=T,
                                generator=torch.Generator().manual_seed(5))
    assert final.samples == 4000
    with pytest.raises(ValueError, match="burn_in"):
        eb.langevin_moments(net, net.init_state(x), steps=5, burn_in=6, eps=eps, T=T,
                            generator=torch.Generator())
    with pytest.raises(ValueError, match="generator"):
        eb.langevin_moments(net, net.init_state(x), steps=5, burn_in=0, eps=eps, T=T, generator=None)
