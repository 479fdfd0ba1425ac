"""Model selection for learning comparisons: k-fold cross-validation, learning-rate search, intervals.

- :func:`t_interval`, :func:`paired_interval`: mean ± t·SE with Student's t quantile at n − 1 degrees of
  freedom (SE = sample standard deviation / √n); the paired form for two methods run on the same folds.
- :func:`rate_grid`: the per-layer learning-rate tuples tried, the Cartesian product of one list per layer.
- :func:`select_rates`: every tuple of the grid trained on validation folds carved out of a dataset's
  *training* split (:func:`ebmlib.k_fold` with ``pool_test=False``), the one with the lowest mean
  validation error chosen; the test split is never read. Every method given the same grid, the same
  folds and the same epochs gets the same budget (number of training runs × epochs).
- :func:`cross_validate`: k-fold cross-validation of one :class:`ebmlib.TrainConfig` (or the dataset's own
  train/test split when ``folds`` is 0): per split, the rates are selected on its training part, the
  network is retrained on the whole training part with them and tested on the held-out part.

The folds of k-fold cross-validation share training examples, so their errors are not independent and
the SE over folds is an approximation (no unbiased estimator of that variance exists: Bengio &
Grandvalet, JMLR 5, 2004); intervals over independent seeds are exact in that respect.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .checks import DivergenceError, check_positive_int, check_real
from .data import Dataset, k_fold
from .learning import History, TrainConfig, train

__all__ = [
    "Interval",
    "t_quantile",
    "t_interval",
    "paired_interval",
    "rate_grid",
    "Selection",
    "select_rates",
    "FoldRun",
    "cross_validate",
]


@dataclass(frozen=True)
class Interval:
    """A two-sided interval ``mean ± t·se`` at confidence ``level`` from ``n`` values."""

    mean: float
    se: float
    n: int
    level: float
    t: float

    @property
    def half(self) -> float:
        """Half-width t·SE."""
        return self.t * self.se

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.half:.2g} ({100 * self.level:g} %, t·SE, n = {self.n})"


def _check_level(level: object) -> float:
    lv = check_real("level", level)
    if not 0.0 < lv < 1.0:
        raise ValueError(f"level: the confidence level must lie in (0, 1), got {lv}")
    return lv


def t_quantile(level: float, dof: int) -> float:
    """Student's t quantile for a two-sided interval: ``t`` with P(|T| ≤ t) = ``level`` at ``dof`` degrees of freedom."""
    lv = _check_level(level)
    check_positive_int("dof", dof)
    try:
        from scipy.stats import t as student_t
    except ImportError as exc:  # pragma: no cover - scipy comes with scikit-learn (the book extra) and the tests
        raise ImportError("level: Student's t quantile needs scipy (pip install scipy)") from exc
    return float(student_t.ppf(0.5 + lv / 2.0, dof))


