"""Trainers (ebmlib.learning): estimators, back-propagation baseline, checkpoint / resume."""

from __future__ import annotations

import pytest
import torch
from conftest import random_net

import ebmlib as eb
from ebmlib.learning import TrainConfig, _bp_gradient, evaluate, first_arrival_gradient, mlp_forward, train

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


@pytest.mark.parametrize("method", ["bp", "ep", "ep_symmetric", "first_arrival"])
def test_train_reduces_error(digits, method):
    cfg = TrainConfig(sizes=(64, 16, 10), method=method, lrs=(0.1, 0.05), epochs=3, nudged_steps=8, seed=0,
                      eval_steps=50)
    h = train(cfg, digits, progress=False)
    assert len(h.test_error) == 3 and h.epoch == [1, 2, 3]
    assert h.train_error[-1] < h.train_error[0]
    assert 0.0 <= h.test_error[-1] < 0.9
    assert h.test_error[-1] == evaluate(h.net, digits, feedforward_net=method == "bp", steps=50)


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
