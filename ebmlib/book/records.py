"""Recorded paper-scale learning runs: read and check them, summarise them, set them beside the published numbers.

A *record* is one JSON file per training run, written by :mod:`ebmlib.book.sweep` under
``chapters/_measured/learning/<sweep>/<run_id with "/" -> "__">.json`` (schema ``ebmlib.learning-run/1``):
the sweep and profile that define it, its stage (``search``: the learning-rate search on a validation
split; ``final``: full training set, test split), method label, seed, scale of the sweep's per-layer rates,
the :class:`ebmlib.TrainConfig` it ran (less ``checkpoint`` and ``device``), the dataset, the per-epoch
history (errors are fractions; ``update_ratio`` is ``‖W_k(end) − W_k(start)‖_F / ‖W_k(start)‖_F`` per epoch
and layer), its status, the commit and device that made it, and its wall time.

- :func:`validate_record` checks one record and raises a :class:`ValueError` naming the offending field;
  :func:`load_records` reads and checks every record of a folder.
- :func:`select_scales`: per (sweep, method), the scale the search chose (lowest final validation error,
  a diverged run counting as error 1, ties to the scale nearest 1), every candidate and the budget.
- :func:`summarize`: per (sweep, sizes, method, dataset) of the final stage, the errors over seeds, mean ± std
  and the Student-t interval ``mean ± t·s/√n`` (:func:`ebmlib.t_interval`); :func:`paired_gap` the paired
  difference of two methods over the seeds they share.
- :func:`compare_published`: the published numbers (:data:`PUBLISHED`, each with where it was checked),
  our comparable quantity, and a verdict computed from the two (:func:`level_verdict`, :func:`gap_verdict`).
- :func:`learning_curves_figure`, :func:`effective_lr_figure` and the Markdown tables the page renders.

Nothing here trains anything: the page that uses it renders recorded data in seconds.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from ..selection import paired_interval, t_interval, t_quantile
from .provenance import find_root

__all__ = [
    "SCHEMA",
    "LEARNING_DIR",
    "METHODS",
    "PUBLISHED",
    "record_file_name",
    "validate_record",
    "load_records",
    "load_not_run",
    "sweep_status",
    "select_scales",
    "summarize",
    "paired_gap",
    "level_verdict",
    "gap_verdict",
    "compare_published",
    "learning_curves",
    "effective_lr",
    "learning_curves_figure",
    "effective_lr_figure",
    "status_markdown",
    "final_table_markdown",
    "search_table_markdown",
    "published_table_markdown",
]

SCHEMA = "ebmlib.learning-run/1"
LEARNING_DIR = "chapters/_measured/learning"  # relative to the book root; filled by the real runs
NOT_RUN = "NOT_RUN.json"  # per sweep folder: why a sweep was not run ({"reason", "epoch_seconds_measured", "device"})
STAGES = ("search", "final")
STATUSES = ("done", "diverged")
EVAL_SPLIT = {"search": "validation", "final": "test"}
HISTORY_KEYS = ("epoch", "train_error", "test_error", "train_cost", "wall_s", "update_ratio")
TOP_KEYS = ("schema", "sweep", "profile", "run_id", "stage", "method", "seed", "lr_scale", "paper_rates", "config",
            "dataset", "history", "status", "error", "commit", "dirty", "device", "started", "finished", "wall_s")
DEVICE_KEYS = ("kind", "name", "threads", "torch", "platform")
DATASET_KEYS = ("name", "n_train", "n_test", "eval_split")
CONFIG_KEYS = ("sizes", "method", "lrs", "epochs")  # required; the other TrainConfig fields are compared with the spec
CONFIG_ABSENT = ("checkpoint", "device")

#: The method labels of the sweeps, in the order the page lists them (all with the hard sigmoid unless said).
METHODS: dict[str, str] = {
    "bp_straight_through": "back-propagation of the feedforward network, ρ' = 1 on clipped units (straight-through)",
    "bp_true_gradient": "back-propagation of the feedforward network, the true gradient of the hard sigmoid "
                        "(zero on saturated units)",
    "bp_sigmoid": "back-propagation of the feedforward network with the logistic sigmoid",
    "bptt": "truncated back-propagation through time through the last steps of the energy model's free phase, "
            "the true gradient of the clipped dynamics (zero through a unit held on a bound): the gradient EP "
            "approximates as β → 0",
    "bptt_straight_through": "the same BPTT with the clip's derivative taken as 1 (straight-through), like "
                             "bp_straight_through",
    "ep_fixed_sign": "one-sided EP, β > 0 at every minibatch",
    "ep_random_sign": "one-sided EP, random sign of β per minibatch (Scellier & Bengio's setting)",
    "ep_symmetric": "symmetric EP, nudged phases at +β and −β (Laborieux et al. 2021)",
    "continual_ep": "Continual EP (Ernoult et al. 2020): the weights move at every step of the nudged phase",
}

_HEX40 = re.compile(r"[0-9a-f]{40}")
_RUN_ID = re.compile(r"(search|final)/([A-Za-z0-9_]+)/x([0-9.eE+-]+)/s([0-9]+)")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")
_NB = "\u2011"  # non-breaking hyphen: 784‑500‑10 does not wrap in a table


# ---------------------------------------------------------------------------- checking one record
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}.{key}: missing")
    return d[key]


def _str(d: dict, key: str, where: str, pattern: Optional[re.Pattern] = None) -> str:
    v = _need(d, key, where)
    if not isinstance(v, str) or not v:
        raise ValueError(f"{where}.{key}: expected a non-empty string, got {v!r}")
    if pattern is not None and not pattern.fullmatch(v):
        raise ValueError(f"{where}.{key}: {v!r} does not match {pattern.pattern}")
    return v


def _int(d: dict, key: str, where: str, minimum: int = 0) -> int:
    v = _need(d, key, where)
    if not _is_int(v) or v < minimum:
        raise ValueError(f"{where}.{key}: expected an integer >= {minimum}, got {v!r}")
    return v


def _real(d: dict, key: str, where: str, minimum: float = 0.0, strict: bool = False) -> float:
    v = _need(d, key, where)
    if not _is_real(v) or v < minimum or (strict and v == minimum):
        raise ValueError(f"{where}.{key}: expected a finite number {'>' if strict else '>='} {minimum:g}, got {v!r}")
    return float(v)


def _bool(d: dict, key: str, where: str) -> bool:
    v = _need(d, key, where)
    if not isinstance(v, bool):
        raise ValueError(f"{where}.{key}: expected true or false, got {v!r}")
    return v


def _dict(d: dict, key: str, where: str) -> dict:
    v = _need(d, key, where)
    if not isinstance(v, dict):
        raise ValueError(f"{where}.{key}: expected an object, got {type(v).__name__}")
    return v


def _time(d: dict, key: str, where: str) -> datetime:
    v = _str(d, key, where)
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{where}.{key}: {v!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise ValueError(f"{where}.{key}: {v!r} has no UTC offset")
    return t


def record_file_name(run_id: str) -> str:
    """The file name of a record: its ``run_id`` with ``/`` replaced by ``__``, plus ``.json``."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id: expected 'search|final/<method>/x<scale>/s<seed>', got {run_id!r}")
    return run_id.replace("/", "__") + ".json"


