"""The trainer (ebmlib.learning) and the estimators it runs: tests that a wrong trainer fails."""

from __future__ import annotations

import pytest
import torch
from conftest import random_net

import ebmlib as eb
from ebmlib import TrainConfig, evaluate, first_arrival_gradient, mlp_forward, train
from ebmlib import bp_gradient as _bp_gradient

METHODS = sorted(eb.ESTIMATORS)

f64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    ds = eb.load_digits(0.25, seed=0)
    # a small subset keeps the tests fast
    return eb.Dataset("digits-small", ds.x_train[:120], ds.y_train[:120], ds.x_test[:60], ds.y_test[:60], 10)


def test_bp_gradient_matches_autograd():
    net = random_net([6, 5, 4, 3], "sigmoid", seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 6, generator=g, dtype=f64)
    d = torch.rand(7, 3, generator=g, dtype=f64)
    grads, y = _bp_gradient(net, x, d, state_drho=False)
    ps = [p.clone().requires_grad_(True) for p in net.parameters()]
    r = x
    for k in range(1, net.N + 1):
        r = torch.sigmoid(r @ ps[2 * k - 2] + ps[2 * k - 1])
    auto = torch.autograd.grad(0.5 * ((r - d) ** 2).sum(1).mean(), ps)
    assert torch.allclose(y, r.detach())
    for k in range(1, net.N + 1):
        assert torch.allclose(grads[k][0], auto[2 * k - 2], atol=1e-14)
        assert torch.allclose(grads[k][1], auto[2 * k - 1], atol=1e-14)


def test_bp_state_drho_is_chain_gradient_at_no_feedback_fixed_point():
    # hard sigmoid: the feedforward states are the energy model's no-feedback fixed point, and the
    # state-drho back-propagation equals the chain gradient at those states
    net = random_net([6, 5, 3], "hard_sigmoid", seed=2, gain=1.0, bias_std=0.3)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 6, generator=g, dtype=f64)
    d = torch.rand(5, 3, generator=g, dtype=f64)
    grads, _ = _bp_gradient(net, x, d, state_drho=True)
    h = mlp_forward(net, x)
    ref = eb.chain_param_gradient(net, h, d)
    for k in range(1, net.N + 1):
        assert torch.allclose(grads[k][0], ref[k][0], atol=1e-12)


def test_first_arrival_gradient_matches_chain_gradient_for_small_beta():
    net = random_net([5, 6, 4, 3], "sigmoid", seed=3, gain=1.0, bias_std=0.3)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8, 5, generator=g, dtype=f64)
    d = torch.rand(8, 3, generator=g, dtype=f64)
    h = eb.relax(net, x, eps=0.5, tol=1e-13, max_steps=20_000).h
    est = first_arrival_gradient(net, h, d, eps=0.5, beta=1e-6)
    ref = eb.chain_param_gradient(net, h, d)
    for k in range(1, net.N + 1):
        assert eb.cosine(est[k][0].flatten(), ref[k][0].flatten()) > 1 - 1e-6
        assert eb.magnitude_ratio(est[k][0], ref[k][0]) == pytest.approx(1.0, abs=1e-4)
    plain = first_arrival_gradient(net, h, d, eps=0.5, beta=1e-6, drho=False)
    # the sigmoid's ρ' ≤ 1/4: without it the estimate is several times too large
    assert eb.magnitude_ratio(plain[1][0], ref[1][0]) > 2.0


@pytest.fixture(scope="module")
def digits_full():
    return eb.load_digits(0.25, seed=0)


@pytest.fixture(scope="module")
def chance(digits_full):
    """Test error of the initial network: what a trainer whose gradient is zero ends with (about 0.9)."""
    net = eb.LayeredEBM([64, 16, 10], "hard_sigmoid", seed=0, dtype=torch.float32)
    return min(evaluate(net, digits_full, steps=50), evaluate(net, digits_full, feedforward_net=True))


