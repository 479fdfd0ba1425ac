"""ebmlib._loop and ebmlib._trainloop, held to what they promise: the fused loop equals the reference step on
every path (custom activations, the output-only network, odd-even sweeps, Langevin replays), divergence is
reported at the reference path's step and layer, the thread policy is the documented one, and the fused EP
program equals ebmlib.train_step minibatch by minibatch (tests that mutation testing showed were missing)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_raises_exactly, assert_trajectories_match, random_batch, random_net, reference_trajectory

import ebmlib as eb
from ebmlib import _loop, _trainloop
from ebmlib.activations import ACTIVATIONS, Activation

f64 = torch.float64
TOL = 1e-12
SIZES = [5, 6, 4, 3]


def explicit_w(net):
    """Feedback equal to W: the same dynamics, forced through the reference path of relax/run."""
    return [None, None] + [net.W[k].clone() for k in range(2, net.N + 1)]


def gap(a, b):
    return max(float((u - v).abs().max()) for u, v in zip(a[1:], b[1:]))


def copy_of(name):
    """The activation ``name`` as a new object: the loop's generic path (its own rho / drho)."""
    a = ACTIVATIONS[name]
    return Activation("my_" + name, a.rho, a.drho, a.rho_and_drho, a.lo, a.hi, a.clip_by_default)


# ------------------------------------------------------------------ the loop against the reference step
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "hard_sigmoid"])
@pytest.mark.parametrize("schedule", ["synchronous", "odd_even"])
def test_a_custom_activation_runs_the_generic_path_of_the_reference_step(name, schedule):
    net = eb.LayeredEBM(SIZES, copy_of(name), seed=1, gain=1.5, bias_std=0.5, dtype=f64)
    x, d, h = random_batch(net, B=3, seed=1)
    h0 = [x] + [2.0 * t for t in h[1:]]  # hard sigmoid: outside [0, 1], where ρ' = 0
    for beta in (0.0, 0.6):
        kw = dict(eps=0.4, beta=beta, target=d, clip=False, schedule=schedule)
        assert_trajectories_match(eb.run(net, h0, steps=5, **kw), reference_trajectory(net, h0, 5, **kw), net.N)


@pytest.mark.parametrize("activation, clip", [("sigmoid", False), ("tanh", True), ("hard_sigmoid", True),
                                              ("hard_sigmoid", False)])
@pytest.mark.parametrize("schedule", ["synchronous", "odd_even"])
def test_one_layer_network_matches_the_reference_step(activation, clip, schedule):
    """N = 1: the output has neither neighbour (its constant is the drive, + β·d)."""
    net = random_net([4, 3], activation, seed=2, gain=1.5)
    x, d, h = random_batch(net, B=3, seed=2)
    for h0 in ([x] + [t.sigmoid() for t in h[1:]], h):  # inside [0, 1] (ρ = id), and not
        for beta in (0.0, 0.8, -0.5):
            for eps in (1.0, 0.3):
                kw = dict(eps=eps, beta=beta, target=d, clip=clip, schedule=schedule)
                assert_trajectories_match(eb.run(net, h0, steps=4, **kw), reference_trajectory(net, h0, 4, **kw), net.N)


@pytest.mark.parametrize("route", ["run", "relax", "train"])
def test_one_layer_clipped_hard_sigmoid_nudged_keeps_the_input_drive(route):
    """N = 1 (the clipped hard sigmoid inside [0, 1], β ≠ 0): the output's constant with β·d folded in is the
    drive b_1 + W_1ᵀx + β·d, not b_1 + β·d (a bug once: the input was dropped)."""
    net = random_net([4, 3], "hard_sigmoid", seed=2, gain=1.5)
    x, d, h = random_batch(net, B=3, seed=2)
    h0 = [x] + [t.sigmoid() for t in h[1:]]
    kw = dict(eps=0.5, beta=0.8, target=d)
    if route == "run":
        got = eb.run(net, h0, steps=2, **kw).at(2)
    elif route == "relax":
        got = eb.relax(net, x, h0, tol=0.0, max_steps=2, **kw).h
    else:
        assert fused_against_train_step(net, "ep", [4, 3], check_read=False) <= TOL
        return
    assert gap(got, reference_trajectory(net, h0, 2, **kw)[-1]) <= TOL


