"""The trainer: one loop for every estimator of :mod:`ebmlib.estimators` (PAPER.md §5–6).

:func:`train` builds ``LayeredEBM(sizes, activation, seed=cfg.seed)``, looks the estimator up by
name (``cfg.method``), and for every minibatch calls :func:`train_step`: the estimate (with the
persistent free state of each example when the estimator has a free phase), then
``θ_k ← θ_k − lr_k · ∂J/∂θ_k`` (:func:`apply_update`), or, for an estimator that updates the
parameters during its phases (``continual_ep``), nothing after it. It never branches on the method's name.

β is in the ½‖·‖² convention of this book (the official EP code's β 0.5 is β 1.0 here).
Predictions are the argmax of the output at the free fixed point (energy-based estimators) or of
the feedforward pass (``bp``). Training checkpoints atomically after every epoch and resumes
bit-for-bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from . import _trainloop
from .checks import check_bool, check_positive_int, check_real, resolve_device
from .data import Dataset
from .dynamics import relax
from .estimators import Estimate, Estimator, Grads, Phases, _signed_beta, get_estimator
from .io import atomic_torch_save
from .network import LayeredEBM, State
from .oneway import mlp_forward

SCHEDULES = ("synchronous", "block")

__all__ = ["TrainConfig", "History", "predict", "evaluate", "apply_update", "train_step", "train"]


@dataclass
class TrainConfig:
    """Everything that defines a training run (the defaults are Scellier & Bengio's 784-500-10 setting).

    ``lrs`` holds one learning rate per layer ``k = 1 … N`` (for ``W_k`` and ``b_k``).
    ``eval_steps`` caps the free relaxation used for evaluation (from zero, tolerance ``eval_tol``).
    ``free_schedule`` / ``eval_schedule``: "synchronous" (ε-steps of every layer at once, the paper's) or
    "block" (alternate layers set to their exact minimiser clip(pre_k) given their neighbours; the clipped
    hard sigmoid only): fixed points of the same dynamics in fewer steps, where the energy has several minima
    not always the same one (``python -m ebmlib bench`` counts them). "block" for the
    free phase needs an estimator with a fused program (ep, ep_symmetric); each step is then one sweep.
    """

    sizes: tuple = (784, 500, 10)
    activation: str = "hard_sigmoid"
    method: str = "ep"
    eps: float = 0.5
    free_steps: int = 20
    nudged_steps: int = 4
    beta: float = 1.0
    random_sign: bool = True
    lrs: tuple = (0.1, 0.05)
    batch_size: int = 20
    epochs: int = 1
    persistent: bool = True
    drho: bool = True
    bp_state_drho: bool = True
    paired: bool = True
    eval_steps: int = 200
    eval_tol: float = 1e-4
    free_schedule: str = "synchronous"
    eval_schedule: str = "synchronous"
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    checkpoint: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.sizes, (list, tuple)) or len(self.sizes) < 2:
            raise ValueError("sizes: need at least two layer sizes (input and output)")
        self.sizes = tuple(check_positive_int(f"sizes[{i}]", n) for i, n in enumerate(self.sizes))
        get_estimator(self.method)
        self.phases  # noqa: B018 (validates eps, free_steps, nudged_steps, beta and the flags, once, in Phases)
        if not isinstance(self.lrs, (list, tuple)) or len(self.lrs) != len(self.sizes) - 1:
            raise ValueError(f"lrs: expected one learning rate per layer, {len(self.sizes) - 1} in all")
        self.lrs = tuple(check_real(f"lrs[{i}]", v) for i, v in enumerate(self.lrs))
        if any(v < 0 for v in self.lrs):
            raise ValueError(f"lrs: learning rates must be >= 0, got {self.lrs}")
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("epochs", self.epochs, minimum=0)
        check_positive_int("eval_steps", self.eval_steps)
        if check_real("eval_tol", self.eval_tol) < 0:
            raise ValueError(f"eval_tol: must be >= 0, got {self.eval_tol}")
        check_positive_int("seed", self.seed, minimum=0)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        check_bool("persistent", self.persistent)
        for name in ("free_schedule", "eval_schedule"):
            v = getattr(self, name)
            if v not in SCHEDULES:
                raise ValueError(f"{name}: expected one of {SCHEDULES}, got {v!r}")
            if v == "block" and not (self.activation == "hard_sigmoid" and self.phases.clip is not False):
                raise ValueError(f"{name}: 'block' sets a layer to clip(pre_k), its exact minimiser, only for the "
                                 f"clipped hard sigmoid (activation is {self.activation!r})")

    @property
    def phases(self) -> Phases:
        """The estimator's phase settings."""
        return Phases(self.eps, self.free_steps, self.nudged_steps, self.beta, self.random_sign, self.drho,
                      self.bp_state_drho, paired=self.paired)

    @property
    def estimator(self) -> Estimator:
        return get_estimator(self.method)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class History:
    """Per-epoch record of :func:`train`; ``net`` is the trained network (weights on ``cfg.device``).

    ``train_error``: error of the predictions made during the epoch (free phase / forward pass,
    as in Scellier & Bengio); ``test_error``: :func:`evaluate` on the test split after the epoch;
    ``wall_s``: training seconds of each epoch (evaluation excluded); ``update_ratio``: per epoch, the
    per-layer effective learning rate ``‖W_k(end) − W_k(start)‖_F / ‖W_k(start)‖_F``, k = 1 … N.
    """

    config: dict
    epoch: list = field(default_factory=list)
    train_error: list = field(default_factory=list)
    train_cost: list = field(default_factory=list)
    test_error: list = field(default_factory=list)
    wall_s: list = field(default_factory=list)
    update_ratio: list = field(default_factory=list)
    net: Optional[LayeredEBM] = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("config", "epoch", "train_error", "train_cost", "test_error", "wall_s",
                                              "update_ratio")}

    @property
    def total_wall_s(self) -> float:
        return float(sum(self.wall_s))


# ---------------------------------------------------------------------------- predictions
def predict(
    net: LayeredEBM,
    x: Tensor,
    *,
    feedforward_net: bool = False,
    eps: float = 0.5,
    steps: int = 200,
    tol: float = 1e-4,
    schedule: str = "synchronous",
) -> Tensor:
    """The output used for the prediction: ``y`` at the free fixed point (relaxed from zero,
    at most ``steps`` steps), or ``r_N`` of :func:`mlp_forward` when ``feedforward_net``.

    ``schedule="block"`` (clipped hard sigmoid): sweeps that set odd, then even layers to clip(pre_k), the
    exact minimiser of the energy given their neighbours (ε = 1 of the alternate schedule); ``steps`` counts
    sweeps and ``tol`` bounds the largest change of a sweep."""
    if feedforward_net:
        return mlp_forward(net, x)[-1]
    check_positive_int("steps", steps)
    if schedule == "block":
        if not (net.activation.name == "hard_sigmoid" and net.activation.clip_by_default):
            raise ValueError("schedule: 'block' needs the clipped hard sigmoid, whose layer minimiser is clip(pre_k)")
        return relax(net, x, eps=1.0, tol=tol, max_steps=steps, check_every=5, schedule="odd_even").h[net.N]
    if schedule != "synchronous":
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    return relax(net, x, eps=eps, tol=tol, max_steps=steps, check_every=10).h[net.N]


def evaluate(
    net: LayeredEBM,
    dataset: Dataset,
    *,
    split: str = "test",
    feedforward_net: bool = False,
    eps: float = 0.5,
    steps: int = 200,
    tol: float = 1e-4,
    batch_size: int = 1000,
    schedule: str = "synchronous",
) -> float:
    """Error rate (fraction in [0, 1]) of the argmax prediction on ``split`` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset: expected an ebmlib Dataset, got {type(dataset).__name__}")
    check_positive_int("batch_size", batch_size)
    x_all = getattr(dataset, f"x_{split}").to(device=net.device, dtype=net.dtype)
    y_all = getattr(dataset, f"y_{split}").to(device=net.device)
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(x_all), batch_size):
            out = predict(net, x_all[i : i + batch_size], feedforward_net=feedforward_net, eps=eps, steps=steps,
                          tol=tol, schedule=schedule)
            wrong = wrong + (out.argmax(1) != y_all[i : i + batch_size]).sum()  # on the device: one sync at the end
    return int(wrong) / max(len(x_all), 1)


# ---------------------------------------------------------------------------- one minibatch
def apply_update(net: LayeredEBM, grads: Grads, lrs: tuple) -> None:
    """In place: ``W_k ← W_k − lr_k ∂J/∂W_k``, ``b_k ← b_k − lr_k ∂J/∂b_k`` (one rate per layer)."""
    if len(lrs) != net.N or len(grads) != net.N + 1:
        raise ValueError(f"lrs, grads: expected {net.N} learning rates and N+1 = {net.N + 1} gradient entries")
    with torch.no_grad():
        for k in range(1, net.N + 1):
            net.W[k].sub_(grads[k][0], alpha=lrs[k - 1])
            net.b[k].sub_(grads[k][1], alpha=lrs[k - 1])


def train_step(
    net: LayeredEBM,
    estimator: Estimator,
    x: Tensor,
    target: Tensor,
    *,
    phases: Phases,
    lrs: tuple,
    generator: torch.Generator,
    h0: Optional[State] = None,
) -> Estimate:
    """One minibatch: ``estimator``'s estimate from ``h0``, then :func:`apply_update`. The benchmark times this.

    An estimator that updates the parameters itself (``estimator.updates_params``, e.g. ``continual_ep``)
    is given ``lrs`` and no update is applied after it.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"estimator: expected an ebmlib Estimator, got {type(estimator).__name__}")
    if estimator.updates_params:
        return estimator(net, x, target, h0=h0, phases=phases, generator=generator, lrs=lrs)
    est = estimator(net, x, target, h0=h0, phases=phases, generator=generator)
    apply_update(net, est.grads, lrs)
    return est


