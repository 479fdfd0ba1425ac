"""Paper-scale training sweeps: architecture × method × learning rate × seed as independent jobs on Dask.

A sweep is a spec under ``sweeps:`` of ``params/<profile>.yaml``. ``python -m ebmlib sweep NAME`` runs

1. the **search** stage: every method at every scale of the sweep's base per-layer rates, trained for a
   few epochs on the training set minus a held-out validation part (the same budget for every method;
   scale 1 is the paper's own rates);
2. per method, as soon as its search is complete, the **final** stage with the scale of lowest
   validation error: every seed, the full training set, errors on the test set.

Every job is one :func:`ebmlib.train` run that checkpoints after each epoch; its result is one JSON
record (schema ``ebmlib.learning-run/1``, read by :mod:`ebmlib.book.records`) under
``chapters/_measured/learning/NAME/``. A job whose record exists is not run again, so an interrupted
sweep resumes where it stopped (and an interrupted job from its last epoch). The engine is Dask's
``distributed``: a local cluster of this machine's cores by default, ``--scheduler tcp://host:8786`` for
a cluster started elsewhere (``dask scheduler`` / ``dask worker``, or a ``dask-jobqueue`` cluster).
``--only RUN_ID`` runs one job in this process, without Dask, and writes the same record.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from .provenance import find_root

__all__ = [
    "SCHEMA",
    "Job",
    "load_sweep",
    "sweep_names",
    "search_jobs",
    "final_jobs",
    "select_scale",
    "check_methods",
    "estimate_cost",
    "job_config",
    "expected_config",
    "record_path",
    "run_job",
    "run_sweep",
    "main",
]

SCHEMA = "ebmlib.learning-run/1"
RECORDS = "chapters/_measured/learning"
_SPEC_KEYS = {"dataset", "idx_dir", "name", "sizes", "base", "methods", "search", "seeds", "n_train", "n_test",
              "note"}
_NOT_IN_RECORD = ("checkpoint", "device")
ADDED_KEYS = ("free_schedule", "eval_schedule")  # TrainConfig keys newer than the first records (defaults kept)


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of a sweep: ``run_id`` = ``stage/method/x<scale>/s<seed>``."""

    stage: str
    method: str
    lr_scale: float
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.stage}/{self.method}/x{self.lr_scale:g}/s{self.seed}"

    @classmethod
    def parse(cls, run_id: str) -> Job:
        m = re.fullmatch(r"(search|final)/([A-Za-z0-9_]+)/x([0-9.eE+-]+)/s([0-9]+)", run_id)
        if m is None:
            raise ValueError(f"run_id: expected 'search|final/<method>/x<scale>/s<seed>', got {run_id!r}")
        return cls(m[1], m[2], float(m[3]), int(m[4]))


# ---------------------------------------------------------------------------- the spec
def sweep_names(profile: str = "paper", root: Optional[Path] = None) -> list[str]:
    """The sweeps defined in ``params/<profile>.yaml``."""
    return sorted(_profile_sweeps(profile, root))


def _profile_sweeps(profile: str, root: Optional[Path]) -> dict:
    path = (root or find_root()) / "params" / f"{profile}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"profile: no file {path}")
    return (yaml.safe_load(path.read_text()) or {}).get("sweeps") or {}


def load_sweep(name: str, profile: str = "paper", root: Optional[Path] = None) -> dict:
    """The validated spec of sweep ``name`` (with ``name`` and ``profile`` filled in)."""
    sweeps = _profile_sweeps(profile, root)
    if name not in sweeps:
        raise ValueError(f"name: no sweep {name!r} in params/{profile}.yaml; choose one of {sorted(sweeps)}")
    spec = dict(sweeps[name])
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"sweeps.{name}: unknown keys {sorted(unknown)}")
    for key in ("dataset", "sizes", "base", "methods", "search", "seeds"):
        if key not in spec:
            raise ValueError(f"sweeps.{name}: missing key {key!r}")
    if spec["dataset"] not in ("idx", "digits"):
        raise ValueError(f"sweeps.{name}.dataset: expected 'idx' or 'digits', got {spec['dataset']!r}")
    search = spec["search"]
    for key in ("scales", "epochs", "validation", "seed"):
        if key not in search:
            raise ValueError(f"sweeps.{name}.search: missing key {key!r}")
    if not search["scales"] or any(not (float(s) > 0) for s in search["scales"]):
        raise ValueError(f"sweeps.{name}.search.scales: need positive scales, got {search['scales']}")
    if not spec["seeds"]:
        raise ValueError(f"sweeps.{name}.seeds: need at least one seed")
    spec.update(name=name, profile=profile)
    return spec


