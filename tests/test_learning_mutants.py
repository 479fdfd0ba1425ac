"""The trainer (ebmlib.learning) against a reference loop and hand-built networks: what mutation testing asked.

A tiny split of the digits (40 training and 20 test examples, 64-8-10, one epoch) keeps training cheap.
``_slow_net`` is a 1-1-2 hard-sigmoid network built by hand whose relaxation from zero is slow (a coupling
of 0.99 between the hidden unit and output 0): its prediction changes between the defaults' step 200
and step 201, and before and after stopping early, so that every default of ``predict`` and ``evaluate``
shows in the error rate.
"""

from __future__ import annotations

import re
import time

import pytest
import torch

import ebmlib as eb
from ebmlib import TrainConfig, evaluate, predict, train

f64 = torch.float64


def _msg(text):
    return "^" + re.escape(text) + "$"


@pytest.fixture(scope="module")
def tiny():
    ds = eb.load_digits(0.25, seed=0)
    return eb.Dataset("digits-tiny", ds.x_train[:40], ds.y_train[:40], ds.x_test[:20], ds.y_test[:20], 10)


# ---------------------------------------------------------------------------- TrainConfig
@pytest.mark.parametrize(
    "kw, exc, msg",
    [
        (dict(sizes=(5,), lrs=()), ValueError, "sizes: need at least two layer sizes (input and output)"),
        (dict(sizes=5), ValueError, "sizes: need at least two layer sizes (input and output)"),
        (dict(sizes=(4, 0, 3)), ValueError, "sizes[1]: must be >= 1, got 0"),
        (dict(sizes=(4, 3, 2), lrs=(0.1,)), ValueError, "lrs: expected one learning rate per layer, 2 in all"),
        (dict(sizes=(4, 3, 2), lrs=(0.1, "a")), TypeError, "lrs[1]: expected a real number, got str"),
        (dict(sizes=(4, 3, 2), lrs=(0.1, -0.1)), ValueError, "lrs: learning rates must be >= 0, got (0.1, -0.1)"),
        (dict(batch_size=0), ValueError, "batch_size: must be >= 1, got 0"),
        (dict(epochs=-1), ValueError, "epochs: must be >= 0, got -1"),
        (dict(epochs=1.0), TypeError, "epochs: expected an integer, got float"),
        (dict(eval_steps=0), ValueError, "eval_steps: must be >= 1, got 0"),
        (dict(eval_tol="x"), TypeError, "eval_tol: expected a real number, got str"),
        (dict(eval_tol=-1.0), ValueError, "eval_tol: must be >= 0, got -1.0"),
        (dict(seed=-1), ValueError, "seed: must be >= 0, got -1"),
        (dict(seed=True), TypeError, "seed: expected an integer, got bool"),
        (dict(dtype="float16"), ValueError, "dtype: expected 'float32' or 'float64', got 'float16'"),
        (dict(persistent=1), TypeError, "persistent: expected bool, got int"),
        (dict(free_steps=0), ValueError, "free_steps: must be >= 1, got 0"),
        (dict(nudged_steps=0), ValueError, "nudged_steps: must be >= 1, got 0"),
        (dict(beta=0.0), ValueError, "beta: must be non-zero to nudge the output"),
        (dict(random_sign=0), TypeError, "random_sign: expected bool, got int"),
        (dict(drho=0), TypeError, "drho: expected bool, got int"),
        (dict(bp_state_drho=0), TypeError, "bp_state_drho: expected bool, got int"),
    ],
)
def test_config_validation_messages(kw, exc, msg):
    with pytest.raises(exc, match=_msg(msg)):
        TrainConfig(**kw)


def test_config_accepts_the_boundaries_and_builds_its_phases():
    two = TrainConfig(sizes=[4, 3], lrs=[0.1], epochs=0, eval_tol=0.0, seed=0, dtype="float64")
    assert two.sizes == (4, 3) and two.lrs == (0.1,) and two.epochs == 0 and two.torch_dtype == f64
    cfg = TrainConfig(eps=0.3, free_steps=7, nudged_steps=3, beta=-0.4, random_sign=False, drho=False,
                      bp_state_drho=False)
    assert cfg.phases == eb.Phases(eps=0.3, free_steps=7, nudged_steps=3, beta=-0.4, random_sign=False, drho=False,
                                   bp_state_drho=False)
    assert cfg.estimator is eb.ESTIMATORS["ep"]


