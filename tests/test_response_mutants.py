"""ebmlib.response: the nudged-minus-free response checked against runs of the dynamics made here,
the structure of FirstArrival, and argument validation with full messages."""

import re

import pytest
import torch
from conftest import hard_sigmoid_fixed_point, random_batch, random_net

import ebmlib as eb
from ebmlib.response import FirstArrival

EPS = 0.5
f64 = torch.float64


@pytest.fixture(scope="module")
def sig():
    """Sigmoid (no clip by default), N = 3, batch 3, its free fixed point and a random state."""
    net = random_net([4, 5, 4, 3], "sigmoid", seed=1, gain=2.0, bias_std=0.4)
    x, d, h = random_batch(net, B=3, seed=2)
    star = eb.relax(net, x, eps=EPS, tol=1e-14, max_steps=20000).h
    return net, x, d, h, star


@pytest.fixture(scope="module")
def hard():
    """Hard sigmoid (clips by default) at a fixed point with pinned units."""
    return hard_sigmoid_fixed_point(EPS)


def _ref(net, h_star, *, steps, eps, beta=0.0, target=None, start=None, clip=None, feedback=None):
    """δ = nudged run − free run, written with eb.run."""
    start = h_star if start is None else start
    nudged = eb.run(net, start, steps=steps, eps=eps, beta=beta, target=target, clip=clip, feedback=feedback)
    free = eb.run(net, h_star, steps=steps, eps=eps, clip=clip, feedback=feedback)
    return [None] + [nudged.h[k] - free.h[k] for k in range(1, net.N + 1)]


def _same(a, b, tol=1e-15):
    return a.shape == b.shape and float((a - b).abs().max()) <= tol


def _same_list(a, b, tol=1e-15):
    return len(a) == len(b) and a[0] is None and all(_same(x, y, tol) for x, y in zip(a[1:], b[1:]))


# ------------------------------------------------------------------ clip is passed through
def test_clip_is_passed_to_every_run(sig):
    """A sigmoid net does not clip by default: clip=True on a state outside (0, 1) changes δ."""
    net, x, d, h, _ = sig
    N, beta = net.N, 0.3
    ref = _ref(net, h, steps=N + 1, eps=EPS, beta=beta, target=d, clip=True)
    unclipped = _ref(net, h, steps=N + 1, eps=EPS, beta=beta, target=d)
    assert float((ref[N] - unclipped[N]).abs().max()) > 1e-3  # the clip matters here

    got = eb.nudge_response(net, h, steps=N + 1, eps=EPS, beta=beta, target=d, clip=True)
    assert _same_list(got, ref)

    fa = eb.first_arrival(net, h, d, eps=EPS, beta=beta, clip=True)
    assert _same_list(fa.delta, ref)

    sr = eb.state_response(net, h, d, steps=N + 1, eps=EPS, beta=beta, clip=True)
    assert _same_list(sr, [None] + [(r[1:] - r[:-1]) / beta for r in ref[1:]], 1e-13)

    eta = 0.7
    g = eb.chain_gradient(net, h, d)
    start = list(h)
    start[N] = h[N] - eta * g[N]
    da = eb.displaced_arrival(net, h, d, eps=EPS, eta=eta, clip=True)
    assert _same_list(da.delta, _ref(net, h, steps=N + 1, eps=EPS, start=start, clip=True))

    # Richardson: 2 δ^{ε/2}(t) − δ^{ε}(t) at t = 0.5, 1.0 (steps 1, 2 at ε; 2, 4 at ε/2)
    cr = eb.continuous_response(net, h, times=[0.5, 1.0], eps=EPS, beta=beta, target=d, clip=True)
    coarse = _ref(net, h, steps=2, eps=EPS, beta=beta, target=d, clip=True)
    fine = _ref(net, h, steps=4, eps=EPS / 2, beta=beta, target=d, clip=True)
    want = [None] + [2.0 * fine[k][[2, 4]] - coarse[k][[1, 2]] for k in range(1, N + 1)]
    assert _same_list(cr, want, 1e-14)
    plain = eb.continuous_response(net, h, times=[0.5, 1.0], eps=EPS, beta=beta, target=d)
    assert float((plain[N] - cr[N]).abs().max()) > 1e-3


