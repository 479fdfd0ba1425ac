"""Estimators (ebmlib.estimators) against hand computations and independent routes: what mutation testing asked.

Every expected value here comes from a formula of the module docstring written out by hand (loops over
steps, outer products), from autograd of the energy, or from the public dynamics (``eb.run``) driven
step by step; error messages are matched in full.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb
from ebmlib.estimators import _plasticity

f64 = torch.float64
TIGHT = dict(atol=1e-12, rtol=1e-10)


def _close(a, b):
    return torch.allclose(a, b, **TIGHT)


def _grads_close(got, want):
    assert got[0] is None and len(got) == len(want)
    for (gw, gb), (ww, wb) in zip(got[1:], want[1:]):
        assert gw.shape == ww.shape and gb.shape == wb.shape
        assert _close(gw, ww) and _close(gb, wb)


def _dE_dtheta(net, h):
    """∂E/∂θ averaged over the batch, by autograd of the energy (an independent route)."""
    tmp = net.clone()
    ps = tmp.parameters()
    for p in ps:
        p.requires_grad_(True)
    g = torch.autograd.grad(tmp.energy(list(h)).mean(), ps)
    return [None] + [(g[2 * k - 2], g[2 * k - 1]) for k in range(1, net.N + 1)]


def _ep_by_hand(net, h_free, h_nudged, beta):
    a, b = _dE_dtheta(net, h_nudged), _dE_dtheta(net, h_free)
    return [None] + [((a[k][0] - b[k][0]) / beta, (a[k][1] - b[k][1]) / beta) for k in range(1, net.N + 1)]


def _msg(text):
    return "^" + re.escape(text) + "$"


# ---------------------------------------------------------------------------- formulas from states
def test_chain_param_gradient_is_the_layer_formula_with_the_raw_input_below_layer_1():
    # sigmoid: ρ(x) ≠ x, so layer 1 must use the input itself, ρ(h_{k−1}) above it
    net = random_net([5, 6, 4, 3], "sigmoid", seed=3)
    x, d, h = random_batch(net, B=7, seed=1)
    g = eb.chain_gradient(net, h, d)
    got = eb.chain_param_gradient(net, h, d)
    B = x.shape[0]
    for k in range(1, net.N + 1):
        e = net.activation.drho(h[k]) * g[k]
        r_prev = x if k == 1 else torch.sigmoid(h[k - 1])
        W = sum(torch.outer(r_prev[b], e[b]) for b in range(B)) / B
        assert _close(got[k][0], W)
        assert got[k][1].shape == (net.sizes[k],)
        assert _close(got[k][1], e.sum(0) / B)


def test_plasticity_rules_by_hand_over_a_window_with_a_free_run():
    # 5 examples, a window of 3 steps (T ≠ B), β = 0.3 (β² ≠ 1): the sum over steps and the mean over the
    # batch, and −1/β on the biases as on the weights
    net = random_net([4, 5, 3], "sigmoid", seed=4)
    x, d, h = random_batch(net, B=5, seed=2)
    beta, t0, t1 = 0.3, 1, 4
    nudged = eb.run(net, h, steps=5, eps=0.4, beta=beta, target=d)
    free = eb.run(net, h, steps=5, eps=0.4)
    B = x.shape[0]

    def rule_by_hand(tr, rule, k):
        pre = [x] * 6 if k == 1 else [torch.sigmoid(tr.h[k - 1][t]) for t in range(6)]
        if rule == "bengio":
            post = [tr.h[k][t] for t in range(6)]
        else:
            post = [torch.sigmoid(tr.h[k][t]) for t in range(6)]
        if rule == "tied":
            W = (pre[t1].T @ post[t1] - pre[t0].T @ post[t0]) / B
            b = (post[t1] - post[t0]).sum(0) / B
        else:
            W = sum(torch.outer(pre[t][i], post[t + 1][i] - post[t][i]) for t in range(t0, t1) for i in range(B)) / B
            b = sum(post[t + 1] - post[t] for t in range(t0, t1)).sum(0) / B
        return W, b

    for rule in eb.RULES:
        got = eb.plasticity_gradient(net, nudged, beta, rule, free=free, t0=t0, t1=t1)
        alone = eb.plasticity_gradient(net, nudged, beta, rule, t0=t0, t1=t1)
        for k in range(1, net.N + 1):
            Wn, bn = rule_by_hand(nudged, rule, k)
            Wf, bf = rule_by_hand(free, rule, k)
            assert _close(got[k][0], -(Wn - Wf) / beta) and _close(got[k][1], -(bn - bf) / beta)
            assert _close(alone[k][0], -Wn / beta) and _close(alone[k][1], -bn / beta)
    # the rules are distinct: the Bengio rule uses the state, Xie & Seung the rate
    a = eb.plasticity_gradient(net, nudged, beta, "bengio", free=free, t0=t0, t1=t1)
    b = eb.plasticity_gradient(net, nudged, beta, "xie_seung", free=free, t0=t0, t1=t1)
    assert not torch.allclose(a[1][0], b[1][0], atol=1e-6)


def test_tied_rule_is_ep_on_the_biases_too():
    net = random_net([4, 5, 3], "sigmoid", seed=5)
    x, d, h = random_batch(net, B=3, seed=3)
    beta = 0.25
    nudged = eb.run(net, h, steps=6, eps=0.5, beta=beta, target=d)
    _grads_close(eb.plasticity_gradient(net, nudged, beta, "tied"), _ep_by_hand(net, h, nudged.at(6), beta))


@pytest.mark.parametrize("t0, t1", [(1, 1), (2, 2), (0, 0), (2, 1), (-1, 2), (0, 3)])
def test_plasticity_window_must_be_non_empty_and_inside(t0, t1):
    net = random_net([3, 2])
    x, d, h = random_batch(net)
    tr = eb.run(net, h, steps=2, eps=0.5, beta=0.1, target=d)
    with pytest.raises(ValueError, match=_msg(f"t0, t1: need 0 <= t0 < t1 <= 2, got {t0}, {t1}")):
        eb.plasticity_gradient(net, tr, 0.1, "tied", t0=t0, t1=t1)


def test_ep_param_steps_type_errors_name_the_argument():
    net = random_net([3, 2])
    x, d, h = random_batch(net)
    tr = eb.run(net, h, steps=2, eps=0.5, beta=0.1, target=d)
    with pytest.raises(TypeError, match=_msg("nudged: expected a Trajectory, got list")):
        eb.ep_param_steps(net, [tr], 0.1)
    with pytest.raises(TypeError, match=_msg("free: expected a Trajectory, got dict")):
        eb.ep_param_steps(net, tr, 0.1, free={})
    with pytest.raises(ValueError, match=_msg("free: 3 steps, nudged has 2")):
        eb.ep_param_steps(net, tr, 0.1, free=eb.run(net, h, steps=3, eps=0.5))


def test_first_arrival_gradient_checks_drho_and_honours_clip():
    net = random_net([4, 5, 3], "sigmoid", seed=6)
    x, d, h = random_batch(net, B=4, seed=4)  # h: normal draws, far outside [0, 1]
    with pytest.raises(TypeError, match=_msg("drho: expected bool, got int")):
        eb.first_arrival_gradient(net, h, d, eps=0.5, beta=0.1, drho=1)
    eps, beta, N, B = 0.5, 0.2, net.N, x.shape[0]
    out = {}
    for clip in (True, False):
        got = eb.first_arrival_gradient(net, h, d, eps=eps, beta=beta, clip=clip)
        # the paired run by hand: nudged minus free, both from h, both clipped or not
        nud = eb.run(net, h, steps=N + 1, eps=eps, beta=beta, target=d, clip=clip)
        fre = eb.run(net, h, steps=N + 1, eps=eps, clip=clip)
        for k in range(1, N + 1):
            m = N - k
            g_hat = -(nud.h[k][m + 1] - fre.h[k][m + 1]) / (beta * eps ** (m + 1))
            e = net.activation.drho(h[k]) * g_hat
            r_prev = x if k == 1 else torch.sigmoid(h[k - 1])
            assert _close(got[k][0], r_prev.T @ e / B) and _close(got[k][1], e.mean(0))
        out[clip] = got
    assert not torch.allclose(out[True][1][0], out[False][1][0], atol=1e-6)
    # the sigmoid does not clip by default
    _grads_close(eb.first_arrival_gradient(net, h, d, eps=eps, beta=beta), out[False])


def _bp_autograd(net, x, d, act):
    ps = [p.clone().requires_grad_(True) for p in net.parameters()]
    r = x
    for k in range(1, net.N + 1):
        r = act(r @ ps[2 * k - 2] + ps[2 * k - 1])
    return torch.autograd.grad(0.5 * ((r - d) ** 2).sum(1).mean(), ps), r.detach()


def test_bp_gradient_state_drho_only_matters_for_a_clipping_activation():
    # sigmoid (no clipping): state_drho=True is still plain back-propagation
    net = random_net([5, 6, 3], "sigmoid", seed=7)
    x, d, _ = random_batch(net, B=6, seed=5)
    auto, r = _bp_autograd(net, x, d, torch.sigmoid)
    for sd in (True, False):
        grads, y = eb.bp_gradient(net, x, d, state_drho=sd)
        assert _close(y, r)
        for k in range(1, net.N + 1):
            assert _close(grads[k][0], auto[2 * k - 2]) and _close(grads[k][1], auto[2 * k - 1])
    # hard sigmoid with saturated units: the default is the straight-through state_drho=True
    net = random_net([5, 6, 3], "hard_sigmoid", seed=7, gain=3.0)
    x, d, _ = random_batch(net, B=6, seed=5)
    st, _ = eb.bp_gradient(net, x, d, state_drho=True)
    plain, _ = eb.bp_gradient(net, x, d, state_drho=False)
    _grads_close(eb.bp_gradient(net, x, d)[0], st)
    assert not torch.allclose(st[1][0], plain[1][0], atol=1e-6)


# ---------------------------------------------------------------------------- Phases and Estimator
@pytest.mark.parametrize(
    "kw, exc, msg",
    [
        (dict(free_steps=0), ValueError, "free_steps: must be >= 1, got 0"),
        (dict(free_steps=2.0), TypeError, "free_steps: expected an integer, got float"),
        (dict(nudged_steps=0), ValueError, "nudged_steps: must be >= 1, got 0"),
        (dict(nudged_steps="4"), TypeError, "nudged_steps: expected an integer, got str"),
        (dict(eps=1.5), ValueError, "eps: the step ε must lie in (0, 1], got 1.5"),
        (dict(beta=0.0), ValueError, "beta: must be non-zero to nudge the output"),
        (dict(random_sign=1), TypeError, "random_sign: expected bool, got int"),
        (dict(drho=None), TypeError, "drho: expected bool, got NoneType"),
        (dict(bp_state_drho="yes"), TypeError, "bp_state_drho: expected bool, got str"),
        (dict(clip=1), TypeError, "clip: expected bool, got int"),
    ],
)
def test_phases_validation_messages(kw, exc, msg):
    with pytest.raises(exc, match=_msg(msg)):
        eb.Phases(**kw)


def test_phases_accepts_an_explicit_clip():
    assert eb.Phases(clip=True).clip is True
    assert eb.Phases(clip=False).clip is False
    assert eb.Phases().clip is None


def test_estimator_call_checks_its_arguments():
    net = random_net([4, 3, 3], seed=1)
    x, d, _ = random_batch(net, B=4)
    est = eb.ESTIMATORS["bp"]
    with pytest.raises(TypeError, match=_msg("net: expected a LayeredEBM, got str")):
        est("net", x, d)
    with pytest.raises(TypeError, match=_msg("phases: expected ebmlib.Phases, got dict")):
        est(net, x, d, phases={})
    with pytest.raises(TypeError, match=_msg("generator: expected torch.Generator, got int")):
        est(net, x, d, generator=5)
    # a one-row target would broadcast against a batch of 4: it must be refused
    with pytest.raises(ValueError, match=_msg("target: expected shape (4, 3), got (1, 3)")):
        est(net, x, d[:1])


def test_a_random_sign_needs_an_explicit_generator():
    net = random_net([4, 5, 3], "sigmoid", seed=8, gain=1.0)
    x, d, _ = random_batch(net, B=3, seed=6)
    ph = eb.Phases(beta=0.5, random_sign=True, free_steps=3, nudged_steps=2)
    for name in ("ep", "first_arrival", "plasticity_tied"):
        with pytest.raises(ValueError, match=_msg("generator: an explicit torch.Generator is required to draw the "
                                                  "sign of beta (random_sign=True; seeds are parameters)")):
            eb.ESTIMATORS[name](net, x, d, phases=ph)
    # estimators that draw no sign need none, and a fixed sign needs none
    eb.ESTIMATORS["ep_symmetric"](net, x, d, phases=ph)
    fixed = eb.ESTIMATORS["ep"](net, x, d, phases=eb.Phases(beta=0.5, random_sign=False, free_steps=3,
                                                             nudged_steps=2)).grads
    seeded = {s: eb.ESTIMATORS["ep"](net, x, d, phases=ph, generator=torch.Generator().manual_seed(s)).grads
              for s in (0, 1)}
    # seeds 0 and 1 draw opposite signs; one of them is the fixed +β
    assert not torch.allclose(seeded[0][1][0], seeded[1][1][0], atol=1e-8)
    assert any(torch.allclose(seeded[s][1][0], fixed[1][0], atol=1e-14, rtol=0) for s in (0, 1))


def test_random_sign_is_a_fair_coin():
    # 400 minibatches: the share of +β is 1/2 within 4 standard errors (0.1)
    net = random_net([2, 2, 2], "sigmoid", seed=9, gain=1.0)
    x, d, _ = random_batch(net, B=1, seed=7)
    est = eb.ESTIMATORS["ep"]
    fixed = dict(free_steps=1, nudged_steps=1)
    plus = est(net, x, d, phases=eb.Phases(beta=0.5, random_sign=False, **fixed)).grads[2][0]
    minus = est(net, x, d, phases=eb.Phases(beta=-0.5, random_sign=False, **fixed)).grads[2][0]
    assert not torch.allclose(plus, minus, atol=1e-8)
    ph = eb.Phases(beta=0.5, random_sign=True, **fixed)
    gen = torch.Generator().manual_seed(123)
    n_plus, n = 0, 400
    for _ in range(n):
        w = est(net, x, d, phases=ph, generator=gen).grads[2][0]
        is_plus = torch.allclose(w, plus, atol=1e-14, rtol=0)
        assert is_plus or torch.allclose(w, minus, atol=1e-14, rtol=0)
        n_plus += is_plus
    assert abs(n_plus / n - 0.5) < 0.1


def test_register_builds_an_estimator_with_its_summary():
    def fn(net, x, target, h0, ph, gen):
        """First line of the doc.

        Second line.
        """
        return eb.Estimate([None], x)

    def nodoc(net, x, target, h0, ph, gen):
        return eb.Estimate([None], x)

    names = ["_t_doc", "_t_given", "_t_nodoc", "_t_ff"]
    try:
        assert eb.register("_t_doc")(fn) is fn
        eb.register("_t_given", summary="Given summary.")(fn)
        eb.register("_t_nodoc")(nodoc)
        eb.register("_t_ff", free_phase=False)(nodoc)
        e = eb.ESTIMATORS["_t_doc"]
        assert isinstance(e, eb.Estimator)
        assert (e.name, e.estimate, e.free_phase, e.summary) == ("_t_doc", fn, True, "First line of the doc.")
        g = eb.get_estimator("_t_given")
        assert (g.name, g.estimate, g.free_phase, g.summary) == ("_t_given", fn, True, "Given summary.")
        n = eb.ESTIMATORS["_t_nodoc"]
        assert (n.name, n.estimate, n.free_phase, n.summary) == ("_t_nodoc", nodoc, True, "")
        f = eb.ESTIMATORS["_t_ff"]
        assert (f.name, f.estimate, f.free_phase, f.summary) == ("_t_ff", nodoc, False, "")
        with pytest.raises(ValueError, match=_msg("name: an estimator '_t_doc' is already registered")):
            eb.register("_t_doc")(nodoc)
    finally:
        for name in names:
            eb.ESTIMATORS.pop(name, None)


# ---------------------------------------------------------------------------- the phases, by hand
def _phases_by_hand(net, x, d, h0, eps, free_steps, nudged_steps, beta, clip):
    start = net.init_state(x) if h0 is None else [x] + list(h0[1:])
    free = eb.run(net, start, steps=free_steps, eps=eps, clip=clip).at(free_steps)
    nudged = eb.run(net, free, steps=nudged_steps, eps=eps, beta=beta, target=d, clip=clip)
    still = eb.run(net, free, steps=nudged_steps, eps=eps, clip=clip)
    return free, nudged, still


@pytest.mark.parametrize("with_h0", [False, True])
def test_ep_estimator_runs_its_phases_as_configured(with_h0):
    # ε 0.3, 7 free and 3 nudged steps, clipping a sigmoid (which does not clip by default)
    net = random_net([4, 5, 3], "sigmoid", seed=11)
    x, d, h = random_batch(net, B=4, seed=3)
    h0 = h if with_h0 else None
    cfg = dict(eps=0.3, free_steps=7, nudged_steps=3, beta=0.4)
    ph = eb.Phases(random_sign=False, clip=True, **cfg)
    out = eb.ESTIMATORS["ep"](net, x, d, h0=h0, phases=ph)
    free, nudged, _ = _phases_by_hand(net, x, d, h0, clip=True, **cfg)
    _grads_close(out.grads, _ep_by_hand(net, free, nudged.at(3), 0.4))
    assert _close(out.output, free[net.N])
    assert all(_close(a, b) for a, b in zip(out.free[1:], free[1:]))
    unclipped = eb.ESTIMATORS["ep"](net, x, d, h0=h0, phases=eb.Phases(random_sign=False, clip=False, **cfg))
    assert not torch.allclose(unclipped.grads[1][0], out.grads[1][0], atol=1e-6)


@pytest.mark.parametrize("rule", ["bengio", "xie_seung", "tied"])
def test_plasticity_estimators_run_a_nudged_and_a_paired_free_phase(rule):
    net = random_net([4, 5, 3], "sigmoid", seed=12)
    x, d, h = random_batch(net, B=4, seed=8)
    cfg = dict(eps=0.3, free_steps=6, nudged_steps=3, beta=0.4)
    fn = _plasticity(rule)  # the factory behind ESTIMATORS["plasticity_" + rule]
    assert rule in fn.__doc__
    assert eb.ESTIMATORS["plasticity_" + rule].summary == fn.__doc__
    gen = torch.Generator().manual_seed(0)
    for h0 in (None, h):
        out = fn(net, x, d, h0, eb.Phases(random_sign=False, clip=True, **cfg), gen)
        free, nudged, still = _phases_by_hand(net, x, d, h0, clip=True, **cfg)
        ref = eb.plasticity_gradient(net, nudged, 0.4, rule, free=still)
        _grads_close(out.grads, ref)
        assert _close(out.output, free[net.N])
        assert all(_close(a, b) for a, b in zip(out.free[1:], free[1:]))
        if rule == "tied":  # the tied rule telescopes: EP between the two phases' end points
            _grads_close(out.grads, _ep_by_hand(net, still.at(3), nudged.at(3), 0.4))
        registered = eb.ESTIMATORS["plasticity_" + rule](net, x, d, h0=h0, phases=eb.Phases(random_sign=False,
                                                                                            clip=True, **cfg))
        _grads_close(out.grads, registered.grads)
    # the sign of β is drawn from the generator passed in: the same seed gives the same sign as ep's draw
    ph = eb.Phases(random_sign=True, clip=True, **cfg)
    pos = fn(net, x, d, None, eb.Phases(random_sign=False, clip=True, **cfg), gen).grads[1][0]
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        signs = []
        for s in range(10):
            w = fn(net, x, d, None, ph, torch.Generator().manual_seed(s)).grads[1][0]
            ep_w = eb.ESTIMATORS["ep"](net, x, d, phases=eb.Phases(random_sign=True, **cfg),
                                       generator=torch.Generator().manual_seed(s)).grads[1][0]
            ep_pos = eb.ESTIMATORS["ep"](net, x, d, phases=eb.Phases(random_sign=False, **cfg)).grads[1][0]
            signs.append((torch.allclose(w, pos, **TIGHT), torch.allclose(ep_w, ep_pos, **TIGHT)))
    assert all(a == b for a, b in signs) and {a for a, _ in signs} == {True, False}