def _values(name: str, values: object) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size < 2:
        raise ValueError(f"{name}: an interval needs at least 2 values, got {a.size}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean ± t·SE of ``values`` (SE = sample standard deviation with n − 1, over √n)."""
    a = _values("values", values)
    n = a.size
    return Interval(float(a.mean()), float(a.std(ddof=1) / math.sqrt(n)), n, _check_level(level),
                    t_quantile(level, n - 1))


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Interval of the mean of ``a − b`` for paired values (two methods on the same folds and seeds)."""
    x, y = _values("a", a), _values("b", b)
    if x.size != y.size:
        raise ValueError(f"a, b: paired values need equal lengths, got {x.size} and {y.size}")
    return t_interval(x - y, level)


def rate_grid(per_layer: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    """All per-layer learning-rate tuples: the Cartesian product of one candidate list per layer."""
    if not isinstance(per_layer, (list, tuple)) or not per_layer:
        raise ValueError("per_layer: expected one list of candidate rates per layer")
    lists = []
    for k, cands in enumerate(per_layer):
        if not isinstance(cands, (list, tuple)) or not cands:
            raise ValueError(f"per_layer[{k}]: expected a non-empty list of rates")
        vals = [check_real(f"per_layer[{k}]", v) for v in cands]
        if any(v < 0 for v in vals):
            raise ValueError(f"per_layer[{k}]: learning rates must be >= 0, got {vals}")
        lists.append(vals)
    return [tuple(p) for p in itertools.product(*lists)]


def _final_error(cfg: TrainConfig, data: Dataset) -> float:
    """Test error of ``data`` after training with ``cfg``; 1 when the weights diverge (a rate too large)."""
    try:
        return float(train(cfg, data, progress=False, resume=False).test_error[-1])
    except (FloatingPointError, DivergenceError):
        return 1.0


@dataclass
class Selection:
    """The outcome of :func:`select_rates`: the grid, each tuple's mean validation error, the chosen tuple.

    ``trainings`` runs of ``epochs`` epochs each were spent (the budget).
    """

    grid: list
    val_error: list
    lrs: tuple
    trainings: int
    epochs: int


def select_rates(
    cfg: TrainConfig, data: Dataset, grid: Sequence[Sequence[float]], *, inner_folds: int = 4, inner_runs: int = 1,
) -> Selection:
    """Choose ``cfg.lrs`` from ``grid`` on validation folds inside ``data``'s training split.

    The training split is cut into ``inner_folds`` parts (:func:`ebmlib.k_fold`, ``pool_test=False``);
    the first ``inner_runs`` of them serve in turn as the validation set. Each tuple trains
    ``cfg.epochs`` epochs from ``cfg.seed`` (no checkpoint) on the rest; the tuple with the lowest mean
    final validation error wins (the first in grid order on ties; a run whose weights diverge counts as
    error 1). ``data``'s test split is never read.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    check_positive_int("inner_folds", inner_folds, minimum=2)
    check_positive_int("inner_runs", inner_runs)
    if inner_runs > inner_folds:
        raise ValueError(f"inner_runs: at most inner_folds = {inner_folds}, got {inner_runs}")
    tuples = [tuple(float(v) for v in g) for g in grid]
    if not tuples:
        raise ValueError("grid: expected at least one tuple of learning rates")
    for g in tuples:
        if len(g) != len(cfg.sizes) - 1:
            raise ValueError(f"grid: each tuple needs {len(cfg.sizes) - 1} rates (one per layer), got {g}")
    splits = k_fold(data, inner_folds, pool_test=False)[:inner_runs]
    errors = []
    for g in tuples:
        c = dataclasses.replace(cfg, lrs=g, checkpoint=None)
        errors.append(float(np.mean([_final_error(c, s) for s in splits])))
    best = int(np.argmin(errors))   # the first minimum
    return Selection(tuples, errors, tuples[best], len(tuples) * inner_runs, cfg.epochs)


@dataclass
class FoldRun:
    """One split of :func:`cross_validate`: its index, seed, the rates used, the selection behind them
    (None without a grid), the training history (``history.net`` is the trained network) and the
    held-out examples' count."""

    fold: int
    seed: int
    lrs: tuple
    history: History
    n_test: int
    selection: Optional[Selection] = field(default=None, repr=False)

    @property
    def test_error(self) -> float:
        """Error on the held-out part after the last epoch."""
        return float(self.history.test_error[-1])


def cross_validate(
    cfg: TrainConfig,
    data: Dataset,
    *,
    folds: int,
    grid: Sequence[Sequence[float]] = (),
    inner_folds: int = 4,
    inner_runs: int = 1,
    progress: bool = False,
    resume: bool = True,
    on_run: Optional[Callable[[FoldRun], None]] = None,
) -> list[FoldRun]:
    """k-fold cross-validation of ``cfg`` on all of ``data`` (train and test splits pooled, :func:`ebmlib.k_fold`).

    ``folds`` = 0: the dataset's own split, one run. Split ``i`` trains from seed ``cfg.seed + i``
    (so two methods given the same ``cfg.seed`` share initial weights and minibatch order split by
    split: their errors are paired). With a non-empty ``grid`` the rates are chosen by
    :func:`select_rates` on split ``i``'s training part, then the network is retrained there with
    them; otherwise ``cfg.lrs`` is used. ``cfg.checkpoint`` gets a ``-fold<i>`` suffix per split.
    ``on_run`` is called with each finished :class:`FoldRun`.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data: expected an ebmlib Dataset, got {type(data).__name__}")
    check_positive_int("folds", folds, minimum=0)
    if folds == 1:
        raise ValueError("folds: 0 (the dataset's own split) or at least 2, got 1")
    splits = [data] if folds == 0 else k_fold(data, folds)
    out = []
    for i, split in enumerate(splits):
        ckpt = cfg.checkpoint
        if ckpt and folds:
            p = Path(ckpt)
            ckpt = str(p.with_name(f"{p.stem}-fold{i}{p.suffix}"))
        c = dataclasses.replace(cfg, seed=cfg.seed + i, checkpoint=ckpt)
        sel = select_rates(c, split, grid, inner_folds=inner_folds, inner_runs=inner_runs) if len(grid) else None
        if sel is not None:
            c = dataclasses.replace(c, lrs=sel.lrs)
        hist = train(c, split, progress=progress, resume=resume)
        fr = FoldRun(i, c.seed, c.lrs, hist, len(split.x_test), sel)
        out.append(fr)
        if on_run is not None:
            on_run(fr)
    return out