# ---------------------------------------------------------------------------- predict and evaluate
def _slow_net():
    W = [None, torch.tensor([[0.01]], dtype=f64), torch.tensor([[0.99, 0.0]], dtype=f64)]
    b = [None, torch.tensor([0.008], dtype=f64), torch.tensor([0.008, 0.5], dtype=f64)]
    net = eb.LayeredEBM([1, 1, 2], "hard_sigmoid", W=W, b=b, dtype=f64)
    # output 1 sits at its bias; put it between output 0 of input 0 at steps 200 and 201 (output 0 rises)
    y0 = eb.run(net, net.init_state(torch.zeros(1, 1, dtype=f64)), steps=201, eps=0.5).h[2][:, 0, 0]
    assert y0[200] < y0[201] and y0[10] < y0[200]
    net.b[2][1] = 0.5 * float(y0[200] + y0[201])
    return net


def _slow_data(x, y):
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1)
    y = torch.tensor(y)
    return eb.Dataset("slow", x, y, x, y, 2)


def test_predict_defaults_and_arguments_reach_the_relaxation():
    net = _slow_net()
    x = torch.tensor([[0.0], [1.0]], dtype=f64)

    def rel(**kw):
        return eb.relax(net, x, check_every=10, **kw).h[net.N]

    default = rel(eps=0.5, tol=1e-4, max_steps=200)
    assert torch.equal(predict(net, x), default)
    assert not torch.equal(default, rel(eps=0.5, tol=1e-4, max_steps=201))
    assert torch.equal(predict(net, x, feedforward_net=True), eb.mlp_forward(net, x)[-1])
    for kw in (dict(eps=0.3, steps=37, tol=0.0), dict(eps=0.8, steps=150, tol=5e-3), dict(steps=5, tol=0.0)):
        want = rel(eps=kw.get("eps", 0.5), tol=kw["tol"], max_steps=kw["steps"])
        assert torch.equal(predict(net, x, **kw), want)
    # the cases above are sensitive to a stop read every 11 steps or a default ε
    assert not torch.equal(rel(eps=0.8, tol=5e-3, max_steps=150),
                           eb.relax(net, x, eps=0.8, tol=5e-3, max_steps=150, check_every=11).h[net.N])
    with pytest.raises(ValueError, match=_msg("steps: must be >= 1, got 0")):
        predict(net, x, steps=0)


def test_evaluate_defaults_and_arguments_reach_the_prediction():
    net = _slow_net()
    # input 0: class 1 up to step 200, class 0 from 201; input 1: class 1 early, class 0 well before 200
    ds = _slow_data([0.0, 1.0], [1, 0])
    assert evaluate(net, ds) == 0.0
    assert evaluate(net, ds, split="train") == 0.0
    assert evaluate(net, ds, steps=201) == 0.5  # the default is 200 steps
    assert evaluate(net, ds, tol=1.0) == 0.5  # the default tolerance 1e-4 does not stop at step 10
    assert evaluate(net, ds, eps=1.0) == 0.5  # the default ε is 0.5
    assert evaluate(net, ds, feedforward_net=True) == 0.5  # the feedforward pass predicts class 1 for both
    assert evaluate(net, ds, steps=100) == 0.0 and evaluate(net, ds, steps=20) == 0.5
    assert evaluate(net, ds, steps=300, tol=1.0) == 0.5 and evaluate(net, ds, steps=201, tol=1e-4) == 0.5
    assert evaluate(net, ds, eps=1.0, steps=50) == 0.0
    assert evaluate(net, ds, batch_size=1) == 0.0 and evaluate(net, ds, steps=201, batch_size=1) == 0.5
    # batches of 1000 by default, each stopping as a whole: 1000 examples that meet the tolerance at step 10,
    # before they change class, and one that keeps a batch of 1001 relaxing until they have changed it
    many = _slow_data([3.0] * 1000 + [6.0], [0] * 1001)
    assert evaluate(net, many, tol=0.02) == evaluate(net, many, tol=0.02, batch_size=1000) == 1000 / 1001
    assert evaluate(net, many, tol=0.02, batch_size=1001) == 0.0
    # one example: the error rate is 0 or 1
    assert evaluate(net, _slow_data([0.0], [1]), steps=201) == 1.0
    assert evaluate(net, _slow_data([0.0], [1])) == 0.0


def test_evaluate_casts_inputs_to_the_network_dtype_and_checks_arguments(tiny):
    net = eb.LayeredEBM([64, 8, 10], "sigmoid", seed=2, dtype=f64)  # the digits are float32
    out = eb.relax(net, tiny.x_test.to(f64), eps=0.5, tol=1e-4, max_steps=200).h[net.N]
    assert evaluate(net, tiny) == pytest.approx(float((out.argmax(1) != tiny.y_test).double().mean()), abs=0)
    with pytest.raises(TypeError, match=_msg("dataset: expected an ebmlib Dataset, got str")):
        evaluate(net, "digits")
    with pytest.raises(ValueError, match=_msg("batch_size: must be >= 1, got 0")):
        evaluate(net, tiny, batch_size=0)
    with pytest.raises(ValueError, match=_msg("split: expected 'train' or 'test', got 'val'")):
        evaluate(net, tiny, split="val")


