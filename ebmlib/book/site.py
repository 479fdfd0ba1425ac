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
import shlex
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

__all__ = ["MATHJAX_VERSION", "build", "build_all", "vendor_mathjax", "strip_solutions", "pdf", "repository",
           "install_cell", "annotate_figures", "current_prose", "PLACEHOLDER", "CPU_TORCH_INDEX"]

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


PLACEHOLDER = "OWNER"  # the unpublished repository URL of _config.yml reads github.com/OWNER/...
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def repository(root: Optional[Path] = None) -> Optional[dict[str, str]]:
    """The published repository of ``_config.yml`` (``url``, ``branch``), or ``None`` while it is a placeholder.

    The one place the URL is set is ``repository.url``; launch buttons, the repository button and the
    install cell of the notebooks are built from it, and hidden while it names ``OWNER`` or is empty.
    """
    r = _root(root)
    config = yaml.safe_load((r / "_config.yml").read_text()) or {}
    repo = config.get("repository") or {}
    url = str(repo.get("url") or "").strip().rstrip("/")
    if not url or PLACEHOLDER in url or not url.startswith("https://"):
        return None
    return {"url": url, "branch": str(repo.get("branch") or "main")}


def install_cell(repo: Optional[dict[str, str]]) -> dict[str, Any]:
    """The first cell of a downloadable notebook: installs ``ebmlib`` when it is not importable.

    Outside the repository (Colab, a notebook opened alone) it clones the book at ``repo`` (the data
    and the later chapters' inputs come with it) and installs it with a CPU-only torch when torch is
    missing; inside it (Binder, a clone) it does nothing. Without a published repository it says so.
    Tagged ``remove-cell``: the site does not show it, the downloaded notebook has it.
    """
    if repo is None:
        body = [
            "# Runs where ebmlib is importable: a clone of the book's repository, with `pip install -e '.[book]'`.",
            "import importlib.util",
            "",
            'if importlib.util.find_spec("ebmlib") is None:',
            '    raise ImportError("ebmlib is not installed: open this notebook in a clone of the book\'s repository "',
            '                      "after pip install -e \'.[book]\' (its public URL is not set yet)")',
        ]
    else:
        if not isinstance(repo, dict) or not repo.get("url"):
            raise ValueError(f"repo: expected {{'url': ..., 'branch': ...}} or None, got {repo!r}")
        folder = repo["url"].rsplit("/", 1)[-1].removesuffix(".git")
        body = [
            "# Opened outside the book (Colab, a downloaded notebook)? This cell fetches the book and installs",
            "# its library ebmlib (a CPU-only torch if torch is missing); where ebmlib is importable it does nothing.",
            "import importlib.util, os, subprocess, sys",
            "",
            'if importlib.util.find_spec("ebmlib") is None:',
            f'    book = os.path.abspath("{folder}")',
            "    if not os.path.isdir(book):",
            f'        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{repo["branch"]}",',
            f'                        "{repo["url"]}", book], check=True)',
            '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--extra-index-url",',
            f'                    "{CPU_TORCH_INDEX}", "-e", book + "[book]"], check=True)',
            "    sys.path.insert(0, book)",
            '    os.chdir(os.path.join(book, "chapters"))',
        ]
    return {"cell_type": "code", "execution_count": None, "id": "install-ebmlib",
            "metadata": {"tags": ["remove-cell"]}, "outputs": [], "source": "\n".join(body)}


_GLUE_FIGURE = re.compile(r"^(?P<f>`{3,}|:{3,})\{glue:figure\}[ \t]+(?P<name>[^\s:]+)[^\n]*\n.*?^(?P=f)[ \t]*$",
                          re.M | re.S)


def _sidecar_claims(side: dict[str, Any]) -> list[Any]:
    from .claims import Claim

    out = []
    for name, c in (side.get("claims") or {}).items():
        bound = tuple(c["bound"]) if isinstance(c.get("bound"), list) else c.get("bound")
        value = c.get("value")
        out.append(Claim(name, float("nan") if value is None else float(value), bound, c.get("op", "<="),
                         c.get("statement", "")))
    return out


def _command(chapter: str, record: dict[str, Any]) -> str:
    cmd = f"python -m ebmlib run {chapter} --profile {record.get('profile', 'book')}"
    for k, v in (record.get("overrides") or {}).items():
        cmd += f" -p {k} {shlex.quote(json.dumps(v) if not isinstance(v, str) else v)}"
    return cmd