# Settings that differ from the common (rates 0.4 / 0.2, 8 nudged steps), with the reason. continual_ep: its
# updates during the nudged phase feed back into it (a term O(η/β) per step, accumulating over the steps), so it
# diverges at EP's rates; bptt: its straight-through gradient has the size of back-propagation's and diverges at
# EP's rates (EP's hidden-layer estimate is several times smaller).
LEARN = {"continual_ep": dict(lrs=(0.2, 0.1), nudged_steps=4), "bptt": dict(lrs=(0.1, 0.05))}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_learns_far_beyond_a_zero_gradient(digits_full, chance, method):
    # 1,348 training and 449 test digits, 3 epochs at rates 0.4 / 0.2. A zero-gradient trainer keeps the
    # initial network's error (about 0.9); the bound 0.45 is about 30 standard errors (sqrt(p(1-p)/449) =
    # 0.014) below it. Measured when written: 0.20 (bp) to 0.41 (plasticity rules); 0.30 (bptt), 0.37
    # (continual_ep) with the settings of LEARN.
    kw = {"lrs": (0.4, 0.2), "nudged_steps": 8, **LEARN.get(method, {})}
    cfg = TrainConfig(sizes=(64, 16, 10), method=method, epochs=3, seed=0, eval_steps=50, **kw)
    h = train(cfg, digits_full, progress=False)
    assert chance > 0.8
    assert h.epoch == [1, 2, 3] and len(h.test_error) == 3
    assert h.test_error[-1] <= 0.45
    assert h.train_error[-1] < h.train_error[0]


