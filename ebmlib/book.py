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
import re
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
    "execute_missing",
    "strip_solutions",
    "pdf",
    "GENERATED",
]

MATHJAX_VERSION = "3.2.2"
ALWAYS = ("profile", "build_dir")
# Pages listed in _toc.yml whose source is written into the staged book at build time (never in git).
GENERATED = ("chapters/reproduce",)


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
                    log=print) -> dict[str, float]:
    """Execute only the chapters that have no executed notebook yet (``make student``, ``make pdf``)."""
    r = _root(root)
    build = Path(build_dir).resolve() if build_dir else r / "_build"
    todo = [chapter_name(c) for c in chapters(r) if not (build / "executed" / f"{c}.ipynb").exists()]
    return execute(todo, profile=profile, build_dir=build, root=r, log=log) if todo else {}


def vendor_mathjax(build_dir: Path) -> Path:
    """MathJax 3 served by the site itself: fetched once with ``npm pack``, kept in ``_build/vendor``."""
    dest = Path(build_dir) / "vendor" / "mathjax"
    if (dest / "tex-chtml.js").exists():
        return dest
    local = os.environ.get("EBMLIB_MATHJAX_DIR")  # an unpacked MathJax 3 ``es5`` folder, for machines without npm
    if local:
        if not (Path(local) / "tex-chtml.js").exists():
            raise FileNotFoundError(f"EBMLIB_MATHJAX_DIR: {local} has no tex-chtml.js (point it at MathJax 3's es5 folder)")
        shutil.copytree(local, dest)
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to fetch MathJax (the site serves it itself, math renders offline)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent", "--prefer-offline"], cwd=tmp, check=True,
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


_FENCE = r"(?P<f>`{3,}|:{3,})"
_SOL_START = re.compile(_FENCE + r"\{solution-start\}[^\n]*\n(?:.*?\n)??(?P=f)[ \t]*(?:\n|$)", re.S)
_SOL_END = re.compile(_FENCE + r"\{solution-end\}[^\n]*\n(?:.*?\n)??(?P=f)[ \t]*(?:\n|$)", re.S)


def _strip_text(text: str, inside: bool) -> tuple[str, bool]:
    """Remove the gated-solution spans of one Markdown text; ``inside`` carries across cells."""
    kept, pos = [], 0
    while pos <= len(text):
        if not inside:
            m = _SOL_START.search(text, pos)
            if m is None:
                kept.append(text[pos:])
                break
            kept.append(text[pos:m.start()])
            inside, pos = True, m.end()
        else:
            m = _SOL_END.search(text, pos)
            if m is None:
                break
            inside, pos = False, m.end()
    return "".join(kept), inside


def strip_solutions(nb: dict[str, Any]) -> int:
    """Remove every gated solution (``solution-start`` … ``solution-end``, code cells included) in place.

    Returns the number of code cells removed. Used for the student edition, where Sphinx's
    ``hide_solutions`` alone would drop the solution directives but keep the code cells between them.
    """
    cells, removed, inside = [], 0, False
    for cell in nb["cells"]:
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            text, inside = _strip_text(src, inside)
            if text.strip():
                cell["source"] = text
                cells.append(cell)
        elif inside:
            removed += cell["cell_type"] == "code"
        else:
            cells.append(cell)
    if inside:
        raise ValueError("notebook: a solution-start has no matching solution-end")
    nb["cells"] = cells
    pm = nb.get("metadata", {}).get("papermill", {})
    if not isinstance(pm.get("input_path"), (str, type(None))):
        pm["input_path"] = None  # papermill's copy of the input notebook holds the solutions
    return removed


_SINGLEHTML_EXT = '''"""Let the singlehtml builder use the node handlers that extensions registered for html only."""


def _merge(app):
    if app.builder.name == "singlehtml":
        reg = app.registry.translation_handlers
        merged = dict(reg.get("html", {}))
        merged.update(reg.get("singlehtml", {}))
        reg["singlehtml"] = merged


def setup(app):
    app.connect("builder-inited", _merge)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
'''


