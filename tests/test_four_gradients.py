"""The four error signals side by side (``eb.four_gradients``), saved networks (``LayeredEBM.load_npz``),
the single-trajectory first-arrival rule (``paired=False``) and ``Run.input_path`` (chapter 09's tools)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT, random_batch, random_net

import ebmlib as eb
import ebmlib.book as ebb

EPS = 0.5


def rel(a, b, k):
    """Relative distance of per-layer signal a from b on layer k."""
    return float((a[k] - b[k]).norm() / b[k].norm())


@pytest.fixture(scope="module")
def smooth():
    """A logistic-sigmoid network (smooth: O(beta) remainders) and a batch."""
    net = random_net([6, 5, 4, 3], "sigmoid", seed=1, gain=1.0, bias_std=0.3)
    x, d, _ = random_batch(net, B=6, seed=2)
    return net, x, d


@pytest.fixture(scope="module")
def hard():
    """A hard-sigmoid network (clipped, piecewise affine) with pinned units at its fixed point, and a batch."""
    net = random_net([5, 7, 6, 4], "hard_sigmoid", seed=2, gain=0.5, bias_std=0.1, bias_mean=0.5)
    x, d, _ = random_batch(net, B=4, seed=5)
    return net, x, d


# ---------------------------------------------------------------- first arrival and EP against their limits
def test_smooth_first_arrival_is_the_chain_to_first_order_in_beta(smooth):
    net, x, d = smooth
    # beta large enough that rounding (~1e-13 / beta here) stays below the O(beta) remainder
    a = eb.four_gradients(net, x, d, eps=EPS, arrival_beta=1e-4, beta=1e-4, tol=1e-13)
    b = eb.four_gradients(net, x, d, eps=EPS, arrival_beta=1e-3, beta=1e-3, tol=1e-13)
    for k in range(1, net.N):  # hidden layers: an O(beta) remainder, ten times smaller at a ten times smaller beta
        e1, e2 = rel(a.arrival, a.chain, k), rel(b.arrival, b.chain, k)
        assert 1e-8 < e1 < 1e-4
        assert e1 / e2 == pytest.approx(0.1, rel=0.01)
    # the output's first change is eps beta (d - y*) exactly: rounding only
    assert rel(a.arrival, a.chain, net.N) < 1e-9


def test_hard_sigmoid_first_arrival_is_the_chain_to_rounding(hard):
    net, x, d = hard
    a = eb.four_gradients(net, x, d, eps=EPS, arrival_beta=1e-6, beta=1e-6)
    b = eb.four_gradients(net, x, d, eps=EPS, arrival_beta=1e-5, beta=1e-5)
    for k in range(1, net.N + 1):
        e1, e2 = rel(a.arrival, a.chain, k), rel(b.arrival, b.chain, k)
        # piecewise affine dynamics: no O(beta) term, only float64 rounding of delta_k ~ 2^-52 / beta
        m = net.N - k
        bound = 2.0 ** -52 * float(a.h_star[k].norm() / a.chain[k].norm()) / (1e-6 * EPS ** (m + 1))
        assert e1 <= bound
        assert e2 <= e1  # rounding falls as 1/beta, an O(beta) term would grow


@pytest.mark.parametrize("which", ["smooth", "hard"])
def test_ep_at_small_beta_is_the_implicit_gradient_to_first_order(which, request):
    net, x, d = request.getfixturevalue(which)
    a = eb.four_gradients(net, x, d, eps=EPS, beta=1e-5, tol=1e-14)
    b = eb.four_gradients(net, x, d, eps=EPS, beta=1e-4, tol=1e-14)
    for k in range(1, net.N + 1):
        e1, e2 = rel(a.ep, a.implicit, k), rel(b.ep, b.implicit, k)
        assert e1 < 1e-3
        assert e1 / e2 == pytest.approx(0.1, rel=0.05)


def test_weak_feedback_makes_chain_implicit_and_feedforward_agree(hard):
    net, x, d = hard
    gamma = 1e-3  # arrival_beta 1e-3: the deepest arrival, beta eps^3 gamma^2 |g|, stays far above rounding
    fg = eb.four_gradients(net, x, d, eps=EPS, gamma=gamma, beta=1e-6, arrival_beta=1e-3, tol=1e-14)
    for k in range(1, net.N + 1):
        m = net.N - k
        # the raw chain carries gamma^m; ratio() divides it out
        raw = float(fg.chain[k].norm() / fg.feedforward[k].norm())
        assert raw == pytest.approx(gamma ** m * fg.ratio("chain", "feedforward")[k - 1], rel=1e-12)
    for a, b in [("chain", "feedforward"), ("chain", "implicit"), ("arrival", "chain"), ("implicit", "feedforward")]:
        assert min(fg.cos(a, b)) > 1 - 1e-6
        assert max(abs(r - 1) for r in fg.ratio(a, b)) < 1e-3


def test_full_feedback_separates_chain_and_implicit(hard):
    net, x, d = hard
    fg = eb.four_gradients(net, x, d, eps=EPS)
    # feedback loops make the implicit signal differ from the chain when gamma = 1
    assert max(abs(r - 1) for r in fg.ratio("chain", "implicit")) > 1e-3


# ---------------------------------------------------------------- FourGradients
def test_ratio_divides_gamma_power_out_of_every_signal_but_the_feedforward():
    g = torch.Generator().manual_seed(0)
    lay = lambda: [None, torch.randn(3, 4, generator=g, dtype=torch.float64),  # noqa: E731
                   torch.randn(3, 2, generator=g, dtype=torch.float64)]
    s = {n: lay() for n in eb.SIGNALS}
    fg = eb.FourGradients(**s, h_star=[None, None, None], h_ff=[None, None, None], h_beta=[None, None, None], gamma=0.1)
    n = lambda name, k: float(s[name][k].norm())  # noqa: E731
    # layer 1 is at distance m = 1 from the output, layer 2 is the output (m = 0)
    assert fg.ratio("chain", "feedforward") == pytest.approx([n("chain", 1) / 0.1 / n("feedforward", 1),
                                                               n("chain", 2) / n("feedforward", 2)], rel=1e-14)
    assert fg.ratio("feedforward", "ep") == pytest.approx([n("feedforward", 1) / (n("ep", 1) / 0.1),
                                                            n("feedforward", 2) / n("ep", 2)], rel=1e-14)
    assert fg.ratio("chain", "implicit") == pytest.approx([n("chain", k) / n("implicit", k) for k in (1, 2)],
                                                           rel=1e-14)
    assert fg.cos("arrival", "ep") == pytest.approx([eb.cosine(s["arrival"][k], s["ep"][k]) for k in (1, 2)],
                                                     rel=1e-14)


def test_table_holds_every_comparison_per_layer(smooth):
    net, x, d = smooth
    fg = eb.four_gradients(net, x, d, eps=EPS)
    t = fg.table()
    assert t["cos_chain_implicit"] == fg.cos("chain", "implicit")
    assert t["ratio_ep_implicit"] == fg.ratio("ep", "implicit")
    assert all(len(v) == net.N for v in t.values())
    assert len(fg.h_ff) == net.N + 1 and fg.N == net.N


def test_four_gradients_errors(smooth):
    net, x, d = smooth
    with pytest.raises(ValueError, match="gamma, feedback: give one of them"):
        eb.four_gradients(net, x, d, gamma=0.5, feedback=eb.gamma_feedback(net, 0.5))
    fg = eb.four_gradients(net, x, d, eps=EPS)
    with pytest.raises(ValueError, match="unknown signal 'bp'"):
        fg.cos("chain", "bp")
    with pytest.raises(ValueError, match="unknown signal 'g'"):
        fg.ratio("g", "implicit")
    with pytest.raises(RuntimeError, match="free phase did not converge"):
        eb.four_gradients(net, x, d, eps=EPS, max_steps=20)
    # eps (1 + beta) = 2 puts the nudged output on the edge of stability: it oscillates for ever
    with pytest.raises(RuntimeError, match="nudged phase did not converge"):
        eb.four_gradients(net, x, d, eps=EPS, beta=3.0, max_steps=2000)
    with pytest.raises(ValueError, match="gamma"):
        eb.four_gradients(net, x, d, gamma=0.0)


# ---------------------------------------------------------------- saved networks
def test_load_npz_round_trip(tmp_path):
    for dtype in (torch.float64, torch.float32):
        net = random_net([5, 4, 3, 2], "hard_sigmoid", seed=3, dtype=dtype)
        path = net.save_npz(tmp_path / f"net_{dtype}.npz", x=np.ones((2, 5)), eps=0.5)
        back = eb.LayeredEBM.load_npz(path)
        assert back.sizes == net.sizes and back.activation.name == "hard_sigmoid"
        assert back.dtype == torch.float64
        for k in range(1, net.N + 1):
            assert torch.equal(back.W[k], net.W[k].double()) and torch.equal(back.b[k], net.b[k].double())


def test_load_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved network"):
        eb.LayeredEBM.load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved network"):
        eb.LayeredEBM.load_npz(tmp_path / "other.npz")


# ---------------------------------------------------------------- the single-trajectory first-arrival rule
def _flat(grads):
    return torch.cat([t.flatten() for pair in grads[1:] for t in pair])


def test_unpaired_first_arrival_equals_paired_from_a_converged_state(smooth):
    net, x, d = smooth
    h = eb.relax(net, x, eps=EPS, tol=1e-14).h
    p = eb.first_arrival_gradient(net, h, d, eps=EPS, beta=1e-3)
    u = eb.first_arrival_gradient(net, h, d, eps=EPS, beta=1e-3, paired=False)
    assert float((_flat(u) - _flat(p)).abs().max()) <= 1e-9 * float(_flat(p).abs().max())


def test_unpaired_first_arrival_adds_the_free_drift_exactly(smooth):
    net, x, d = smooth
    beta, N = 1e-2, net.N
    h = eb.relax(net, x, eps=EPS, max_steps=3, tol=0.0).h  # three steps from zero: far from converged
    p = eb.first_arrival_gradient(net, h, d, eps=EPS, beta=beta)
    u = eb.first_arrival_gradient(net, h, d, eps=EPS, beta=beta, paired=False)
    free = eb.run(net, h, steps=N + 1, eps=EPS).h
    act, B = net.activation, x.shape[0]
    for k in range(1, N + 1):
        m = N - k
        drift = free[k][m + 1] - free[k][m]  # what the free run alone does at layer k's arrival step
        e = act.drho(h[k]) * (-drift / (beta * EPS ** (m + 1)))
        r_prev = x if k == 1 else act.rho(h[k - 1])
        assert float(drift.abs().max()) > 1e-4  # the drift is far from negligible here
        for got, paired, extra in [(u[k][0], p[k][0], r_prev.T @ e / B), (u[k][1], p[k][1], e.mean(0))]:
            assert torch.allclose(got, paired + extra, rtol=1e-9, atol=1e-9 * float(extra.abs().max()))


# ---------------------------------------------------------------- Run.input_path
def test_input_path_names_the_missing_chapter(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = ebb.Run("09-four-gradients", profile="smoke", seed=0, build_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="execute chapter 07-learning first") as info:
        run.input_path("07-learning", "trained_ep.npz")
    assert "--profile smoke" in str(info.value) and "trained_ep.npz" in str(info.value)
    (tmp_path / "figures" / "07-learning").mkdir(parents=True)
    (tmp_path / "figures" / "07-learning" / "trained_ep.npz").write_bytes(b"")
    assert run.input_path("07-learning", "trained_ep.npz") == tmp_path / "figures" / "07-learning" / "trained_ep.npz"
