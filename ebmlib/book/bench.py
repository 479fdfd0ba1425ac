"""Benchmark of the relaxation loop (``python -m ebmlib bench``, ``make bench``).

Everything is measured in one process on one machine and, where two numbers are
compared, reported as a ratio measured in the same interleaved rounds:

1. the time of one free relaxation step (float32) of :func:`ebmlib.dynamics.relax` for
   784-500-10 and 784-500-500-10 at batch 20 and 256;
2. ``roofline_ratio``: the FLOP/s of that step divided by the FLOP/s that
   ``torch.addmm`` reaches on the same list of matrix shapes alone
   (:func:`step_matmuls`; the input drive is hoisted, so it is not counted), on
   torch's thread count or the loop's (:func:`ebmlib.dynamics.loop_threads`),
   whichever is faster in each round;
3. ``speedup_vs_autograd``: the time of :func:`autograd_step` (energy → autograd
   gradient every step, input term recomputed: how public implementations
   usually run these models) divided by the time of our step;
4. one Equilibrium Propagation epoch for 784-500-10 with the Scellier–Bengio
   settings (20 free / 4 nudged steps, minibatch 20, 60 000 samples), timed on a
   subset of minibatches of synthetic data and extrapolated;
5. optionally (``--chapters``) the wall time of every chapter under ``smoke``.

The results go to ``_build/bench.json`` and a table on stdout. Times are medians
over repetitions after a warm-up. The oracle of the optimised loop is the reference step
:func:`ebmlib.step` (tests/test_perf.py); the EP epoch times :func:`ebmlib.train_step`, the code
the trainer runs.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..checks import check_eps, check_positive_int, check_real, resolve_clip
from ..dynamics import intra_op_threads, loop_threads, relax
from ..estimators import Phases, get_estimator
from ..learning import train_step
from ..network import LayeredEBM, State

__all__ = ["autograd_step", "step_matmuls", "step_flops", "main"]

CONFIGS: tuple[tuple[tuple[int, ...], int], ...] = (
    ((784, 500, 10), 20),
    ((784, 500, 10), 256),
    ((784, 500, 500, 10), 20),
    ((784, 500, 500, 10), 256),
)
# (name, where, key, op, bound): the targets; where = ("relaxation", sizes, batch) | ("train_epoch", name)
# | ("public_style", name). CPU targets on the 2-core machine; the CUDA ones on an H100/H200 (--device cuda).
TARGETS = {
    "cpu": (
        ("EP epoch 784-500-10 via eb.train (s)", ("train_epoch", "ep 784-500-10"), "seconds", "<=", 4.0),
        ("epoch vs public style 784-500-10", ("train_epoch", "ep 784-500-10"), "ratio", ">=", 10.0),
        ("free phase vs public style 784-500-10 B=20", ("public_style", "phase 784-500-10 B=20"), "ratio", ">=", 10.0),
        ("roofline_ratio 784-500-500-10 B=256", ("relaxation", (784, 500, 500, 10), 256), "roofline_ratio", ">=",
         0.8),
        ("speedup_vs_autograd 784-500-10 B=20", ("relaxation", (784, 500, 10), 20), "speedup_vs_autograd", ">=",
         10.0),
    ),
    "cuda": (
        ("EP epoch 784-500-10 B=20 via eb.train (s)", ("train_epoch", "ep 784-500-10"), "seconds", "<=", 1.0),
        ("roofline_ratio 784-500-500-10 B=256", ("relaxation", (784, 500, 500, 10), 256), "roofline_ratio", ">=",
         0.6),
    ),
}
# (method, sizes, free, nudged, lrs, timed samples of 60 000, public-style minibatches, free schedule): the block
# row's free phase is 4 block sweeps (bench_block: the same test error on Fashion-MNIST), its public style the
# paper's 20 synchronous steps, so its ratio is that of the two ways to a free state, not of two implementations
TRAIN_EPOCHS = (
    ("ep", (784, 500, 10), 20, 4, (0.1, 0.05), 60_000, 50, "synchronous"),
    ("ep_symmetric", (784, 500, 10), 20, 4, (0.1, 0.05), 60_000, 50, "synchronous"),
    ("ep", (784, 500, 10), 4, 4, (0.1, 0.05), 60_000, 50, "block"),
    ("ep", (784, 500, 500, 10), 100, 6, (0.4, 0.1, 0.01), 4_000, 5, "synchronous"),
    ("ep_symmetric", (784, 500, 500, 10), 100, 6, (0.4, 0.1, 0.01), 4_000, 5, "synchronous"),
)


def _target_value(res: dict[str, Any], where: tuple, key: str) -> Optional[float]:
    if where[0] == "relaxation":
        r = [r for r in res.get("relaxation", []) if tuple(r["sizes"]) == where[1] and r["batch"] == where[2]]
        return r[0][key] if r else None
    entry = res.get(where[0], {}).get(where[1])
    return entry[key] if entry else None


# ---------------------------------------------------------------------- references
def autograd_step(
    net: LayeredEBM,
    h: State,
    *,
    eps: float,
    beta: float = 0.0,
    target: Optional[Tensor] = None,
    clip: Optional[bool] = None,
) -> State:
    """The same step with the force from autograd: ``h ← h − ε ∂F/∂h``, the graph rebuilt every step.

    The energy (input term ``ρ(x)ᵀW_1ρ(h_1)`` included) is recomputed from scratch,
    as public implementations of these models usually do; the benchmark's baseline.
    """
    h = net.check_state(h)
    beta = check_real("beta", beta)
    if beta != 0.0:
        target = net.check_target(target, h[0].shape[0])
    return _autograd_step(net, h, check_eps(eps), beta, target, resolve_clip(clip, net.activation.clip_by_default))


def _autograd_step(
    net: LayeredEBM, h: State, eps: float, beta: float, target: Optional[Tensor], clip: bool
) -> State:
    with torch.enable_grad():
        hs = [h[0]] + [t.detach().requires_grad_(True) for t in h[1:]]
        F = net.total_energy(hs, beta, target).sum()
        grads = torch.autograd.grad(F, hs[1:])
    act = net.activation
    new = [h[0]]
    for hk, g in zip(h[1:], grads):
        nk = hk - eps * g
        new.append(nk.clamp(act.lo, act.hi) if clip else nk)
    return new


def step_matmuls(sizes: Sequence[int], batch: int) -> list[tuple[int, int, int]]:
    """The ``(B, n_in, n_out)`` products of one free step: bottom-up for layers 2…N, top-down for 1…N−1."""
    sizes = _check_sizes(sizes)
    batch = check_positive_int("batch", batch)
    N = len(sizes) - 1
    up = [(batch, sizes[k - 1], sizes[k]) for k in range(2, N + 1)]
    down = [(batch, sizes[k + 1], sizes[k]) for k in range(1, N)]
    return up + down


def step_flops(sizes: Sequence[int], batch: int) -> int:
    """FLOPs of the matrix products of one free step, ``Σ 2·B·n_in·n_out`` over :func:`step_matmuls`."""
    return sum(2 * B * a * b for B, a, b in step_matmuls(sizes, batch))


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
        raise ValueError("sizes: need at least two layer sizes (input and output)")
    for i, n in enumerate(sizes):
        check_positive_int(f"sizes[{i}]", n)
    return tuple(sizes)


# ---------------------------------------------------------------------- timing
def _interleaved(fns: dict[str, Callable[[], None]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each function once per round, rounds interleaved so load changes hit all alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            out[k].append(time.perf_counter() - t0)
    return out


def _median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def _env(device: torch.device, dtype: torch.dtype, reps: int) -> dict[str, Any]:
    return {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repetitions": reps,
    }


def bench_step(
    sizes: tuple[int, ...], batch: int, *, steps: int, reps: int, activation: str, device: torch.device,
    seed: int = 0,
) -> dict[str, Any]:
    """Items 1–3 for one configuration: our step, the same matmuls alone, the autograd step."""
    dtype = torch.float32
    net = LayeredEBM(list(sizes), activation, seed=seed, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, sizes[0], generator=gen, dtype=dtype).to(device)
    h0 = relax(net, x, eps=0.5, tol=0.0, max_steps=20).h  # a typical state, not the zeros
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def ours() -> None:
        relax(net, x, h0, eps=0.5, tol=-1.0, max_steps=steps, check_every=10)  # tol < 0: exactly `steps` steps
        sync()

    mats = []  # (c, a, w, out) per product; top-down products use Wᵀ views, as the step does
    for i, (B, a, b) in enumerate(step_matmuls(sizes, batch)):
        down = i >= len(sizes) - 2
        # same layouts as the step: Wᵀ views top-down, column-major W_k bottom-up; both are (b, a)ᵀ
        w = torch.rand(b, a, dtype=dtype, device=device).T
        c = torch.rand(B, b, dtype=dtype, device=device) if down else torch.rand(b, dtype=dtype, device=device)
        mats.append((c, torch.rand(B, a, dtype=dtype, device=device), w, torch.empty(B, b, dtype=dtype, device=device)))

    def matmuls() -> None:
        for _ in range(steps):
            for c, a, w, o in mats:
                torch.addmm(c, a, w, out=o)
        sync()

    threads = loop_threads(net, batch)

    def matmuls_loop_threads() -> None:  # the same on the loop's thread count: the roofline takes the faster
        with intra_op_threads(threads):
            matmuls()

    clip = net.activation.clip_by_default

    def autograd() -> None:
        h = list(h0)
        for _ in range(steps):
            h = _autograd_step(net, h, 0.5, 0.0, None, clip)
        sync()

    fns = {"ours": ours, "matmul": matmuls, "autograd": autograd}
    if threads is not None and threads < torch.get_num_threads():
        fns["matmul_loop_threads"] = matmuls_loop_threads
    t = _interleaved(fns, reps)
    if "matmul_loop_threads" in t:  # the best that torch's products reach, round by round
        t["matmul"] = [min(a, b) for a, b in zip(t["matmul"], t.pop("matmul_loop_threads"))]
    flops = step_flops(sizes, batch)
    step_s = statistics.median(t["ours"]) / steps
    mm_s = statistics.median(t["matmul"]) / steps
    return {
        "sizes": list(sizes),
        "batch": batch,
        "activation": activation,
        "steps_per_repetition": steps,
        **_env(device, dtype, reps),
        "loop_threads": threads or torch.get_num_threads(),
        "step_time_s": step_s,
        "matmul_time_s": mm_s,
        "autograd_step_time_s": statistics.median(t["autograd"]) / steps,
        "flops_per_step": flops,
        "gflops": flops / step_s / 1e9,
        "matmul_gflops": flops / mm_s / 1e9,
        "roofline_ratio": _median_ratio(t["matmul"], t["ours"]),
        "speedup_vs_autograd": _median_ratio(t["autograd"], t["ours"]),
    }


def bench_ep_epoch(
    *, minibatches: int, reps: int, device: torch.device, samples: int = 60_000, batch: int = 20,
    free_steps: int = 20, nudged_steps: int = 4, eps: float = 0.5, beta: float = 1.0,
    lrs: Sequence[float] = (0.1, 0.05), seed: int = 0,
) -> dict[str, Any]:
    """Item 4: EP training on 784-500-10 (hard sigmoid, clip, persistent free states, random sign of β).

    ``minibatches`` minibatches of synthetic data are timed per repetition; the
    epoch time is the median extrapolated to ``samples / batch`` minibatches.
    """
    dtype = torch.float32
    sizes = (784, 500, 10)
    net = LayeredEBM(list(sizes), "hard_sigmoid", seed=seed, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed)
    n = minibatches * batch
    X = torch.rand(n, sizes[0], generator=gen, dtype=dtype).to(device)
    D = torch.nn.functional.one_hot(torch.randint(0, 10, (n,), generator=gen), 10).to(device, dtype)
    estimator = get_estimator("ep")
    phases = Phases(eps=eps, free_steps=free_steps, nudged_steps=nudged_steps, beta=beta, random_sign=True)
    sign_gen = torch.Generator().manual_seed(seed + 1)
    persistent = [torch.zeros(n, m, dtype=dtype, device=device) for m in sizes[1:]]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def epoch_part() -> None:  # what ebmlib.train does per minibatch, evaluation and bookkeeping aside
        for i in range(minibatches):
            sl = slice(i * batch, (i + 1) * batch)
            x, d = X[sl], D[sl]
            est = train_step(net, estimator, x, d, phases=phases, lrs=tuple(lrs), generator=sign_gen,
                             h0=[x] + [p[sl] for p in persistent])
            for p, hk in zip(persistent, est.free[1:]):
                p[sl] = hk
        sync()

    t = _interleaved({"ep": epoch_part}, reps)["ep"]
    per_mb = statistics.median(t) / minibatches
    epoch_minibatches = math.ceil(samples / batch)
    return {
        "sizes": list(sizes),
        "activation": "hard_sigmoid",
        "clip": True,
        "batch": batch,
        "free_steps": free_steps,
        "nudged_steps": nudged_steps,
        "eps": eps,
        "beta": beta,
        "lrs": list(lrs),
        "samples": samples,
        **_env(device, dtype, reps),
        "timed_minibatches_per_repetition": minibatches,
        "minibatch_time_s": per_mb,
        "epoch_time_s": per_mb * epoch_minibatches,
        "extrapolated": minibatches < epoch_minibatches,
        "data": "synthetic uniform inputs, random one-hot targets",
    }


# ---------------------------------------------------------------------- the trainer against the public style
def _synthetic(n: int, sizes: Sequence[int], device: torch.device, seed: int = 0) -> Any:
    """``n`` examples of Fashion-MNIST's shape: uniform inputs in [0, 1], random labels (float32)."""
    from ..data import Dataset

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n + 20, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (n + 20,), generator=gen)
    return Dataset("synthetic", x[:n], y[:n], x[n:], y[n:], sizes[-1])


