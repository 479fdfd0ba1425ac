"""Chapter discovery, parameters and papermill execution: one execution, one truth.

``execute`` converts each MyST chapter listed in ``_toc.yml`` with jupytext,
executes it with papermill under a profile (``params/<profile>.yaml`` plus
``-p name value`` overrides) and writes the executed notebook to
``<build>/executed/``; the site is built from those (:mod:`ebmlib.book.site`).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import yaml

from ..io import atomic_write_json
from . import cache
from .provenance import find_root, git_commit

__all__ = [
    "ALWAYS",
    "GENERATED",
    "toc_files",
    "chapters",
    "chapter_name",
    "chapter_parameters",
    "profile_parameters",
    "execute",
    "execute_missing",
    "resolve_build_dir",
    "fold_parameters",
    "merge_streams",
    "postprocess",
    "build_status",
]

ALWAYS = ("profile", "build_dir")
# Pages listed in _toc.yml whose source is written into the staged book at build time (never in git).
GENERATED = ("chapters/reproduce",)

Log = Callable[[str], object]


def _root(root: Optional[Path]) -> Path:
    return Path(root) if root else find_root()


def resolve_build_dir(build_dir: Optional[Path], root: Path) -> Path:
    """The build folder: ``build_dir`` made absolute, or ``<root>/_build``."""
    return Path(build_dir).resolve() if build_dir else Path(root) / "_build"


def toc_files(root: Optional[Path] = None) -> list[str]:
    """Every file named in ``_toc.yml`` (root first), without extension."""
    toc = yaml.safe_load((_root(root) / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return out


def _is_notebook(path: Path) -> bool:
    head = path.read_text().split("\n---", 1)[0]
    return path.suffix == ".md" and "kernelspec:" in head


def chapters(root: Optional[Path] = None) -> list[str]:
    """The executable chapters (MyST notebooks) in reading order, as ``chapters/<name>``.

    Generated pages (``GENERATED``, e.g. the reproduce page) are skipped; any other toc entry
    without a source file is an error that names it.
    """
    r = _root(root)
    out = []
    for f in toc_files(r):
        if f in GENERATED:
            continue
        src = r / f"{f}.md"
        if not src.exists():
            raise FileNotFoundError(f"_toc.yml: {f!r} has no source {src.relative_to(r)} (and is not a generated page)")
        if _is_notebook(src):
            out.append(f)
    return out


def chapter_name(chapter: str) -> str:
    return Path(chapter).name


def _resolve_chapter(name: str, root: Path) -> str:
    for c in chapters(root):
        if name in (c, chapter_name(c), f"{c}.md") or chapter_name(c).split("-", 1)[0] == name:
            return c
    raise ValueError(f"chapter: unknown chapter {name!r}; choose from {[chapter_name(c) for c in chapters(root)]}")


def _read(path: Path) -> Any:
    import jupytext

    return jupytext.read(path)


def chapter_parameters(path: Path) -> dict[str, Any]:
    """The names and default values of the chapter's cell tagged ``parameters``."""
    nb = _read(path)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            out: dict[str, Any] = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[node.targets[0].id] = ast.unparse(node.value)
            return out
    raise ValueError(f"chapter: {path} has no code cell tagged 'parameters'")


def profile_parameters(profile: str, chapter: str, root: Optional[Path] = None) -> dict[str, Any]:
    """``all`` then ``chapters.<name>`` of ``params/<profile>.yaml``."""
    r = _root(root)
    path = r / "params" / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (r / "params").glob("*.yaml"))
        raise ValueError(f"profile: unknown profile {profile!r}; choose one of {known}")
    doc = yaml.safe_load(path.read_text()) or {}
    out = dict(doc.get("all") or {})
    out.update((doc.get("chapters") or {}).get(chapter_name(chapter)) or {})
    return out


