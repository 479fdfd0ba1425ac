"""Properties that hold by construction, demoted from the chapters' claims to unit tests (issue 11).

A chapter's claim is a number about the science that wrong mathematics could move past its bound; what
the code guarantees by its structure is checked here instead, once, on small networks of the same kind:

- 02-langevin ``deterministic_end_error``: the T = 0 free phase from h = 0 and ``eb.relax`` take the
  same Euler step, so they end on the same fixed point;
- 08-limits ``all_relaxations_converged``: the vector-field dynamics of the chapter's random networks
  reach a fixed point at every asymmetry a (the first arrival is defined from one);
- 08-limits ``silent_until_arrival``, ``step_mismatch`` and ``reached_*``: the first step at which a
  layer moves is fixed by the update graph (locality), for every schedule, with and without feedback.

(01-energy ``hessian_asymmetry`` and ``worst_residual`` are covered by
``test_network.py::test_hessian_symmetric_and_matches_hvp`` and
``test_dynamics.py::test_relax_reaches_tolerance_float64``.)
"""

import pytest
from conftest import random_batch, random_net

import ebmlib as eb


def _chapter_net(N, seed=0, width=7):
    """A network of 08-limits' family (sigmoid, gain 1.5, bias std 0.3), smaller."""
    return random_net([6] + [width] * (N - 1) + [4], seed=seed, gain=1.5, bias_std=0.3)


def test_free_run_from_zero_ends_on_the_relaxed_fixed_point():
    net = random_net([8, 6, 5, 3], seed=3, gain=1.0, bias_std=0.5)
    x, d, h = random_batch(net, B=2)
    fp = eb.relax(net, x, eps=0.5, tol=1e-12)
    assert fp.converged
    tr = eb.run(net, net.init_state(x), steps=300, eps=0.2)
    assert max(float((tr.h[k][-1] - fp.h[k]).abs().max()) for k in range(1, net.N + 1)) <= 1e-10


@pytest.mark.parametrize("a", [0.0, 0.5, 1.0])
def test_vector_field_relaxes_at_every_asymmetry(a):
    for seed in range(3):
        net = _chapter_net(5, seed=seed)
        x, d, h = random_batch(net, B=4, seed=seed)
        B = eb.feedback_weights(net, a, seed=1000 + seed)
        r = eb.relax(net, x, eps=0.5, tol=1e-13, max_steps=20_000, feedback=B)
        assert r.converged
        f = net.force(r.h, feedback=B)
        assert max(float(f[k].abs().max()) for k in range(1, net.N + 1)) <= 1e-12


def _expected_reach(N):
    """Layers moved in step 1 by each schedule: the nudge crosses 1, N, 2 or 1 layers (prop-lim-schedules)."""
    first, second = ("odd_even", "even_odd") if N % 2 == 1 else ("even_odd", "odd_even")
    return {"synchronous": 1, "bottom_up": 1, "top_down": N, first: 2, second: 1}


@pytest.mark.parametrize("N", [5, 6])
@pytest.mark.parametrize("a", [0.0, 1.0])
def test_first_change_step_is_fixed_by_the_update_graph(N, a):
    net = _chapter_net(N, seed=N)
    x, d, h = random_batch(net, B=3, seed=N)
    B = eb.feedback_weights(net, a, seed=7)
    hs = eb.relax(net, x, eps=0.5, tol=1e-13, max_steps=20_000, feedback=B).h
    expected = _expected_reach(N)
    for s in eb.SCHEDULES:
        fa = eb.first_arrival(net, hs, d, eps=0.5, beta=1e-3, schedule=s, feedback=B)
        assert fa.step[1:] == fa.step_predicted[1:], s                 # the measured first change is the graph's
        assert all(fa.silent[1:]), s                                   # exactly still before it
        assert fa.reached_in_one_step() == expected[s], s
        m = [N - k for k in range(1, N + 1)]
        if s in ("synchronous", "bottom_up"):
            assert fa.step[1:] == [mk + 1 for mk in m]                 # one layer per step: t_k = m + 1
        if s == "top_down":
            assert fa.step[1:] == [1] * N