def test_empty_batch_converges_at_the_first_check():
    """B = 0: nothing moves (the largest |move| of no unit is 0), so the first check converges."""
    net = random_net(SIZES, "sigmoid", seed=3)
    x, d, h = random_batch(net, B=0, seed=3)
    r = eb.relax(net, x, eps=0.5, tol=0.0, max_steps=50, check_every=4)
    assert (r.steps, r.residual, r.converged, r.history) == (4, 0.0, True, [(4, 0.0)])
    assert r.h[1].shape == (0, SIZES[1])
    hs = [x] + [t.clamp(0, 1) for t in h[1:]]
    assert _loop.identity_rho_holds(random_net(SIZES, "hard_sigmoid", seed=3), (0.0, 1.0), hs)
    assert eb.run(net, h, steps=3, eps=0.5, check_every=2).h[3].shape == (4, 0, SIZES[3])


def test_relax_history_and_residual_match_the_reference_path():
    net = random_net(SIZES, "tanh", seed=4, gain=1.0)
    x, d, h = random_batch(net, B=3, seed=4)
    for kw in (dict(max_steps=0), dict(max_steps=11, tol=0.0, check_every=4),
               dict(max_steps=500, tol=1e-6, check_every=3), dict(max_steps=9, tol=0.0, check_every=1)):
        fast = eb.relax(net, x, h, eps=0.35, beta=0.3, target=d, **kw)
        ref = eb.relax(net, x, h, eps=0.35, beta=0.3, target=d, feedback=explicit_w(net), **kw)
        assert (fast.steps, fast.converged) == (ref.steps, ref.converged)
        assert [t for t, _ in fast.history] == [t for t, _ in ref.history]
        assert all(abs(a - b) <= 1e-12 for (_, a), (_, b) in zip(fast.history, ref.history))
        assert fast.residual == ref.residual or abs(fast.residual - ref.residual) <= 1e-12
        assert gap(fast.h, ref.h) <= TOL and fast.h[0] is x
    empty = eb.relax(net, x, h, eps=0.35, max_steps=0)
    assert (empty.steps, empty.residual, empty.converged, empty.history) == (0, float("inf"), False, [])


# ------------------------------------------------------------------ divergence: the reference path's step and layer
def _divergence(call):
    with pytest.raises(eb.DivergenceError) as info:
        call()
    e = info.value
    return e.step, e.layer, str(e)


LINEAR = Activation("linear", lambda h: h, torch.ones_like, lambda h: (h, torch.ones_like(h)), -1.0, 1.0)


@pytest.mark.parametrize("case", ["nudge", "linear_h1", "linear_h2"])
@pytest.mark.parametrize("check_every", [1, 3, 7, 50])
def test_relax_and_run_report_the_reference_paths_divergence(case, check_every):
    """The first bad step and layer (h_1 … h_N) and the message, whatever the check interval (the fused loop
    replays from its last good check point; the reference path checks every state)."""
    if case == "nudge":  # the output oscillates with growing amplitude: |1 − ε(1 + β)| = 2.5
        net = random_net(SIZES, "sigmoid", seed=3)
        kw, max_abs, want_step = dict(eps=1.0, beta=2.5), 100.0, 6
    else:  # ρ = id with large weights: every layer grows, the first one past max_abs is named
        net = eb.LayeredEBM(SIZES, LINEAR, seed=0 if case == "linear_h1" else 3, gain=2.0, dtype=f64)
        kw, max_abs, want_step = dict(eps=0.5, beta=0.3), 50.0, 8 if case == "linear_h1" else 7
    x, d, h = random_batch(net, B=3, seed=3)
    h = [x] + [0.1 * t for t in h[1:]]
    kw.update(target=d, max_abs=max_abs, check_every=check_every)
    want = _divergence(lambda: eb.relax(net, x, h, max_steps=1000, feedback=explicit_w(net), **kw))
    assert want[:2] == (want_step, {"nudge": 3, "linear_h1": 1, "linear_h2": 2}[case])
    assert _divergence(lambda: eb.relax(net, x, h, max_steps=1000, **kw)) == want
    assert _divergence(lambda: eb.run(net, h, steps=want[0] + 20, **kw)) == want
    # the last step is checked even off the check interval
    assert _divergence(lambda: eb.run(net, h, steps=want[0], **dict(kw, check_every=1000))) == want
    assert want[2] == f"dynamics diverged at step {want[0]} (layer h_{want[1]}: non-finite or |h| > {max_abs:g})"


