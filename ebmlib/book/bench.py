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
TARGETS = (
    # (name, sizes, batch, key, bound): the targets on the 2-core CPU
    ("roofline_ratio 784-500-500-10 B=256", (784, 500, 500, 10), 256, "roofline_ratio", 0.6),
    ("speedup_vs_autograd 784-500-10 B=20", (784, 500, 10), 20, "speedup_vs_autograd", 10.0),
)


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
            f"{ep['minibatch_time_s'] * 1e3:.2f} ms per minibatch of ebmlib.train_step)",
        ]
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
    ch = res.get("chapters")
    if ch:
        lines += ["", f"chapters under smoke ({ch['build_dir']}):"]
        lines += [f"  {name:32s} {s:7.1f} s" for name, s in ch["seconds"].items()]
        lines.append(f"  {'total':32s} {ch['total_s']:7.1f} s")
    lines += ["", "targets (2-core CPU):"]
    for t in res["targets"]:
        lines.append(f"  {t['name']:40s} {t['value']:7.2f} >= {t['bound']:<5g} {'ok' if t['holds'] else 'MISSED'}")
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
    print("schedules ...", flush=True)
    res["schedules"] = bench_schedules(reps=3, device=device)
    if args.chapters:
        res["chapters"] = bench_chapters(root / "_build" / "bench")
    res["targets"] = []
    for name, sizes, B, key, bound in TARGETS:
        v = next(r[key] for r in res["relaxation"] if tuple(r["sizes"]) == sizes and r["batch"] == B)
        res["targets"].append({"name": name, "value": v, "bound": bound, "holds": bool(v >= bound)})
    res["wall_s"] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    from ..io import atomic_write_json

    atomic_write_json(out, res)
    print(_table(res))
    print(f"\nwrote {out} ({res['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
