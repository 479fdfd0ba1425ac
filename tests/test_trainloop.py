"""The fused EP minibatch program (ebmlib._trainloop) against the generic trainer path, float64."""

from __future__ import annotations

import pytest
import torch

import ebmlib as eb
from ebmlib import _trainloop
from ebmlib.data import Dataset
from ebmlib.learning import TrainConfig, predict, train


def _data(n: int = 45, n_in: int = 12, classes: int = 4, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + 20, n_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n + 20,), generator=g)
    return Dataset("synthetic", x[:n], y[:n], x[n:], y[n:], classes)


def _cfg(**kw) -> TrainConfig:
    base = dict(sizes=(12, 9, 7, 4), lrs=(0.2, 0.1, 0.05), batch_size=8, epochs=2, dtype="float64", free_steps=6,
                nudged_steps=3, beta=0.7)
    base.update(kw)
    return TrainConfig(**base)


def _max_param_gap(a: eb.LayeredEBM, b: eb.LayeredEBM) -> float:
    return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("method", ["ep", "ep_symmetric"])
@pytest.mark.parametrize("activation", ["hard_sigmoid", "sigmoid"])
@pytest.mark.parametrize("persistent,random_sign", [(True, True), (False, False)])
def test_fused_equals_generic(method, activation, persistent, random_sign):
    """Same weights (to rounding), same per-epoch errors and costs; 45 examples in minibatches of 8 also run the
    generic path for the last 5."""
    cfg = _cfg(method=method, activation=activation, persistent=persistent, random_sign=random_sign)
    data = _data()
    a = train(cfg, data, progress=False, fused=False)
    b = train(cfg, data, progress=False, fused=True, check_every=2)
    assert _max_param_gap(a.net, b.net) < 1e-12
    assert a.train_error == b.train_error and a.test_error == b.test_error
    assert max(abs(u - v) for u, v in zip(a.train_cost, b.train_cost)) < 1e-12
    assert _max_param_gap(a.net, eb.LayeredEBM(list(cfg.sizes), activation, seed=0, dtype=torch.float64)) > 1e-3


@pytest.mark.parametrize("method", ["ep", "ep_symmetric"])
@pytest.mark.parametrize("random_sign", [True, False])
@pytest.mark.parametrize("sizes,lrs,beta", [((12, 9, 7, 4), (0.2, 0.1, 0.05), -0.7), ((12, 4), (0.3,), 0.7),
                                            ((12, 4), (0.3,), -0.7)])
def test_fused_equals_generic_for_a_negative_beta_and_one_layer(method, random_sign, sizes, lrs, beta):
    """β < 0 (the program's sign is relative to β) and N = 1 (the output's constant is the input drive)."""
    cfg = _cfg(method=method, random_sign=random_sign, sizes=sizes, lrs=lrs, beta=beta)
    data = _data()
    a = train(cfg, data, progress=False, fused=False)
    b = train(cfg, data, progress=False, fused=True, check_every=2)
    assert _max_param_gap(a.net, b.net) < 1e-12
    assert a.train_error == b.train_error and a.test_error == b.test_error


def test_fused_is_the_default_for_ep_and_resumes(tmp_path):
    cfg = _cfg(epochs=3)
    data = _data()
    full = train(cfg, data, progress=False)
    ck = str(tmp_path / "run.pt")
    train(_cfg(epochs=1, checkpoint=ck), data, progress=False)
    resumed = train(_cfg(epochs=3, checkpoint=ck), data, progress=False)
    assert _max_param_gap(full.net, resumed.net) == 0.0
    assert full.test_error == resumed.test_error


def test_supports_only_ep_family():
    net = eb.LayeredEBM([4, 3, 2], "hard_sigmoid", seed=0)
    assert _trainloop.supports(eb.get_estimator("ep"), net)
    assert _trainloop.supports(eb.get_estimator("ep_symmetric"), net)
    for name in ("bp", "continual_ep", "bptt", "first_arrival"):
        assert not _trainloop.supports(eb.get_estimator(name), net)