@pytest.mark.parametrize("seed, step, layer", [(0, 7, 2), (2, 8, 1)])
@pytest.mark.parametrize("check_every", [1, 4, 9])
def test_langevin_divergence_replays_the_same_draws(seed, step, layer, check_every):
    """The replay restores the generator to the last good check point: the reference path's step and layer."""
    net = eb.LayeredEBM(SIZES, LINEAR, seed=5, gain=2.0, dtype=f64)
    x, d, h = random_batch(net, B=3, seed=3)
    h = [x] + [0.1 * t for t in h[1:]]
    kw = dict(eps=0.5, T=0.5, max_abs=50.0, check_every=check_every, steps=200)
    want = _divergence(lambda: eb.run(net, h, generator=torch.Generator().manual_seed(seed),
                                      feedback=explicit_w(net), **kw))
    assert want[:2] == (step, layer)
    assert _divergence(lambda: eb.run(net, h, generator=torch.Generator().manual_seed(seed), **kw)) == want


def test_a_replay_that_finds_no_bad_step_reports_the_check_point():
    """A replay that does not reproduce the divergence (replayed steps 1 … stop all within max_abs) says so, at the
    check point, with no layer; it replays no step past the check point. y ← β(d − y) unclipped: −1, 2, −4, 8."""
    net = random_net([2, 1], "hard_sigmoid", seed=0)
    x = torch.rand(1, 2, dtype=f64)
    h0 = [x, torch.full((1, 1), -1.0, dtype=f64)]
    cfg = _loop.configure(net, h0, eps=1.0, beta=2.0, target=torch.zeros(1, 1, dtype=f64), noise_std=0.0, clip=False,
                          generator=None, max_abs=4.0, states=2)
    # steps 1 and 2 (|y| = 2, 4) are within max_abs = 4; step 3 (|y| = 8) is not, and is not replayed
    want = (2, 0, "dynamics diverged at step 2 (layer h_0: detected at this check point; the replay did not reproduce it)")
    assert _divergence(lambda: _loop._locate_divergence(net, cfg, h0, 0, 2, None)) == want


def test_a_state_at_max_abs_is_not_divergence():
    """|h| ≤ max_abs is fine: the clipped hard sigmoid sits exactly at 1 with max_abs = 1."""
    net = random_net(SIZES, "hard_sigmoid", seed=8, gain=3.0, bias_mean=3.0)
    x, d, h = random_batch(net, B=3, seed=6)
    traj = eb.run(net, h, steps=6, eps=1.0, max_abs=1.0, check_every=2)
    assert float(traj.h[1][-1].abs().max()) == 1.0
    r = eb.relax(net, x, h, eps=1.0, max_abs=1.0, tol=0.0, max_steps=6, check_every=2)
    assert float(r.h[1].abs().max()) == 1.0 and r.steps == 6


# ------------------------------------------------------------------ the thread policy
def test_loop_threads_validates_and_counts_the_hidden_products():
    net = random_net([3, 50, 50], "sigmoid")
    assert_raises_exactly(lambda: _loop.loop_threads("net", 4), TypeError, "net: expected a LayeredEBM, got str")
    assert_raises_exactly(lambda: _loop.loop_threads(net, 2.0), TypeError, "batch: expected an integer, got float")
    assert_raises_exactly(lambda: _loop.loop_threads(net, -1), ValueError, "batch: must be >= 0, got -1")
    assert _loop.loop_threads(net, 0) == 1
    # B · 2 · Σ_{k≥2} n_{k−1} n_k = 50 · 2 · 2500 = ONE_THREAD_MACS exactly: still one thread; one sample more: torch's
    assert _loop.ONE_THREAD_MACS == 250_000
    assert _loop.loop_threads(net, 50) == 1 and _loop.loop_threads(net, 51) is None
    wide_input = random_net([200_000, 1, 1], "sigmoid")  # the input layer's W_1 is no product of the loop
    assert _loop.loop_threads(wide_input, 1) == 1
    deep = random_net([3, 20, 20, 20], "sigmoid")  # Σ over every k ≥ 2: 2 · 400 · B
    assert _loop.loop_threads(deep, 156) == 1 and _loop.loop_threads(deep, 157) is None