# ---------------------------------------------------------------------------- one minibatch
def test_apply_update_and_train_step():
    net = eb.LayeredEBM([4, 5, 3], "sigmoid", seed=3, dtype=f64)
    with pytest.raises(ValueError, match=_msg("lrs, grads: expected 2 learning rates and N+1 = 3 gradient entries")):
        eb.apply_update(net, [None, None], (0.1, 0.1))
    g = torch.Generator().manual_seed(0)
    x, d = torch.rand(6, 4, generator=g, dtype=f64), torch.rand(6, 3, generator=g, dtype=f64)
    ph = eb.Phases(eps=0.3, free_steps=6, nudged_steps=3, beta=0.4, random_sign=False)
    ref = eb.ESTIMATORS["ep"](net, x, d, phases=ph)
    other = eb.ESTIMATORS["ep"](net, x, d, generator=torch.Generator().manual_seed(0))  # default phases: another estimate
    assert not torch.allclose(ref.grads[1][0], other.grads[1][0], atol=1e-8)
    before = net.clone()
    est = eb.train_step(net, eb.ESTIMATORS["ep"], x, d, phases=ph, lrs=(0.1, 0.2), generator=g)
    for k, lr in ((1, 0.1), (2, 0.2)):
        assert torch.allclose(est.grads[k][0], ref.grads[k][0], atol=1e-14, rtol=0)
        assert torch.allclose(net.W[k], before.W[k] - lr * ref.grads[k][0], atol=1e-14, rtol=0)
        assert torch.allclose(net.b[k], before.b[k] - lr * ref.grads[k][1], atol=1e-14, rtol=0)


# ---------------------------------------------------------------------------- training
def _reference_train(cfg, ds):
    """The documented loop written out: seed + 1 generator, a shuffled pass in minibatches, persistent states."""
    dt = getattr(torch, cfg.dtype)
    net = eb.LayeredEBM(list(cfg.sizes), cfg.activation, seed=cfg.seed, dtype=dt)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    est = eb.get_estimator(cfg.method)
    x, labels = ds.x_train.to(dt), ds.y_train
    d = eb.one_hot(labels, ds.n_classes, dt)
    n = len(x)
    pers = [torch.zeros(n, s, dtype=dt) for s in cfg.sizes[1:]] if est.free_phase and cfg.persistent else None
    errors, costs = [], []
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        wrong, cost = 0, 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            h0 = None if pers is None else [x[idx]] + [p[idx] for p in pers]
            e = est(net, x[idx], d[idx], h0=h0, phases=cfg.phases, generator=gen)
            for k in range(1, net.N + 1):
                net.W[k] = net.W[k] - cfg.lrs[k - 1] * e.grads[k][0]
                net.b[k] = net.b[k] - cfg.lrs[k - 1] * e.grads[k][1]
                if pers is not None:
                    pers[k - 1][idx] = e.free[k]
            wrong += sum(int(e.output[j].argmax()) != int(labels[idx][j]) for j in range(len(idx)))
            cost += sum(0.5 * float(((e.output[j] - d[idx][j]) ** 2).sum()) for j in range(len(idx)))
        errors.append(wrong / n)
        costs.append(cost / n)
    return net, errors, costs


@pytest.mark.parametrize("method, dtype", [("ep", "float64"), ("bp", "float32")])
def test_train_equals_the_reference_loop(tiny, method, dtype):
    cfg = TrainConfig(sizes=(64, 8, 10), activation="sigmoid", method=method, lrs=(0.3, 0.2), epochs=1,
                      batch_size=15, free_steps=4, nudged_steps=2, eps=0.3, beta=0.7, eval_steps=25,
                      eval_tol=0.05, seed=3, dtype=dtype)
    t = time.perf_counter()
    h = train(cfg, tiny, progress=False)
    elapsed = time.perf_counter() - t
    net, errors, costs = _reference_train(cfg, tiny)
    tol = dict(atol=1e-12, rtol=0) if dtype == "float64" else dict(atol=1e-5, rtol=0)
    for a, b in zip(h.net.parameters(), net.parameters()):
        assert a.dtype == getattr(torch, dtype) and torch.allclose(a, b, **tol)
    assert h.epoch == [1]
    assert h.train_error == [pytest.approx(errors[0], abs=1e-12)]
    assert 0 < errors[0] < 1
    assert h.train_cost == [pytest.approx(costs[0], rel=1e-5)]
    ff = method == "bp"
    assert h.test_error == [evaluate(h.net, tiny, feedforward_net=ff, eps=0.3, steps=25, tol=0.05)]
    assert len(h.wall_s) == 1 and isinstance(h.wall_s[0], float) and 0 <= h.wall_s[0] <= elapsed
    assert h.config == cfg.to_dict() and h.total_wall_s == h.wall_s[0]


