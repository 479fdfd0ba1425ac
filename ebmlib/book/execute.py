"""Chapter discovery, parameters and papermill execution: one execution, one truth.

``execute`` converts each MyST chapter listed in ``_toc.yml`` with jupytext,
executes it with papermill under a profile (``params/<profile>.yaml`` plus
``-p name value`` overrides) and writes the executed notebook to
``<build>/executed/``; the site is built from those (:mod:`ebmlib.book.site`).
"""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import yaml

from ..io import atomic_write_json
from .provenance import find_root

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
) -> dict[str, float]:
    """Execute chapters (all by default) with papermill; returns wall seconds per chapter.

    Executed notebooks go to ``<build_dir>/executed/chapters/<name>.ipynb``,
    figures and sidecars to ``<build_dir>/figures/<name>/``, timings to
    ``<build_dir>/executed/timings.json``. Raises on the first failing chapter.
    """
    import papermill

    r = _root(root)
    build = resolve_build_dir(build_dir, r)
    overrides = dict(overrides or {})
    todo = chapters(r) if not names or names == ["all"] else [_resolve_chapter(n, r) for n in names]
    profile_parameters(profile, todo[0] if todo else "", r)  # an unknown profile fails before any work
    if overrides and len(todo) > 1:
        log(f"note: -p overrides apply to every chapter that declares them: {sorted(overrides)}")
    timings_path = build / "executed" / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    out: dict[str, float] = {}
    for chapter in todo:
        src = r / f"{chapter}.md"
        declared = chapter_parameters(src)
        ov = {k: v for k, v in overrides.items() if k in declared} if len(todo) > 1 else overrides
        params = _merge_parameters(chapter, declared, profile, ov, build, r)
        dest = build / "executed" / f"{chapter}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        log(f"executing {chapter} (profile {profile}) ...")
        t0 = time.perf_counter()
        nb = _read(src)
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
            wall = time.perf_counter() - t0
            _tidy_metadata(dest, src.relative_to(r))
            timings[chapter_name(chapter)] = {"profile": profile, "wall_s": round(wall, 2), "params": params}
            atomic_write_json(timings_path, timings)
        out[chapter_name(chapter)] = wall
        log(f"  done in {wall:.1f} s -> {dest.relative_to(build.parent) if build.parent in dest.parents else dest}")
    return out


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