def test_continuous_response_is_second_order(sig):
    """The extrapolation is much closer to a fine-step reference than the plain ε/2 response."""
    net, x, d, _, star = sig
    beta, eps = 1.0, 0.05
    cr = eb.continuous_response(net, star, times=[0.4, 0.8], eps=eps, beta=beta, target=d)
    half = _ref(net, star, steps=32, eps=eps / 2, beta=beta, target=d)
    fine = _ref(net, star, steps=512, eps=eps / 32, beta=beta, target=d)
    finer = _ref(net, star, steps=1024, eps=eps / 64, beta=beta, target=d)
    for k in range(1, net.N + 1):
        exact = 2.0 * finer[k][[512, 1024]] - fine[k][[256, 512]]
        err_r = float((cr[k] - exact).abs().max())
        err_h = float((half[k][[16, 32]] - exact).abs().max())
        assert err_r < 0.15 * err_h


# ------------------------------------------------------------------ first arrival
def test_first_arrival_structure(sig):
    net, x, d, _, star = sig
    N, beta = net.N, 1e-6
    fa = eb.first_arrival(net, star, d, eps=EPS, beta=beta)
    g = eb.chain_gradient(net, star, d)
    ref = _ref(net, star, steps=N + 1, eps=EPS, beta=beta, target=d)
    assert fa.N == N
    assert fa.distance == [None] + [N - k for k in range(1, N + 1)]
    assert fa.step_predicted == [None] + [N - k + 1 for k in range(1, N + 1)]
    assert fa.step == fa.step_predicted and fa.steps_match()
    # one step beyond the last arrival is run
    assert _same_list(fa.delta, ref)
    assert [fa.delta[k].shape[0] for k in range(1, N + 1)] == [N + 2] * N
    assert _same_list(fa.g, g, 0.0) and _same_list(fa.g_backprop, g, 0.0)
    assert fa.silent == [None] + [True] * N
    for name in ("arrival", "predicted", "cos", "ratio", "cos_backprop"):
        assert len(getattr(fa, name)) == N + 1 and getattr(fa, name)[0] is None
    for k in range(1, N + 1):
        m = N - k
        assert torch.equal(fa.arrival[k], ref[k][m + 1])
        assert torch.all(ref[k][: m + 1] == 0)
        assert _same(fa.predicted[k], -beta * EPS ** (m + 1) * g[k], 0.0)
        assert fa.cos[k] == pytest.approx(eb.cosine(fa.arrival[k], fa.predicted[k]), abs=1e-15)
        assert fa.ratio[k] == pytest.approx(eb.magnitude_ratio(fa.arrival[k], fa.predicted[k]), abs=1e-15)
        assert fa.cos_backprop[k] == pytest.approx(eb.cosine(fa.arrival[k], -g[k]), abs=1e-15)
        assert fa.cos[k] > 1 - 1e-6 and abs(fa.ratio[k] - 1) < 1e-4
    assert fa.worst_cos() == min(fa.cos[1:])
    assert fa.worst_ratio_error() == max(abs(r - 1) for r in fa.ratio[1:])
    assert fa.reached_in_one_step() == 1  # only the output, synchronous


def test_first_arrival_summaries_on_handmade_results():
    none4 = [None] * 4
    fa = FirstArrival(distance=[None, 2, 1, 0], delta=none4, arrival=none4, predicted=none4, g=none4,
                      silent=none4, cos=[None, 0.2, 0.9, None], ratio=[None, 1.5, None, 1.1],
                      step=[None, 1, 1, 2], step_predicted=[None, 3, 2, 1], g_backprop=none4, cos_backprop=none4)
    assert fa.N == 3
    assert fa.worst_cos() == 0.2
    assert fa.worst_ratio_error() == pytest.approx(0.5, abs=1e-15)
    assert fa.reached_in_one_step() == 2
    assert not fa.steps_match()