def annotate_figures(nb: dict[str, Any], chapter: str, build: Path, *, single: bool = False) -> dict[str, bool]:
    """Put under each ``{glue:figure}`` of a chapter its claims table and where it came from, in place.

    Under the figure: the claims (from its sidecar), links to the code cell that made it (an anchor
    inserted before that cell), to its sidecar JSON, plotted data and PNG (copied into the site's
    ``_static/data/<chapter>/`` by :func:`build`), to its entry on the Reproduce page, and the command
    that regenerates it (it re-runs the chapter). The claims output of the code cell is dropped (it
    now stands under the figure). Returns, for each figure annotated, whether its code cell was found
    (and given the anchor ``reproduce.code_anchor(chapter, figure)``).
    """
    from html import escape

    from .cache import record_path
    from .reproduce import PAGE, anchor, code_anchor
    from .run import claims_html

    build = Path(build)
    name = Path(chapter).name
    fig_dir = build / "figures" / name
    rec_file = record_path(build / "executed" / f"{chapter}.ipynb")
    record = json.loads(rec_file.read_text()) if rec_file.exists() else {}
    if not record:
        timings = build / "executed" / "timings.json"
        t = (json.loads(timings.read_text()) if timings.exists() else {}).get(name, {})
        record = {"profile": t.get("profile", "book")}
    static = "_static/data" if single else "../_static/data"
    repro = "" if single else f"{Path(PAGE).name}.html"
    made_by: dict[str, int] = {}
    for i, cell in enumerate(nb["cells"]):
        for o in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            fig = (o.get("metadata") or {}).get("scrapbook", {}).get("name")
            if fig and any("image/" in k for k in (o.get("data") or {})):
                made_by.setdefault(fig, i)
    done: list[str] = []
    for cell in nb["cells"]:
        if cell.get("cell_type") != "markdown":
            continue
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])

        def note(m: re.Match) -> str:
            fig = m.group("name")
            side_path = fig_dir / f"{fig}.json"
            if not side_path.exists():
                return m.group(0)
            side = json.loads(side_path.read_text())
            claims = _sidecar_claims(side)
            base = f"{static}/{name}/{fig}"
            links = []
            if fig in made_by:
                links.append(f'<a href="#{code_anchor(name, fig)}">the code cell that made it</a>')
            links += [f'<a href="{base}.json">sidecar JSON</a> (provenance, claims, plotted data)',
                      f'<a href="{base}.data.json">plotted data</a>',
                      f'<a href="{base}.png">PNG, {side.get("dpi", 200)} dpi</a>',
                      f'<a href="{repro}#{anchor(name, fig)}">its entry on the Reproduce page</a>']
            block = ['<div class="ebm-figure-notes" style="font-size: 0.85em">']  # compact; the site's CSS may restyle it
            if claims:  # long names and statements wrap, so that the table fits a phone's column
                block.append('<div class="ebm-claims-box" style="overflow-x: auto; overflow-wrap: anywhere">'
                             + claims_html(fig, claims) + "</div>")
            block.append('<p class="ebm-trace">Figure <code>' + escape(fig) + "</code>: " + " · ".join(links)
                         + ".<br>Regenerate it (this re-runs the whole chapter, all its figures): <code>"
                         + escape(_command(name, record)) + "</code></p>")
            block.append("</div>")
            done.append(fig)
            return m.group(0) + "\n\n" + "\n".join(block) + "\n"

        new = _GLUE_FIGURE.sub(note, text)
        if new != text:
            cell["source"] = new
    anchors: dict[int, list[str]] = {}
    for fig in done:
        if fig in made_by:
            anchors.setdefault(made_by[fig], []).append(fig)
    for cell in nb["cells"]:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if (o.get("metadata") or {}).get("ebmlib", {}).get("claims_of") not in done]
    for i in sorted(anchors, reverse=True):
        ids = "".join(f'<span id="{code_anchor(name, fig)}"></span>' for fig in anchors[i])
        nb["cells"].insert(i, {"cell_type": "markdown", "id": f"anchor-{i}", "metadata": {}, "source": ids})
    return {fig: fig in made_by for fig in done}


