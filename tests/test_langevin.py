"""Langevin dynamics sample exp(−E/T) for small ε (one-unit model, quadrature reference)."""

import numpy as np
import pytest
import torch
from scipy import stats

import ebmlib as eb


@pytest.mark.parametrize("T", [0.1, 0.5])
def test_one_unit_langevin_matches_boltzmann(T):
    f64 = torch.float64
    net = eb.LayeredEBM([1, 1], "sigmoid", W=[None, torch.tensor([[2.0]])], b=[None, torch.tensor([-0.5])])
    chains = 20_000
    x = torch.full((chains, 1), 0.8, dtype=f64)
    h0 = net.init_state(x)
    gen = torch.Generator().manual_seed(1234)
    traj = eb.run(net, h0, steps=1500, eps=0.01, T=T, generator=gen, check_every=500)
    samples = traj.h[1][-1, :, 0].numpy()
    # exact density ∝ exp(−E(h)/T) by quadrature on a fine grid
    grid = np.linspace(-6, 8, 200_001)
    a = float(net.b[1][0] + 0.8 * net.W[1][0, 0])
    E = 0.5 * grid**2 - a / (1 + np.exp(-grid))
    p = np.exp(-(E - E.min()) / T)
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    res = stats.kstest(samples, lambda s: np.interp(s, grid, cdf))
    assert res.pvalue > 0.01, f"KS statistic {res.statistic:.4f}, p = {res.pvalue:.3g}"
    # and the test has power: a wrong temperature is rejected
    wrong = np.exp(-(E - E.min()) / (1.5 * T))
    wcdf = np.cumsum(wrong) / wrong.sum()
    assert stats.kstest(samples, lambda s: np.interp(s, grid, wcdf)).pvalue < 1e-6