def test_first_arrival_with_feedback_keeps_the_backprop_gradient(sig):
    net, x, d, h, _ = sig
    B = eb.feedback_weights(net, 0.8, seed=7)
    fa = eb.first_arrival(net, h, d, eps=EPS, beta=1e-6, feedback=B)
    g_fb = eb.chain_gradient(net, h, d, feedback=B)
    g_bp = eb.chain_gradient(net, h, d)
    assert float((g_fb[1] - g_bp[1]).abs().max()) > 1e-3
    assert _same_list(fa.g, g_fb, 0.0)
    assert _same_list(fa.g_backprop, g_bp, 0.0)
    assert _same_list(fa.delta, _ref(net, h, steps=net.N + 1, eps=EPS, beta=1e-6, target=d, feedback=B))
    for k in range(1, net.N + 1):
        assert fa.cos_backprop[k] == pytest.approx(eb.cosine(fa.arrival[k], -g_bp[k]), abs=1e-15)
        assert fa.cos[k] == pytest.approx(eb.cosine(fa.arrival[k], fa.predicted[k]), abs=1e-15)


def test_first_arrival_mask_and_clip_reach_the_chain_gradient(hard):
    net, x, d, h = hard
    masked = eb.chain_gradient(net, h, d, mask="pinned")
    plain = eb.chain_gradient(net, h, d)
    assert any(float((masked[k] - plain[k]).abs().max()) > 0 for k in range(1, net.N + 1))
    fa = eb.first_arrival(net, h, d, eps=EPS, beta=1e-6, mask="pinned")
    assert _same_list(fa.g, masked, 0.0)
    assert _same_list(fa.g_backprop, plain, 0.0)  # the backprop gradient is never masked
    # without the clip no unit is pinned: the mask removes nothing
    fa2 = eb.first_arrival(net, h, d, eps=EPS, beta=1e-6, mask="pinned", clip=False)
    assert _same_list(fa2.g, plain, 0.0)
    assert _same_list(fa2.delta, _ref(net, h, steps=net.N + 1, eps=EPS, beta=1e-6, target=d, clip=False))


def test_first_arrival_zero_arrival_or_zero_prediction_gives_none():
    """Cosine and ratio are None (not an error) where the arrival or the prediction is zero."""
    base = random_net([3, 2, 2], "hard_sigmoid", seed=5, gain=1.0, bias_std=0.0)
    x = torch.tensor([[0.2, 0.7, 0.4]], dtype=f64)
    d = torch.tensor([[0.1, 0.9]], dtype=f64)
    # (a) layer 1 held at 0 by a strongly negative bias: its arrival is 0, the unmasked prediction not
    net = eb.LayeredEBM(base.sizes, "hard_sigmoid", W=base.W, b=[None, torch.full((2,), -20.0, dtype=f64),
                                                                   torch.zeros(2, dtype=f64)])
    h = [x, torch.zeros(1, 2, dtype=f64), torch.full((1, 2), 0.5, dtype=f64)]
    fa = eb.first_arrival(net, h, d, eps=EPS, beta=0.1)
    assert float(fa.arrival[1].norm()) == 0.0 and float(fa.predicted[1].norm()) > 0.0
    assert fa.cos[1] is None and fa.ratio[1] is None and fa.cos_backprop[1] is None
    assert fa.cos[2] == pytest.approx(1.0, abs=1e-12) and fa.step[1] is None
    # (b) no clip, output above 1 (ρ' = 0): the prediction for layer 1 is 0, its arrival is not
    net = eb.LayeredEBM(base.sizes, "hard_sigmoid", W=base.W, b=[None, torch.zeros(2, dtype=f64),
                                                                   torch.zeros(2, dtype=f64)])
    h = [x, torch.full((1, 2), 0.5, dtype=f64), torch.full((1, 2), 1.5, dtype=f64)]
    fa = eb.first_arrival(net, h, d, eps=EPS, beta=0.1, clip=False)
    assert float(fa.arrival[1].norm()) > 0.0 and float(fa.predicted[1].norm()) == 0.0
    assert fa.cos[1] is None and fa.ratio[1] is None and fa.cos_backprop[1] is None
    assert fa.cos[2] == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------ displaced arrival