def test_intra_op_threads_lowers_only_and_restores():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_raises_exactly(lambda: _loop.intra_op_threads(0).__enter__(), ValueError, "n: must be >= 1, got 0")
        assert_raises_exactly(lambda: _loop.intra_op_threads(1.0).__enter__(), TypeError,
                              "n: expected an integer, got float")
        with _loop.intra_op_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with _loop.intra_op_threads(3):  # never raised above torch's setting
            assert torch.get_num_threads() == 2
        with _loop.intra_op_threads(None):
            assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            with _loop.intra_op_threads(1):
                raise KeyError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ the fused EP program against train_step
def _examples(sizes, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, sizes[0], generator=g, dtype=f64)
    labels = torch.randint(0, sizes[-1], (n,), generator=g)
    D = torch.nn.functional.one_hot(labels, sizes[-1]).to(f64)
    return X, D, labels


MINIBATCHES = [torch.tensor([0, 5, 2, 9]), torch.tensor([3, 5, 11, 7]), torch.tensor([1, 0, 8, 4])]


def _nudged_ref(net, x, free, beta, d, ph):
    return eb.run(net, free, steps=ph.nudged_steps, eps=ph.eps, beta=beta, target=d, clip=ph.clip).at(-1)


def fused_against_train_step(net, method, sizes, *, phases=None, lrs=None, persistent=False, signs=(1.0, -1.0, 1.0),
                             check_read=True):
    """Run the fused program and train_step side by side over MINIBATCHES (β's sign from ``signs``); returns the
    largest gap of the weights, and checks the persistent states and what read() reports on the way."""
    import copy

    ph = phases or eb.Phases(eps=0.45, free_steps=5, nudged_steps=3, beta=0.6, random_sign=True)
    lrs = lrs or tuple(0.3 / k for k in range(1, net.N + 1))  # a different rate per layer
    X, D, labels = _examples(sizes)
    ref = copy.deepcopy(net)
    pers = [torch.rand(len(X), n, generator=torch.Generator().manual_seed(k), dtype=f64) * 0.8 + 0.1
            for k, n in enumerate(sizes[1:], start=1)] if persistent else None
    ref_pers = [p.clone() for p in pers] if persistent else None
    prog = _trainloop.FusedEP(net, eb.get_estimator(method), ph, lrs, 4, X, D, labels, pers)
    worst = 0.0
    if method == "ep_symmetric":  # ±β in every minibatch: one program
        signs = (1.0,) * len(signs)
    for idx, sign in zip(MINIBATCHES, signs):
        x, d = X[idx], D[idx]
        h0 = [x] + [p[idx] for p in ref_pers] if persistent else None
        ph_ref = eb.Phases(eps=ph.eps, free_steps=ph.free_steps, nudged_steps=ph.nudged_steps, beta=sign * ph.beta,
                           random_sign=False, clip=ph.clip)
        before = copy.deepcopy(ref)
        est = eb.train_step(ref, eb.get_estimator(method), x, d, phases=ph_ref, lrs=lrs, generator=torch.Generator(),
                            h0=h0)
        if persistent:
            for k in range(1, net.N + 1):
                ref_pers[k - 1][idx] = est.free[k]
        prog.run(idx, sign)
        worst = max(worst, max(float((p - q).abs().max()) for p, q in zip(net.parameters(), ref.parameters())))
        if not check_read:
            continue
        betas = (ph.beta, -ph.beta) if method == "ep_symmetric" else (sign * ph.beta,)
        nudged = [_nudged_ref(before, x, est.free, b, d, ph) for b in betas]
        errors, cost, big = prog.read()
        if persistent:  # counted once per epoch (epoch_stats)
            assert (errors, cost) == (0, 0.0)
        else:
            assert errors == int((est.output.argmax(1) != labels[idx]).sum())
            assert abs(cost - 0.5 * float(((est.output - d) ** 2).sum())) <= 1e-12
        # read()'s largest |h|: of the last free state where states are clipped to [0, 1] (the clipped hard sigmoid),
        # else of the nudged states
        clipped = net.activation is ACTIVATIONS["hard_sigmoid"] and (ph.clip is None or ph.clip)
        watched = [est.free] if clipped else nudged
        assert abs(big - max(float(t.abs().max()) for h in watched for t in h[1:])) <= 1e-12
    if persistent:
        for p, q in zip(pers, ref_pers):
            worst = max(worst, float((p - q).abs().max()))
        errors, cost = prog.epoch_stats()
        y = ref_pers[-1]
        assert errors == int((y.argmax(1) != labels).sum())
        assert abs(cost - 0.5 * float(((y - D) ** 2).sum())) <= 1e-12
    return worst