def current_prose(nb: dict[str, Any], source: Path) -> bool:
    """Give an executed notebook the Markdown cells of its current MyST ``source``, in place.

    A chapter reused by ``python -m ebmlib book`` (its code unchanged) was executed from older prose;
    its code cells and outputs are kept, the text around them is today's. When the code cells differ
    (the chapter was edited and not executed again), the notebook is left as executed and ``False``
    is returned.
    """
    import jupytext

    src = jupytext.read(source)
    code_src = [c.source for c in src.cells if c.cell_type == "code"]
    code_nb = [c for c in nb["cells"] if c.get("cell_type") == "code"]
    same = len(code_src) == len(code_nb) and all(
        "parameters" in c.get("metadata", {}).get("tags", []) or (c["source"] if isinstance(c["source"], str)
                                                                   else "".join(c["source"])) == s
        for c, s in zip(code_nb, code_src))
    if not same:
        return False
    cells, it = [], iter(code_nb)
    for i, c in enumerate(src.cells):
        if c.cell_type == "code":
            cells.append(next(it))
        else:
            cells.append({"cell_type": c.cell_type, "id": str(c.get("id") or f"prose-{i}"),
                          "metadata": dict(c.metadata), "source": c.source})
    nb["cells"] = cells
    return True


def _copy_figure_data(build: Path, dest: Path) -> None:
    """Sidecars, plotted data and PNGs of every figure into ``dest/<chapter>/`` (served as ``_static/data``)."""
    for side_path in sorted((Path(build) / "figures").glob("*/*.json")):
        side = json.loads(side_path.read_text())
        if "figure" not in side or "claims" not in side:
            continue
        out = dest / side_path.parent.name
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(side_path, out / side_path.name)
        (out / f"{side_path.stem}.data.json").write_text(json.dumps(side.get("data"), indent=1) + "\n")
        png = side_path.parent / str(side.get("png", ""))
        if side.get("png") and png.exists():
            shutil.copyfile(png, out / png.name)


def _sync(src: Path, dest: Path) -> int:
    """Make ``dest`` equal to ``src``, touching only the files that differ (Sphinx then re-reads only those)."""
    changed = 0
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {p.relative_to(src) for p in src.rglob("*")}
    for p in sorted(dest.rglob("*"), reverse=True):
        rel = p.relative_to(dest)
        if rel not in wanted or (p.is_dir() != (src / rel).is_dir()):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            changed += 1
    for rel in sorted(wanted):
        s, d = src / rel, dest / rel
        if s.is_dir():
            d.mkdir(parents=True, exist_ok=True)
        elif not d.exists() or d.stat().st_size != s.stat().st_size or d.read_bytes() != s.read_bytes():
            shutil.copyfile(s, d)
            changed += 1
    return changed