# ---------------------------------------------------------------------------- training
def _state(net: LayeredEBM, persistent: Optional[list], gen: torch.Generator, history: History, epoch: int,
           data_id: dict) -> dict:
    return {
        "epoch": epoch,
        "W": [None] + [w.detach().cpu().clone() for w in net.W[1:]],
        "b": [None] + [b.detach().cpu().clone() for b in net.b[1:]],
        "persistent": None if persistent is None else [p.detach().cpu().clone() for p in persistent],
        "generator": gen.get_state(),
        "history": history.to_dict(),
        "data": data_id,
    }


def _read_fused(prog: _trainloop.FusedEP, wrong: int, cost: float, epoch: int, m: int, every: int) -> tuple:
    """Add the fused program's errors and cost since its last read; raise if a state diverged since."""
    w, c, big = prog.read()
    if not big <= prog.max_abs:
        raise FloatingPointError(f"train: a state became non-finite or exceeded |h| > {prog.max_abs:g} in epoch "
                                 f"{epoch + 1}, between minibatch {max(m + 2 - every, 1)} and {m + 1} (checked every "
                                 f"{every}: pass check_every=1 to find the minibatch); lower lrs or beta")
    return wrong + w, cost + c


_RESUME_FREE = ("epochs", "checkpoint", "device")  # may change between a run and its resumption