@pytest.mark.parametrize("method", ["ep", "ep_symmetric"])
@pytest.mark.parametrize("activation, clip", [("sigmoid", None), ("tanh", True), ("hard_sigmoid", None),
                                              ("hard_sigmoid", False), ("sigmoid", True)])
@pytest.mark.parametrize("persistent", [False, True])
def test_fused_program_equals_train_step_minibatch_by_minibatch(method, activation, clip, persistent):
    sizes = [6, 5, 4, 3]
    net = random_net(sizes, activation, seed=1, gain=1.0, bias_std=0.3, bias_mean=0.3)
    ph = eb.Phases(eps=0.45, free_steps=5, nudged_steps=3, beta=0.6, random_sign=True, clip=clip)
    assert fused_against_train_step(net, method, sizes, phases=ph, persistent=persistent) <= TOL


@pytest.mark.parametrize("method", ["ep", "ep_symmetric"])
def test_fused_program_on_a_two_layer_network(method):
    sizes = [6, 5, 3]
    net = random_net(sizes, "sigmoid", seed=2, gain=1.5)
    assert fused_against_train_step(net, method, sizes) <= TOL


@pytest.mark.parametrize("method", ["ep", "ep_symmetric"])
def test_read_reports_the_last_free_state_of_the_clipped_hard_sigmoid(method):
    """Clipped to [0, 1] only a NaN can go wrong, so read()'s largest |h| is that of the last free state, not the
    largest of the nudged states (here another number: no unit reaches the wall at 1)."""
    sizes = [6, 5, 4, 3]
    net = random_net(sizes, "hard_sigmoid", seed=1, gain=0.5, bias_std=0.1, bias_mean=0.4)
    assert fused_against_train_step(net, method, sizes) <= TOL


def _program(method="ep", activation="sigmoid", sizes=(6, 5, 4, 3), persistent=None, **kw):
    net = random_net(list(sizes), activation, seed=3, gain=1.0)
    X, D, labels = _examples(sizes)
    ph = kw.pop("phases", eb.Phases(eps=0.45, free_steps=4, nudged_steps=2, beta=0.6))
    return _trainloop.FusedEP(net, eb.get_estimator(method), ph, (0.2,) * net.N, 4, X, D, labels, persistent, **kw)


def test_fused_program_rejects_what_it_cannot_run_with_named_arguments():
    msg = "free_schedule: 'block' sets each layer to clip(pre_k), the exact minimiser of the energy given its " \
          "neighbours, only for the clipped hard sigmoid"
    assert_raises_exactly(lambda: _program(free_schedule="block"), ValueError, msg)
    assert_raises_exactly(lambda: _program(activation="hard_sigmoid", free_schedule="block",
                                           phases=eb.Phases(clip=False)), ValueError, msg)
    assert_raises_exactly(lambda: _program(free_schedule="fast"), ValueError,
                          "free_schedule: expected 'synchronous' or 'block', got 'fast'")
    assert_raises_exactly(lambda: _program(method="bp"), ValueError,
                          "estimator: 'bp' has no fused program (supported: ['ep', 'ep_symmetric'])")
    assert_raises_exactly(lambda: _program(graphs=True), ValueError, "graphs: CUDA graphs need a CUDA device")
    assert_raises_exactly(_program().epoch_stats, ValueError, "persistent: epoch_stats needs the persistent free states")
    assert not _program().use_graphs and not _program(graphs=False).use_graphs
    # the divergence bound of the trainer is relax's and run's default
    import inspect

    assert _program().max_abs == inspect.signature(eb.relax).parameters["max_abs"].default == 1e6