def _fused(net: LayeredEBM, method: str, phases: Phases, lrs: Sequence[float], batch: int, data: Any,
           persistent: bool = True, free_schedule: str = "synchronous") -> Any:
    from .._trainloop import FusedEP

    dev, dt = net.device, net.dtype
    X, D = data.x_train.to(dev, dt), data.targets(data.y_train).to(dev, dt)
    P = [torch.zeros(len(X), m, dtype=dt, device=dev) for m in net.sizes[1:]] if persistent else None
    return FusedEP(net, get_estimator(method), phases, tuple(lrs), batch, X, D, data.y_train.to(dev), P,
                   free_schedule=free_schedule)


def bench_phase(*, reps: int, device: torch.device, sizes: tuple[int, ...] = (784, 500, 10), batch: int = 20,
                steps: int = 20, eps: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """One free phase of ``steps`` steps (float32): the public style (:mod:`ebmlib.book.public_style`) against
    :func:`ebmlib.relax` (the public API, with its per-call set-up) and against the trainer's bound free part
    (gather, input drive, steps), in interleaved rounds; ``state_gap``: max |h_public − h_relax|."""
    from .public_style import PublicStyleEP

    net = LayeredEBM(list(sizes), "hard_sigmoid", seed=seed, dtype=torch.float32, device=device)
    data = _synthetic(batch, sizes, device, seed)
    x = data.x_train.to(device)
    h0 = relax(net, x, eps=eps, tol=0.0, max_steps=20).h  # a typical persistent state, not the zeros
    public = PublicStyleEP(net, (0.0,) * net.N, eps=eps)
    ph = Phases(eps=eps, free_steps=steps, nudged_steps=1, beta=1.0, random_sign=False)
    prog = _fused(net, "ep", ph, (0.0,) * net.N, batch, data)
    for p, h in zip(prog.persistent, h0[1:]):
        p.copy_(h)
    prog.idx.copy_(torch.arange(batch, device=device))
    free_part = dict(prog.segments(1.0))["free"]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def ours_relax() -> None:
        relax(net, x, h0, eps=eps, tol=0.0, max_steps=steps, check_every=steps)
        sync()

    def ours_trainer() -> None:
        with prog.threads_context():
            for call in free_part:
                call()
        sync()

    def public_phase() -> None:
        public.phase(x, h0[1:], steps)
        sync()

    t = _interleaved({"relax": ours_relax, "trainer": ours_trainer, "public": public_phase}, reps, warmup=2)
    ref = relax(net, x, h0, eps=eps, tol=0.0, max_steps=steps, check_every=steps).h
    gap = max(float((a - b).abs().max()) for a, b in zip(public.phase(x, h0[1:], steps), ref[1:]))
    ours_trainer()
    gap_trainer = max(float((prog.ws.views(prog.F)[k] - ref[k]).abs().max()) for k in range(1, net.N + 1))
    return {"sizes": list(sizes), "batch": batch, "steps": steps, **_env(device, torch.float32, reps),
            "relax_s": statistics.median(t["relax"]), "trainer_s": statistics.median(t["trainer"]),
            "public_style_s": statistics.median(t["public"]),
            "ratio": _median_ratio(t["public"], t["trainer"]), "ratio_relax": _median_ratio(t["public"], t["relax"]),
            "state_gap": gap, "state_gap_trainer": gap_trainer}


def _program_shapes(sizes: Sequence[int], batch: int, free_steps: int, nudged: int) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of every matrix product of one EP minibatch: the drive, the steps' products, the update
    (``nudged`` = nudged steps summed over the nudged phases; the update reads two states per layer k ≥ 2)."""
    N = len(sizes) - 1
    shapes = [(batch, sizes[0], sizes[1])] + step_matmuls(sizes, batch) * (free_steps + nudged)
    shapes.append((sizes[0], batch, sizes[1]))
    shapes += [(sizes[k - 1], batch, sizes[k]) for k in range(2, N + 1)] * 2
    return shapes


def bench_floor(sizes: Sequence[int], batch: int, free_steps: int, nudged: int, calls: int, *, reps: int,
                device: torch.device) -> dict[str, Any]:
    """The floor of one EP minibatch: its FLOPs over the GEMM throughput measured on exactly its products
    (``torch.addmm`` alone, the loop's threads), plus its number of calls times the measured cost of one
    call of an elementwise op on a tiny tensor (dispatch). On CUDA both are measured as replayed CUDA graphs
    (the per-kernel cost inside a graph, which is what the trainer pays)."""
    shapes = _program_shapes(sizes, batch, free_steps, nudged)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    dt = torch.float32
    # one set of operands per distinct shape, reused as the program reuses its weights and buffers (distinct
    # copies per step would measure memory traffic the program does not have)
    operands = {sh: (torch.rand(sh[2], dtype=dt, device=device), torch.rand(sh[0], sh[1], dtype=dt, device=device),
                     torch.rand(sh[1], sh[2], dtype=dt, device=device), torch.empty(sh[0], sh[2], dtype=dt,
                                                                                    device=device))
                for sh in set(shapes)}
    mats = [operands[sh] for sh in shapes]
    a, b = torch.rand(4, device=device), torch.rand(4, device=device)
    c = torch.empty(4, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    net = LayeredEBM(list(sizes), "hard_sigmoid", seed=0, dtype=dt, device=device)
    threads = loop_threads(net, batch)

    def gemm_calls() -> None:
        for bias, A, W, out in mats:
            torch.addmm(bias, A, W, out=out)

    def add_calls() -> None:
        for _ in range(1000):
            torch.add(a, b, out=c)

    if device.type == "cuda":  # what a replayed CUDA graph costs: kernels back to back, no launch from the host
        graphs = []
        for calls in (gemm_calls, add_calls):
            calls()
            torch.cuda.synchronize(device)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                calls()
            graphs.append(g)
        gemm_calls, add_calls = graphs[0].replay, graphs[1].replay

    def gemm() -> None:
        with intra_op_threads(threads):
            gemm_calls()
        sync()

    def dispatch() -> None:
        add_calls()
        sync()

    t = _interleaved({"gemm": gemm, "dispatch": dispatch}, reps)
    gemm_s, call_s = statistics.median(t["gemm"]), statistics.median(t["dispatch"]) / 1000
    return {"flops_per_minibatch": flops, "products_per_minibatch": len(shapes), "gemm_s": gemm_s,
            "gemm_gflops": flops / gemm_s / 1e9, "calls_per_minibatch": calls, "call_s": call_s,
            "floor_minibatch_s": gemm_s + max(calls - len(shapes), 0) * call_s}


def bench_train_epoch(*, method: str, sizes: tuple[int, ...], free_steps: int, nudged_steps: int,
                      lrs: Sequence[float], reps: int, device: torch.device, samples: int = 60_000,
                      timed_samples: int = 60_000, public_minibatches: int = 50, batch: int = 20, eps: float = 0.5,
                      beta: float = 1.0, seed: int = 0, free_schedule: str = "synchronous",
                      public_free_steps: Optional[int] = None) -> dict[str, Any]:
    """One epoch of :func:`ebmlib.train` (float32, minibatch ``batch``, synthetic data of Fashion-MNIST's shape;
    ``timed_samples`` of ``samples`` timed and scaled; evaluation excluded, as in ``History.wall_s``), its split
    into free / nudged / update / bookkeeping (the parts of the bound program timed alone; bookkeeping is the
    rest: scatter, error count, the host loop), the public-style loop on ``public_minibatches`` minibatches
    scaled to the epoch, the ratio of the two from interleaved rounds, and the floor (:func:`bench_floor`).
    ``free_schedule`` "block": ``free_steps`` block sweeps, against ``public_free_steps`` synchronous public steps."""
    from ..learning import TrainConfig, train
    from .public_style import PublicStyleEP

    data = _synthetic(timed_samples, sizes, device, seed)
    cfg = TrainConfig(sizes=sizes, method=method, free_steps=free_steps, nudged_steps=nudged_steps, lrs=tuple(lrs),
                      batch_size=batch, epochs=1, eps=eps, beta=beta, device=str(device), seed=seed,
                      free_schedule=free_schedule)
    scale = samples / timed_samples
    minibatches = math.ceil(samples / batch)
    symmetric = method == "ep_symmetric"
    net = LayeredEBM(list(sizes), "hard_sigmoid", seed=seed, dtype=torch.float32, device=device)
    public = PublicStyleEP(net, tuple(lrs), eps=eps)
    n_pub = public_minibatches * batch
    X, D = data.x_train[:n_pub].to(device), data.targets(data.y_train[:n_pub]).to(device)
    labels = data.y_train[:n_pub].to(device)
    persistent = [torch.zeros(n_pub, m, device=device) for m in sizes[1:]]
    order = torch.randperm(n_pub, generator=torch.Generator().manual_seed(seed)).to(device)
    signs = [1.0 if symmetric else (-1.0) ** i for i in range(public_minibatches)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    walls: list[float] = []

    def ours() -> None:
        walls.append(train(cfg, data, progress=False).wall_s[0] * scale)

    def public_loop() -> None:
        public.epoch(X, D, labels, persistent, order, signs, batch=batch, free_steps=public_free_steps or free_steps,
                     nudged_steps=nudged_steps, beta=beta, symmetric=symmetric)
        sync()

    t = _interleaved({"ours": ours, "public": public_loop}, reps, warmup=0 if device.type == "cpu" else 1)
    walls = walls[-reps:]
    public_epoch = [s * minibatches / public_minibatches for s in t["public"]]
    ph = cfg.phases
    prog = _fused(LayeredEBM(list(sizes), "hard_sigmoid", seed=seed, dtype=torch.float32, device=device), method,
                  ph, lrs, batch, data, free_schedule=free_schedule)
    m = min(100, len(data.x_train) // batch)
    idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed)).to(device)
    batches = [idx[i * batch:(i + 1) * batch] for i in range(m)]
    parts = prog.split(batches, [1.0 if prog.symmetric or i % 2 == 0 else -1.0 for i in range(m)])
    calls = parts.pop("calls")
    epoch_s = statistics.median(walls)
    split = {k: parts[k] / m * minibatches for k in ("free", "nudged", "update")}
    split["bookkeeping"] = epoch_s - sum(split.values())
    floor = bench_floor(sizes, batch, free_steps, nudged_steps * (2 if symmetric else 1), calls, reps=reps,
                        device=device)
    floor["floor_epoch_s"] = floor["floor_minibatch_s"] * minibatches
    floor["ratio_to_floor"] = epoch_s / floor["floor_epoch_s"]
    return {"method": method, "sizes": list(sizes), "free_schedule": free_schedule, "free_steps": free_steps,
            "public_free_steps": public_free_steps or free_steps, "nudged_steps": nudged_steps,
            "batch": batch, "lrs": list(lrs), "samples": samples, "timed_samples": timed_samples,
            **_env(device, torch.float32, reps), "fused": device.type in ("cpu", "cuda"),
            "cuda_graphs": device.type == "cuda", "seconds": epoch_s, "seconds_all": walls, "split": split,
            "public_style_seconds": statistics.median(public_epoch), "public_minibatches": public_minibatches,
            "ratio": _median_ratio(public_epoch, walls), "floor": floor,
            "data": "synthetic uniform inputs, random labels (Fashion-MNIST's shape)"}


def bench_schedules(
    *, reps: int, device: torch.device, sizes: tuple[int, ...] = (784, 500, 500, 10), batch: int = 20,
    activation: str = "sigmoid", eps: float = 0.5, tol: float = 1e-8, seed: int = 0,
) -> dict[str, Any]:
    """Steps (and time) to reach ``tol`` from zeros, synchronous vs alternate schedule (float64)."""
    dtype = torch.float64
    net = LayeredEBM(list(sizes), activation, seed=seed, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, sizes[0], generator=gen, dtype=dtype).to(device)
    res: dict[str, Any] = {}
    fns = {}
    for schedule in ("synchronous", "odd_even"):
        r = relax(net, x, eps=eps, tol=tol, max_steps=100_000, check_every=1, schedule=schedule)
        res[schedule] = {"steps": r.steps, "converged": r.converged, "residual": r.residual, "h": r.h}
        fns[schedule] = lambda s=schedule: relax(net, x, eps=eps, tol=tol, max_steps=100_000, check_every=1,
                                                 schedule=s)
    t = _interleaved(fns, reps)
    gap = max(float((res["synchronous"]["h"][k] - res["odd_even"]["h"][k]).abs().max())
              for k in range(1, len(sizes)))
    for schedule in fns:
        res[schedule].pop("h")
        res[schedule]["time_s"] = statistics.median(t[schedule])
    return {"sizes": list(sizes), "batch": batch, "activation": activation, "eps": eps, "tol": tol,
            **_env(device, dtype, reps), **res, "fixed_point_gap": gap,
            "step_ratio": res["synchronous"]["steps"] / max(res["odd_even"]["steps"], 1)}


def _force_residual(net: LayeredEBM, h: list) -> float:
    """max |f_k(h)| over layers and examples: how far from a fixed point (0 at one), whatever the schedule;
    for the clipped hard sigmoid, the force of a unit held at a bound pointing outward does not count."""
    act = net.activation
    f = net.force(h)
    worst = 0.0
    for k in range(1, net.N + 1):
        fk = f[k]
        if act.clip_by_default:  # at a bound the clip holds the unit: only the inward part of the force moves it
            fk = torch.where((h[k] <= act.lo) & (fk < 0) | (h[k] >= act.hi) & (fk > 0), torch.zeros_like(fk), fk)
        worst = max(worst, float(fk.abs().max()))
    return worst


def bench_block(*, idx_dir: str, device: torch.device, epochs: int = 2, block_sweeps: int = 4, tol: float = 1e-4,
                seed: int = 0) -> dict[str, Any]:
    """Fewer steps to a fixed point of the same dynamics (784-500-10, hard sigmoid, Fashion-MNIST, float32).

    Training: ``epochs`` epochs of one-sided EP with the paper's free phase (20 synchronous ε = 0.5 steps,
    evaluation by synchronous steps) against ``block_sweeps`` block sweeps (alternate layers set to clip(pre_k))
    and block evaluation: seconds per epoch and test error after each epoch, same seed. Evaluation: on the
    trained network, the 10 000 test images relaxed from zero to the same residual ``tol`` both ways (the
    residual checked every step): steps, seconds, the force residual reached, the test error, and per image the
    largest difference between the two stopping points' outputs: the images where it passes 0.01 (another local
    minimum of the energy: the schedule chose the basin) are counted apart from the rest."""
    from ..data import load_idx_dataset
    from ..learning import TrainConfig, train

    data = load_idx_dataset(idx_dir)
    runs = {}
    for name, kw in (("synchronous", {}), ("block", dict(free_schedule="block", eval_schedule="block",
                                                         free_steps=block_sweeps))):
        cfg = TrainConfig(epochs=epochs, device=str(device), seed=seed, **kw)
        h = train(cfg, data, progress=False)
        runs[name] = {"free_steps": cfg.free_steps, "epoch_s": h.wall_s, "test_error": h.test_error, "net": h.net}
    net = runs["synchronous"]["net"]
    x = data.x_test.to(device)
    ev = {}
    for name, kw in (("synchronous", dict(eps=0.5)), ("block", dict(eps=1.0, schedule="odd_even"))):
        t0 = time.perf_counter()
        steps, outs, resid = [], [], 0.0
        for i in range(0, len(x), 1000):
            r = relax(net, x[i:i + 1000], tol=tol, max_steps=1000, check_every=1, **kw)
            steps.append(r.steps)
            outs.append(r.h[net.N])
            resid = max(resid, _force_residual(net, r.h))
        sec = time.perf_counter() - t0
        y = torch.cat(outs)
        err = float((y.argmax(1).cpu() != data.y_test).float().mean())
        ev[name] = {"steps_mean": statistics.mean(steps), "steps_max": max(steps), "seconds": sec,
                    "force_residual": resid, "test_error": err, "y": y}
    per_image = (ev["synchronous"].pop("y") - ev["block"].pop("y")).abs().amax(1)
    apart = per_image > 1e-2  # another fixed point: where the energy has several minima, the schedule picks one
    for r in runs.values():
        r.pop("net")
    return {"sizes": [784, 500, 10], "dataset": data.name, "epochs": epochs, "tol": tol,
            **_env(device, torch.float32, 1), "training": runs, "evaluation": ev,
            "fixed_point_gap": float(per_image.max()), "images": len(per_image),
            "images_apart": int(apart.sum()), "gap_of_the_rest": float(per_image[~apart].max()) if (~apart).any() else 0.0,
            "step_ratio": ev["synchronous"]["steps_mean"] / max(ev["block"]["steps_mean"], 1e-9)}


def bench_chapters(build_dir: Path) -> dict[str, Any]:
    """Item 5: wall time of every chapter under ``smoke`` (from :func:`ebmlib.book.execute.execute`)."""
    from .execute import execute

    times = execute(["all"], profile="smoke", build_dir=build_dir)
    return {"profile": "smoke", "build_dir": str(build_dir), **_env(torch.device("cpu"), torch.float64, 1),
            "seconds": times, "total_s": sum(times.values())}


# ---------------------------------------------------------------------- report
def _table(res: dict[str, Any]) -> str:
    gpu = res["machine"].get("gpu")
    lines = [
        f"ebmlib bench  torch {res['torch']}  device {res['device']}  threads {res['threads']}  "
        f"{res['machine']['cpu']}" + (f"  GPU {gpu}" if gpu else ""),
        "",
        "relaxation step (free phase, float32, median of repetitions; ratios from the same rounds;",
        " thr: intra-op threads of our loop, see ebmlib.dynamics.ONE_THREAD_MACS; the references use torch's)",
        f"{'sizes':>16} {'B':>4} {'thr':>3} {'step':>10} {'GFLOP/s':>8} {'mm GFLOP/s':>10} {'roofline':>9} "
        f"{'autograd':>10} {'speedup':>8}",
    ]
    for r in res["relaxation"]:
        lines.append(
            f"{'-'.join(map(str, r['sizes'])):>16} {r['batch']:>4} {r.get('loop_threads', '?'):>3} "
            f"{r['step_time_s'] * 1e6:8.1f}us "
            f"{r['gflops']:8.2f} {r['matmul_gflops']:10.2f} {r['roofline_ratio']:9.2f} "
            f"{r['autograd_step_time_s'] * 1e6:8.1f}us {r['speedup_vs_autograd']:7.1f}x"
        )
    ep = res.get("ep_epoch")
    if ep:
        how = (f"extrapolated from {ep['timed_minibatches_per_repetition']} minibatches"
               if ep["extrapolated"] else "measured")
        lines += [
            "",
            f"EP epoch 784-500-10 ({ep['free_steps']} free / {ep['nudged_steps']} nudged steps, minibatch "
            f"{ep['batch']}, {ep['samples']} samples, synthetic data): {ep['epoch_time_s']:.1f} s ({how}; "
            f"{ep['minibatch_time_s'] * 1e3:.2f} ms per minibatch of ebmlib.train_step, the generic path that "
            "eb.train(fused=False) runs)",
        ]
    te = res.get("train_epoch")
    if te:
        lines += ["", "one epoch of eb.train (60 000 samples, minibatch 20, float32, synthetic data; split from the",
                  " parts of the bound program timed alone, bookkeeping = the rest) against the public-style loop",
                  f"{'method':>26} {'steps':>6} {'epoch':>8} {'free':>7} {'nudged':>7} {'update':>7} {'book':>7} "
                  f"{'public':>8} {'ratio':>6} {'floor':>7} {'/floor':>6}"]
        for name, r in te.items():
            sp = r["split"]
            lines.append(f"{name:>26} {r['free_steps']:>3}/{r['nudged_steps']:<2} {r['seconds']:7.2f}s "
                         f"{sp['free']:6.2f}s {sp['nudged']:6.2f}s {sp['update']:6.2f}s {sp['bookkeeping']:6.2f}s "
                         f"{r['public_style_seconds']:7.1f}s {r['ratio']:5.1f}x {r['floor']['floor_epoch_s']:6.2f}s "
                         f"{r['floor']['ratio_to_floor']:5.2f}")
        if any(r.get("free_schedule") == "block" for r in te.values()):
            lines.append("  block: its free steps are block sweeps; its public style runs 20 synchronous steps")
        f0 = next(iter(te.values()))["floor"]
        lines.append(f"  floor = FLOPs / GEMM throughput on the same products + calls x {f0['call_s'] * 1e6:.2f} us "
                     f"per call; 784-500-10: {f0['flops_per_minibatch'] / 1e6:.1f} MFLOP and "
                     f"{f0['calls_per_minibatch']} calls per minibatch, GEMM {f0['gemm_gflops']:.1f} GFLOP/s")
    ps = res.get("public_style", {})
    for name, r in ps.items():
        if name.startswith("phase"):
            lines.append(f"  free {name[6:]} ({r['steps']} steps): trainer {r['trainer_s'] * 1e3:.3f} ms, relax "
                         f"{r['relax_s'] * 1e3:.3f} ms, public style {r['public_style_s'] * 1e3:.3f} ms: "
                         f"{r['ratio']:.1f}x ({r['ratio_relax']:.1f}x via relax); states differ by "
                         f"{r['state_gap']:.1e}")
    sc = res.get("schedules")
    if sc:
        sy, al = sc["synchronous"], sc["odd_even"]
        lines += [
            "",
            f"steps to tolerance {sc['tol']:g} from zeros ({'-'.join(map(str, sc['sizes']))}, B={sc['batch']}, "
            f"{sc['dtype']}, {sc['activation']}, eps {sc['eps']}): synchronous {sy['steps']} steps "
            f"{sy['time_s'] * 1e3:.1f} ms, alternate {al['steps']} sweeps {al['time_s'] * 1e3:.1f} ms "
            f"(fixed points differ by {sc['fixed_point_gap']:.1e})",
        ]
    bl = res.get("block")
    if bl:
        tr, ev = bl["training"], bl["evaluation"]
        lines += ["", f"fewer steps to a fixed point (784-500-10, {bl['dataset']}, {bl['epochs']} epochs, "
                      f"float32):"]
        for name, r in tr.items():
            lines.append(f"  train, free phase {name:11s} {r['free_steps']:3d} steps: "
                         f"{statistics.mean(r['epoch_s']):6.1f} s/epoch, test error "
                         + ", ".join(f"{100 * e:.2f} %" for e in r["test_error"]))
        for name, r in ev.items():
            lines.append(f"  evaluate 10k to residual {bl['tol']:g}, {name:11s}: {r['steps_mean']:6.1f} steps "
                         f"(max {r['steps_max']}), {r['seconds']:6.2f} s, force residual {r['force_residual']:.1e}, "
                         f"test error {100 * r['test_error']:.2f} %")
        lines.append(f"  outputs at the two stopping points differ by more than 0.01 on {bl['images_apart']} of "
                     f"{bl['images']} images (other minima of the energy), by at most {bl['gap_of_the_rest']:.1e} on "
                     f"the rest; {bl['step_ratio']:.1f}x fewer steps")
    ch = res.get("chapters")
    if ch:
        lines += ["", f"chapters under smoke ({ch['build_dir']}):"]
        lines += [f"  {name:32s} {s:7.1f} s" for name, s in ch["seconds"].items()]
        lines.append(f"  {'total':32s} {ch['total_s']:7.1f} s")
    lines += ["", "targets (2-core CPU):"]
    for t in res["targets"]:
        lines.append(f"  {t['name']:44s} {t['value']:7.2f} {t.get('op', '>=')} {t['bound']:<5g} "
                     f"{'ok' if t['holds'] else 'MISSED'}")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m ebmlib bench [--quick] [--chapters] [--device cpu|cuda] [--out PATH]``."""
    ap = argparse.ArgumentParser(prog="python -m ebmlib bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (fewer repetitions and steps)")
    ap.add_argument("--chapters", action="store_true", help="also time every chapter under smoke (_build/bench)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--activation", default="sigmoid", help="activation of the step benchmark")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per measurement")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default _build/bench.json)")
    ap.add_argument("--idx-dir", default="/usr/share/datasets/fashion-mnist",
                    help="Fashion-MNIST's IDX files, for the block-schedule training comparison")
    ap.add_argument("--commit", default=None,
                    help="the commit being measured, when the tree is a copy outside git (default: git rev-parse)")
    args = ap.parse_args(argv)
    from .provenance import find_root, git_commit

    root = find_root()
    out = args.out or root / "_build" / "bench.json"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    reps = args.reps or (5 if args.quick else 21)
    check_positive_int("reps", reps)
    steps = 20 if args.quick else 100
    res: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        **_env(device, torch.float32, reps),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {})},
        "commit": args.commit or git_commit(root),
        "note": "medians after a warm-up; ratios are medians of per-round ratios from interleaved rounds, "
                "so a load change on a shared machine falls on both sides of a ratio; it does not weigh on "
                "them alike: products on two threads slow down far more than a loop on one (loop_threads)",
    }
    t0 = time.perf_counter()
    res["relaxation"] = []
    for sizes, B in CONFIGS:
        print(f"step {'-'.join(map(str, sizes))} B={B} ...", flush=True)
        res["relaxation"].append(
            bench_step(sizes, B, steps=steps, reps=reps, activation=args.activation, device=device)
        )
    print("EP epoch ...", flush=True)
    res["ep_epoch"] = bench_ep_epoch(minibatches=10 if args.quick else 150, reps=3 if args.quick else 7,
                                     device=device)
    print("free phase against the public style ...", flush=True)
    ph = bench_phase(reps=5 if args.quick else 21, device=device)
    res["public_style"] = {f"phase 784-500-10 B={ph['batch']}": {"seconds": ph["trainer_s"], **ph}}
    res["train_epoch"] = {}
    for method, sizes, free, nudged, lrs, timed, pub, schedule in TRAIN_EPOCHS:
        name = f"{method} {'-'.join(map(str, sizes))}" + (f" {schedule}" if schedule != "synchronous" else "")
        print(f"train epoch {name} ...", flush=True)
        timed = min(timed, 2_000 if args.quick else timed)
        r = bench_train_epoch(method=method, sizes=sizes, free_steps=free, nudged_steps=nudged, lrs=lrs,
                              reps=1 if args.quick else 3, device=device, timed_samples=timed,
                              public_minibatches=max(2, pub // 5) if args.quick else pub, free_schedule=schedule,
                              public_free_steps=20 if schedule == "block" else None)
        res["train_epoch"][name] = r
        res["public_style"][f"epoch {name}"] = {"seconds": r["public_style_seconds"], "ratio": r["ratio"],
                                                "ours_seconds": r["seconds"]}
    print("schedules ...", flush=True)
    res["schedules"] = bench_schedules(reps=3, device=device)
    if args.idx_dir and Path(args.idx_dir).is_dir():
        print("block schedule: training and evaluation on Fashion-MNIST ...", flush=True)
        res["block"] = bench_block(idx_dir=args.idx_dir, device=device, epochs=1 if args.quick else 2)
    else:
        res["block"] = None
        print(f"note: no IDX files in {args.idx_dir!r}: the block-schedule training comparison is skipped", flush=True)
    if args.chapters:
        res["chapters"] = bench_chapters(root / "_build" / "bench")
    res["targets"] = []
    for name, where, key, op, bound in TARGETS["cuda" if device.type == "cuda" else "cpu"]:
        v = _target_value(res, where, key)
        if v is None:
            continue
        res["targets"].append({"name": name, "value": v, "op": op, "bound": bound,
                               "holds": bool(v <= bound if op == "<=" else v >= bound)})
    res["wall_s"] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    from ..io import atomic_write_json

    atomic_write_json(out, res)
    print(_table(res))
    print(f"\nwrote {out} ({res['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
