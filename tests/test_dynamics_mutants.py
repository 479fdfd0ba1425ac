"""ebmlib.dynamics, held to what it promises: the two paths agree, errors name their argument, and
the Langevin step, divergence reports and defaults are what the docstrings say (tests that mutation
testing showed were missing)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb

f64 = torch.float64
SIZES = [5, 6, 4, 3]


def explicit_w(net):
    """Feedback equal to W: the same dynamics, forced through the reference path of relax/run."""
    return [None, None] + [net.W[k].clone() for k in range(2, net.N + 1)]


def close(a, b, tol=1e-12):
    return max(float((x - y).abs().max()) for x, y in zip(a[1:], b[1:])) <= tol


# ------------------------------------------------------------------ the reference path equals the fused loop
@pytest.mark.parametrize("activation, clip", [("sigmoid", False), ("sigmoid", True), ("hard_sigmoid", None),
                                              ("tanh", True), ("tanh", None)])
def test_relax_reference_path_equals_fused_loop(activation, clip):
    net = random_net(SIZES, activation, seed=3, gain=1.0, bias_std=0.5)
    x, d, h = random_batch(net, B=3, seed=2)
    assert eb.relax(net, x, eps=0.6, clip=clip, tol=1e-9, max_steps=3000).converged
    for kw in (dict(tol=1e-9, check_every=3), dict(tol=0.0, max_steps=7, check_every=2),
               dict(beta=0.4, target=d, tol=1e-11, check_every=1)):
        kw.setdefault("max_steps", 3000)
        fast = eb.relax(net, x, eps=0.6, clip=clip, **kw)
        ref = eb.relax(net, x, eps=0.6, clip=clip, feedback=explicit_w(net), **kw)
        assert (ref.steps, ref.converged) == (fast.steps, fast.converged)
        assert [t for t, _ in ref.history] == [t for t, _ in fast.history]
        assert all(abs(a - b) <= 1e-12 for (_, a), (_, b) in zip(ref.history, fast.history))
        assert abs(ref.residual - fast.residual) <= 1e-12 and close(ref.h, fast.h)
        assert ref.h[0] is x
    # from a given start, with the name of that argument in the error
    start = eb.relax(net, x, eps=0.5, tol=0.0, max_steps=3).h
    a = eb.relax(net, x, start, eps=0.5, tol=1e-10, clip=clip, max_steps=3000)
    b = eb.relax(net, x, start, eps=0.5, tol=1e-10, clip=clip, max_steps=3000, feedback=explicit_w(net))
    assert a.steps == b.steps and close(a.h, b.h)


def test_relax_residual_is_the_last_move_over_eps():
    net = random_net(SIZES, "sigmoid", seed=4)
    x, d, h = random_batch(net, B=2, seed=3)
    for feedback in (None, explicit_w(net)):
        r = eb.relax(net, x, eps=0.25, tol=0.0, max_steps=6, check_every=3, feedback=feedback)
        prev = eb.run(net, net.init_state(x), steps=5, eps=0.25).at(5)
        move = max(float((r.h[k] - prev[k]).abs().max()) for k in range(1, net.N + 1))
        assert r.residual == pytest.approx(move / 0.25, rel=1e-9, abs=1e-15)
        assert not r.converged and r.steps == 6 and [t for t, _ in r.history] == [3, 6]
        assert r.history[-1][1] == r.residual


def test_relax_stops_at_tol_and_counts_steps_in_multiples_of_check_every():
    net = random_net(SIZES, "sigmoid", seed=5, gain=1.0)
    x, d, h = random_batch(net, B=2, seed=4)
    for feedback in (None, explicit_w(net)):
        r = eb.relax(net, x, feedback=feedback)  # defaults: eps 0.5, tol 1e-10, check_every 10
        assert r.converged and r.residual <= 1e-10 and r.steps % 10 == 0
        assert r.history[0][0] == 10 and r.history[-2][1] > 1e-10
        r0 = eb.relax(net, x, eps=0.5, max_steps=0, feedback=feedback)
        assert r0.steps == 0 and not r0.converged and math.isinf(r0.residual) and r0.history == []


@pytest.mark.parametrize("activation, clip, beta", [("sigmoid", None, 0.0), ("tanh", None, 0.7),
                                                    ("hard_sigmoid", None, 0.5), ("sigmoid", True, 0.3)])
def test_run_reference_path_equals_fused_loop_deterministic_and_langevin(activation, clip, beta):
    net = random_net(SIZES, activation, seed=6, gain=1.2, bias_std=0.4)
    x, d, h = random_batch(net, B=3, seed=5)
    h0 = eb.relax(net, x, eps=0.5, tol=0.0, max_steps=4).h
    for T in (0.0, 1e-3):
        gens = [torch.Generator().manual_seed(11) for _ in range(2)] if T else [None, None]
        kw = dict(steps=7, eps=0.4, beta=beta, target=d if beta else None, T=T, clip=clip, check_every=3)
        fast = eb.run(net, h0, generator=gens[0], **kw)
        ref = eb.run(net, h0, generator=gens[1], feedback=explicit_w(net), **kw)
        for k in range(1, net.N + 1):
            assert float((fast.h[k] - ref.h[k]).abs().max()) <= 1e-12
        assert fast.steps == ref.steps == 7 and torch.equal(ref.h[0][3], x)
        if T:  # the noise moved the chain: a mutant that drops it differs from the deterministic run
            det = eb.run(net, h0, **{**kw, "T": 0.0})
            assert float((det.h[1][-1] - fast.h[1][-1]).abs().max()) > 1e-4


def test_langevin_step_adds_sqrt_2_eps_T_standard_normals():
    # zero weights and biases, h = 0: the force vanishes, so one step is the noise alone
    net = eb.LayeredEBM([3, 4, 2], "sigmoid", W=[None, torch.zeros(3, 4), torch.zeros(4, 2)],
                        b=[None, torch.zeros(4), torch.zeros(2)])
    x = torch.rand(5, 3, dtype=f64)
    h = net.init_state(x)
    eps, T = 0.3, 0.02
    got = eb.step(net, h, eps=eps, T=T, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    want = [torch.randn(5, n, generator=g, dtype=f64) * math.sqrt(2 * eps * T) for n in (4, 2)]
    for k in (1, 2):
        assert torch.allclose(got[k], want[k - 1], atol=1e-15, rtol=0)
    fast = eb.run(net, h, steps=1, eps=eps, T=T, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(fast.h[1][1], want[0], atol=1e-15, rtol=0)
    # T = 0 draws nothing and moves nothing
    assert all(torch.equal(t, torch.zeros_like(t)) for t in eb.step(net, h, eps=eps)[1:])


def test_step_under_a_schedule_updates_groups_in_order():
    net = random_net(SIZES, "tanh", seed=8)
    x, d, h = random_batch(net, B=2, seed=6)
    top = eb.step(net, h, eps=0.5, schedule="top_down")
    # by hand: layer 3 from h, then layer 2 from the new layer 3, then layer 1 from the new layer 2
    cur = list(h)
    for k in (3, 2, 1):
        cur[k] = cur[k] + 0.5 * net.force(cur)[k]
    assert close(top, cur, 1e-14)
    assert close(eb.step(net, h, eps=0.5, schedule=[[1, 2, 3]]), eb.step(net, h, eps=0.5), 1e-15)


# ------------------------------------------------------------------ divergence
def _blowing_up():
    net = random_net([4, 5, 3], "sigmoid", seed=9)
    x, d, h = random_batch(net, B=2, seed=7)
    return net, x, d


@pytest.mark.parametrize("feedback", [False, True])
def test_divergence_is_reported_at_the_same_step_on_both_paths(feedback):
    net, x, d = _blowing_up()
    fb = explicit_w(net) if feedback else None
    kw = dict(eps=1.0, beta=1e4, target=d * 0 + 5, check_every=7, feedback=fb)
    with pytest.raises(eb.DivergenceError) as relaxed:
        eb.relax(net, x, max_steps=500, **kw)
    with pytest.raises(eb.DivergenceError) as ran:
        eb.run(net, net.init_state(x), steps=60, **kw)
    with pytest.raises(eb.DivergenceError) as fast:
        eb.relax(net, x, max_steps=500, **{**kw, "feedback": None})
    # |y| grows by about 1e4 a step: beyond 1e6 at step 2, on the output layer
    for e in (relaxed.value, ran.value, fast.value):
        assert (e.step, e.layer) == (2, net.N)
        assert re.search(r"diverged at step 2 \(layer h_2: non-finite or \|h\| > 1e\+06\)", str(e))


def test_max_abs_bounds_the_state_exactly():
    # zero force apart from the leak: h_{t+1} = (1 − ε) h_t, from 2.000002e6 to 1.000001e6 in one step
    net = eb.LayeredEBM([2, 1], "sigmoid", W=[None, torch.zeros(2, 1)], b=[None, torch.zeros(1)])
    h0 = [torch.zeros(1, 2, dtype=f64), torch.full((1, 1), 2.000002e6, dtype=f64)]
    with pytest.raises(eb.DivergenceError, match=r"step 1 \(layer h_1"):
        eb.run(net, h0, steps=1, eps=0.5, check_every=1)
    with pytest.raises(eb.DivergenceError, match=r"step 1 \(layer h_1"):
        eb.run(net, h0, steps=1, eps=0.5, check_every=1, feedback=[None, None])
    assert eb.run(net, h0, steps=1, eps=0.5, max_abs=1.1e6).steps == 1
    assert eb.run(net, h0, steps=1, eps=0.5, max_abs=1.1e6, feedback=[None, None]).steps == 1
    h1 = [h0[0], torch.full((1, 1), 1.9e6, dtype=f64)]  # 0.95e6 after a step: inside the default bound
    assert eb.run(net, h1, steps=1, eps=0.5, feedback=[None, None]).steps == 1
    assert eb.run(net, h1, steps=1, eps=0.5).steps == 1


# ------------------------------------------------------------------ errors name their argument
def _net():
    net = random_net(SIZES, "sigmoid", seed=1)
    x, d, h = random_batch(net, B=2, seed=1)
    return net, x, d, h


ERRORS = [
    # (callable(net, x, d, h), exception, full message regex)
    (lambda n, x, d, h: eb.schedule_groups(0, "synchronous"), ValueError, r"^N: must be >= 1, got 0$"),
    (lambda n, x, d, h: eb.schedule_groups(3, "sideways"), ValueError,
     r"^schedule: expected one of \('synchronous', 'top_down', 'bottom_up', 'odd_even', 'even_odd'\) or a list of "
     r"groups, got 'sideways'$"),
    (lambda n, x, d, h: eb.schedule_groups(3, 7), TypeError, r"^schedule: expected a name or a list of groups, got int$"),
    (lambda n, x, d, h: eb.schedule_groups(3, [[1], [2]]), ValueError,
     r"^schedule: the groups must be non-empty and cover layers 1\.\.3 exactly once, got \[\[1\], \[2\]\]$"),
    (lambda n, x, d, h: eb.schedule_groups(2, [[1, 2], []]), ValueError, r"^schedule: the groups must be non-empty"),
    (lambda n, x, d, h: eb.step("net", h, eps=0.5), TypeError, r"^net: expected a LayeredEBM, got str$"),
    (lambda n, x, d, h: eb.step(n, h[:2], eps=0.5), ValueError, r"^h: expected a list \[x, h_1, \.\.\., h_N\] of length 4$"),
    (lambda n, x, d, h: eb.step(n, h, eps=0.5, beta=1.0), ValueError, r"^target: required when beta != 0$"),
    (lambda n, x, d, h: eb.step(n, h, eps=0.5, beta=1.0, target=d[:1]), ValueError,
     r"^target: expected shape \(2, 3\), got \(1, 3\)$"),
    (lambda n, x, d, h: eb.step(n, h, eps=0.5, T=0.1), ValueError,
     r"^generator: an explicit torch.Generator is required when T > 0 \(seeds are parameters\)$"),
    (lambda n, x, d, h: eb.step(n, h, eps=0.5, T=0.1, generator=1), TypeError,
     r"^generator: expected torch.Generator, got int$"),
    (lambda n, x, d, h: eb.step(n, h, eps=0.5, T=-1.0), ValueError, r"^T: the temperature must be >= 0, got -1.0$"),
    (lambda n, x, d, h: eb.step(n, h, eps=0.5, beta="b"), TypeError, r"^beta: expected a real number, got str$"),
    (lambda n, x, d, h: eb.step(n, h, eps=0.5, clip="yes"), TypeError, r"^clip: expected bool, got str$"),
    (lambda n, x, d, h: eb.relax(n, x, h[:2], eps=0.5), ValueError,
     r"^h0: expected a list \[x, h_1, \.\.\., h_N\] of length 4$"),
    (lambda n, x, d, h: eb.relax(n, x, 5, eps=0.5), ValueError, r"^h0: expected a list"),
    (lambda n, x, d, h: eb.relax(n, x, [x, h[1], h[2], h[3][:1]], eps=0.5), ValueError,
     r"^h0\[3\]: expected shape \(2, 3\), got \(1, 3\)$"),
    (lambda n, x, d, h: eb.relax(n, x[:, :2], eps=0.5), ValueError, r"^x: expected shape \(\*, 5\), got \(2, 2\)$"),
    (lambda n, x, d, h: eb.relax(n, x, tol="t"), TypeError, r"^tol: expected a real number, got str$"),
    (lambda n, x, d, h: eb.relax(n, x, max_steps=-1), ValueError, r"^max_steps: must be >= 0, got -1$"),
    (lambda n, x, d, h: eb.relax(n, x, check_every=0), ValueError, r"^check_every: must be >= 1, got 0$"),
    (lambda n, x, d, h: eb.relax(n, x, max_abs=0.0), ValueError, r"^max_abs: must be > 0, got 0.0$"),
    (lambda n, x, d, h: eb.relax(n, x, max_abs="m"), TypeError, r"^max_abs: expected a real number, got str$"),
    (lambda n, x, d, h: eb.run(n, h, steps=-1, eps=0.5), ValueError, r"^steps: must be >= 0, got -1$"),
    (lambda n, x, d, h: eb.run(n, h, steps=2, eps=0.5, check_every=0), ValueError, r"^check_every: must be >= 1, got 0$"),
    (lambda n, x, d, h: eb.run(n, h, steps=2, eps=0.5, max_abs=-1.0), ValueError, r"^max_abs: must be > 0, got -1.0$"),
    (lambda n, x, d, h: eb.run(n, h[:3], steps=2, eps=0.5), ValueError, r"^h0: expected a list"),
    (lambda n, x, d, h: eb.pinned_units(n, h[:3]), ValueError, r"^h: expected a list"),
]


@pytest.mark.parametrize("case", range(len(ERRORS)))
def test_errors_name_the_argument(case):
    fn, exc, pattern = ERRORS[case]
    with pytest.raises(exc, match=pattern):
        fn(*_net())


def test_max_steps_zero_is_allowed_and_relax_validates_before_running():
    net, x, d, h = _net()
    assert eb.relax(net, x, max_steps=0).steps == 0
    assert eb.run(net, h, steps=0, eps=0.5).steps == 0


# ------------------------------------------------------------------ schedules, reach, pinned units
def test_reach_steps_closed_forms_on_many_depths():
    for N in range(1, 8):
        m = [None] + [N - k for k in range(1, N + 1)]
        assert eb.reach_steps(N, "synchronous")[1:] == [m[k] + 1 for k in range(1, N + 1)]
        assert eb.reach_steps(N, "top_down")[1:] == [1] * N
        assert eb.reach_steps(N, "odd_even" if N % 2 else "even_odd")[1:] == [m[k] // 2 + 1 for k in range(1, N + 1)]
        assert eb.reach_steps(N, "even_odd" if N % 2 else "odd_even")[1:] == [-(-m[k] // 2) + 1
                                                                               for k in range(1, N + 1)]
    # a layer hears the change from above (k + 1) only: bottom-up reaches layer k at step m + 1
    assert eb.reach_steps(4, [[1], [2], [3], [4]])[1:] == [4, 3, 2, 1]
    assert eb.reach_steps(4, [[4], [3], [2], [1]])[1:] == [1, 1, 1, 1]


def test_schedule_groups_named():
    assert eb.schedule_groups(5, "odd_even") == [[1, 3, 5], [2, 4]]
    assert eb.schedule_groups(5, "even_odd") == [[2, 4], [1, 3, 5]]
    assert eb.schedule_groups(1, "even_odd") == [[1]]
    assert eb.schedule_groups(3, "bottom_up") == [[1], [2], [3]]
    assert eb.schedule_groups(3, ((2, 3), (1,))) == [[2, 3], [1]]


def test_pinned_units_by_hand():
    # one input x = 1, two hard-sigmoid units on their bounds (1 and 0), force f = ρ'(h)(b + W x) − h
    net = eb.LayeredEBM([1, 2], "hard_sigmoid", W=[None, torch.tensor([[1.0, -1.0]])], b=[None, torch.zeros(2)])
    x = torch.ones(1, 1, dtype=f64)
    h = [x, torch.tensor([[1.0, 0.0]], dtype=f64)]
    cases = [((0.5, -0.5), [True, True]),    # f = 0.5 > 0 at the top, f = −1.5 < 0 at the bottom: held
             ((-0.5, 1.5), [False, False]),  # f = −0.5 pulls unit 1 in, f = 0.5 pushes unit 2 in: free
             ((0.0, 1.0), [False, False])]   # f = 0 exactly: not a push
    for b, pinned in cases:
        net.b[1].copy_(torch.tensor(b, dtype=f64))
        assert eb.pinned_units(net, h)[1].tolist() == [pinned]
        assert eb.pinned_units(net, h, clip=False)[1].tolist() == [[False, False]]


# ------------------------------------------------------------------ boundaries and options seen from outside
def _leak_only(h1_value, n_in=2):
    """A one-unit network with no drive: the force is −h (sigmoid ρ' is tiny far out, and the drive is zero)."""
    net = eb.LayeredEBM([n_in, 1], "sigmoid", W=[None, torch.zeros(n_in, 1)], b=[None, torch.zeros(1)])
    return net, [torch.zeros(1, n_in, dtype=f64), torch.full((1, 1), h1_value, dtype=f64)]


def test_a_deterministic_step_draws_no_random_numbers():
    net, x, d, h = _net()
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    eb.step(net, h, eps=0.5)
    eb.run(net, h, steps=3, eps=0.5, feedback=explicit_w(net))
    assert torch.equal(torch.rand(3), want)


def test_step_and_run_follow_the_feedback_weights():
    net, x, d, h = _net()
    B = eb.feedback_weights(net, 0.8, seed=2)
    one = eb.step(net, h, eps=0.5, feedback=B, beta=0.3, target=d)
    f = net.force(h, 0.3, d, feedback=B)
    assert close(one, [h[0]] + [h[k] + 0.5 * f[k] for k in range(1, net.N + 1)], 1e-15)
    tr = eb.run(net, h, steps=2, eps=0.5, feedback=B)
    assert close(tr.at(2), eb.step(net, eb.step(net, h, eps=0.5, feedback=B), eps=0.5, feedback=B), 1e-15)
    assert not close(one, eb.step(net, h, eps=0.5, beta=0.3, target=d), 1e-6)


@pytest.mark.parametrize("schedule", ["top_down", "odd_even", "even_odd", "bottom_up"])
def test_run_under_a_schedule_is_repeated_steps(schedule):
    net, x, d, h = _net()
    tr = eb.run(net, h, steps=3, eps=0.5, schedule=schedule)
    cur = h
    for t in range(1, 4):
        cur = eb.step(net, cur, eps=0.5, schedule=schedule)
        assert close(tr.at(t), cur, 1e-14)
    assert not close(tr.at(3), eb.run(net, h, steps=3, eps=0.5).at(3), 1e-8)
    r = eb.relax(net, x, h, eps=0.5, tol=0.0, max_steps=3, schedule=schedule)
    assert close(r.h, cur, 1e-14)


def test_max_abs_is_inclusive_and_any_positive_bound_is_allowed():
    net, h0 = _leak_only(2.0)  # one step of ε = 0.5 lands exactly on 1.0
    for fb in (None, [None, None]):
        assert eb.run(net, h0, steps=1, eps=0.5, max_abs=1.0, check_every=1, feedback=fb).steps == 1
        assert eb.relax(net, h0[0], h0, eps=0.5, tol=0.0, max_steps=1, max_abs=1.0, feedback=fb).steps == 1
        with pytest.raises(eb.DivergenceError, match="step 1"):
            eb.run(net, h0, steps=1, eps=0.5, max_abs=0.999, check_every=1, feedback=fb)
    # the default bound of relax is 1e6: 2.000001e6 → 1.0000005e6 after one step is beyond it
    net, h0 = _leak_only(2.000001e6)
    for fb in (None, [None, None]):
        with pytest.raises(eb.DivergenceError, match="step 1"):
            eb.relax(net, h0[0], h0, eps=0.5, max_steps=1, check_every=1, feedback=fb)


def test_relax_clip_keeps_states_in_range_on_both_paths():
    net = random_net([4, 5, 3], "sigmoid", seed=12, gain=6.0, bias_std=6.0)
    x, d, h = random_batch(net, B=3, seed=3)
    free = eb.relax(net, x, eps=0.5, tol=1e-9, max_steps=5000)
    assert min(float(t.min()) for t in free.h[1:]) < -0.05  # without the clip some unit sits below 0
    for fb in (None, explicit_w(net)):
        r = eb.relax(net, x, eps=0.5, tol=1e-9, max_steps=5000, clip=True, feedback=fb)
        assert all(float(t.min()) >= 0.0 and float(t.max()) <= 1.0 for t in r.h[1:])


def test_an_exact_fixed_point_converges_at_tol_zero():
    net, h0 = _leak_only(0.0)
    for fb in (None, [None, None]):
        r = eb.relax(net, h0[0], eps=0.5, tol=0.0, check_every=4, feedback=fb)
        assert r.converged and r.steps == 4 and r.residual == 0.0


@pytest.mark.parametrize("feedback", [False, True])
def test_divergence_at_the_end_of_a_check_interval_is_located(feedback):
    net, x, d = _blowing_up()
    kw = dict(eps=1.0, beta=1e4, target=d * 0 + 5, check_every=2, feedback=explicit_w(net) if feedback else None)
    with pytest.raises(eb.DivergenceError) as e:
        eb.relax(net, x, max_steps=50, **kw)
    assert (e.value.step, e.value.layer) == (2, net.N)


@pytest.mark.parametrize("feedback", [False, True])
def test_divergence_at_the_last_step_of_a_short_run_is_caught(feedback):
    net, x, d = _blowing_up()
    with pytest.raises(eb.DivergenceError) as e:  # 2 steps, checks every 10: the final check must run
        eb.run(net, net.init_state(x), steps=2, eps=1.0, beta=1e4, target=d * 0 + 5, check_every=10,
               feedback=explicit_w(net) if feedback else None)
    assert (e.value.step, e.value.layer) == (2, net.N)


def test_relax_stops_at_its_default_cap_of_100000_steps():
    net, h0 = _leak_only(0.5, n_in=1)
    r = eb.relax(net, h0[0], eps=0.5, tol=-1.0, check_every=50_000)  # tol < 0: never converges; fused loop
    assert r.steps == 100_000 and not r.converged