def test_block_free_phase_reaches_the_fixed_point():
    """Block sweeps (odd layers, then even, each set to clip(pre_k)) end where a long synchronous relaxation does."""
    torch.manual_seed(0)
    net = eb.LayeredEBM([12, 9, 7, 4], "hard_sigmoid", seed=3, dtype=torch.float64)
    x = torch.rand(5, 12, dtype=torch.float64)
    ref = eb.relax(net, x, eps=0.5, tol=1e-13, max_steps=20_000, check_every=10)
    assert ref.converged
    y = predict(net, x, steps=200, tol=1e-14, schedule="block")
    assert float((y - ref.h[net.N]).abs().max()) < 1e-11
    sync = eb.relax(net, x, eps=0.5, tol=1e-12, max_steps=20_000, check_every=1)
    block = eb.relax(net, x, eps=1.0, tol=1e-12, max_steps=20_000, check_every=1, schedule="odd_even")
    assert block.steps < sync.steps  # sweeps (two half-steps each) to the same residual


def test_block_training_runs_and_evaluates_with_block_sweeps():
    data = _data(n=64)
    cfg = _cfg(free_schedule="block", eval_schedule="block", free_steps=3, epochs=3)
    h = train(cfg, data, progress=False)
    assert len(h.test_error) == 3 and all(0.0 <= e <= 1.0 for e in h.test_error)


def test_schedule_validation():
    with pytest.raises(ValueError, match="free_schedule"):
        _cfg(free_schedule="fast")
    with pytest.raises(ValueError, match="eval_schedule"):
        _cfg(activation="sigmoid", eval_schedule="block")
    with pytest.raises(ValueError, match="free_schedule"):
        train(_cfg(method="bp", free_schedule="block"), _data(), progress=False)
    with pytest.raises(ValueError, match="estimator"):
        train(_cfg(method="bp"), _data(), progress=False, fused=True)
    with pytest.raises(ValueError, match="check_every"):
        train(_cfg(), _data(), progress=False, check_every=0)
    with pytest.raises(TypeError, match="fused"):
        train(_cfg(), _data(), progress=False, fused="yes")
    net = eb.LayeredEBM([4, 3, 2], "sigmoid", seed=0)
    with pytest.raises(ValueError, match="schedule"):
        predict(net, torch.rand(2, 4), schedule="block")
    with pytest.raises(ValueError, match="schedule"):
        predict(net, torch.rand(2, 4), schedule="fast")


@pytest.mark.parametrize("activation", ["sigmoid", "hard_sigmoid"])
def test_divergence_is_reported_with_the_epoch(activation):
    """Unclipped states are watched for |h| > max_abs, clipped ones (ρ the identity) for NaN: both found at the
    next check, here the second minibatch."""
    cfg = _cfg(lrs=(1e308, 1e308, 1e308), beta=1e-6, activation=activation, epochs=1)
    with pytest.raises(FloatingPointError, match="state became non-finite.* epoch 1, between minibatch 2 and 2"):
        train(cfg, _data(), progress=False, fused=True, check_every=1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["ep", "ep_symmetric"])
def test_cuda_graphs_equal_cpu(method):
    """The minibatch program replayed as CUDA graphs gives the CPU run's weights (float64, to rounding)."""
    data = _data(n=48)
    cpu = train(_cfg(method=method), data, progress=False)
    gpu = train(_cfg(method=method, device="cuda"), data, progress=False)
    assert _max_param_gap(cpu.net, gpu.net.to(device="cpu")) < 1e-10
    assert cpu.train_error == gpu.train_error


def test_graphs_need_cuda():
    net = eb.LayeredEBM([12, 9, 4], "hard_sigmoid", seed=0, dtype=torch.float64)
    d = _data()
    with pytest.raises(ValueError, match="graphs"):
        _trainloop.FusedEP(net, eb.get_estimator("ep"), eb.Phases(), (0.1, 0.1), 8, d.x_train,
                           d.targets(d.y_train).double(), d.y_train, None, graphs=True)