@pytest.mark.parametrize("method, activation", [("ep", "sigmoid"), ("ep_symmetric", "tanh"), ("ep", "hard_sigmoid")])
def test_fused_program_allocates_nothing_per_minibatch(method, activation):
    """The buffers are made with the shapes their calls write: no output is resized (a deprecated allocation)."""
    import warnings

    prog = _program(method, activation)
    bufs = (prog.x, prog.d, prog.lab, prog.drive, prog.bt_plus, prog.bt_minus, prog.amax, prog.wrong_b, prog.resid)
    ptrs = [t.data_ptr() for t in bufs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for idx in MINIBATCHES:
            prog.run(idx)
    assert [t.data_ptr() for t in bufs] == ptrs


def test_run_defaults_to_positive_beta():
    ph = eb.Phases(eps=0.45, free_steps=4, nudged_steps=2, beta=0.6, random_sign=True)
    a, b = _program(phases=ph), _program(phases=ph)  # the same network and data, twice
    a.run(MINIBATCHES[0])
    b.run(MINIBATCHES[0], 1.0)
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))


def test_read_reports_then_resets():
    prog = _program()
    prog.run(MINIBATCHES[0])
    errors, cost, big = prog.read()
    assert cost > 0.0 and big > 0.0 and isinstance(errors, int)
    assert prog.read() == (0, 0.0, 0.0)


def test_block_free_phase_equals_odd_even_sweeps_then_the_nudged_steps():
    """free_schedule='block': free_steps exact sweeps (ε = 1, odd layers then even) from zeros, then the usual
    nudged steps; the update is EP's (an independent route through run and ep_gradient)."""
    import copy

    sizes = [6, 5, 4, 3]
    net = random_net(sizes, "hard_sigmoid", seed=4, gain=1.0, bias_std=0.3, bias_mean=0.3)
    ref = copy.deepcopy(net)
    X, D, labels = _examples(sizes)
    ph = eb.Phases(eps=0.45, free_steps=3, nudged_steps=2, beta=0.6, random_sign=False)
    lrs = (0.3, 0.2, 0.1)
    prog = _trainloop.FusedEP(net, eb.get_estimator("ep"), ph, lrs, 4, X, D, labels, None, free_schedule="block")
    for idx in MINIBATCHES[:2]:
        x, d = X[idx], D[idx]
        free = eb.run(ref, ref.init_state(x), steps=3, eps=1.0, schedule="odd_even").at(-1)
        nudged = eb.run(ref, free, steps=2, eps=0.45, beta=0.6, target=d).at(-1)
        eb.apply_update(ref, eb.ep_gradient(ref, free, nudged, 0.6), lrs)
        prog.run(idx)
        assert max(float((p - q).abs().max()) for p, q in zip(net.parameters(), ref.parameters())) <= TOL


@pytest.mark.parametrize("method", ["ep", "ep_symmetric"])
def test_split_times_each_part_per_minibatch_and_moves_the_weights_as_run(method, monkeypatch):
    """split(): each part timed alone in every minibatch (a fake clock ticks once per reading), summed; the
    weights end where run() leaves them; ``calls`` is the length of the program."""
    import itertools
    import time

    a, b = _program(method), _program(method)  # the same network and data, twice
    signs = [1.0, 1.0, 1.0] if method == "ep_symmetric" else [1.0, -1.0, 1.0]
    clock = itertools.count()
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    out = a.split(MINIBATCHES, signs)
    monkeypatch.undo()
    assert out == {"free": 3.0, "bookkeeping": 3.0, "nudged": 3.0, "update": 3.0, "calls": len(b.programs[1.0])}
    for idx, s in zip(MINIBATCHES, signs):
        b.run(idx, s)
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
    one = _program(method).split(MINIBATCHES[:1], [1.0])
    assert set(one) == {"free", "bookkeeping", "nudged", "update", "calls"} and one["calls"] == out["calls"]