def _merge_parameters(chapter: str, declared: dict[str, Any], profile: str, overrides: dict[str, Any],
                      build_dir: Path, root: Path) -> dict[str, Any]:
    prof_all = yaml.safe_load((root / "params" / f"{profile}.yaml").read_text()) or {}
    specific = (prof_all.get("chapters") or {}).get(chapter_name(chapter)) or {}
    for name in specific:
        if name not in declared:
            raise ValueError(f"params/{profile}.yaml: {chapter_name(chapter)} has no parameter {name!r}")
    for name in overrides:
        if name not in declared:
            raise ValueError(f"-p {name}: {chapter_name(chapter)} has no parameter {name!r}; it has {sorted(declared)}")
    params = {k: v for k, v in (prof_all.get("all") or {}).items() if k in declared}
    params.update(specific)
    params.update(overrides)
    params["profile"] = profile
    # relative to the book root when inside it (Run resolves it there): no machine path on the pages
    inside = build_dir.resolve() == root.resolve() or root.resolve() in build_dir.resolve().parents
    params["build_dir"] = str(build_dir.resolve().relative_to(root.resolve())) if inside else str(build_dir)
    for name in ALWAYS:
        if name not in declared:
            raise ValueError(f"chapter: {chapter} must declare {name!r} in its parameters cell")
    return params


def execute(
    names: Optional[list[str]] = None,
    *,
    profile: str = "book",
    overrides: Optional[dict[str, Any]] = None,
    build_dir: Optional[Path] = None,
    root: Optional[Path] = None,
    log: Log = print,
    reuse: bool = False,
) -> dict[str, float]:
    """Execute chapters (all by default) with papermill; returns wall seconds per chapter executed.

    Executed notebooks go to ``<build_dir>/executed/chapters/<name>.ipynb`` (post-processed: one
    parameters cell, merged streams; :func:`postprocess`), their input hashes beside them
    (``<name>.inputs.json``, :mod:`ebmlib.book.cache`), figures and sidecars to
    ``<build_dir>/figures/<name>/``, timings to ``<build_dir>/executed/timings.json`` and what this
    call executed or reused to ``<build_dir>/executed/build.json``. With ``reuse`` a chapter whose
    inputs did not change since it was executed into this build folder is not executed again.
    Raises on the first failing chapter.
    """
    import papermill

    from .run import READS_ENV

    if not isinstance(reuse, bool):
        raise TypeError(f"reuse: expected a bool, got {type(reuse).__name__}")
    r = _root(root)
    build = resolve_build_dir(build_dir, r)
    overrides = dict(overrides or {})
    todo = chapters(r) if not names or names == ["all"] else [_resolve_chapter(n, r) for n in names]
    profile_parameters(profile, todo[0] if todo else "", r)  # an unknown profile fails before any work
    if overrides and len(todo) > 1:
        log(f"note: -p overrides apply to every chapter that declares them: {sorted(overrides)}")
    timings_path = build / "executed" / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    status_path = build / "executed" / "build.json"
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    session = datetime.now(timezone.utc).isoformat(timespec="seconds")
    status.update(session=session, profile=profile, commit=git_commit(r))
    status.setdefault("chapters", {})
    out: dict[str, float] = {}
    pipeline = "".join(inspect.getsource(f) for f in (postprocess, fold_parameters, _wrap_items, merge_streams,
                                                       _carriage))
    for chapter in todo:
        name = chapter_name(chapter)
        src = r / f"{chapter}.md"
        declared = chapter_parameters(src)
        ov = {k: v for k, v in overrides.items() if k in declared} if len(todo) > 1 else overrides
        params = _merge_parameters(chapter, declared, profile, ov, build, r)
        dest = build / "executed" / f"{chapter}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        nb = _read(src)
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        inputs = cache.chapter_inputs(code, params, r, pipeline=pipeline)
        rec_path = cache.record_path(dest)
        reason = "run explicitly"
        if reuse:
            record = json.loads(rec_path.read_text()) if rec_path.exists() and dest.exists() else None
            reason = cache.stale_reason(record, inputs, root=r, build=build)
            if reason is None:
                log(f"reusing {chapter}: its inputs have not changed since {record.get('executed_at')} "
                    f"(commit {str(record.get('commit'))[:12]})")
                status["chapters"][name] = {"status": "reused", "session": session, "commit": record.get("commit"),
                                            "executed_at": record.get("executed_at")}
                atomic_write_json(status_path, status)
                continue
        log(f"executing {chapter} (profile {profile}; {reason}) ...")
        rec_path.unlink(missing_ok=True)  # a failed run leaves no record: the next build runs it again
        reads = cache.reads_path(build, chapter)
        reads.unlink(missing_ok=True)
        t0 = time.perf_counter()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        commit = git_commit(r)
        old_env = os.environ.get(READS_ENV)
        os.environ[READS_ENV] = str(reads)
        try:
            papermill.execute_notebook(
                nb,
                str(dest),
                parameters=params,
                kernel_name="python3",
                cwd=str(src.parent),
                progress_bar=False,
                request_save_on_cell_execute=False,
            )
        finally:
            if old_env is None:
                os.environ.pop(READS_ENV, None)
            else:
                os.environ[READS_ENV] = old_env
            wall = time.perf_counter() - t0
            _tidy_metadata(dest, src.relative_to(r))
            timings[name] = {"profile": profile, "wall_s": round(wall, 2), "params": params}
            atomic_write_json(timings_path, timings)
        postprocess(dest, profile=profile, overrides=ov)
        fig_dir = build / "figures" / name
        outputs = sorted(str(p.relative_to(build)) for p in fig_dir.glob("*") if p.is_file()) if fig_dir.is_dir() else []
        atomic_write_json(rec_path, {
            "chapter": name, "key": cache.input_key(inputs), "inputs": inputs,
            "reads": cache.hash_reads(reads, root=r, build=build, exclude=[fig_dir]),
            "outputs": outputs, "profile": profile, "overrides": ov, "commit": commit,
            "executed_at": started, "wall_s": round(wall, 2),
        })
        status["chapters"][name] = {"status": "executed", "session": session, "commit": commit,
                                    "executed_at": started, "reason": reason}
        atomic_write_json(status_path, status)
        out[name] = wall
        log(f"  done in {wall:.1f} s -> {dest.relative_to(build.parent) if build.parent in dest.parents else dest}")
    return out