@pytest.mark.parametrize("method,sizes", [("ep", (784, 500, 10)), ("ep_symmetric", (30, 20, 20, 5))])
def test_floor_counts_the_programs_products(method, sizes):
    """The benchmark's floor counts exactly the matrix products the fused program calls."""
    from ebmlib.book.bench import _fused, _program_shapes, _synthetic

    net = eb.LayeredEBM(list(sizes), "hard_sigmoid", seed=0)
    ph = eb.Phases(free_steps=5, nudged_steps=3)
    prog = _fused(net, method, ph, (0.1,) * net.N, 4, _synthetic(8, sizes, torch.device("cpu")))
    calls = prog._program(1.0)
    products = [c for c in calls if getattr(getattr(c, "func", None), "__name__", "") in ("addmm", "addmm_")]
    nudged = 3 * (2 if method == "ep_symmetric" else 1)
    assert len(products) == len(_program_shapes(sizes, 4, 5, nudged))


def test_the_bench_times_a_block_free_phase_and_labels_its_row():
    """The bench's block row: the trainer's free phase as block sweeps (the program's calls are its sweeps'), the
    public style's steps recorded beside it, and the Reproduce table names both."""
    from ebmlib.book import bench, reproduce

    kw = dict(method="ep", sizes=(12, 8, 4), free_steps=2, nudged_steps=1, lrs=(0.1, 0.05), reps=1,
              device=torch.device("cpu"), samples=40, timed_samples=40, public_minibatches=2, batch=4)
    r = bench.bench_train_epoch(free_schedule="block", public_free_steps=3, **kw)
    assert (r["free_schedule"], r["free_steps"], r["public_free_steps"]) == ("block", 2, 3)
    assert r["seconds"] > 0 and set(r["split"]) == {"free", "nudged", "update", "bookkeeping"}
    prog = bench._fused(eb.LayeredEBM([12, 8, 4], "hard_sigmoid", seed=0), "ep", eb.Phases(free_steps=2), (0.1,) * 2,
                        4, bench._synthetic(8, (12, 8, 4), torch.device("cpu")), free_schedule="block")
    assert prog.free_cfg.schedule == "odd_even" and prog.free_cfg.eps == 1.0
    text = "\n".join(reproduce._bench_table({"train_epoch": {"ep 12-8-4 block": r}}))
    assert "2 sweeps / 1 (public style: 3 / 1)" in text and "two ways to a free state" in text
    # a full commit hash is shortened, a label (a run from a working tree) is kept whole
    assert "commit `0123456789ab`." in "\n".join(reproduce._bench_table({"commit": "0123456789abcdef" * 2 + "01234567"}))
    assert "commit `3d1b05d+issue14-draft`." in "\n".join(reproduce._bench_table({"commit": "3d1b05d+issue14-draft"}))


def test_the_block_bench_counts_the_images_whose_stopping_points_differ(tmp_path):
    """bench_block on a tiny IDX set (28 × 28 noise): its report of the two evaluations is consistent — every image
    is either apart (outputs more than 0.01 apart) or within the rest's largest gap, and the ratio is the steps'."""
    import numpy as np
    from test_data import _write_idx

    from ebmlib.book import bench

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, size=n))
    r = bench.bench_block(idx_dir=str(tmp_path), device=torch.device("cpu"), epochs=1, block_sweeps=2)
    ev = r["evaluation"]
    assert r["images"] == 30 and 0 <= r["images_apart"] <= 30
    assert r["gap_of_the_rest"] <= 1e-2 and r["gap_of_the_rest"] <= r["fixed_point_gap"]
    assert (r["images_apart"] > 0) == (r["fixed_point_gap"] > 1e-2)
    assert r["step_ratio"] == ev["synchronous"]["steps_mean"] / ev["block"]["steps_mean"]
    assert r["training"]["block"]["free_steps"] == 2 and len(r["training"]["block"]["test_error"]) == 1
    for e in ev.values():
        assert e["force_residual"] <= 1e-3 and 0.0 <= e["test_error"] <= 1.0
