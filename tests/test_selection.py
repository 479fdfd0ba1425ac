"""Model selection: intervals, the rate grid, the learning-rate search and k-fold cross-validation."""

import math

import numpy as np
import pytest
import torch

import ebmlib as eb


@pytest.fixture(scope="module")
def small():
    ds = eb.load_digits(0.25, seed=0)
    return eb.Dataset("digits-small", ds.x_train[:150], ds.y_train[:150], ds.x_test[:60], ds.y_test[:60], 10)


def _cfg(**kw):
    base = dict(sizes=(64, 10), activation="sigmoid", method="bp", lrs=(0.5,), batch_size=10, epochs=2,
                eval_steps=10, seed=3)
    return eb.TrainConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------ intervals
def test_t_interval_by_hand():
    iv = eb.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    se = math.sqrt(2.5) / math.sqrt(5)
    assert iv.n == 5 and iv.mean == 3.0 and iv.se == pytest.approx(se, rel=1e-15)
    assert iv.t == pytest.approx(2.7764451051977987, rel=1e-12)   # t_{0.975, 4} from tables
    assert (iv.lo, iv.hi) == pytest.approx((3.0 - iv.t * se, 3.0 + iv.t * se), rel=1e-15)
    assert eb.t_quantile(0.99, 1) == pytest.approx(63.65674116287399, rel=1e-12)
    assert "n = 5" in str(iv)


def test_t_interval_covers_the_mean_at_its_level():
    # the t interval of normal samples covers the true mean with probability `level`: 4000 draws of 5,
    # the coverage is a binomial proportion with SE sqrt(.95 * .05 / 4000) = 0.0034; 4 SE either side
    rng = np.random.default_rng(0)
    hits = [iv.lo <= 1.0 <= iv.hi for iv in (eb.t_interval(rng.normal(1.0, 2.0, 5)) for _ in range(4000))]
    assert abs(np.mean(hits) - 0.95) < 4 * math.sqrt(0.95 * 0.05 / 4000)


def test_paired_interval_is_the_interval_of_the_differences():
    a, b = [0.05, 0.04, 0.06, 0.03], [0.04, 0.045, 0.05, 0.02]
    p = eb.paired_interval(a, b, level=0.9)
    q = eb.t_interval(np.subtract(a, b), level=0.9)
    assert (p.mean, p.se, p.t) == (q.mean, q.se, q.t)