def test_evaluate_counts_wrong_argmax(digits):
    net = random_net([64, 8, 10], "sigmoid", seed=2, dtype=torch.float32)
    out = eb.relax(net, digits.x_test, eps=0.5, tol=1e-4, max_steps=200).h[net.N]
    expect = float((out.argmax(1) != digits.y_test).double().mean())
    assert evaluate(net, digits, steps=200, batch_size=7) == pytest.approx(expect, abs=1e-12)
    ff = mlp_forward(net, digits.x_train)[-1]
    expect_ff = float((ff.argmax(1) != digits.y_train).double().mean())
    assert evaluate(net, digits, split="train", feedforward_net=True) == pytest.approx(expect_ff, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_zero_learning_rates_change_nothing(digits, method):
    cfg = TrainConfig(sizes=(64, 8, 10), method=method, lrs=(0.0, 0.0), epochs=1, free_steps=5, seed=1,
                      eval_steps=10)
    h = train(cfg, digits, progress=False)
    init = eb.LayeredEBM([64, 8, 10], "hard_sigmoid", seed=1, dtype=torch.float32)
    for a, b in zip(h.net.parameters(), init.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", METHODS)
def test_per_layer_rates_reach_their_layers(digits, method):
    kw = dict(sizes=(64, 8, 10), method=method, epochs=1, free_steps=5, seed=1, eval_steps=10, batch_size=40)
    init = eb.LayeredEBM([64, 8, 10], "hard_sigmoid", seed=1, dtype=torch.float32)
    only1 = train(TrainConfig(lrs=(0.05, 0.0), **kw), digits, progress=False).net
    only2 = train(TrainConfig(lrs=(0.0, 0.05), **kw), digits, progress=False).net
    assert not torch.equal(only1.W[1], init.W[1]) and torch.equal(only1.W[2], init.W[2])
    assert torch.equal(only1.b[2], init.b[2])
    assert torch.equal(only2.W[1], init.W[1]) and not torch.equal(only2.W[2], init.W[2])
    assert torch.equal(only2.b[1], init.b[1])


def _fixed_point_cost(net, x, d, free_phase):
    if not free_phase:
        return float(net.cost(mlp_forward(net, x), d).mean())
    h = eb.relax(net, x, eps=0.5, tol=1e-13, max_steps=20_000).h
    return float(net.cost(h, d).mean())


@pytest.mark.parametrize("method", METHODS)
def test_one_small_step_lowers_the_minibatch_cost(method):
    # a weakly coupled sigmoid network, free phase converged, small β: every estimate is a descent direction
    net = random_net([6, 8, 4], "sigmoid", seed=5, gain=0.8, bias_std=0.3)
    g = torch.Generator().manual_seed(3)
    x, d = torch.rand(16, 6, generator=g, dtype=f64), torch.rand(16, 4, generator=g, dtype=f64)
    est = eb.get_estimator(method)
    phases = eb.Phases(free_steps=400, nudged_steps=60, beta=1e-3, random_sign=False)
    before = _fixed_point_cost(net, x, d, est.free_phase)
    # an estimator that updates during its phase (continual_ep) errs by O(lr/β) per step: it needs lr << β
    lrs = (5e-5, 5e-5) if est.updates_params else (0.05, 0.05)
    out = eb.train_step(net, est, x, d, phases=phases, lrs=lrs, generator=torch.Generator().manual_seed(0))
    after = _fixed_point_cost(net, x, d, est.free_phase)
    assert after < before
    assert all(torch.isfinite(gw).all() and gw.abs().sum() > 0 for gw, _ in out.grads[1:])


def test_symmetric_ep_is_the_average_of_the_one_sided_estimates():
    net = random_net([5, 7, 3], "sigmoid", seed=6, gain=1.0, bias_std=0.3)
    g = torch.Generator().manual_seed(4)
    x, d = torch.rand(6, 5, generator=g, dtype=f64), torch.rand(6, 3, generator=g, dtype=f64)
    h0 = eb.relax(net, x, eps=0.5, tol=1e-13).h
    ph = dict(free_steps=10, nudged_steps=8, random_sign=False)
    plus = eb.ESTIMATORS["ep"](net, x, d, h0=h0, phases=eb.Phases(beta=0.3, **ph)).grads
    minus = eb.ESTIMATORS["ep"](net, x, d, h0=h0, phases=eb.Phases(beta=-0.3, **ph)).grads
    sym = eb.ESTIMATORS["ep_symmetric"](net, x, d, h0=h0, phases=eb.Phases(beta=0.3, **ph)).grads
    for k in range(1, net.N + 1):
        for i in range(2):
            assert torch.allclose(sym[k][i], 0.5 * (plus[k][i] + minus[k][i]), atol=1e-14, rtol=0)
    # at β = 0.3 the one-sided estimates differ by their O(β) bias: the symmetric one is not either of them
    assert not torch.allclose(sym[1][0], plus[1][0], atol=1e-6)


@pytest.mark.parametrize("method", ["ep", "first_arrival", "plasticity_tied"])
def test_random_sign_draws_both_signs_and_fixed_sign_draws_none(method):
    net = random_net([5, 6, 3], "sigmoid", seed=7, gain=1.0, bias_std=0.3)
    g = torch.Generator().manual_seed(5)
    x, d = torch.rand(4, 5, generator=g, dtype=f64), torch.rand(4, 3, generator=g, dtype=f64)
    est = eb.get_estimator(method)
    ref = {s: est(net, x, d, phases=eb.Phases(beta=s * 0.5, random_sign=False)).grads[1][0] for s in (1, -1)}
    gen = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(12):
        w = est(net, x, d, phases=eb.Phases(beta=0.5, random_sign=True), generator=gen).grads[1][0]
        seen.append(next(s for s, r in ref.items() if torch.allclose(w, r, atol=1e-14, rtol=0)))
    assert set(seen) == {1, -1}
    assert not torch.allclose(ref[1], ref[-1], atol=1e-6)


def test_persistent_free_states_are_written_back(digits, tmp_path):
    ck = tmp_path / "p.pt"
    kw = dict(sizes=(64, 8, 10), activation="sigmoid", lrs=(0.05, 0.02), epochs=1, free_steps=3, seed=2,
              eval_steps=10)
    train(TrainConfig(checkpoint=str(ck), **kw), digits, progress=False)
    saved = torch.load(ck, weights_only=False)["persistent"]
    # every example's state was relaxed from zeros and written back: no row is left at zero
    assert all(bool((p.abs().sum(1) > 0).all()) for p in saved)
    # and the next epoch starts from them: persistence changes the result of a second epoch
    two = train(TrainConfig(**{**kw, "epochs": 2}), digits, progress=False)
    fresh = train(TrainConfig(persistent=False, **{**kw, "epochs": 2}), digits, progress=False)
    assert not torch.equal(two.net.W[1], fresh.net.W[1])


def test_registry_lookup_and_interface():
    assert {"bp", "ep", "ep_symmetric", "first_arrival", "plasticity_bengio", "plasticity_xie_seung",
            "plasticity_tied"} <= set(eb.ESTIMATORS)
    with pytest.raises(ValueError, match="^method:"):
        eb.get_estimator("sgd")
    with pytest.raises(ValueError, match="^name:"):
        eb.register("ep")(lambda *a: None)
    net = random_net([4, 3, 2], seed=1)
    with pytest.raises(TypeError, match="^phases:"):
        eb.ESTIMATORS["ep"](net, torch.zeros(2, 4, dtype=f64), torch.zeros(2, 2, dtype=f64), phases={})
    with pytest.raises(ValueError, match="^target:"):
        eb.ESTIMATORS["ep"](net, torch.zeros(2, 4, dtype=f64), torch.zeros(3, 2, dtype=f64))
    with pytest.raises(ValueError, match="^beta:"):
        eb.Phases(beta=0.0)


@pytest.mark.parametrize("method", ["ep", "bp"])
def test_resume_equals_uninterrupted(digits, tmp_path, method):
    kw = dict(sizes=(64, 12, 10), method=method, lrs=(0.1, 0.05), seed=4, eval_steps=30, free_steps=10)
    full = train(TrainConfig(epochs=4, **kw), digits, progress=False)
    ck = str(tmp_path / "ck.pt")
    train(TrainConfig(epochs=2, checkpoint=ck, **kw), digits, progress=False)
    resumed = train(TrainConfig(epochs=4, checkpoint=ck, **kw), digits, progress=False)
    assert resumed.test_error == full.test_error
    assert resumed.train_error == full.train_error
    for a, b in zip(resumed.net.parameters(), full.net.parameters()):
        assert torch.equal(a, b)
    # a finished checkpoint resumes to the same result without training
    again = train(TrainConfig(epochs=4, checkpoint=ck, **kw), digits, progress=False)
    assert again.test_error == full.test_error


def test_resume_refuses_other_config(digits, tmp_path):
    ck = str(tmp_path / "ck.pt")
    kw = dict(sizes=(64, 8, 10), lrs=(0.1, 0.05), free_steps=5, eval_steps=10, checkpoint=ck)
    train(TrainConfig(epochs=1, **kw), digits, progress=False)
    with pytest.raises(ValueError, match="cfg"):
        train(TrainConfig(epochs=2, beta=0.5, **kw), digits, progress=False)
    fewer = eb.Dataset("digits-small", digits.x_train[:60], digits.y_train[:60], digits.x_test, digits.y_test, 10)
    with pytest.raises(ValueError, match="dataset"):
        train(TrainConfig(epochs=2, **kw), fewer, progress=False)


def test_config_validation(digits):
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="sgd")
    with pytest.raises(ValueError, match="lrs"):
        TrainConfig(sizes=(4, 3, 2), lrs=(0.1,))
    with pytest.raises(ValueError, match="beta"):
        TrainConfig(beta=0.0)
    with pytest.raises(ValueError, match="eps"):
        TrainConfig(eps=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="dataset"):
        train(TrainConfig(sizes=(10, 5, 10), lrs=(0.1, 0.1)), digits, progress=False)
    with pytest.raises(ValueError, match="split"):
        evaluate(random_net([64, 4, 10], seed=0), digits, split="val")