def build_status(build_dir: Path) -> dict[str, Any]:
    """What the last ``execute`` call into ``build_dir`` did: ``session``, ``commit`` and, per chapter,
    ``status`` (``executed`` or ``reused``), ``session``, ``commit`` and ``executed_at``; ``{}`` if none."""
    path = Path(build_dir) / "executed" / "build.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _text(src: Any) -> str:
    return src if isinstance(src, str) else "".join(src)


def fold_parameters(nb: dict[str, Any], *, profile: str, overrides: Optional[dict[str, Any]] = None,
                    width: int = 100) -> bool:
    """Fold papermill's ``injected-parameters`` cell into the ``parameters`` cell, in place.

    Each assignment of the ``parameters`` cell gets the value actually used (its comment is kept,
    moved above it when the line would pass ``width`` characters), names only injected are appended,
    a first comment names the profile and the ``-p`` overrides, and the injected cell is dropped.
    Returns whether anything was folded.
    """
    if not isinstance(nb, dict) or "cells" not in nb:
        raise TypeError("nb: expected a notebook dict with 'cells'")
    cells = nb["cells"]
    inj = next((i for i, c in enumerate(cells) if "injected-parameters" in _tags(c)), None)
    par = next((i for i, c in enumerate(cells) if "parameters" in _tags(c)), None)
    if inj is None or par is None:
        return False
    injected = _text(cells[inj]["source"])
    values: dict[str, str] = {}
    items: dict[str, list[str]] = {}  # the elements of a list or tuple value, to wrap a long one
    for node in ast.parse(injected).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.get_source_segment(injected, node.value) or ""
            if isinstance(node.value, (ast.List, ast.Tuple)):
                items[node.targets[0].id] = [ast.get_source_segment(injected, e) or "" for e in node.value.elts]
    source = _text(cells[par]["source"])
    lines = source.split("\n")
    done: set[str] = set()
    nodes = [n for n in ast.parse(source).body
             if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
             and n.targets[0].id in values]
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset), reverse=True):  # right to left
        name = node.targets[0].id
        done.add(name)
        v = node.value
        head = lines[v.lineno - 1][: v.col_offset]
        tail = lines[v.end_lineno - 1][v.end_col_offset:]
        value = values[name]
        if len(head + value) > width and name in items:  # a long list: wrapped, items aligned after "["
            value = _wrap_items(items[name], values[name][0], values[name][-1], len(head), width)
        new = head + value + tail
        comment = tail.strip()
        if max(map(len, new.split("\n"))) > width and comment.startswith("#"):
            indent = head[: len(head) - len(head.lstrip())]
            new = f"{indent}{comment}\n{head}{value}"
        lines[v.lineno - 1: v.end_lineno] = new.split("\n")
    extra = [f"{k} = {values[k]}" for k in values if k not in done]
    note = f'# Values used in this run: profile "{profile}" (params/{profile}.yaml)'
    if overrides:
        note += ", overridden with -p: " + ", ".join(sorted(overrides))
    cells[par]["source"] = "\n".join([note, *lines, *extra]).rstrip("\n")
    del cells[inj]
    return True