def test_interval_errors_name_the_argument():
    with pytest.raises(ValueError, match="^values:"):
        eb.t_interval([1.0])
    with pytest.raises(ValueError, match="^values:"):
        eb.t_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="^level:"):
        eb.t_interval([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match="^a, b:"):
        eb.paired_interval([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="^dof:"):
        eb.t_quantile(0.95, 0)


# ------------------------------------------------------------------------------------ the grid
def test_rate_grid_is_the_product_in_order():
    assert eb.rate_grid([[0.1, 0.2], [0.05]]) == [(0.1, 0.05), (0.2, 0.05)]
    assert len(eb.rate_grid([[1, 2, 3], [4, 5, 6]])) == 9
    with pytest.raises(ValueError, match=r"^per_layer\[1\]:"):
        eb.rate_grid([[0.1], []])
    with pytest.raises(ValueError, match=r"^per_layer\[0\]:"):
        eb.rate_grid([[-0.1]])
    with pytest.raises(ValueError, match="^per_layer:"):
        eb.rate_grid([])


# ------------------------------------------------------------------------------------ selection
def test_select_rates_picks_the_best_and_reads_no_test_split(small, monkeypatch):
    import ebmlib.selection as sel_mod

    real = sel_mod.train

    def train_or_diverge(cfg, data, **kw):               # the trainer's own reaction to non-finite weights
        if cfg.lrs[0] > 1e3:
            raise FloatingPointError("train: weights became non-finite")
        return real(cfg, data, **kw)

    monkeypatch.setattr(sel_mod, "train", train_or_diverge)
    poisoned = eb.Dataset("p", small.x_train, small.y_train, torch.full_like(small.x_test, float("nan")),
                          small.y_test, 10)                  # a search that read the test split would fail
    grid = [(0.0,), (0.5,), (1e4,)]
    sel = eb.select_rates(_cfg(), poisoned, grid, inner_folds=3, inner_runs=2)
    assert sel.trainings == 6 and sel.epochs == 2 and sel.grid == grid
    assert sel.val_error[2] == 1.0                           # the diverging rate counts as error 1
    assert sel.val_error[1] < sel.val_error[0]               # learning beats the untrained network
    assert sel.lrs == (0.5,)
    # the mean validation error is the mean over the inner runs of plain training on the inner folds
    inner = eb.k_fold(poisoned, 3, pool_test=False)[:2]
    by_hand = np.mean([eb.train(_cfg(lrs=(0.5,)), s, progress=False).test_error[-1] for s in inner])
    assert sel.val_error[1] == pytest.approx(by_hand, abs=0)


def test_select_rates_breaks_ties_by_grid_order(small):
    sel = eb.select_rates(_cfg(epochs=1), small, [(0.0,), (0.0,)], inner_folds=2)
    assert sel.val_error[0] == sel.val_error[1] and sel.lrs == (0.0,)


def test_select_rates_errors(small):
    with pytest.raises(ValueError, match="^grid:"):
        eb.select_rates(_cfg(), small, [])
    with pytest.raises(ValueError, match="^grid:"):
        eb.select_rates(_cfg(), small, [(0.1, 0.2)])
    with pytest.raises(ValueError, match="^inner_runs:"):
        eb.select_rates(_cfg(), small, [(0.1,)], inner_folds=2, inner_runs=3)
    with pytest.raises(TypeError, match="^cfg:"):
        eb.select_rates({}, small, [(0.1,)])


# ------------------------------------------------------------------------------------ cross-validation
def test_cross_validate_folds_seeds_and_pairing(small, tmp_path):
    seen = []
    runs = eb.cross_validate(_cfg(), small, folds=3, on_run=seen.append)
    assert [r.fold for r in runs] == [0, 1, 2] and [r.seed for r in runs] == [3, 4, 5] and seen == runs
    assert sum(r.n_test for r in runs) == 210 and all(r.lrs == (0.5,) and r.selection is None for r in runs)
    splits = eb.k_fold(small, 3)
    for r, s in zip(runs, splits):                          # each run is plain training on its split
        h = eb.train(_cfg(seed=r.seed), s, progress=False)
        assert r.test_error == h.test_error[-1] and torch.equal(r.history.net.W[1], h.net.W[1])
    again = eb.cross_validate(_cfg(), small, folds=3)
    assert [r.test_error for r in again] == [r.test_error for r in runs]
    own = eb.cross_validate(_cfg(checkpoint=str(tmp_path / "c.pt")), small, folds=0)
    assert len(own) == 1 and own[0].n_test == 60 and (tmp_path / "c.pt").exists()
    eb.cross_validate(_cfg(checkpoint=str(tmp_path / "c.pt")), small, folds=2)
    assert (tmp_path / "c-fold0.pt").exists() and (tmp_path / "c-fold1.pt").exists()


def test_cross_validate_selects_per_fold_on_its_training_part(small):
    grid = [(0.0,), (0.5,)]
    runs = eb.cross_validate(_cfg(), small, folds=2, grid=grid, inner_folds=2)
    for r, s in zip(runs, eb.k_fold(small, 2)):
        ref = eb.select_rates(_cfg(seed=r.seed), s, grid, inner_folds=2)
        assert r.selection.val_error == ref.val_error and r.lrs == ref.lrs == (0.5,)


def test_cross_validate_errors(small):
    with pytest.raises(ValueError, match="^folds:"):
        eb.cross_validate(_cfg(), small, folds=1)
    with pytest.raises(TypeError, match="^data:"):
        eb.cross_validate(_cfg(), small.x_train, folds=2)


# ------------------------------------------------------------------------------------ what the comparison relies on
@pytest.mark.parametrize("rule", ["first_arrival", "plasticity_bengio", "plasticity_tied"])
def test_single_run_drift_cancels_over_the_sign_of_beta(rule):
    # chapter 07 compares the single-run and paired rules under a random sign of beta: the free drift of an
    # unconverged free phase enters the single-run estimate with the sign of beta, so the mean over +beta
    # and -beta is the paired mean exactly, while each sign alone differs from the paired estimate
    net = eb.LayeredEBM([6, 5, 4, 3], "sigmoid", seed=1, gain=1.5, bias_std=0.3, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x, d = torch.rand(5, 6, generator=g, dtype=torch.float64), torch.rand(5, 3, generator=g, dtype=torch.float64)
    est = eb.get_estimator(rule)

    def grads(paired, b):
        ph = eb.Phases(free_steps=3, nudged_steps=4, beta=b, random_sign=False, paired=paired)
        return est(net, x, d, phases=ph).grads

    for k in range(1, 4):
        single = [grads(False, b)[k][0] for b in (0.3, -0.3)]
        paired = [grads(True, b)[k][0] for b in (0.3, -0.3)]
        assert torch.allclose(single[0] + single[1], paired[0] + paired[1], atol=1e-12, rtol=0)
        assert not torch.allclose(single[0], paired[0], atol=1e-6)