@pytest.mark.parametrize("eta", [1e-6, 1.0])
def test_displaced_arrival_structure(sig, eta):
    net, x, d, _, star = sig
    N = net.N
    g = eb.chain_gradient(net, star, d)
    start = list(star)
    start[N] = star[N] - eta * g[N]
    ref = _ref(net, star, steps=N + 1, eps=EPS, start=start)
    da = eb.displaced_arrival(net, star, d, eps=EPS, eta=eta)
    assert _same_list(da.delta, ref)
    assert [da.delta[k].shape[0] for k in range(1, N + 1)] == [N + 2] * N
    assert _same_list(da.g, g, 0.0) and _same_list(da.g_backprop, g, 0.0)
    assert da.distance == [None] + [N - k for k in range(1, N + 1)]
    assert da.step_predicted == [None] + [N - k for k in range(1, N + 1)]
    assert da.step == da.step_predicted and da.steps_match()
    assert da.silent == [None] + [True] * N
    assert _same(da.arrival[N], -eta * g[N], 1e-15)
    for k in range(1, N + 1):
        m = N - k
        if k < N:
            assert torch.equal(da.arrival[k], ref[k][m] - ref[k][m - 1] if m > 0 else ref[k][0])
            assert _same(da.arrival[k], ref[k][m], 0.0)  # δ_k(m − 1) = 0 exactly
        assert _same(da.predicted[k], -eta * EPS**m * g[k], 0.0)
        assert da.cos[k] == pytest.approx(eb.cosine(da.arrival[k], da.predicted[k]), abs=1e-15)
        assert da.cos_backprop[k] == pytest.approx(eb.cosine(da.arrival[k], -g[k]), abs=1e-15)
        if eta < 1e-3:
            assert da.cos[k] > 1 - 1e-6 and abs(da.ratio[k] - 1) < 1e-4


def test_displaced_arrival_validation(sig):
    net, x, d, _, star = sig
    with pytest.raises(TypeError, match=r"^eta: expected a real number, got str$"):
        eb.displaced_arrival(net, star, d, eps=EPS, eta="big")
    with pytest.raises(ValueError, match=r"^eta: must be non-zero to displace the output$"):
        eb.displaced_arrival(net, star, d, eps=EPS, eta=0.0)


# ------------------------------------------------------------------ first change steps
def test_first_change_steps_validation_and_layouts():
    msg = "^" + re.escape("delta: expected a list [None, δ_1, …, δ_N] with time on axis 0") + "$"
    with pytest.raises(ValueError, match=msg):
        eb.first_change_steps(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=msg):
        eb.first_change_steps([None])
    with pytest.raises(TypeError, match=r"^delta\[1\]: expected a torch.Tensor, got str$"):
        eb.first_change_steps([None, "x"])
    # N = 1 (a list of length 2), entries with time on axis 0 and one other axis
    z = torch.zeros(4, 3, dtype=f64)
    z[2, 1] = -1e-300
    assert eb.first_change_steps([None, z]) == [None, 2]
    assert eb.first_change_steps((None, torch.zeros(3, 1, 2), z)) == [None, None, 2]


# ------------------------------------------------------------------ validation, full messages
def test_state_response_validation(sig):
    net, x, d, h, _ = sig
    with pytest.raises(ValueError, match=r"^h_star: expected a list \[x, h_1, \.\.\., h_N\] of length 4$"):
        eb.state_response(net, h[:2], d, steps=3, eps=EPS, beta=0.1)
    with pytest.raises(ValueError, match=r"^steps: must be >= 1, got 0$"):
        eb.state_response(net, h, d, steps=0, eps=EPS, beta=0.1)
    with pytest.raises(ValueError, match=r"^target: expected shape \(3, 3\), got \(2, 3\)$"):
        eb.state_response(net, h, d[:2], steps=3, eps=EPS, beta=0.1)