def _is_terminal() -> bool:
    """Whether standard error is an interactive terminal (not a notebook kernel, papermill or a log file)."""
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # pragma: no cover - a replaced or closed stream
        return False


def _summary_line(method: str, history: History) -> str:
    """One line for a finished run: method, epochs, wall time, final train and test error."""
    return (f"{method}: {history.epoch[-1]} epochs in {sum(history.wall_s):.1f} s, "
            f"train error {100 * history.train_error[-1]:.2f} %, test error {100 * history.test_error[-1]:.2f} %")


def train(
    cfg: TrainConfig,
    dataset: Dataset,
    *,
    progress: bool = True,
    resume: bool = True,
    on_epoch: Optional[Callable[[History], None]] = None,
    fused: Optional[bool] = None,
    check_every: Optional[int] = None,
) -> History:
    """Train ``cfg.method`` on ``dataset`` for ``cfg.epochs`` epochs; returns the :class:`History`.

    ``on_epoch(history)`` is called after every epoch (after the checkpoint is written), e.g. to report
    progress from a worker process.

    With ``cfg.checkpoint`` set, the weights, persistent free states, generator state and history are
    written atomically after every epoch, and ``resume=True`` continues from that file (a run of
    ``epochs=2`` resumed to ``epochs=4`` equals an uninterrupted run of 4 epochs on CPU).

    ``fused`` (default: whenever the estimator has one) runs each full minibatch as the bound program of
    :mod:`ebmlib._trainloop` (a CUDA graph on CUDA): the same arithmetic as :func:`train_step` in another
    order of rounding, with the host asked about errors and divergence every ``check_every`` minibatches
    (default: 100 on CPU; once per epoch on CUDA, so that nothing inside an epoch waits for the device).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset: expected an ebmlib Dataset, got {type(dataset).__name__}")
    if check_every is not None:
        check_positive_int("check_every", check_every)
    if fused is not None:
        check_bool("fused", fused)
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch: expected a callable or None, got {type(on_epoch).__name__}")
    dev, dt = resolve_device(cfg.device), cfg.torch_dtype
    if dataset.n_inputs != cfg.sizes[0] or dataset.n_classes != cfg.sizes[-1]:
        raise ValueError(f"dataset: has {dataset.n_inputs} inputs and {dataset.n_classes} classes, "
                         f"cfg.sizes is {cfg.sizes}")
    x_train = dataset.x_train.to(device=dev, dtype=dt)
    d_train = dataset.targets(dataset.y_train).to(device=dev, dtype=dt)
    labels = dataset.y_train.to(device=dev)
    n = len(x_train)
    net = LayeredEBM(list(cfg.sizes), cfg.activation, seed=cfg.seed, dtype=dt, device=dev)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # CPU generator: identical streams on every device
    estimator, phases = cfg.estimator, cfg.phases
    persistent = ([torch.zeros(n, s, dtype=dt, device=dev) for s in cfg.sizes[1:]]
                  if estimator.free_phase and cfg.persistent else None)
    history = History(config=cfg.to_dict())
    data_id = {"name": dataset.name, "n_train": n, "n_test": len(dataset.x_test)}
    start = 0
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    if ckpt is not None and resume and ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # keys added since keep defaults
        old = {k: saved["history"]["config"].get(k, defaults[k]) for k in defaults if k not in _RESUME_FREE}
        new = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
        if old != new:
            diff = sorted(k for k in new if old.get(k) != new[k])
            raise ValueError(f"cfg: differs from the checkpoint {ckpt} in {diff}; use resume=False or another path")
        if saved.get("data") != data_id:
            raise ValueError(f"dataset: {data_id} differs from the checkpoint's {saved.get('data')}; "
                             "use resume=False or another path")
        net = LayeredEBM(list(cfg.sizes), cfg.activation, W=saved["W"], b=saved["b"], dtype=dt, device=dev)
        if persistent is not None:
            persistent = [p.to(device=dev, dtype=dt) for p in saved["persistent"]]
        gen.set_state(saved["generator"])
        h = saved["history"]
        history = History(config=cfg.to_dict(), epoch=h["epoch"], train_error=h["train_error"],
                          train_cost=h["train_cost"], test_error=h["test_error"], wall_s=h["wall_s"],
                          update_ratio=h.get("update_ratio", []))
        start = saved["epoch"]

    bar = None  # pragma: no mutate
    # A live bar only on a terminal; elsewhere (a notebook, papermill, a log file) one line per run at the end.
    live = progress and start < cfg.epochs and _is_terminal()  # pragma: no mutate
    if live:  # pragma: no mutate
        from tqdm import tqdm

        bar = tqdm(total=(cfg.epochs - start) * math.ceil(n / cfg.batch_size), desc=cfg.method, leave=False)  # pragma: no mutate
    use_fused = _trainloop.supports(estimator, net) if fused is None else bool(fused)
    if cfg.free_schedule == "block" and not use_fused:
        raise ValueError(f"cfg: free_schedule 'block' needs a fused estimator ({sorted(_trainloop.FUSED)}); "
                         f"method is {cfg.method!r}")
    prog = None
    if use_fused and start < cfg.epochs:
        prog = _trainloop.FusedEP(net, estimator, phases, cfg.lrs, cfg.batch_size, x_train, d_train, labels,
                                  persistent, free_schedule=cfg.free_schedule)
    B = cfg.batch_size
    if check_every is None:
        check_every = math.ceil(n / B) if dev.type == "cuda" else 100
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        w_start = [w.detach().clone() for w in net.W[1:]]
        order = torch.randperm(n, generator=gen).to(dev)
        wrong = torch.zeros((), dtype=torch.long, device=dev)  # accumulated on the device: no sync per minibatch
        cost = torch.zeros((), dtype=dt, device=dev)
        fused_wrong, cost_sum = 0, 0.0
        threads = prog.threads_context() if prog is not None else contextlib.nullcontext()
        with threads:  # the loop's thread count for the whole epoch, not per minibatch
            for m, i in enumerate(range(0, n, B)):
                idx = order[i : i + B]
                if prog is not None and len(idx) == B:  # the same draws of the sign as the estimator's
                    # the sign relative to phases.beta (which may be negative), as the program's keys are
                    sign = 1.0 if prog.symmetric or _signed_beta(phases, gen) == phases.beta else -1.0
                    prog.run(idx, sign)
                    if (m + 1) % check_every == 0 or i + B >= n:  # one sync every check_every minibatches
                        fused_wrong, cost_sum = _read_fused(prog, fused_wrong, cost_sum, epoch, m, check_every)
                else:
                    x, d = x_train[idx], d_train[idx]
                    h0 = None if persistent is None else [x] + [p[idx] for p in persistent]
                    est = train_step(net, estimator, x, d, phases=phases, lrs=cfg.lrs, generator=gen, h0=h0)
                    if persistent is not None:
                        for k in range(1, net.N + 1):
                            persistent[k - 1][idx] = est.free[k]
                    y = est.output
                    wrong += (y.argmax(1) != labels[idx]).sum()
                    cost += 0.5 * ((y - d) ** 2).sum()
                if bar is not None:  # pragma: no mutate
                    bar.update(1)  # pragma: no mutate
        if prog is not None:
            fused_wrong, cost_sum = _read_fused(prog, fused_wrong, cost_sum, epoch, m, check_every)
        if prog is not None and persistent is not None:  # every example's free output of this epoch, at once
            wrong, cost_sum = prog.epoch_stats()
        else:
            wrong, cost_sum = int(wrong) + fused_wrong, float(cost) + cost_sum
        wall = time.perf_counter() - t0
        if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
            raise FloatingPointError(f"train: weights became non-finite in epoch {epoch + 1} "
                                     f"(method {cfg.method}); lower lrs or beta")
        test_error = evaluate(net, dataset, feedforward_net=not estimator.free_phase, eps=cfg.eps, steps=cfg.eval_steps,
                              tol=cfg.eval_tol, schedule=cfg.eval_schedule)
        history.epoch.append(epoch + 1)
        history.train_error.append(wrong / n)
        history.train_cost.append(cost_sum / n)
        history.test_error.append(test_error)
        history.wall_s.append(wall)
        history.update_ratio.append([float(torch.linalg.norm(w - w0) / torch.linalg.norm(w0).clamp_min(1e-30))
                                     for w, w0 in zip(net.W[1:], w_start)])
        if bar is not None:  # pragma: no mutate
            bar.set_postfix(epoch=epoch + 1, train=f"{wrong / n:.3f}", test=f"{test_error:.3f}")  # pragma: no mutate
        if ckpt is not None:
            atomic_torch_save(ckpt, _state(net, persistent, gen, history, epoch + 1, data_id))
        if on_epoch is not None:
            on_epoch(history)
    if bar is not None:  # pragma: no mutate
        bar.close()  # pragma: no mutate
    if progress and not live and history.epoch:  # pragma: no mutate
        print(_summary_line(cfg.method, history))  # pragma: no mutate
    history.net = net
    return history