def _stage(root: Path, build: Path, stage: Path, config_overrides: dict[str, Any], student: bool = False,
           single: bool = False) -> None:
    """Copy the book into ``stage`` with executed notebooks in place of MyST chapters.

    Generated pages (the reproduce page) are written from the sidecars; the student edition
    loses every gated solution, code cells included.
    """
    from . import reproduce

    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    notebooks = set(chapters(root))
    shutil.copytree(root / "chapters", stage / "chapters",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
    for f in toc_files(root):
        if f in GENERATED:
            if f == reproduce.PAGE:
                reproduce.write_page(build, root, stage)
            continue
        if f in notebooks:
            executed = build / "executed" / f"{f}.ipynb"
            if not executed.exists():
                raise FileNotFoundError(f"{executed} is missing: execute the chapter first (python -m ebmlib run)")
            (stage / f"{f}.md").unlink()
            if student:
                nb = json.loads(executed.read_text())
                strip_solutions(nb)
                (stage / f"{f}.ipynb").write_text(json.dumps(nb, indent=1))
            else:
                shutil.copy(executed, stage / f"{f}.ipynb")
        elif student:
            page = stage / f"{f}.md"
            text, inside = _strip_text(page.read_text(), False)
            if inside:
                raise ValueError(f"{f}.md: a solution-start has no matching solution-end")
            page.write_text(text)
    if single:
        # One page holds the whole book: the root's {tableofcontents} would inline it a second time
        # (and sphinx-jupyterbook-latex's toctree node has no singlehtml visitor).
        rootpage = stage / f"{toc_files(root)[0]}.md"
        rootpage.write_text(re.sub(r"(`{3,}|:{3,})\{tableofcontents\}[^\n]*\n\1[ \t]*\n?", "", rootpage.read_text()))
        (stage / "_ext").mkdir()
        (stage / "_ext" / "singlehtml_handlers.py").write_text(_SINGLEHTML_EXT)
        config_overrides = dict(config_overrides)
        config_overrides["sphinx.local_extensions"] = {"singlehtml_handlers": "_ext"}
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


def _binder_to_myst(html_dir: Path) -> None:
    """Binder opens the MyST source of a chapter (jupytext), which is what the repository holds."""
    pat = re.compile(r"(urlpath=(?:tree|lab/tree|doc/tree)/[^\"&]*?)\.ipynb")
    for page in html_dir.rglob("*.html"):
        text = page.read_text()
        if "mybinder" in text or "binder" in text:
            new = pat.sub(r"\1.md", text)
            if new != text:
                page.write_text(new)


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
    stage = build / "src" / (name if builder == "html" else f"{name}-{builder}")
    _stage(r, build, stage, overrides, student=edition == "student", single=builder == "singlehtml")
    out = build / ("html" if edition == "full" else "student")
    if builder != "html":
        out = build / (builder if edition == "full" else f"{builder}-student")
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
    _binder_to_myst(out)
    log(f"  built in {time.perf_counter() - t0:.1f} s")
    return out


_PRINT_CSS = """<style>
@media print {
  .bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .header-article, .bd-footer, .bd-footer-article,
  .prev-next-area, .search-button__wrapper, .skip-link, .headerlink, details.above-input { display: none !important; }
  .cell.tag_hide-input > .cell_input { display: none !important; }
  .bd-main .bd-content .bd-article-container, .bd-page-width, .bd-main .bd-content { max-width: 100% !important; }
  .table-wrapper, .pst-scrollable-table-container { overflow: visible !important; }
  table { width: 100% !important; table-layout: auto; word-break: break-word; }
  pre { white-space: pre-wrap !important; word-break: break-word; }
  figure, img, .cell_output { break-inside: avoid; }
  h1, h2, h3 { break-after: avoid; }
}
</style>
"""


def pdf(*, build_dir: Optional[Path] = None, root: Optional[Path] = None, out: Optional[Path] = None,
        log=print) -> Path:
    """The book as one PDF, offline: the single-page HTML printed by headless Chromium (math rendered).

    Writes ``<build>/pdf/book.pdf`` by default.
    """
    from . import browser

    r = _root(root)
    bdir = Path(build_dir).resolve() if build_dir else r / "_build"
    # The root page holds the whole book (index.html only redirects to it); its links are relative to
    # the output folder, so it is read from there as book.html.
    single = build(build_dir=bdir, root=r, builder="singlehtml", log=log)
    src = single / f"{toc_files(r)[0]}.html"
    if not src.exists():
        raise FileNotFoundError(f"{src} was not produced by the singlehtml build")
    page = single / "book.html"
    text = src.read_text()
    page.write_text(text.replace("</head>", _PRINT_CSS + "</head>", 1))
    dest = Path(out) if out else bdir / "pdf" / "book.pdf"
    log("printing the book to PDF with headless Chromium ...")
    t0 = time.perf_counter()
    browser.print_pdf(page, dest)
    log(f"  {dest} ({dest.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return dest