def _stage(root: Path, build: Path, stage: Path, config_overrides: dict[str, Any], student: bool = False,
           single: bool = False, downloads: Optional[dict[str, str]] = None) -> None:
    """Copy the book into ``stage`` with executed notebooks in place of MyST chapters.

    Generated pages (the reproduce page) are written from the sidecars; the student edition
    loses every gated solution, code cells included. Each notebook gets the install cell and, under
    each figure, its claims and provenance (:func:`annotate_figures`); the figures' data are served
    from ``_static/data``. Only files that changed since the last build are rewritten.
    """
    from .reproduce import PAGE, write_page

    final, stage = stage, stage.with_name(stage.name + ".new")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    notebooks = set(chapters(root))
    shutil.copytree(root / "chapters", stage / "chapters",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
    repo = repository(root)
    anchored: set[tuple[str, str]] = set()
    for f in toc_files(root):
        if f in GENERATED:
            if f == PAGE:
                write_page(build, root, stage, single=single, anchored=anchored, downloads=downloads)
            continue
        if f in notebooks:
            executed = build / "executed" / f"{f}.ipynb"
            if not executed.exists():
                raise FileNotFoundError(f"{executed} is missing: execute the chapter first (python -m ebmlib run)")
            (stage / f"{f}.md").unlink()
            nb = json.loads(executed.read_text())
            current_prose(nb, root / f"{f}.md")
            if student:
                strip_solutions(nb)
            found = annotate_figures(nb, f, build, single=single)
            anchored |= {(Path(f).name, fig) for fig, ok in found.items() if ok}
            nb["cells"].insert(0, install_cell(repo))
            (stage / f"{f}.ipynb").write_text(json.dumps(nb, indent=1, ensure_ascii=False))
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
    config_overrides = dict(config_overrides)
    if repo is None:  # launch and repository buttons would point at a placeholder: not shown
        config_overrides.update({"html.use_repository_button": False, "launch_buttons.binderhub_url": "",
                                 "launch_buttons.colab_url": "", "launch_buttons.jupyterhub_url": ""})
    for key, value in config_overrides.items():
        node = config
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    mj = vendor_mathjax(build)
    shutil.copytree(mj, stage / "_vendor" / "mathjax")
    _copy_figure_data(build, stage / "_vendor" / "data")
    _sync(stage, final)
    shutil.rmtree(stage)


def build(
    *,
    build_dir: Optional[Path] = None,
    root: Optional[Path] = None,
    edition: str = "full",
    builder: str = "html",
    log: Log = print,
    downloads: Optional[dict[str, str]] = None,
) -> Path:
    """Build the website from the executed notebooks (no second execution); returns the html folder.

    ``edition="student"`` hides every exercise solution (``make student``). ``downloads`` maps a
    label to a path relative to the site's root (e.g. ``{"PDF": "book.pdf"}``): linked from the
    footer of every page (:func:`build_all` passes what it built).
    """
    r = _root(root)
    build = resolve_build_dir(build_dir, r)
    if edition not in ("full", "student"):
        raise ValueError(f"edition: expected 'full' or 'student', got {edition!r}")
    if builder not in ("html", "singlehtml"):
        raise ValueError(f"builder: expected 'html' or 'singlehtml', got {builder!r}")
    overrides: dict[str, Any] = {}
    name = "site" if edition == "full" else "student"
    if edition == "student":
        overrides["sphinx.config.hide_solutions"] = True
    if downloads:
        # href for a page one folder down (every chapter); the script re-roots it on pages at the site's top
        # (search, index), from the root Sphinx writes on <html data-content_root>
        links = " · ".join(f'<a data-root-path="{escape_attr(path)}" href="../{escape_attr(path)}">'
                           f'{escape_attr(label)}</a>' for label, path in downloads.items())
        fix = ("<script>document.querySelectorAll('a[data-root-path]').forEach(function(a){"
               "var r=document.documentElement.dataset.content_root;"
               "if(r!==undefined){a.setAttribute('href',r+a.dataset.rootPath);}});</script>")
        overrides["html.extra_footer"] = f'<p class="ebm-downloads">Also: {links}</p>{fix}'
    stage = build / "src" / (name if builder == "html" else f"{name}-{builder}")
    _stage(r, build, stage, overrides, student=edition == "student", single=builder == "singlehtml",
           downloads=downloads)
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
    log(f"  built in {time.perf_counter() - t0:.1f} s")
    return out


def escape_attr(text: str) -> str:
    """``text`` safe inside an HTML attribute or element."""
    from html import escape

    return escape(str(text), quote=True)


def build_all(
    *,
    build_dir: Optional[Path] = None,
    root: Optional[Path] = None,
    student: bool = True,
    with_pdf: Optional[bool] = None,
    log: Log = print,
) -> dict[str, Path]:
    """The site with its companions (``make book``): the student edition and the PDF, then the site
    that links them; both are copied into the site (``student/``, ``book.pdf``) so it is published whole.

    ``with_pdf=None`` prints the PDF when headless Chromium is installed and says so when it is not.
    Returns the paths built (``html``, and ``student`` / ``pdf`` when built).
    """
    from .browser import find_chromium

    r = _root(root)
    bdir = resolve_build_dir(build_dir, r)
    out: dict[str, Path] = {}
    downloads: dict[str, str] = {}
    if student:
        out["student"] = build(build_dir=bdir, root=r, edition="student", log=log)
        downloads["the student edition (no solutions)"] = "student/chapters/intro.html"
    if with_pdf is None:
        with_pdf = find_chromium() is not None
        if not with_pdf:
            log("note: chromium is not installed, so no PDF this time (make browser installs it)")
    if with_pdf:
        out["pdf"] = pdf(build_dir=bdir, root=r, log=log)
        downloads["the whole book as one PDF"] = "book.pdf"
    html = build(build_dir=bdir, root=r, log=log, downloads=downloads or None)
    if "student" in out:
        shutil.copytree(out["student"], html / "student", dirs_exist_ok=True)
    if "pdf" in out:
        shutil.copyfile(out["pdf"], html / "book.pdf")
    out["html"] = html
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