def _wrap_items(items: list[str], open_: str, close: str, start: int, width: int) -> str:
    """``[a, b, …]`` over several lines of at most ``width`` characters, continuation lines aligned after ``[``."""
    lines, cur = [], open_
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else close)
        if cur.strip(" [(") and start + len(cur) + 1 + len(piece) > width:
            lines.append(cur.rstrip())
            cur = " " * (start + 1)
        cur += ("" if cur.endswith((open_, " ")) else " ") + piece
    lines.append(cur)
    return "\n".join(lines)


def _carriage(text: str) -> str:
    """Text as a terminal would leave it: of each line, what follows its last carriage return."""
    out = []
    for line in text.split("\n"):
        if "\r" in line:
            kept = line.rstrip("\r").rsplit("\r", 1)[-1]
            line = kept if kept.strip() else None  # a progress bar cleared with spaces: nothing stays
        out.append(line)
    # a dropped line takes its newline with it; a kept one keeps it
    return "".join(line + "\n" for line in out[:-1] if line is not None) + (out[-1] or "")


def merge_streams(nb: dict[str, Any]) -> int:
    """Merge consecutive outputs of the same stream of each code cell into one, in place, and resolve
    carriage returns (progress bars); returns how many outputs were removed."""
    if not isinstance(nb, dict) or "cells" not in nb:
        raise TypeError("nb: expected a notebook dict with 'cells'")
    removed = 0
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        merged: list[dict[str, Any]] = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream" \
                    and merged[-1].get("name") == o.get("name"):
                merged[-1]["text"] = _text(merged[-1]["text"]) + _text(o["text"])
                removed += 1
            else:
                merged.append(o)
        kept = []
        for o in merged:
            if o.get("output_type") == "stream":
                o["text"] = _carriage(_text(o["text"]))
                if not o["text"]:
                    removed += 1
                    continue
            kept.append(o)
        cell["outputs"] = kept
    return removed


def postprocess(path: Path, *, profile: str, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Make an executed notebook read well, in place: one trusted parameters cell, merged streams."""
    path = Path(path)
    nb = json.loads(path.read_text())
    folded = fold_parameters(nb, profile=profile, overrides=overrides)
    removed = merge_streams(nb)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return {"folded": folded, "outputs_merged": removed}


def _tidy_metadata(nb_path: Path, source: Path) -> None:
    """papermill records its input, here the whole notebook object, as ``input_path``: keep the path only."""
    if not nb_path.exists():
        return
    nb = json.loads(nb_path.read_text())
    pm = nb.get("metadata", {}).get("papermill", {})
    if not isinstance(pm.get("input_path"), (str, type(None))):
        pm["input_path"] = str(source)
        nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def execute_missing(*, profile: str = "book", build_dir: Optional[Path] = None, root: Optional[Path] = None,
                    log: Log = print) -> dict[str, float]:
    """Execute only the chapters that have no executed notebook yet (``make student``, ``make pdf``)."""
    r = _root(root)
    build = resolve_build_dir(build_dir, r)
    todo = [chapter_name(c) for c in chapters(r) if not (build / "executed" / f"{c}.ipynb").exists()]
    return execute(todo, profile=profile, build_dir=build, root=r, log=log) if todo else {}

