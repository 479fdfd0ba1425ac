"""The website from the executed notebooks: staging, Jupyter Book, MathJax, student edition, PDF.

``build`` stages the book with the executed notebooks (:mod:`ebmlib.book.execute`) in
place of the MyST sources and runs Jupyter Book on it with execution off, so the site
shows exactly what papermill produced. The student edition loses every gated solution;
the PDF is the single-page HTML printed by headless Chromium.
"""

from __future__ import annotations

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

from .execute import GENERATED, Log, _root, chapters, resolve_build_dir, toc_files

__all__ = ["MATHJAX_VERSION", "build", "vendor_mathjax", "strip_solutions", "pdf"]

MATHJAX_VERSION = "3.2.2"


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
    from .reproduce import PAGE, write_page

    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    notebooks = set(chapters(root))
    shutil.copytree(root / "chapters", stage / "chapters",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
    for f in toc_files(root):
        if f in GENERATED:
            if f == PAGE:
                write_page(build, root, stage)
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
    log: Log = print,
) -> Path:
    """Build the website from the executed notebooks (no second execution); returns the html folder.

    ``edition="student"`` hides every exercise solution (``make student``).
    """
    r = _root(root)
    build = resolve_build_dir(build_dir, r)
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
        log: Log = print) -> Path:
    """The book as one PDF, offline: the single-page HTML printed by headless Chromium (math rendered).

    Writes ``<build>/pdf/book.pdf`` by default.
    """
    from .browser import print_pdf

    r = _root(root)
    bdir = resolve_build_dir(build_dir, r)
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
    print_pdf(page, dest)
    log(f"  {dest} ({dest.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return dest