@pytest.mark.parametrize(
    "method, steps, tol, sensitive",
    [("ep", 20, 0.3, ("eps", "steps", "ff")), ("ep", 40, 1.0, ("eps", "tol", "ff")), ("bp", 20, 0.3, ("relax",))],
)
def test_train_evaluates_with_the_configured_relaxation(tiny, method, steps, tol, sensitive):
    # the reported test error is that of the configured ε, steps and tolerance (the feedforward pass for bp),
    # not evaluate's defaults. 449 test digits make the error rate fine enough that, for this untrained network
    # (rates 0), each alternative named in ``sensitive`` gives another number, so the test can tell them apart.
    full = eb.load_digits(0.25, seed=0)
    wide = eb.Dataset("digits-wide", tiny.x_train, tiny.y_train, full.x_test, full.y_test, 10)
    cfg = TrainConfig(sizes=(64, 8, 10), activation="hard_sigmoid", method=method, lrs=(0.0, 0.0), epochs=1,
                      batch_size=40, free_steps=2, eps=0.3, eval_steps=steps, eval_tol=tol, seed=2, dtype="float64")
    h = train(cfg, wide, progress=False)
    net = h.net
    ff = method == "bp"
    got = h.test_error[0]
    assert got == evaluate(net, wide, feedforward_net=ff, eps=0.3, steps=steps, tol=tol)
    others = {"eps": evaluate(net, wide, steps=steps, tol=tol), "steps": evaluate(net, wide, eps=0.3, tol=tol),
              "tol": evaluate(net, wide, eps=0.3, steps=steps), "ff": evaluate(net, wide, feedforward_net=True),
              "relax": evaluate(net, wide, eps=0.3, steps=steps, tol=tol)}
    assert all(others[k] != got for k in sensitive), (got, others)


def test_train_argument_errors(tiny):
    with pytest.raises(TypeError, match=_msg("cfg: expected a TrainConfig, got dict")):
        train({}, tiny)
    with pytest.raises(TypeError, match=_msg("dataset: expected an ebmlib Dataset, got str")):
        train(TrainConfig(sizes=(64, 8, 10)), "digits")


def test_train_reports_non_finite_weights(tiny):
    cfg = TrainConfig(sizes=(64, 8, 10), method="bp", lrs=(3e38, 3e38), batch_size=10, epochs=2, eval_steps=5)
    with pytest.raises(FloatingPointError,
                       match=_msg("train: weights became non-finite in epoch 1 (method bp); lower lrs or beta")):
        train(cfg, tiny, progress=False)


def test_checkpoint_records_the_data_and_resume_restores_the_history(tiny, tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    kw = dict(sizes=(64, 8, 10), lrs=(0.1, 0.05), free_steps=3, nudged_steps=2, eval_steps=10, batch_size=20, seed=1,
              checkpoint=str(ck), dtype="float64")
    full = train(TrainConfig(epochs=2, **{**kw, "checkpoint": None}), tiny, progress=False)
    train(TrainConfig(epochs=1, **kw), tiny, progress=False)
    saved = torch.load(ck, weights_only=False)
    assert saved["data"] == {"name": "digits-tiny", "n_train": 40, "n_test": 20}
    assert saved["epoch"] == 1
    capsys.readouterr()
    res = train(TrainConfig(epochs=2, **kw), tiny)  # resume=True and progress by default: off a terminal, one line
    assert re.search(r"^ep: 2 epochs in [0-9.]+ s, train error [0-9.]+ %", capsys.readouterr().out)
    assert res.epoch == [1, 2] == full.epoch
    assert res.train_error == full.train_error and res.test_error == full.test_error
    assert res.train_cost == full.train_cost
    assert len(res.wall_s) == 2 and res.wall_s[0] == saved["history"]["wall_s"][0]
    for a, b in zip(res.net.parameters(), full.net.parameters()):
        assert torch.equal(a, b)
    # another configuration or another data set is refused, naming what differs
    with pytest.raises(ValueError, match=_msg(f"cfg: differs from the checkpoint {ck} in ['beta', 'eps']; "
                                              "use resume=False or another path")):
        train(TrainConfig(epochs=3, **{**kw, "beta": 0.5, "eps": 0.4}), tiny, progress=False)
    renamed = eb.Dataset("other", tiny.x_train, tiny.y_train, tiny.x_test, tiny.y_test, 10)
    new = {"name": "other", "n_train": 40, "n_test": 20}
    old = {"name": "digits-tiny", "n_train": 40, "n_test": 20}
    with pytest.raises(ValueError, match=_msg(f"dataset: {new} differs from the checkpoint's {old}; "
                                              "use resume=False or another path")):
        train(TrainConfig(epochs=3, **kw), renamed, progress=False)