def test_continuous_response_validation(sig):
    net, x, d, h, _ = sig
    kw = dict(times=[0.5, 1.0], eps=EPS, target=d)
    with pytest.raises(TypeError, match=r"^beta: expected a real number, got str$"):
        eb.continuous_response(net, h, beta="x", **kw)
    with pytest.raises(ValueError, match=r"^h_star: expected a list \[x, h_1, \.\.\., h_N\] of length 4$"):
        eb.continuous_response(net, h[:2], beta=0.1, **kw)
    with pytest.raises(ValueError, match=r"^start: expected a list \[x, h_1, \.\.\., h_N\] of length 4$"):
        eb.continuous_response(net, h, beta=0.1, start=h[:3], **kw)
    with pytest.raises(ValueError, match=r"^times: expected a 1-D sequence of at least 2 numbers, got shape \(1,\)$"):
        eb.continuous_response(net, h, times=[1.0], eps=EPS, beta=0.1, target=d)
    # a relative error of 5e-9 is not a multiple (rtol 1e-9, no absolute slack)
    with pytest.raises(ValueError, match=r"^times: every time must be a multiple of eps = 0\.25$"):
        eb.continuous_response(net, h, times=[0.5, 1.0 + 5e-9], eps=0.25, beta=0.1, target=d)
    # within rounding it is
    eb.continuous_response(net, h, times=[0.5, 1.0 + 1e-12], eps=0.25, beta=0.1, target=d)


def test_nudge_response_needs_a_free_generator_when_hot(sig):
    net, x, d, h, _ = sig
    g = torch.Generator().manual_seed(0)
    with pytest.raises(TypeError, match=r"^generator_free: expected torch.Generator, got NoneType$"):
        eb.nudge_response(net, h, steps=2, eps=EPS, beta=0.1, target=d, T=0.5, generator=g)
    # common random numbers: T > 0 with generators seeded alike and β = 0 gives δ = 0 exactly
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    delta = eb.nudge_response(net, h, steps=3, eps=EPS, T=0.5, generator=a, generator_free=b)
    assert all(torch.all(delta[k] == 0) for k in range(1, net.N + 1))


def test_noisy_arrival(sig):
    net, x, d, _, star = sig
    N = net.N
    h1, d1 = [t[:1] for t in star], d[:1]
    g = eb.chain_gradient(net, h1, d1)
    beta = 1e-3
    na = eb.noisy_arrival(net, h1, d1, eps=EPS, beta=beta, T=1e-8, chains=3,
                          gen_nudged=torch.Generator().manual_seed(1), gen_free=torch.Generator().manual_seed(1))
    assert _same_list(na.g, g, 0.0)
    for k in range(1, N + 1):
        assert na.delta[k].shape == (3, net.sizes[k])
        assert _same(na.predicted[k], (-beta * EPS ** (N - k + 1) * g[k])[0], 0.0)
        assert eb.cosine(na.delta[k].mean(0), na.predicted[k]) > 0.99


def test_noisy_arrival_validation(sig):
    net, x, d, _, star = sig
    h1, d1 = [t[:1] for t in star], d[:1]
    g0, g1 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    kw = dict(eps=EPS, beta=0.1, T=1e-6)
    with pytest.raises(ValueError, match=r"^h_star: expected a list \[x, h_1, \.\.\., h_N\] of length 4$"):
        eb.noisy_arrival(net, h1[:2], d1, chains=4, gen_nudged=g0, gen_free=g1, **kw)
    with pytest.raises(ValueError, match=r"^h_star: expected a single input \(batch 1\), got batch 2$"):
        eb.noisy_arrival(net, [t[:2] for t in star], d[:2], chains=4, gen_nudged=g0, gen_free=g1, **kw)
    with pytest.raises(ValueError, match=r"^target: expected shape \(1, 3\), got \(2, 3\)$"):
        eb.noisy_arrival(net, h1, d[:2], chains=4, gen_nudged=g0, gen_free=g1, **kw)
    with pytest.raises(ValueError, match=r"^chains: must be >= 1, got 0$"):
        eb.noisy_arrival(net, h1, d1, chains=0, gen_nudged=g0, gen_free=g1, **kw)
    with pytest.raises(TypeError, match=r"^gen_nudged: expected torch.Generator, got int$"):
        eb.noisy_arrival(net, h1, d1, chains=4, gen_nudged=3, gen_free=g1, **kw)
    with pytest.raises(TypeError, match=r"^gen_free: expected torch.Generator, got int$"):
        eb.noisy_arrival(net, h1, d1, chains=4, gen_nudged=g0, gen_free=3, **kw)