class _Seen(Exception):
    """Raised by a spy once it has seen the thread count: nothing runs on more than one thread here (a forked
    test worker can hang in a parallel region)."""


def test_the_loops_run_on_the_thread_count_of_the_policy(monkeypatch):
    """Small CPU problems run on one intra-op thread: relax and run, the trainer's epoch context and its split
    timing; the setting comes back afterwards."""
    seen = []

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        raise _Seen

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(_loop, "_advance", spy)
        net = random_net([3, 50, 50], "sigmoid")
        for B, want in ((50, 1), (51, 2)):  # one sample past ONE_THREAD_MACS: torch's setting
            x, d, h = random_batch(net, B=B, seed=1)
            with pytest.raises(_Seen):
                eb.relax(net, x, eps=0.5, tol=0.0, max_steps=3)
            with pytest.raises(_Seen):
                eb.run(net, h, steps=3, eps=0.5)
            assert seen == [want, want] and torch.get_num_threads() == 2
            seen.clear()
        monkeypatch.undo()
        prog = _program()
        with prog.threads_context():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(torch, "index_select", spy)
        with pytest.raises(_Seen):
            _program().split(MINIBATCHES[:1], [1.0])
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_identity_path_needs_every_layer_inside_the_clip_and_includes_the_walls():
    net = random_net(SIZES, "hard_sigmoid", seed=15)
    x, d, h = random_batch(net, B=3, seed=12)
    inside = [x] + [t.sigmoid() for t in h[1:]]
    walls = [x] + [t.clone() for t in inside[1:]]
    for t in walls[1:]:
        t[0, 0], t[1, 0] = 0.0, 1.0
    assert _loop.identity_rho_holds(net, (0.0, 1.0), walls)
    for k in range(1, net.N + 1):
        for bad in (-1e-9, 1.0 + 1e-9):
            h2 = [t.clone() for t in inside]
            h2[k][2, 1] = bad
            assert not _loop.identity_rho_holds(net, (0.0, 1.0), h2)


def test_a_replay_names_the_first_step_past_max_abs_not_one_at_it():
    """y ← β(d − y) outside [0, 1] (unclipped hard sigmoid, ε = 1, d = 0, β = 2): y = −1, 2, −4, 8 exactly; with
    max_abs = 4, step 2 sits at the bound and step 3 passes it, found by replaying a check interval of 3."""
    net = random_net([2, 1], "hard_sigmoid", seed=0)
    x = torch.rand(1, 2, dtype=f64)
    h0 = [x, torch.full((1, 1), -1.0, dtype=f64)]
    kw = dict(eps=1.0, beta=2.0, target=torch.zeros(1, 1, dtype=f64), clip=False, max_abs=4.0, check_every=3)
    want = (3, 1, "dynamics diverged at step 3 (layer h_1: non-finite or |h| > 4)")
    assert _divergence(lambda: eb.run(net, h0, steps=5, feedback=[None, None], **kw)) == want
    assert _divergence(lambda: eb.run(net, h0, steps=5, **kw)) == want
    assert _divergence(lambda: eb.relax(net, x, h0, max_steps=5, **kw)) == want
    assert [float(v) for v in eb.run(net, h0, steps=2, **dict(kw, max_abs=1e6)).h[1].flatten()] == [-1.0, 2.0, -4.0]


@pytest.mark.parametrize("check_every", [1, 4, 7, 21, 30])
def test_run_checks_every_recorded_state(check_every):
    """A Langevin excursion past max_abs at step 21 only is reported at step 21 whatever the check interval, as
    by the reference path: run checks every state recorded since its last check, not only the check point."""
    net = random_net(SIZES, "tanh", seed=7)
    x, d, h = random_batch(net, B=2, seed=5)
    h = [x] + [0.1 * t for t in h[1:]]
    kw = dict(eps=0.5, T=0.2, max_abs=2.5, steps=30)  # of steps 1 … 30 only step 21 is past max_abs
    want = _divergence(lambda: eb.run(net, h, generator=torch.Generator().manual_seed(1), feedback=explicit_w(net),
                                      **kw))
    assert want[:2] == (21, 1)
    assert _divergence(lambda: eb.run(net, h, generator=torch.Generator().manual_seed(1), check_every=check_every,
                                      **kw)) == want
