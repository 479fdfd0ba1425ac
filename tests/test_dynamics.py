"""Euler / Langevin dynamics, relaxation, divergence detection."""

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "hard_sigmoid"])
def test_energy_never_increases_for_small_eps(activation):
    net = random_net([6, 8, 5, 3], activation, seed=1, gain=1.5)
    x, d, h = random_batch(net, B=8)
    h0 = net.init_state(x)
    traj = eb.run(net, h0, steps=200, eps=0.05)
    E = net.energy(traj.h)
    assert float((E[1:] - E[:-1]).max()) <= 1e-12
    # also with the nudge: F = E + beta*C decreases
    trajb = eb.run(net, h0, steps=200, eps=0.05, beta=0.5, target=d)
    F = net.total_energy(trajb.h, 0.5, d)
    assert float((F[1:] - F[:-1]).max()) <= 1e-12


def test_relax_reaches_tolerance_float64():
    net = random_net([8, 10, 8, 4], seed=2, gain=1.5)
    x, d, h = random_batch(net, B=16)
    r = eb.relax(net, x, eps=0.5, tol=1e-10)
    assert r.converged and r.residual <= 1e-10
    f = net.force(r.h)
    assert max(float(f[k].abs().max()) for k in range(1, net.N + 1)) <= 1e-10
    assert r.history[-1] == (r.steps, r.residual)
    # diagnostics when the cap is hit
    r2 = eb.relax(net, x, eps=0.5, tol=1e-10, max_steps=3, check_every=10)
    assert not r2.converged and r2.steps == 3


def test_relax_from_given_state_and_nudged():
    net = random_net([5, 6, 3], seed=3)
    x, d, h = random_batch(net, B=3)
    r = eb.relax(net, x, eps=0.5)
    rb = eb.relax(net, x, r.h, eps=0.5, beta=0.1, target=d)
    assert rb.converged
    assert float(net.cost(rb.h, d).sum()) < float(net.cost(r.h, d).sum())


def test_hard_sigmoid_clip_keeps_states_in_range():
    net = random_net([5, 6, 3], "hard_sigmoid", seed=3, gain=3.0)
    x, d, h = random_batch(net, B=3)
    traj = eb.run(net, net.init_state(x), steps=50, eps=0.5, beta=1.0, target=d)
    for k in (1, 2):
        assert float(traj.h[k].min()) >= 0.0 and float(traj.h[k].max()) <= 1.0
    traj2 = eb.run(net, net.init_state(x), steps=50, eps=0.5, clip=False)
    assert traj2.h[1].shape == (51, 3, 6)


def test_divergence_raises_with_first_bad_step():
    net = random_net([4, 5, 3], seed=5)
    x, d, h = random_batch(net, B=2)
    h0 = net.init_state(x)
    with pytest.raises(eb.DivergenceError) as info:
        eb.run(net, h0, steps=500, eps=1.0, beta=10.0, target=d * 0 + 1, check_every=25)
    # replay step by step: the first step whose state is non-finite or beyond max_abs
    state, first = h0, None
    for t in range(1, 501):
        state = eb.step(net, state, eps=1.0, beta=10.0, target=d * 0 + 1)
        if any(bool((~torch.isfinite(s) | (s.abs() > 1e6)).any()) for s in state[1:]):
            first = t
            break
    assert info.value.step == first
    assert f"step {first}" in str(info.value)
    with pytest.raises(eb.DivergenceError):
        eb.relax(net, x, eps=1.0, beta=10.0, target=d * 0 + 1)


def test_langevin_is_reproducible_with_generator():
    net = random_net([3, 4, 2], seed=6)
    x, d, h = random_batch(net, B=3)
    a = eb.run(net, net.init_state(x), steps=20, eps=0.1, T=0.3, generator=torch.Generator().manual_seed(7))
    b = eb.run(net, net.init_state(x), steps=20, eps=0.1, T=0.3, generator=torch.Generator().manual_seed(7))
    c = eb.run(net, net.init_state(x), steps=20, eps=0.1, T=0.3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.h[2], b.h[2]) and not torch.equal(a.h[2], c.h[2])
