"""One execution, one truth: execute the chapters with papermill, build the site.

``execute`` converts each MyST chapter listed in ``_toc.yml`` with jupytext,
executes it with papermill under a profile (``params/<profile>.yaml`` plus
``-p name value`` overrides) and writes the executed notebook to
``<build>/executed/``. ``build`` stages the book with the executed notebooks in
place of the MyST sources and runs Jupyter Book on it with execution off, so
the site shows exactly what papermill produced.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from .figures import find_root
from .io import atomic_write_json

__all__ = [
    "toc_files",
    "chapters",
    "chapter_parameters",
    "profile_parameters",
    "execute",
    "build",
    "vendor_mathjax",
]

MATHJAX_VERSION = "3.2.2"
ALWAYS = ("profile", "build_dir")


def _root(root: Optional[Path]) -> Path:
    return Path(root) if root else find_root()


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
    """The executable chapters (MyST notebooks) in reading order, as ``chapters/<name>``."""
    r = _root(root)
    return [f for f in toc_files(r) if _is_notebook(r / f"{f}.md")]


def chapter_name(chapter: str) -> str:
    return Path(chapter).name


def _resolve_chapter(name: str, root: Path) -> str:
    for c in chapters(root):
        if name in (c, chapter_name(c), f"{c}.md") or chapter_name(c).split("-", 1)[0] == name:
            return c
    raise ValueError(f"chapter: unknown chapter {name!r}; choose from {[chapter_name(c) for c in chapters(root)]}")


def _read(path: Path):
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
    params["build_dir"] = str(build_dir)
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
    log=print,
) -> dict[str, float]:
    """Execute chapters (all by default) with papermill; returns wall seconds per chapter.

    Executed notebooks go to ``<build_dir>/executed/chapters/<name>.ipynb``,
    figures and sidecars to ``<build_dir>/figures/<name>/``, timings to
    ``<build_dir>/executed/timings.json``. Raises on the first failing chapter.
    """
    import papermill

    r = _root(root)
    build = Path(build_dir).resolve() if build_dir else r / "_build"
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
            timings[chapter_name(chapter)] = {"profile": profile, "wall_s": round(wall, 2), "params": params}
            atomic_write_json(timings_path, timings)
        out[chapter_name(chapter)] = wall
        log(f"  done in {wall:.1f} s -> {dest.relative_to(build.parent) if build.parent in dest.parents else dest}")
    return out


def vendor_mathjax(build_dir: Path) -> Path:
    """MathJax 3 served by the site itself: fetched once with ``npm pack``, kept in ``_build/vendor``."""
    dest = Path(build_dir) / "vendor" / "mathjax"
    if (dest / "tex-chtml.js").exists():
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to fetch MathJax (the site serves it itself, math renders offline)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        with tarfile.open(Path(tmp) / f"mathjax-{MATHJAX_VERSION}.tgz") as tar:
            tar.extractall(tmp, filter="data")
        es5 = Path(tmp) / "package" / "es5"
        stage = dest.with_name("mathjax.tmp")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        shutil.copy(es5 / "tex-chtml.js", stage / "tex-chtml.js")
        for sub in ("input", "output", "ui", "a11y", "adaptors", "sre"):
            if (es5 / sub).exists():
                shutil.copytree(es5 / sub, stage / sub)
        shutil.rmtree(dest, ignore_errors=True)
        stage.rename(dest)
    return dest


def _stage(root: Path, build: Path, stage: Path, config_overrides: dict[str, Any]) -> None:
    """Copy the book into ``stage`` with executed notebooks in place of MyST chapters."""
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    notebooks = set(chapters(root))
    shutil.copytree(root / "chapters", stage / "chapters",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
    for f in toc_files(root):
        if f in notebooks:
            executed = build / "executed" / f"{f}.ipynb"
            if not executed.exists():
                raise FileNotFoundError(f"{executed} is missing: execute the chapter first (python -m ebmlib run)")
            (stage / f"{f}.md").unlink()
            shutil.copy(executed, stage / f"{f}.ipynb")
    shutil.copy(root / "_toc.yml", stage / "_toc.yml")
    config = yaml.safe_load((root / "_config.yml").read_text())
    for key, value in config_overrides.items():
        node = config
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    mj = vendor_mathjax(build)
    shutil.copytree(mj, stage / "_vendor" / "mathjax")


def build(
    *,
    build_dir: Optional[Path] = None,
    root: Optional[Path] = None,
    edition: str = "full",
    builder: str = "html",
    log=print,
) -> Path:
    """Build the website from the executed notebooks (no second execution); returns the html folder.

    ``edition="student"`` hides every exercise solution (``make student``).
    """
    r = _root(root)
    build = Path(build_dir).resolve() if build_dir else r / "_build"
    if edition not in ("full", "student"):
        raise ValueError(f"edition: expected 'full' or 'student', got {edition!r}")
    overrides: dict[str, Any] = {}
    name = "site" if edition == "full" else "student"
    if edition == "student":
        overrides["sphinx.config.hide_solutions"] = True
    stage = build / "src" / name
    _stage(r, build, stage, overrides)
    out = build / ("html" if edition == "full" else "student") if builder == "html" else build / builder
    work = build / "sphinx" / f"{name}-{builder}"
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(stage), "--path-output", str(work),
           "--builder", builder, "--warningiserror", "--nitpick", "--keep-going", "--quiet"]
    log(f"building the {edition} site ({builder}) ...")
    t0 = time.perf_counter()
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    proc = subprocess.run(cmd, cwd=r, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-20000:] + proc.stderr[-20000:])
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); see the messages above")
    produced = work / "_build" / builder
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(produced, out)
    log(f"  built in {time.perf_counter() - t0:.1f} s")
    return out