def _check_config(cfg: dict, seed: int) -> int:
    """Check the config; returns N, the number of weight layers."""
    w = "record.config"
    for key in CONFIG_KEYS:
        _need(cfg, key, w)
    for key in CONFIG_ABSENT:
        if key in cfg:
            raise ValueError(f"{w}.{key}: must not be recorded (it depends on the machine, not on the run)")
    sizes = cfg["sizes"]
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(_is_int(n) and n >= 1 for n in sizes):
        raise ValueError(f"{w}.sizes: expected a list of at least two positive integers, got {sizes!r}")
    n_layers = len(sizes) - 1
    lrs = cfg["lrs"]
    if not isinstance(lrs, list) or len(lrs) != n_layers or not all(_is_real(v) and v >= 0 for v in lrs):
        raise ValueError(f"{w}.lrs: expected {n_layers} finite rates >= 0 (one per layer), got {lrs!r}")
    _int(cfg, "epochs", w, minimum=1)
    _str(cfg, "method", w)
    if "seed" in cfg and cfg["seed"] != seed:
        raise ValueError(f"{w}.seed: {cfg['seed']!r} differs from record.seed {seed}")
    return n_layers


def _check_history(h: dict, n_layers: int, n_train: int, n_eval: int) -> int:
    """Check the per-epoch history; returns E, the number of epochs it holds."""
    w = "record.history"
    for key in HISTORY_KEYS:
        if not isinstance(_need(h, key, w), list):
            raise ValueError(f"{w}.{key}: expected a list, got {type(h[key]).__name__}")
    extra = sorted(set(h) - set(HISTORY_KEYS))
    if extra:
        raise ValueError(f"{w}.{extra[0]}: unknown key (schema {SCHEMA} has {list(HISTORY_KEYS)})")
    n_ep = len(h["epoch"])
    for key in HISTORY_KEYS:
        if len(h[key]) != n_ep:
            raise ValueError(f"{w}.{key}: has {len(h[key])} entries, history.epoch has {n_ep}")
    if h["epoch"] != list(range(1, n_ep + 1)):
        raise ValueError(f"{w}.epoch: expected 1, 2, …, {n_ep}, got {h['epoch']!r}")
    for key, n in (("train_error", n_train), ("test_error", n_eval)):
        for i, e in enumerate(h[key]):
            if not _is_real(e) or not 0.0 <= e <= 1.0:
                raise ValueError(f"{w}.{key}[{i}]: an error is a fraction in [0, 1], got {e!r}")
            if abs(e * n - round(e * n)) > 1e-6:
                raise ValueError(f"{w}.{key}[{i}]: {e!r} is not a count of mistakes over {n} examples")
    for key in ("train_cost", "wall_s"):
        for i, v in enumerate(h[key]):
            if not _is_real(v) or v < 0:
                raise ValueError(f"{w}.{key}[{i}]: expected a finite number >= 0, got {v!r}")
    for i, row in enumerate(h["update_ratio"]):
        if not isinstance(row, list) or len(row) != n_layers or not all(_is_real(v) and v >= 0 for v in row):
            raise ValueError(f"{w}.update_ratio[{i}]: expected {n_layers} finite ratios >= 0 (one per layer), "
                             f"got {row!r}")
    return n_ep