def check_methods(spec: dict, methods: Optional[list[str]] = None) -> list[str]:
    """``methods`` (default: all of the sweep's), each checked to give a valid configuration."""
    from ebmlib.learning import TrainConfig

    chosen = list(spec["methods"]) if methods is None else list(methods)
    for m in chosen:
        if m not in spec["methods"]:
            raise ValueError(f"methods: {m!r} is not a method of sweep {spec['name']!r}: {sorted(spec['methods'])}")
        TrainConfig(**_config_kwargs(spec, Job("final", m, 1.0, int(spec["seeds"][0]))))
    return chosen


def search_jobs(spec: dict) -> list[Job]:
    """Every method × every scale, on the validation split, seed ``search.seed``."""
    s = spec["search"]
    return [Job("search", m, float(x), int(s["seed"])) for m in spec["methods"] for x in s["scales"]]


def final_jobs(spec: dict, method: str, lr_scale: float) -> list[Job]:
    """Every seed of ``method`` at its selected scale, on the test split."""
    return [Job("final", method, float(lr_scale), int(seed)) for seed in spec["seeds"]]


def _final(record: dict) -> float:
    """A record's last evaluation error; 1 (as bad as it gets) for a diverged or empty run."""
    err = record["history"]["test_error"]
    return 1.0 if record["status"] != "done" or not err else float(err[-1])


def select_scale(records: list[dict]) -> Optional[float]:
    """The scale of lowest final validation error among a method's search records (a diverged run
    counts as error 1); ties go to the scale nearest 1 (the paper's rates). None when none is done."""
    scored = [(_final(r), abs(math.log(r["lr_scale"])), r["lr_scale"]) for r in records]
    return min(scored)[2] if scored else None


def _config_kwargs(spec: dict, job: Job) -> dict:
    if job.method not in spec["methods"]:
        raise ValueError(f"method: {job.method!r} is not a method of sweep {spec['name']!r}: {sorted(spec['methods'])}")
    base = dict(spec["base"])
    kw = dict(base, **(spec["methods"][job.method] or {}))
    kw["sizes"] = tuple(spec["sizes"])
    kw["lrs"] = tuple(float(v) * job.lr_scale for v in base["lrs"])
    kw["seed"] = job.seed
    if job.stage == "search":
        kw["epochs"] = int(spec["search"]["epochs"])
    return kw


def job_config(spec: dict, job: Job, *, device: str = "cpu", checkpoint: Optional[str] = None):
    """The :class:`ebmlib.TrainConfig` of one job."""
    from ebmlib.learning import TrainConfig

    return TrainConfig(**_config_kwargs(spec, job), device=device, checkpoint=checkpoint)


def expected_config(record: dict, root: Optional[Path] = None) -> dict:
    """What the sweep spec of ``record`` (its profile and sweep) gives as its config, for consistency tests."""
    spec = load_sweep(record["sweep"], record["profile"], root)
    job = Job(record["stage"], record["method"], float(record["lr_scale"]), int(record["seed"]))
    from ebmlib.learning import TrainConfig

    cfg = job_config(spec, job).to_dict()
    # a key added to TrainConfig after a record was made is absent from it: there it had its default value
    added = {f.name for f in dataclasses.fields(TrainConfig) if f.name in ADDED_KEYS and
             f.name not in record.get("config", {}) and cfg[f.name] == f.default}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()
            if k not in _NOT_IN_RECORD and k not in added}


def record_path(records_dir: Path, job: Job) -> Path:
    return Path(records_dir) / (job.run_id.replace("/", "__") + ".json")


# ---------------------------------------------------------------------------- one job (on a worker)
@functools.lru_cache(maxsize=2)
def _dataset(kind: str, idx_dir: str, n_train: int, n_test: int, validation: int):
    import ebmlib as eb

    if kind == "digits":
        data = eb.load_digits(test_fraction=0.25, seed=0)
    else:
        data = eb.load_idx_dataset(idx_dir or eb.FASHION_MNIST_DIR, n_train=n_train or None, n_test=n_test or None)
    if validation:
        if not 0 < validation < len(data.x_train):
            raise ValueError(f"search.validation: must be in (0, {len(data.x_train)}), got {validation}")
        cut = len(data.x_train) - validation
        data = eb.Dataset(data.name, data.x_train[:cut], data.y_train[:cut], data.x_train[cut:], data.y_train[cut:],
                          data.n_classes)
    return data


def _device_info(device: str) -> dict:
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    return {"kind": "cuda" if device.startswith("cuda") else "cpu", "name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "platform": platform.platform()}


def _code_commit() -> tuple[str, bool]:
    """The commit of the ebmlib code this process imported, and whether its tracked files differ from it."""
    import ebmlib

    root = Path(ebmlib.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", True
    return commit or "unknown", dirty


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_job(spec: dict, job: Job, records_dir: str, work_dir: str, *, device: str = "cpu", threads: int = 1,
            allow_dirty: bool = False) -> dict:
    """Train one job and write its record atomically; returns the record. Runs on a Dask worker or here."""
    import ebmlib as eb

    if threads:
        torch.set_num_threads(int(threads))
    commit, dirty = _code_commit()
    if dirty and not allow_dirty:
        raise RuntimeError("the ebmlib sources differ from their commit: a record must name the commit that made "
                           "it (commit first, or pass --allow-dirty for a trial run)")
    validation = int(spec["search"]["validation"]) if job.stage == "search" else 0
    data = _dataset(spec["dataset"], str(spec.get("idx_dir") or ""), int(spec.get("n_train") or 0),
                    int(spec.get("n_test") or 0), validation)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    stem = job.run_id.replace("/", "__")
    ckpt, progress = work / f"{stem}.pt", work / f"{stem}.progress.json"
    cfg = job_config(spec, job, device=str(eb.resolve_device(device)), checkpoint=str(ckpt))

    def on_epoch(h) -> None:
        eb.atomic_write_json(progress, {"epoch": h.epoch[-1], "epochs": cfg.epochs, "test_error": h.test_error[-1],
                                        "train_error": h.train_error[-1], "wall_s": h.wall_s[-1]})

    started, t0 = _now(), time.perf_counter()
    status, error = "done", None
    try:
        hist = eb.train(cfg, data, progress=False, resume=True, on_epoch=on_epoch).to_dict()
    except (FloatingPointError, eb.DivergenceError) as e:  # divergence: keep the epochs that finished
        status, error = "diverged", str(e)
        hist = torch.load(ckpt, weights_only=False)["history"] if ckpt.exists() else {
            k: [] for k in ("epoch", "train_error", "test_error", "train_cost", "wall_s", "update_ratio")}
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.to_dict().items() if k not in _NOT_IN_RECORD}
    record = {
        "schema": SCHEMA, "sweep": spec["name"], "profile": spec["profile"], "run_id": job.run_id,
        "stage": job.stage, "method": job.method, "seed": job.seed, "lr_scale": job.lr_scale,
        "paper_rates": job.lr_scale == 1.0, "config": config,
        "dataset": {"name": data.name, "n_train": len(data.x_train), "n_test": len(data.x_test),
                    "eval_split": "validation" if validation else "test"},
        "history": {k: hist[k] for k in ("epoch", "train_error", "test_error", "train_cost", "wall_s",
                                         "update_ratio")},
        "status": status, "error": error, "commit": commit, "dirty": dirty, "device": _device_info(cfg.device),
        "started": started, "finished": _now(), "wall_s": time.perf_counter() - t0,
    }
    eb.atomic_write_json(record_path(Path(records_dir), job), record)
    for p in (ckpt, progress):
        p.unlink(missing_ok=True)
    return record


def estimate_cost(spec: dict, methods: Optional[list[str]] = None, *, minibatches: int = 20, device: str = "cpu",
                  threads: int = 1) -> dict:
    """Measured seconds per training epoch of each method (``minibatches`` timed after one warm-up, scaled
    to the training set), and the core-hours of the whole sweep (search + final, evaluation excluded)."""
    import ebmlib as eb

    if threads:
        torch.set_num_threads(int(threads))
    data = _dataset(spec["dataset"], str(spec.get("idx_dir") or ""), int(spec.get("n_train") or 0),
                    int(spec.get("n_test") or 0), 0)
    n = len(data.x_train)
    out: dict = {"sweep": spec["name"], "profile": spec["profile"], "device": _device_info(device),
                 "commit": _code_commit()[0], "minibatches_timed": minibatches, "created": _now(), "methods": {}}
    total = 0.0
    for m in check_methods(spec, methods):
        cfg = job_config(spec, Job("final", m, 1.0, 0), device=str(eb.resolve_device(device)))
        net = eb.LayeredEBM(list(cfg.sizes), cfg.activation, seed=0, dtype=cfg.torch_dtype, device=cfg.device)
        gen = torch.Generator().manual_seed(1)
        x_all = data.x_train.to(device=net.device, dtype=net.dtype)
        d_all = data.targets(data.y_train).to(device=net.device, dtype=net.dtype)
        est = cfg.estimator
        times = []
        for i in range(minibatches + 1):
            sl = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
            x, d = x_all[sl], d_all[sl]
            h0 = [x] + [torch.zeros(len(x), k, dtype=net.dtype, device=net.device) for k in cfg.sizes[1:]]
            t0 = time.perf_counter()
            eb.train_step(net, est, x, d, phases=cfg.phases, lrs=cfg.lrs, generator=gen,
                          h0=h0 if est.free_phase else None)
            if net.device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        per_epoch = sorted(times)[len(times) // 2] * math.ceil(n / cfg.batch_size)
        epochs = len(spec["search"]["scales"]) * int(spec["search"]["epochs"]) * (n - int(
            spec["search"]["validation"])) / n + len(spec["seeds"]) * int(spec["base"]["epochs"])
        out["methods"][m] = {"epoch_seconds": per_epoch, "epochs": epochs, "hours": per_epoch * epochs / 3600}
        total += per_epoch * epochs / 3600
    out["total_core_hours"] = total
    return out


# ---------------------------------------------------------------------------- the sweep (the client)
def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_sweep(
    spec: dict,
    *,
    records_dir: Optional[Path] = None,
    work_dir: Optional[Path] = None,
    scheduler: Optional[str] = None,
    workers: int = 2,
    threads: int = 1,
    device: str = "cpu",
    methods: Optional[list[str]] = None,
    allow_dirty: bool = False,
    dry_run: bool = False,
    poll_s: float = 2.0,
    log=print,
) -> dict[str, str]:
    """Run (or resume) a sweep on Dask; returns ``{run_id: status}`` of the jobs this call ran.

    Search jobs are submitted first; a method's final jobs are submitted as soon as its search is
    complete. Progress (one line per finished epoch) goes to ``log``.
    """
    records_dir = Path(records_dir or find_root() / RECORDS / spec["name"])
    work_dir = Path(work_dir or find_root() / "_build" / "sweeps" / spec["name"])
    chosen = check_methods(spec, methods)
    done = lambda job: record_path(records_dir, job).exists()  # noqa: E731
    pending_search = {m: [j for j in search_jobs(spec) if j.method == m] for m in chosen}
    epochs_of = lambda job: int(spec["search"]["epochs"]) if job.stage == "search" else int(spec["base"]["epochs"])  # noqa: E731
    total = sum(epochs_of(j) for m in chosen for j in pending_search[m]) + len(spec["seeds"]) * int(
        spec["base"]["epochs"]) * len(chosen)
    if dry_run:
        for m in chosen:
            for j in pending_search[m]:
                log(f"{'done ' if done(j) else 'to run'} {j.run_id}")
        log(f"{len(chosen)} methods, {total} epochs in all (search + final)")
        return {}

    from dask.distributed import Client, LocalCluster, wait

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        client = Client(cluster)
    futures: dict[Any, Job] = {}
    ran: dict[str, str] = {}
    seen: dict[str, int] = {}
    t_start = time.perf_counter()

    submitted: set[str] = set()

    def submit(job: Job) -> None:
        if done(job) or job.run_id in submitted:
            return
        submitted.add(job.run_id)
        fut = client.submit(run_job, spec, job, str(records_dir), str(work_dir), device=device, threads=threads,
                            allow_dirty=allow_dirty, key=f"{spec['name']}:{job.run_id}", pure=False,
                            priority=1 if job.stage == "final" else 0)
        futures[fut] = job

    def maybe_final(method: str) -> None:
        recs = [_read(record_path(records_dir, j)) for j in pending_search[method]]
        if any(r is None for r in recs) or f"final:{method}" in submitted:
            return
        submitted.add(f"final:{method}")
        scale = select_scale(recs)
        scores = ", ".join(f"x{r['lr_scale']:g}: {_final(r):.4f}" for r in recs)
        log(f"{method}: search complete, scale x{scale:g} selected (validation error {scores})")
        for j in final_jobs(spec, method, scale):
            submit(j)

    try:
        for m in chosen:
            for j in pending_search[m]:
                submit(j)
            maybe_final(m)
        log(f"sweep {spec['name']}: {len(futures)} jobs submitted (final jobs follow each method's search) to {client.scheduler.address} "
            f"({workers if cluster else 'remote'} workers); records in {records_dir}")
        while futures:
            try:
                finished = wait(list(futures), timeout=poll_s, return_when="FIRST_COMPLETED").done
            except TimeoutError:  # nothing finished within poll_s: report progress, wait again
                finished = set()
            for p in sorted(work_dir.glob("*.progress.json")) if work_dir.exists() else []:
                st = _read(p)
                if st and seen.get(p.name) != st["epoch"]:
                    seen[p.name] = st["epoch"]
                    log(f"[{time.perf_counter() - t_start:7.0f} s] {p.name.removesuffix('.progress.json').replace('__', '/')}"
                        f" epoch {st['epoch']}/{st['epochs']}: train {100 * st['train_error']:.2f} %, "
                        f"eval {100 * st['test_error']:.2f} % ({st['wall_s']:.1f} s)")
            for fut in finished:
                job = futures.pop(fut)
                try:
                    rec = fut.result()
                    ran[job.run_id] = rec["status"]
                    err = rec["history"]["test_error"]
                    log(f"[{time.perf_counter() - t_start:7.0f} s] finished {job.run_id}: {rec['status']}, "
                        f"{rec['dataset']['eval_split']} error {100 * err[-1] if err else float('nan'):.2f} %, "
                        f"{rec['wall_s']:.0f} s")
                except Exception as e:  # noqa: BLE001 (report every failure, keep the others running)
                    ran[job.run_id] = f"failed: {e}"
                    log(f"FAILED {job.run_id}: {e}")
                    continue
                if job.stage == "search":
                    maybe_final(job.method)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return ran


# ---------------------------------------------------------------------------- command line
def main(argv: Optional[list[str]] = None) -> int:
    """``python -m ebmlib sweep NAME [--only RUN_ID] [--scheduler ADDR] [--workers N] [--methods a,b] …``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ebmlib sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", help="sweep name (params/<profile>.yaml, key sweeps); omit to list them")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--only", default=None, help="one run id (stage/method/x<scale>/s<seed>), in this process")
    ap.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (default: a local cluster)")
    ap.add_argument("--workers", type=int, default=2, help="local cluster: worker processes (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--methods", default=None, help="comma-separated subset of the sweep's methods")
    ap.add_argument("--idx-dir", default=None, help="folder of the four IDX files (e.g. MNIST), overrides the spec")
    ap.add_argument("--records", type=Path, default=None, help="records folder (default chapters/_measured/learning/NAME)")
    ap.add_argument("--allow-dirty", action="store_true", help="run with uncommitted changes (trial runs only)")
    ap.add_argument("--dry-run", action="store_true", help="list the search jobs and whether they are done")
    ap.add_argument("--estimate", action="store_true",
                    help="measure seconds per epoch of each method (a few minibatches) and the sweep's total; "
                         "writes _build/sweeps/NAME/ESTIMATE.json")
    args = ap.parse_args(argv)
    try:
        if not args.name:
            for n in sweep_names(args.profile):
                print(n)
            return 0
        spec = load_sweep(args.name, args.profile)
        if args.idx_dir:
            spec["idx_dir"] = args.idx_dir
        if spec["dataset"] == "idx" and not spec.get("idx_dir") and spec.get("name", "").startswith("mnist"):
            raise ValueError("idx_dir: MNIST is not shipped here; pass --idx-dir with its four IDX files")
        records = args.records or find_root() / RECORDS / spec["name"]
        work = find_root() / "_build" / "sweeps" / spec["name"]
        if args.estimate:
            est = estimate_cost(spec, args.methods.split(",") if args.methods else None, device=args.device,
                                threads=args.threads)
            import ebmlib as eb

            eb.atomic_write_json(work / "ESTIMATE.json", est)   # not beside the records: it is not a run
            for m, v in est["methods"].items():
                print(f"{m:22s} {v['epoch_seconds']:8.1f} s/epoch x {v['epochs']:6.1f} epochs = {v['hours']:6.2f} h")
            print(f"total {est['total_core_hours']:.1f} core-hours on {est['device']['name']}")
            return 0
        if args.only:
            job = Job.parse(args.only)
            rec = run_job(spec, job, str(records), str(work), device=args.device, threads=args.threads,
                          allow_dirty=args.allow_dirty)
            print(f"{job.run_id}: {rec['status']}, {rec['dataset']['eval_split']} error "
                  f"{100 * rec['history']['test_error'][-1]:.2f} %, {rec['wall_s']:.0f} s -> {record_path(records, job)}")
            return 0
        methods = args.methods.split(",") if args.methods else None
        ran = run_sweep(spec, records_dir=records, work_dir=work, scheduler=args.scheduler, workers=args.workers,
                        threads=args.threads, device=args.device, methods=methods, allow_dirty=args.allow_dirty,
                        dry_run=args.dry_run, log=lambda s: print(s, flush=True))
        failed = [k for k, v in ran.items() if v.startswith("failed")]
        print(f"{len(ran)} jobs run, {len(failed)} failed")
        return 1 if failed else 0
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