def validate_record(rec: Any) -> dict:
    """Check one learning-run record against the schema ``ebmlib.learning-run/1``; returns it unchanged.

    Raises :class:`ValueError` naming the first offending field (``record.<key>…``): a missing or unknown
    key, a wrong type, history lists whose lengths differ from the number of epochs, an error outside
    [0, 1] or not a count over the split, a commit that is not 40 lowercase hex digits, an unknown stage
    or status, or fields that contradict each other (run_id, paper_rates, eval_split, status and epochs).
    """
    if not isinstance(rec, dict):
        raise ValueError(f"record: expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in TOP_KEYS if k not in rec]
    if missing:
        raise ValueError(f"record.{missing[0]}: missing" + (f" (also {missing[1:]})" if len(missing) > 1 else ""))
    extra = sorted(set(rec) - set(TOP_KEYS))
    if extra:
        raise ValueError(f"record.{extra[0]}: unknown key (schema {SCHEMA})")
    w = "record"
    if rec["schema"] != SCHEMA:
        raise ValueError(f"record.schema: expected {SCHEMA!r}, got {rec['schema']!r}")
    _str(rec, "sweep", w, _NAME)
    _str(rec, "profile", w, _NAME)
    run_id = _str(rec, "run_id", w)
    stage = rec["stage"]
    if stage not in STAGES:
        raise ValueError(f"record.stage: expected one of {STAGES}, got {stage!r}")
    method = _str(rec, "method", w, re.compile(r"[A-Za-z0-9_]+"))
    seed = _int(rec, "seed", w)
    scale = _real(rec, "lr_scale", w, strict=True)
    if _bool(rec, "paper_rates", w) != (scale == 1.0):
        raise ValueError(f"record.paper_rates: is {rec['paper_rates']} but lr_scale is {scale:g} (the paper's "
                         "rates are lr_scale 1)")
    m = _RUN_ID.fullmatch(run_id)
    if m is None:
        raise ValueError(f"record.run_id: expected 'search|final/<method>/x<scale>/s<seed>', got {run_id!r}")
    if (m[1], m[2], int(m[4])) != (stage, method, seed) or not math.isclose(float(m[3]), scale, rel_tol=1e-5):
        raise ValueError(f"record.run_id: {run_id!r} disagrees with stage {stage!r}, method {method!r}, "
                         f"lr_scale {scale:g} and seed {seed}")
    n_layers = _check_config(_dict(rec, "config", w), seed)
    data = _dict(rec, "dataset", w)
    for key in DATASET_KEYS:
        _need(data, key, "record.dataset")
    _str(data, "name", "record.dataset")
    n_train = _int(data, "n_train", "record.dataset", minimum=1)
    n_eval = _int(data, "n_test", "record.dataset", minimum=1)
    if data["eval_split"] != EVAL_SPLIT[stage]:
        raise ValueError(f"record.dataset.eval_split: a {stage} run is evaluated on the {EVAL_SPLIT[stage]} split, "
                         f"got {data['eval_split']!r}")
    n_ep = _check_history(_dict(rec, "history", w), n_layers, n_train, n_eval)
    status, epochs = rec["status"], rec["config"]["epochs"]
    if status not in STATUSES:
        raise ValueError(f"record.status: expected one of {STATUSES}, got {status!r}")
    if status == "done":
        if n_ep != epochs:
            raise ValueError(f"record.history: a done run holds all {epochs} epochs of config.epochs, got {n_ep}")
        if rec["error"] is not None:
            raise ValueError(f"record.error: a done run has error null, got {rec['error']!r}")
    else:
        if n_ep >= epochs:
            raise ValueError(f"record.history: a diverged run stopped before epoch {epochs}, yet holds {n_ep} epochs")
        _str(rec, "error", w)
    _str(rec, "commit", w, _HEX40)
    _bool(rec, "dirty", w)
    dev = _dict(rec, "device", w)
    for key in DEVICE_KEYS:
        _need(dev, key, "record.device")
    for key in ("kind", "name", "torch", "platform"):
        _str(dev, key, "record.device")
    _int(dev, "threads", "record.device")
    if _time(rec, "finished", w) < _time(rec, "started", w):
        raise ValueError(f"record.finished: {rec['finished']} is before record.started {rec['started']}")
    _real(rec, "wall_s", w)
    return rec


# ---------------------------------------------------------------------------- reading the folder
def _records_root(root: Optional[str | Path]) -> Path:
    return Path(root) if root is not None else find_root() / LEARNING_DIR


def _order(rec: dict) -> tuple:
    names = list(METHODS)
    m = rec["method"]
    return (rec["sweep"], STAGES.index(rec["stage"]), names.index(m) if m in names else len(names), m,
            rec["lr_scale"], rec["seed"])


def load_records(root: Optional[str | Path] = None, sweep: Optional[str] = None) -> list[dict]:
    """Every record under ``root`` (default ``<book>/chapters/_measured/learning``), each validated.

    ``sweep`` restricts to ``root/<sweep>/``. A record must sit in the folder of its sweep under the file
    name of its run id (:func:`record_file_name`); ``NOT_RUN.json`` notes are skipped
    (:func:`load_not_run`). Returns ``[]`` when the folder does not exist; sorted by sweep, stage, method,
    scale and seed. A bad file raises :class:`ValueError` naming the file and the field.
    """
    if sweep is not None and (not isinstance(sweep, str) or not _NAME.fullmatch(sweep)):
        raise ValueError(f"sweep: expected a sweep name, got {sweep!r}")
    base = _records_root(root)
    if not base.is_dir():
        return []
    folders = [base / sweep] if sweep else sorted(p for p in base.iterdir() if p.is_dir())
    out = []
    for folder in folders:
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.name == NOT_RUN:
                continue
            try:
                rec = json.loads(path.read_text())
            except ValueError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
            try:
                validate_record(rec)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
            if rec["sweep"] != folder.name:
                raise ValueError(f"{path}: record.sweep is {rec['sweep']!r} but the file is in folder {folder.name!r}")
            if path.name != record_file_name(rec["run_id"]):
                raise ValueError(f"{path}: record.run_id {rec['run_id']!r} belongs in {record_file_name(rec['run_id'])}")
            out.append(rec)
    return sorted(out, key=_order)


def load_not_run(root: Optional[str | Path] = None) -> dict[str, dict]:
    """The ``NOT_RUN.json`` notes, by sweep: ``{"reason": str, "epoch_seconds_measured": float | None, "device": …}``."""
    base = _records_root(root)
    out: dict[str, dict] = {}
    for path in sorted(base.glob(f"*/{NOT_RUN}")) if base.is_dir() else []:
        try:
            note = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(note, dict):
            raise ValueError(f"{path}: expected an object")
        _str(note, "reason", str(path))
        sec = note.get("epoch_seconds_measured")
        if sec is not None and not (_is_real(sec) and sec >= 0):
            raise ValueError(f"{path}.epoch_seconds_measured: expected a number >= 0 or null, got {sec!r}")
        out[path.parent.name] = {"reason": note["reason"], "epoch_seconds_measured": sec, "device": note.get("device")}
    return out


def _specs(book_root: Optional[Path], profile: str) -> dict:
    path = (book_root or find_root()) / "params" / f"{profile}.yaml"
    if not path.exists():
        return {}
    return (yaml.safe_load(path.read_text()) or {}).get("sweeps") or {}


def _is_mnist(name: str) -> bool:
    n = name.lower()
    return "mnist" in n and "fashion" not in n and "fmnist" not in n


def _arch(sizes: Sequence[int]) -> str:
    return "-".join(str(int(n)) for n in sizes)


def sweep_status(
    records: Sequence[dict],
    *,
    records_root: Optional[str | Path] = None,
    book_root: Optional[str | Path] = None,
    profile: str = "paper",
) -> list[dict]:
    """One entry per sweep (those of ``params/<profile>.yaml`` then any other that has records): its
    architecture, how many search and final runs are recorded of how many the spec asks for, and a
    ``state``: ``run`` (all), ``partial``, or ``not run`` with its ``reason`` (the sweep's ``NOT_RUN.json``,
    else the spec's ``note``, else for an MNIST sweep that MNIST is not available offline)."""
    specs = _specs(Path(book_root) if book_root else None, profile)
    notes = load_not_run(records_root)
    by_sweep: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_sweep[r["sweep"]].append(r)
    out = []
    for name in list(specs) + sorted(set(by_sweep) - set(specs)):
        spec, recs = specs.get(name) or {}, by_sweep.get(name, [])
        sizes = spec.get("sizes") or (recs[0]["config"]["sizes"] if recs else [])
        n_methods = len(spec.get("methods") or {})
        expected = (n_methods * (len((spec.get("search") or {}).get("scales") or []) + len(spec.get("seeds") or []))
                    if spec else None)
        n_final = sum(r["stage"] == "final" for r in recs)
        n_search = len(recs) - n_final
        note = notes.get(name)
        reason = note["reason"] if note else spec.get("note")
        if reason is None and not recs and _is_mnist(name):
            reason = f"not run here: MNIST is not available offline (python -m ebmlib sweep {name} --idx-dir DIR runs it)"
        if not recs:
            state = "not run"
            reason = reason or "no records yet"
        else:
            state = "run" if expected is not None and len(recs) >= expected else "partial"
        datasets = sorted({r["dataset"]["name"] for r in recs})
        out.append({"sweep": name, "architecture": _arch(sizes) if sizes else "?", "sizes": list(sizes),
                    "dataset": ", ".join(datasets) if datasets else ("mnist" if _is_mnist(name) else "fashion-mnist"),
                    "scales": sorted(float(x) for x in (spec.get("search") or {}).get("scales") or []),
                    "state": state, "reason": reason, "search_runs": n_search, "final_runs": n_final,
                    "expected_runs": expected,
                    "epoch_seconds_measured": note["epoch_seconds_measured"] if note else None,
                    "device": note["device"] if note else None})
    return out


# ---------------------------------------------------------------------------- the search, the summary
def _last_error(rec: dict) -> float:
    """A run's last evaluation error; 1 (as bad as it gets) for a diverged or empty run, as the sweep scores it."""
    err = rec["history"]["test_error"]
    return 1.0 if rec["status"] != "done" or not err else float(err[-1])


def _methods_sorted(names: Sequence[str]) -> list[str]:
    known = [m for m in METHODS if m in names]
    return known + sorted(set(names) - set(known))


def select_scales(records: Sequence[dict]) -> dict[tuple[str, str], dict]:
    """Per ``(sweep, method)``, the learning-rate search: ``lr_scale`` (the chosen scale), ``candidates``
    (per scale: mean final validation error over its runs, a diverged run counting 1, its status, rates,
    epochs), ``budget`` (``candidates``, ``runs``, ``epochs_per_run``, ``epochs`` in all), whether the
    paper's rates (scale 1) were a candidate and were chosen, and ``on_edge`` (the choice is the smallest
    or largest scale tried, so the grid may have been too narrow). Ties go to the scale nearest 1."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        if r["stage"] == "search":
            groups[(r["sweep"], r["method"])].append(r)
    out = {}
    for key, recs in groups.items():
        by_scale: dict[float, list[dict]] = defaultdict(list)
        for r in recs:
            by_scale[float(r["lr_scale"])].append(r)
        cands = [{"lr_scale": s, "val_error": float(np.mean([_last_error(r) for r in rs])), "runs": len(rs),
                  "seeds": sorted(r["seed"] for r in rs), "status": sorted({r["status"] for r in rs}),
                  "epochs": sorted({r["config"]["epochs"] for r in rs}), "lrs": rs[0]["config"]["lrs"],
                  "paper_rates": s == 1.0}
                 for s, rs in sorted(by_scale.items())]
        best = min(cands, key=lambda c: (c["val_error"], abs(math.log(c["lr_scale"])), c["lr_scale"]))
        scales = [c["lr_scale"] for c in cands]
        out[key] = {"sweep": key[0], "method": key[1], "lr_scale": best["lr_scale"], "val_error": best["val_error"],
                    "lrs": best["lrs"], "candidates": cands,
                    "budget": {"candidates": len(cands), "runs": len(recs),
                               "epochs_per_run": sorted({r["config"]["epochs"] for r in recs}),
                               "epochs": sum(r["config"]["epochs"] for r in recs)},
                    "paper_candidate": 1.0 in scales, "paper_chosen": best["lr_scale"] == 1.0,
                    "on_edge": len(cands) > 1 and best["lr_scale"] in (min(scales), max(scales))}
    order = _methods_sorted([m for _, m in out])
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))))


def _interval(values: Sequence[float], level: float) -> Optional[dict]:
    if len(values) < 2:
        return None
    iv = t_interval(values, level)
    return {"mean": iv.mean, "half": iv.half, "lo": iv.lo, "hi": iv.hi, "level": level, "n": iv.n}


def summarize(records: Sequence[dict], level: float = 0.95) -> list[dict]:
    """Per ``(sweep, sizes, method, dataset)`` of the final stage: ``n`` done runs (and ``n_diverged``),
    their ``seeds``, the last-epoch ``test_errors`` and ``train_errors`` (fractions), their mean, standard
    deviation (``ddof = 1``; None for one run) and ``level`` t-interval (:func:`ebmlib.t_interval`; None
    below 2 runs), ``epochs``, mean ``wall_s`` per run (total, with evaluation) and ``train_wall_s`` (the
    epochs' training time), the devices, the scale(s) and the per-layer rates used, and the commits."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["stage"] == "final":
            groups[(r["sweep"], tuple(r["config"]["sizes"]), r["method"], r["dataset"]["name"])].append(r)
    out = []
    for (sweep, sizes, method, dataset), recs in groups.items():
        done = sorted((r for r in recs if r["status"] == "done"), key=lambda r: r["seed"])
        test = [r["history"]["test_error"][-1] for r in done]
        train = [r["history"]["train_error"][-1] for r in done]
        dev = sorted({f"{r['device']['kind']}: {r['device']['name']} ({r['device']['threads']} thread"
                      f"{'' if r['device']['threads'] == 1 else 's'})" for r in recs})
        out.append({
            "sweep": sweep, "architecture": _arch(sizes), "sizes": list(sizes), "method": method, "dataset": dataset,
            "n": len(done), "n_diverged": len(recs) - len(done), "seeds": [r["seed"] for r in done],
            "test_errors": test, "train_errors": train,
            "test_mean": float(np.mean(test)) if test else None,
            "test_std": float(np.std(test, ddof=1)) if len(test) > 1 else None,
            "test_interval": _interval(test, level),
            "train_mean": float(np.mean(train)) if train else None,
            "train_std": float(np.std(train, ddof=1)) if len(train) > 1 else None,
            "train_interval": _interval(train, level),
            "epochs": sorted({r["config"]["epochs"] for r in recs}),
            "wall_s": float(np.mean([r["wall_s"] for r in done])) if done else None,
            "train_wall_s": float(np.mean([sum(r["history"]["wall_s"]) for r in done])) if done else None,
            "devices": dev,
            "lr_scales": sorted({float(r["lr_scale"]) for r in recs}),
            "lrs": sorted({tuple(r["config"]["lrs"]) for r in recs}),
            "paper_rates": all(r["paper_rates"] for r in recs),
            "commits": sorted({r["commit"] for r in recs}),
        })
    order = _methods_sorted([row["method"] for row in out])
    return sorted(out, key=lambda row: (row["sweep"], order.index(row["method"]), row["dataset"]))


def paired_gap(records: Sequence[dict], sweep: str, a: str, b: str, level: float = 0.95) -> Optional[dict]:
    """The paired difference of final test errors ``a − b`` over the seeds both methods finished in
    ``sweep`` (same seed: same initial weights and minibatches): the per-seed ``diffs``, their ``mean``
    and, for two or more seeds, the ``level`` t-interval of the mean (:func:`ebmlib.paired_interval`).
    None when no seed is shared."""
    for name, v in (("sweep", sweep), ("a", a), ("b", b)):
        if not isinstance(v, str) or not v:
            raise ValueError(f"{name}: expected a non-empty string, got {v!r}")
    final = {(r["method"], r["seed"]): r["history"]["test_error"][-1] for r in records
             if r["sweep"] == sweep and r["stage"] == "final" and r["status"] == "done"}
    seeds = sorted({s for m, s in final if m == a} & {s for m, s in final if m == b})
    if not seeds:
        return None
    xa, xb = [final[(a, s)] for s in seeds], [final[(b, s)] for s in seeds]
    diffs = [u - v for u, v in zip(xa, xb)]
    out = {"sweep": sweep, "a": a, "b": b, "seeds": seeds, "diffs": diffs, "n": len(seeds),
           "mean": float(np.mean(diffs)), "half": None, "lo": None, "hi": None, "level": level}
    if len(seeds) > 1:
        iv = paired_interval(xa, xb, level)
        out.update(half=iv.half, lo=iv.lo, hi=iv.hi)
    return out


# ---------------------------------------------------------------------------- the published numbers
#: What the published sources say, with where each number was checked. A number we could not check
#: offline is ``None`` and the text says so; nothing here is quoted from memory.
PUBLISHED: dict[str, dict] = {
    "sb2017": {
        "source": "Scellier & Bengio 2017, Table 2", "cite": "scellier2017equilibrium", "dataset": "MNIST",
        "architectures": ["784-500-10", "784-500-500-10", "784-500-500-500-10"], "method": "ep_random_sign",
        "text": "train error 0.00 %, generalisation error 2–3 %",
        "test": (0.02, 0.03), "train": (0.0, 0.00005),  # 0.00 % as printed: below 0.005 %
        "checked": "the project's specification of the published numbers (PAPER.md §6), which also notes that the "
                   "official code measures the 'generalisation error' on MNIST's 10,000-example validation split; "
                   "the article's abstract (Frontiers in Computational Neuroscience 11:24) confirms networks with 1, "
                   "2 and 3 hidden layers trained on MNIST",
    },
    "ernoult2019": {
        "source": "Ernoult et al. 2019", "cite": "ernoult2019updates", "dataset": "MNIST",
        "architecture": "784-512-10 (energy-based, discrete time)", "a": "ep_random_sign", "b": "bptt",
        "expect": "zero", "size": None, "text": "EP ≈ BPTT (about 2 % test error each); here against BPTT with the "
                                                "true gradient of the clipped dynamics",
        "why_differs": "BPTT's true gradient passes nothing through a unit the clip holds on a bound, while EP's "
                       "nudge at β = 1 still moves such a unit (chapter 07 counts these units); the two agree only "
                       "as β → 0 (chapter 06)",
        "checked": "the project's specification (PAPER.md §6) for the architecture and the 2 %; the paper's abstract "
                   "(arXiv:1905.13633) for EP training with performance equivalent to BPTT's",
    },
    "ernoult2019_st": {
        "source": "Ernoult et al. 2019", "cite": "ernoult2019updates", "dataset": "MNIST",
        "architecture": "784-512-10 (energy-based, discrete time)", "a": "ep_random_sign",
        "b": "bptt_straight_through", "expect": "zero", "size": None,
        "text": "EP ≈ BPTT (about 2 % test error each); here against BPTT with the straight-through clip",
        "checked": "as the row above",
    },
    "ernoult2020": {
        "source": "Ernoult et al. 2020 (C-EP)", "cite": "ernoult2020continual", "dataset": "MNIST",
        "architecture": "architecture not checked", "a": "continual_ep", "b": "bptt", "expect": None, "size": None,
        "text": "C-EP's updates follow BPTT's gradients when learning rates are small (their Theorem 1); its MNIST "
                "error: not checked (source not available offline)",
        "checked": "the paper's abstract (arXiv:2005.04168)",
    },
    "laborieux2021_sign": {
        "source": "Laborieux et al. 2021", "cite": "laborieux2021scaling", "dataset": "CIFAR-10",
        "architecture": "ConvNet", "a": "ep_fixed_sign", "b": "ep_symmetric", "expect": "positive",
        "size": 0.86 - 0.117, "text": "one-sided EP with a fixed sign 86 %, symmetric EP 11.7 % test error: "
                                     "the fixed sign costs 74.3 points",
        "checked": "the paper's abstract (Frontiers in Neuroscience 15:633674; arXiv:2006.03824) and the project's "
                   "specification (PAPER.md §6)",
    },
    "laborieux2021_random": {
        "source": "Laborieux et al. 2021", "cite": "laborieux2021scaling", "dataset": "CIFAR-10",
        "architecture": "ConvNet", "a": "ep_random_sign", "b": "ep_symmetric", "expect": "zero", "size": None,
        "text": "a random sign of β removes the estimate's first-order bias in expectation; with it (or the "
                "symmetric phases) CIFAR-10 trains stably; its CIFAR-10 error: not checked (source not "
                "available offline)",
        "checked": "the authors' code (github.com/Laborieux-Axel/Equilibrium-Propagation, README) and the project's "
                   "specification (PAPER.md §8)",
    },
    "laborieux2021_asym": {
        "source": "Laborieux et al. 2021", "cite": "laborieux2021scaling", "dataset": "CIFAR-10",
        "architecture": "ConvNet with distinct forward and backward weights", "a": None, "b": None,
        "expect": None, "size": None,
        "text": "13.2 % test error, for an architecture with asymmetric (distinct) forward and backward "
                "connections: not a sign of β",
        "checked": "the arXiv abstract (arXiv:2006.03824); the project's specification (PAPER.md §6) lists it as "
                   "'(asymmetric)'",
    },
    "scellier2023": {
        "source": "Scellier et al. 2023 (context)", "cite": "scellier2023energy", "dataset": "Fashion-MNIST",
        "architecture": "deep convolutional Hopfield network", "a": "ep_fixed_sign", "b": "ep_symmetric",
        "expect": "positive", "size": None,
        "text": "centred EP (±β) is the best of seven energy-based algorithms, a negative nudge beats a positive "
                "one; its Fashion-MNIST error: not checked (source not available offline)",
        "checked": "the paper's abstract (NeurIPS 2023 proceedings and OpenReview)",
    },
}


def _pct(x: Optional[float], digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def _pp(x: float) -> str:
    return f"{100 * x:+.2f} pp"


def level_verdict(mean: float, half: Optional[float], lo: float, hi: float) -> dict:
    """Our ``mean`` (± ``half``, None for one run) against a published range ``[lo, hi]`` (fractions):
    ``agrees`` when our interval (or value) overlaps the range, else ``differs`` by the distance from
    the range to our mean (``by``, signed: positive means our error is higher)."""
    for name, v in (("mean", mean), ("lo", lo), ("hi", hi)):
        if not _is_real(v):
            raise ValueError(f"{name}: expected a finite number, got {v!r}")
    if lo > hi:
        raise ValueError(f"lo, hi: empty range [{lo}, {hi}]")
    if half is not None and not (_is_real(half) and half >= 0):
        raise ValueError(f"half: expected a finite number >= 0 or None, got {half!r}")
    h = half or 0.0
    if mean + h >= lo and mean - h <= hi:
        return {"word": "agrees", "by": 0.0}
    by = mean - hi if mean > hi else mean - lo
    return {"word": "differs", "by": by}


def gap_verdict(gap: Optional[dict], expect: Optional[str], size: Optional[float] = None) -> dict:
    """A paired difference (:func:`paired_gap`) against a published statement about it: ``expect`` is
    ``"zero"`` (the methods perform alike), ``"positive"`` (``a`` is worse, by ``size`` when published)
    or None (nothing published to compare). Returns ``word`` and ``sign`` (+1 / −1 when the interval
    excludes 0, 0 when it straddles it, None without an interval). ``word``: ``agrees`` (zero expected and
    the interval straddles 0; or positive expected, resolved, and the published size inside the interval
    or not published), ``agrees in sign`` (positive, resolved, the published size outside), ``differs``
    (a resolved difference where none was expected; a resolved negative one; or an unresolved one whose
    interval excludes the published size), ``not resolved`` (one seed, or a positive expectation without
    a published size that the interval neither confirms nor excludes), ``no data``, ``not compared``."""
    if expect not in ("zero", "positive", None):
        raise ValueError(f"expect: expected 'zero', 'positive' or None, got {expect!r}")
    if size is not None and not _is_real(size):
        raise ValueError(f"size: expected a finite number or None, got {size!r}")
    if gap is None:
        return {"word": "no data", "sign": None}
    if gap["half"] is None:
        return {"word": "not resolved" if expect else "not compared", "sign": None}
    sign = 1 if gap["lo"] > 0 else -1 if gap["hi"] < 0 else 0
    if expect is None:
        return {"word": "not compared", "sign": sign}
    if expect == "zero":
        return {"word": "agrees" if sign == 0 else "differs", "sign": sign}
    if sign == -1 or (sign == 0 and size is not None and not gap["lo"] <= size <= gap["hi"]):
        return {"word": "differs", "sign": sign}
    if sign == 0:
        return {"word": "not resolved", "sign": sign}
    if size is None or gap["lo"] <= size <= gap["hi"]:
        return {"word": "agrees", "sign": sign}
    return {"word": "agrees in sign", "sign": sign}


def _gap_text(g: Optional[dict]) -> str:
    if g is None:
        return "no shared seeds"
    head = f"{g['a']} − {g['b']}: {_pp(g['mean'])}"
    if g["half"] is None:
        return head + f" (one seed, {g['seeds'][0]}: no interval)"
    return head + f" ± {100 * g['half']:.2f} ({100 * g['level']:g} %, {g['n']} seeds, paired)"


def _ours_level(row: dict) -> str:
    iv = row["test_interval"]
    test = (f"{100 * row['test_mean']:.2f} ± {100 * iv['half']:.2f} %" if iv else _pct(row["test_mean"]))
    return f"{row['method']}: test {test}, train {_pct(row['train_mean'])} (n = {row['n']})"


def _pick_sweep(summary: Sequence[dict], arch: str, method: str) -> Optional[dict]:
    """The summary row of ``method`` for architecture ``arch``: MNIST when recorded, else any data set."""
    rows = [r for r in summary if r["architecture"] == arch and r["method"] == method and r["n"] > 0]
    rows.sort(key=lambda r: (not _is_mnist(r["dataset"]), r["sweep"]))
    return rows[0] if rows else None


def compare_published(records: Sequence[dict], status: Optional[Sequence[dict]] = None,
                      level: float = 0.95) -> list[dict]:
    """The published-vs-reproduced rows: for each entry of :data:`PUBLISHED` (Table 2 of Scellier & Bengio
    once per architecture), the published setting and number, our comparable quantity (a level for
    Table 2, else a paired gap between two methods of the one-hidden-layer sweep) and a verdict computed
    from the numbers, with how much they differ and the likely reason. ``status`` (:func:`sweep_status`)
    gives the reason a sweep has no records."""
    summary = summarize(records, level)
    rows = []
    pub = PUBLISHED["sb2017"]
    for arch in pub["architectures"]:
        ours = _pick_sweep(summary, arch, pub["method"])
        row = {"key": f"sb2017:{arch}", "source": pub["source"], "cite": pub["cite"], "published_setting":
               f"{pub['dataset']}, {arch}", "published": pub["text"]}
        if ours is None:
            why = "; ".join(f"{s['sweep']}: " + (s["reason"] if s["state"] == "not run" else
                                                 f"no final {pub['method']} run recorded yet")
                            for s in (status or []) if s["architecture"] == arch) or "no records yet"
            rows.append({**row, "ours_setting": f"—, {arch}", "ours": why, "word": "not compared",
                         "verdict": f"nothing to compare: no final {pub['method']} run"})
            continue
        iv_test, iv_train = ours["test_interval"], ours["train_interval"]
        vt = level_verdict(ours["test_mean"], iv_test["half"] if iv_test else None, *pub["test"])
        vr = level_verdict(ours["train_mean"], iv_train["half"] if iv_train else None, *pub["train"])
        same = _is_mnist(ours["dataset"])
        word = "agrees" if vt["word"] == vr["word"] == "agrees" else "differs"
        parts = [f"test {vt['word']}" + (f" ({_pp(vt['by'])} from 2–3 %)" if vt["word"] == "differs" else ""),
                 f"train {vr['word']}" + (f" ({_pp(vr['by'])} from 0.00 %)" if vr["word"] == "differs" else "")]
        reason = ("" if word == "agrees" else
                  "; likely reason: the official code reports MNIST's validation split, ours the test split, "
                  "and the setting differs as listed above" if same else
                  f"; likely reason: a different data set ({ours['dataset']}, not MNIST): absolute errors are not "
                  "comparable, the gaps between methods below are")
        rows.append({**row, "ours_setting": f"{ours['dataset']}, {arch}", "ours": _ours_level(ours), "word": word,
                     "verdict": "; ".join(parts) + reason})
    one_hidden = sorted({r["sweep"] for r in records if r["stage"] == "final" and r["config"]["sizes"] == [784, 500, 10]},
                        key=lambda s: (not _is_mnist(s), s))
    sweep = one_hidden[0] if one_hidden else None
    for key in ("ernoult2019", "ernoult2019_st", "ernoult2020", "laborieux2021_sign", "laborieux2021_random", "laborieux2021_asym",
                "scellier2023"):
        p = PUBLISHED[key]
        row = {"key": key, "source": p["source"], "cite": p["cite"],
               "published_setting": f"{p['dataset']}, {p['architecture']}", "published": p["text"]}
        if p["a"] is None:
            rows.append({**row, "ours_setting": "—", "ours": "no such architecture here (symmetric weights: an "
                         "energy)", "word": "not compared", "verdict": "nothing comparable in this book"})
            continue
        g = paired_gap(records, sweep, p["a"], p["b"], level) if sweep else None
        v = gap_verdict(g, p["expect"], p["size"])
        ds = next((r["dataset"]["name"] for r in records if r["sweep"] == sweep), "—") if sweep else "—"
        rows.append({**row, "ours_setting": f"{ds}, 784-500-10", "ours": _gap_text(g), "word": v["word"],
                     "verdict": _gap_verdict_text(v, g, p)})
    return rows


def _gap_verdict_text(v: dict, g: Optional[dict], p: dict) -> str:
    """The explanation after the verdict word: by how much, and the likely reason."""
    word, sign = v["word"], v["sign"]
    if word == "no data":
        return "not run yet"
    if g is not None and g["half"] is None:
        return "one seed: the difference has no interval"
    where = p.get("why_differs") or f"their {p['dataset']} {p['architecture']} against our one-hidden-layer network"
    if word == "not compared":
        said = {1: f"{g['a']} is worse (resolved)", -1: f"{g['a']} is better (resolved)", 0: "no difference resolved"}
        return f"no published number to compare; here {said[sign]}"
    if p["expect"] == "zero":
        if word == "agrees":
            return (f"no difference resolved, to within ±{100 * g['half']:.2f} pp; an interval that straddles 0 bounds "
                    "the difference, it does not show equality")
        side = "worse" if sign > 0 else "better"
        return f"{g['a']} is {side} by {abs(100 * g['mean']):.2f} pp (the interval excludes 0); likely reason: {where}"
    published = f" (published {100 * p['size']:.1f} pp)" if p["size"] is not None else ""
    if word == "agrees":
        return f"{g['a']} is worse, by {100 * g['mean']:.2f} pp{published}"
    if word == "agrees in sign":
        return (f"{g['a']} is worse, by {100 * g['mean']:.2f} pp here{published}; likely reason: {where}, where the "
                "one-sided estimate's O(β) bias matters less")
    if word == "not resolved":
        return f"the interval straddles 0: the seeds do not resolve whether {g['a']} is worse here"
    side = "no cost of the fixed sign is resolved" if sign == 0 else f"{g['a']} is better"
    return f"{side} here{published}; likely reason: {where}"


# ---------------------------------------------------------------------------- figures
def _final_done(records: Sequence[dict], sweep: str) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["sweep"] == sweep and r["stage"] == "final" and r["status"] == "done":
            by[r["method"]].append(r)
    return {m: sorted(by[m], key=lambda r: r["seed"]) for m in _methods_sorted(list(by))}


def _band(values: np.ndarray, level: float = 0.95) -> Optional[np.ndarray]:
    """Half-width of the t-interval of the mean over axis 0 (None below two rows)."""
    n = values.shape[0]
    if n < 2:
        return None
    return t_quantile(level, n - 1) * values.std(0, ddof=1) / math.sqrt(n)


def learning_curves(records: Sequence[dict], sweep: str, level: float = 0.95) -> dict[str, dict]:
    """Per method of ``sweep`` (final stage, done runs): ``epochs``, the mean over seeds of the test and
    train error per epoch, the half-width of the ``level`` t-interval of the test error (None for one
    seed), ``n`` and ``seeds`` — what :func:`learning_curves_figure` plots."""
    out = {}
    for m, recs in _final_done(records, sweep).items():
        n_ep = min(len(r["history"]["epoch"]) for r in recs)
        test = np.array([r["history"]["test_error"][:n_ep] for r in recs])
        train = np.array([r["history"]["train_error"][:n_ep] for r in recs])
        band = _band(test, level)
        out[m] = {"epochs": list(range(1, n_ep + 1)), "test_mean": test.mean(0).tolist(),
                  "test_half": band.tolist() if band is not None else None,
                  "train_mean": train.mean(0).tolist(), "n": len(recs), "seeds": [r["seed"] for r in recs]}
    return out


def effective_lr(records: Sequence[dict], sweep: str) -> dict[str, dict]:
    """Per method of ``sweep`` (final stage, done runs): ``epochs`` and, per layer k, the geometric mean over
    seeds of ``‖W_k(end) − W_k(start)‖ / ‖W_k(start)‖`` per epoch (``ratio[k-1]``), and the rates used."""
    out = {}
    for m, recs in _final_done(records, sweep).items():
        n_ep = min(len(r["history"]["epoch"]) for r in recs)
        u = np.array([r["history"]["update_ratio"][:n_ep] for r in recs], dtype=float)  # seeds x epochs x layers
        with np.errstate(divide="ignore"):
            g = np.exp(np.log(u).mean(0))
        out[m] = {"epochs": list(range(1, n_ep + 1)), "ratio": g.T.tolist(), "lrs": recs[0]["config"]["lrs"],
                  "n": len(recs)}
    return out


def _style(methods: Sequence[str]) -> dict[str, dict]:
    names = list(METHODS)
    out = {}
    for j, m in enumerate(methods):
        i = names.index(m) if m in names else len(names) + j
        out[m] = {"color": f"C{i % 10}", "marker": _MARKERS[i % len(_MARKERS)]}
    return out


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


def learning_curves_figure(records: Sequence[dict], sweep: str, level: float = 0.95) -> Any:
    """Test error per epoch (solid, with markers; band: ``level`` t-interval over seeds) and train error
    (dashed), mean over seeds, one colour and marker per method; the legend gives each method's final
    test error with its interval and its final train error. Log y axis: the methods span several-fold."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator

    curves = learning_curves(records, sweep, level)
    fig, ax = plt.subplots(figsize=(8.6, 4.2))
    if not curves:
        _empty(ax, f"no final run of sweep {sweep} is recorded yet")
        return fig
    style = _style(list(curves))
    for m, c in curves.items():
        x, y, tr = np.array(c["epochs"]), 100 * np.array(c["test_mean"]), 100 * np.array(c["train_mean"])
        half = None if c["test_half"] is None else 100 * np.array(c["test_half"])
        fin = f"{y[-1]:.2f}" + (f" ± {half[-1]:.2f}" if half is not None else "")
        st = style[m]
        ax.plot(x, y, "-", color=st["color"], marker=st["marker"], ms=4, markevery=max(1, len(x) // 8),
                label=f"{m}: {fin} % test, {tr[-1]:.2f} % train (n = {c['n']})")
        ax.plot(x, tr, "--", color=st["color"], lw=1.0, alpha=0.8)
        if half is not None:
            ax.fill_between(x, y - half, y + half, color=st["color"], alpha=0.1, lw=0)
    ax.set_yscale("log")
    # the y range follows the mean curves; a band wider than that (few seeds) is cut at the frame
    means = [v for c in curves.values() for v in (*c["test_mean"], *c["train_mean"]) if v > 0]
    if means:
        ax.set_ylim(100 * min(means) / 1.25, min(100.0, 100 * max(means) * 1.25))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 5.0)))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="minor", labelsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    n_ep = max(len(c["epochs"]) for c in curves.values())
    ax.set_xlim(0.8, n_ep + 0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error % (log scale)")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="k", ls="-", label=f"test (band: {100 * level:g} % t-interval over seeds)"),
                Line2D([], [], color="k", ls="--", lw=1.0, label="train (during the epoch)")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def effective_lr_figure(records: Sequence[dict], sweep: str) -> Any:
    """One panel per layer k: ``‖W_k(end) − W_k(start)‖ / ‖W_k(start)‖`` per epoch (geometric mean over seeds,
    log y), one colour and marker per method; the panels share the y axis so the layers compare."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    eff = effective_lr(records, sweep)
    if not eff:
        fig, ax = plt.subplots(figsize=(8.6, 3.4))
        _empty(ax, f"no final run of sweep {sweep} is recorded yet")
        return fig
    n_layers = len(next(iter(eff.values()))["ratio"])
    sizes = next(r["config"]["sizes"] for r in records if r["sweep"] == sweep)
    fig, axes = plt.subplots(1, n_layers, figsize=(8.6, 3.4), sharey=True, squeeze=False)
    style = _style(list(eff))
    for k, ax in enumerate(axes[0]):
        for m, e in eff.items():
            st = style[m]
            ax.plot(e["epochs"], e["ratio"][k], "-", color=st["color"], marker=st["marker"], ms=3,
                    markevery=max(1, len(e["epochs"]) // 8), label=m)
        ax.set_yscale("log")
        ax.set_title(f"layer {k + 1}: W_{k + 1}, {sizes[k]} × {sizes[k + 1]}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("‖ΔW_k‖ / ‖W_k‖ per epoch")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# ---------------------------------------------------------------------------- Markdown tables
def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _rates(lrs: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in lrs) + ")"


def status_markdown(status: Sequence[dict]) -> str:
    """The sweeps, what is recorded of each and why one was not run."""
    if not status:
        return "No sweep is defined (`sweeps:` in `params/paper.yaml`) and none is recorded."
    L = ["| sweep | architecture | data set | state | search runs | final runs | of | note |", "|---|---|---|---|---|---|---|---|"]
    for s in status:
        note = s["reason"] or ""
        if s["epoch_seconds_measured"] is not None:
            dev = s["device"] if isinstance(s["device"], str) else (s["device"] or {}).get("name", "")
            note += f" (one epoch measured at {s['epoch_seconds_measured']:.0f} s" + (f" on {dev})" if dev else ")")
        L.append(f"| `{s['sweep']}` | {s['architecture'].replace('-', _NB)} | {_cell(s['dataset'])} | {s['state']} | "
                 f"{s['search_runs']} | {s['final_runs']} | {s['expected_runs'] if s['expected_runs'] else '?'} | "
                 f"{_cell(note)} |")
    return "\n".join(L)


def final_table_markdown(summary: Sequence[dict], selection: Optional[dict] = None) -> str:
    """The final-stage tables, one per architecture and data set (its epochs and devices in a line above it):
    per method the test and train error (mean ± std over seeds, and the 95 % t-interval's half-width when
    there are two seeds or more), seeds, wall time per run, the scale and rates used and the search budget
    that chose them."""
    if not summary:
        return "No final run is recorded yet."

    def ms(mean: Optional[float], std: Optional[float]) -> str:
        return "—" if mean is None else f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")

    groups: dict = defaultdict(list)
    for r in summary:
        groups[(r["architecture"], r["dataset"])].append(r)
    L: list[str] = []
    for (arch, dataset), rows in groups.items():
        epochs = sorted({e for r in rows for e in r["epochs"]})
        devices = sorted({d for r in rows for d in r["devices"]})
        L += [f"**{arch.replace('-', _NB)} on {_cell(dataset)}**: {'/'.join(map(str, epochs))} epochs; "
              f"{_cell('; '.join(devices))}.", "",
              "| method | seeds | test error % | ± 95 % | train error % | wall time per run | scale (rates) | "
              "search budget |", "|" + "---|" * 8]
        for r in rows:
            half = f"{100 * r['test_interval']['half']:.2f}" if r["test_interval"] else "—"
            sel = (selection or {}).get((r["sweep"], r["method"]))
            budget = (f"{sel['budget']['candidates']} scales × "
                      f"{'/'.join(map(str, sel['budget']['epochs_per_run']))} epochs" if sel else "no search")
            scale = ", ".join(f"×{s:g}" for s in r["lr_scales"]) + " " + ", ".join(_rates(v) for v in r["lrs"])
            if r["paper_rates"]:
                scale += " (paper)"
            seeds = f"{r['n']}" + (f" (+{r['n_diverged']} diverged)" if r["n_diverged"] else "")
            wall = "—" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f} min"
            L.append(f"| {r['method']} | {seeds} | {ms(r['test_mean'], r['test_std'])} | {half} | "
                     f"{ms(r['train_mean'], r['train_std'])} | {wall} | {scale} | {budget} |")
        L.append("")
    return "\n".join(L) + "\nErrors: mean ± standard deviation over seeds, last epoch; ± 95 %: half-width of the " \
                          "Student-t interval of the mean."


def search_table_markdown(selection: dict, status: Optional[Sequence[dict]] = None) -> str:
    """Every candidate of the learning-rate search, per (sweep, method): validation error per scale (the
    chosen one in bold, the paper's rates marked), the budget and the choice. With ``status``
    (:func:`sweep_status`), a search that has not tried every scale of its spec is marked incomplete."""
    if not selection:
        return "No search run is recorded yet."
    spec_scales = {s["sweep"]: s.get("scales") or [] for s in status or []}
    scales = sorted({c["lr_scale"] for s in selection.values() for c in s["candidates"]} |
                    {x for s in selection.values() for x in spec_scales.get(s["sweep"], [])})
    head = " | ".join(f"×{s:g}" + (" (paper)" if s == 1.0 else "") for s in scales)
    L = [f"| sweep | method | {head} | budget | chosen |", "|" + "---|" * (len(scales) + 4)]
    for s in selection.values():
        by = {c["lr_scale"]: c for c in s["candidates"]}
        cells = []
        for x in scales:
            c = by.get(x)
            if c is None:
                cells.append("—")
                continue
            v = f"{100 * c['val_error']:.2f}" + (" (diverged)" if "diverged" in c["status"] else "")
            cells.append(f"**{v}**" if x == s["lr_scale"] else v)
        b = s["budget"]
        chosen = f"×{s['lr_scale']:g} {_rates(s['lrs'])}" + (" (edge of the grid)" if s["on_edge"] else "")
        want = spec_scales.get(s["sweep"], [])
        missing = [x for x in want if x not in by]
        if missing:
            chosen += f" (search incomplete: {len(want) - len(missing)} of {len(want)} scales)"
        L.append(f"| `{s['sweep']}` | {s['method']} | " + " | ".join(cells) +
                 f" | {b['runs']} runs, {b['epochs']} epochs | {chosen} |")
    return "\n".join(L) + "\n\nValidation error % after the search's epochs (a diverged run counts 100 %); bold: " \
                          "the lowest, which the final runs use (ties go to the scale nearest the paper's)."


def published_table_markdown(rows: Sequence[dict]) -> str:
    """The published-vs-reproduced table: source, published setting and number, ours, verdict."""
    L = ["| source | published: data set, architecture | published | ours: data set, architecture | ours | verdict |",
         "|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {_cell(r['source'])} | {_cell(r['published_setting'])} | {_cell(r['published'])} | "
                 f"{_cell(r['ours_setting'])} | {_cell(r['ours'])} | **{r['word']}**: {_cell(r['verdict'])} |")
    return "\n".join(L)
