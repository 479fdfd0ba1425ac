"""The *reproduce* page, generated at build time from the figure sidecars.

Every figure of ``<build>/figures/<chapter>/<figure>.json`` is listed with its
chapter, claims (and whether each holds: a failing claim reads **FAILS**),
profile, seed, device, dtype, versions and wall time; ``<build>/executed/timings.json``
gives the execution time of each chapter. The page never lives in git: :func:`ebmlib.book.site.build`
writes it into the staged copy of the book (``chapters/reproduce.md``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Optional

__all__ = ["PAGE", "anchor", "code_anchor", "collect", "environment", "render", "write_page"]

PAGE = "chapters/reproduce"
HOLDS, FAILS = "holds", "FAILS"


def anchor(chapter: str, figure: str) -> str:
    """The HTML id of a figure's section on the page (docutils turns ``_`` and ``.`` into ``-``)."""
    return re.sub(r"[^a-z0-9]+", "-", f"repro-{chapter}-{figure}".lower()).strip("-")


def collect(build: Path) -> list[dict[str, Any]]:
    """Every sidecar under ``<build>/figures``, sorted by chapter then figure (with ``path`` added)."""
    build = Path(build)
    out = []
    for p in sorted((build / "figures").glob("*/*.json")):
        s = json.loads(p.read_text())
        s["path"] = p
        out.append(s)
    return out


def _git(root: Path, *args: str) -> str:
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(root: Path) -> dict[str, str]:
    """The machine and software that built this page (the sidecars carry those that ran each figure)."""
    import numpy
    import torch

    commit = _git(root, "rev-parse", "HEAD") or "unknown (not a git checkout)"
    if _git(root, "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "CPU count": str(os.cpu_count()),
        "CUDA device": cuda,
    }


def _cell(x: Any) -> str:
    """A value safe inside a Markdown table cell."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def _num(x: Any) -> str:
    if x is None:
        return "none"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_num(v) for v in x) + "]"
    if isinstance(x, float):
        from .run import sci

        return sci(x, 4)  # 8.9 × 10⁻¹⁶, never 8.9e-16
    return str(x)


def _bound(c: dict[str, Any]) -> str:
    op = {"<=": "≤", ">=": "≥", "in": "∈"}.get(c.get("op", ""), c.get("op", "?"))
    return f"{op} {_num(c.get('bound'))}"


def _records(build: Path) -> dict[str, dict[str, Any]]:
    """The input-hash record of every executed chapter (``<chapter>.inputs.json``), by chapter name."""
    out = {}
    for p in sorted((Path(build) / "executed").rglob("*.inputs.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        out[rec.get("chapter", p.name.removesuffix(".inputs.json"))] = rec
    return out


def _execution(name: str, status: dict[str, Any], records: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(what the last build did with a chapter, the commit its results come from)."""
    rec = records.get(name, {})
    entry = (status.get("chapters") or {}).get(name, {})
    commit = str(entry.get("commit") or rec.get("commit") or "?")
    when = str(entry.get("executed_at") or rec.get("executed_at") or "")
    if entry.get("session") == status.get("session") and entry.get("status") == "executed":
        what = "executed in this build"
    elif entry.get("session") == status.get("session") and entry.get("status") == "reused":
        what = f"reused (inputs unchanged since {when})" if when else "reused"
    else:
        what = f"from an earlier run ({when})" if when else "from an earlier run"
    short = commit[:12] + (" +dirty" if commit.endswith("+dirty") else "")
    return what, short


def render(build: Path, root: Path, image_dir: Optional[str] = "_reproduce", *, single: bool = False,
           anchored: Optional[set[tuple[str, str]]] = None, downloads: Optional[dict[str, str]] = None) -> str:
    """The page as MyST markdown; images are referred to as ``<image_dir>/<chapter>/<png>``.

    ``single``: links for the one-page book (the PDF), where every chapter is on the same page;
    ``anchored``: the (chapter, figure) pairs whose code cell has an anchor on the chapter's page;
    ``downloads``: label → path from the site's root of what was built with it (student edition, PDF).
    """
    build, root = Path(build), Path(root)
    sidecars = collect(build)
    tpath = build / "executed" / "timings.json"
    timings = json.loads(tpath.read_text()) if tpath.exists() else {}
    spath = build / "executed" / "build.json"
    status = json.loads(spath.read_text()) if spath.exists() else {}
    records = _records(build)
    static = "_static/data" if single else "../_static/data"
    n_claims = sum(len(s.get("claims", {})) for s in sidecars)
    failing = [(s, n) for s in sidecars for n, c in s.get("claims", {}).items() if not c.get("holds")]
    L: list[str] = [
        "(reproduce)=",
        "# Reproduce every figure",
        "",
        "This page is generated when the site is built, from the JSON sidecar that every figure writes",
        "beside its PNG (`_build/figures/<chapter>/<figure>.json`) and from the chapters' execution",
        "times (`_build/executed/timings.json`). It lists every figure of the book with the claims it",
        "makes and whether they hold **in the run that produced this site**; a claim that does not hold",
        "reads **FAILS** here and fails the test suite.",
        "",
        ":::{admonition} Summary",
        ":class: " + ("danger" if failing else "tip"),
        "",
        f"{len(sidecars)} figures, {n_claims} claims: {n_claims - len(failing)} hold, "
        f"{len(failing)} {'FAIL' if failing else 'fail'}.",
    ]
    for s, n in failing:
        c = s["claims"][n]
        L.append(f"- **FAILS**: {s['chapter']} / {s['figure']} / `{n}` = {_num(c.get('value'))}, "
                 f"required {_bound(c)}")
    L += [":::", ""]
    if downloads:
        L += ["## Downloads", "", "Built with this site by `make book`:", ""]
        L += [f'- <a href="../{p}">{_cell(label)}</a>' for label, p in downloads.items()]
        L += [""]
    L += ["## Re-run a chapter or a figure", "",
          "A figure is produced by its chapter: re-run the chapter, with any parameter of its",
          "`parameters` cell overridden by `-p name value` (values are YAML: `-p eps_list \"[0.1, 0.2]\"`).",
          "The profile (`smoke`, `book`, `paper` in `params/`) sets the defaults; `-p device cuda` runs",
          "on a GPU, `-p device cpu` on the CPU.", "",
          "```console",
          "$ .venv/bin/python -m ebmlib list        # chapters, parameters",
          "$ .venv/bin/python -m ebmlib run 01-energy --profile book -p seed 1",
          "$ .venv/bin/python -m ebmlib run all --profile paper -p device cuda",
          "$ .venv/bin/python -m ebmlib build       # the site, from that run",
          "```", "",
          "Outputs go to the build folder (default `_build/`): the executed notebook to",
          "`executed/chapters/<chapter>.ipynb`, each figure and its sidecar to",
          "`figures/<chapter>/<figure>.png|json`, the site to `html/`. Each figure below shows the exact",
          "command that reproduces it.", "",
          "## Environment", "",
          "The machine that built this page (each figure records the versions that produced it):", "",
          "| item | value |", "|---|---|"]
    for k, v in environment(root).items():
        L.append(f"| {k} | {_cell(v)} |")
    L += ["", "## Chapters", "",
          "`make book` executes a chapter only when its inputs changed since it was last executed into the",
          "same build folder: its code cells, its parameters, the `ebmlib` modules it uses (the modules",
          "defining the names it calls, with everything they import), `requirements.lock`, and the files",
          "it read (recorded sweeps, another chapter's saved networks). Otherwise its executed notebook and",
          "figures are reused; `python -m ebmlib book --force` executes everything again.", "",
          "| chapter | profile | execution time | in this build | results from commit | figures | claims holding |",
          "|---|---|---|---|---|---|---|"]
    chapters_seen = sorted({s["chapter"] for s in sidecars} | set(timings))
    for ch in chapters_seen:
        figs = [s for s in sidecars if s["chapter"] == ch]
        cl = [c for s in figs for c in s.get("claims", {}).values()]
        t = timings.get(ch, {})
        wall = f"{t['wall_s']:.1f} s" if "wall_s" in t else "not recorded"
        ok = sum(bool(c.get("holds")) for c in cl)
        ok_text = f"{ok} / {len(cl)}" + ("" if ok == len(cl) else " (**FAILS**)")
        what, commit = _execution(ch, status, records)
        L.append(f"| {ch} | {t.get('profile', '?')} | {wall} | {_cell(what)} | `{_cell(commit)}` | {len(figs)} "
                 f"| {ok_text} |")
    L += _bench_section(build, root)
    L += ["", "## Figures", ""]
    for s in sidecars:
        ch, fig = s["chapter"], s["figure"]
        v = s.get("versions", {})
        L += [f"({anchor(ch, fig)})=", f"### {ch} / {_breakable(fig)}", ""]
        if image_dir is not None and s.get("png"):
            L += [f"```{{image}} {image_dir}/{ch}/{s['png']}", f":alt: {_cell(s.get('caption', fig))}",
                  ":width: 360px", "```", ""]
        if s.get("caption"):
            L += [f"*{s['caption'].strip()}*", ""]
        L += ["| claim | value | required | status | statement |", "|---|---|---|---|---|"]
        for name, c in s.get("claims", {}).items():
            status = f"✔ {HOLDS}" if c.get("holds") else f"✘ **{FAILS}**"
            L.append(f"| `{name}` | {_num(c.get('value'))} | {_bound(c)} | {status} | {_cell(c.get('statement', ''))} |")
        rec = records.get(ch, {})
        cmd = f"python -m ebmlib run {ch} --profile {s.get('profile')}"
        for k, val in (rec.get("overrides") or {}).items():
            cmd += f" -p {k} {shlex.quote(val if isinstance(val, str) else json.dumps(val))}"
        page = "#" if single else f"{ch}.html#"
        base = f"{static}/{ch}/{fig}"
        L += ["", f"**Run**: profile `{s.get('profile')}`, seed {s.get('seed')}, device `{s.get('device')}`, "
              f"dtype `{s.get('dtype')}`, figure computed in {_num(s.get('wall_s'))} s. "
              f"**Versions**: commit `{_cell(str(v.get('git_commit', '?'))[:12])}`, ebmlib {v.get('ebmlib', '?')}, "
              f"torch {v.get('torch', '?')}, numpy {v.get('numpy', '?')}, python {v.get('python', '?')}.", "",
              '<p class="ebm-trace">Trace it: '
              + (f'<a href="{page}{code_anchor(ch, fig)}">the code cell that made it</a> · '
                 if (ch, fig) in (anchored or set()) else "")
              + f'<a href="{base}.json">sidecar JSON</a> · <a href="{base}.data.json">plotted data</a>'
              f' · <a href="{base}.png">PNG</a></p>', "",
              "Regenerate it: this re-runs the whole chapter (every figure of it), with the values of this run:", "",
              "```console",
              f"$ .venv/bin/{cmd}",
              "```", ""]
        params = s.get("params") or {}
        if params:
            L += ["Parameters of the chapter for this run: " + ", ".join(
                f"`{k} = {_cell(json.dumps(val))}`" for k, val in params.items()) + ".", ""]
    if not sidecars:
        L += ["No figure has been produced yet: run `python -m ebmlib run all` first.", ""]
    return "\n".join(L) + "\n"


_NB_HYPHEN = "\u2011"  # layer sizes such as 784‑500‑10 do not break across lines in a table
MEASURED = "chapters/_measured"  # benchmark results recorded on other machines (a GPU), kept in git


def _bench_table(b: dict[str, Any]) -> list[str]:
    """One ``bench.json`` as Markdown: where it ran, the step table, the targets, the EP epoch."""
    m = b.get("machine", {})
    where = f"{_cell(m.get('cpu', '?'))} ({m.get('cores', '?')} cores)"
    if m.get("gpu"):
        where = f"**{_cell(m['gpu'])}** (host {where})"
    sha = str(b.get("commit") or "")
    sha = sha[:12] if re.fullmatch(r"[0-9a-f]{40}", sha) else sha  # a full hash shortened; a label kept whole
    commit = f", commit `{_cell(sha)}`" if sha else ""
    L = [f"On {where}, device `{b.get('device')}`, {b.get('threads')} CPU threads, torch {b.get('torch')}, "
         f"{b.get('repetitions')} repetitions, {_cell(b.get('created', ''))}{commit}. Free-phase step, float32; "
         "ratios measured in the same run.", "",
         "| sizes | batch | loop threads | step (µs) | roofline ratio | autograd step (µs) | speed-up vs autograd |",
         "|---|---|---|---|---|---|---|"]
    for r in b.get("relaxation", []):
        threads = r.get("loop_threads", "?") if b.get("device") == "cpu" else "–"
        L.append(f"| {_NB_HYPHEN.join(map(str, r['sizes']))} | {r['batch']} | {threads} | "
                 f"{1e6 * r['step_time_s']:.1f} | "
                 f"{r['roofline_ratio']:.2f} | {1e6 * r['autograd_step_time_s']:.1f} | {r['speedup_vs_autograd']:.1f}× |")
    te = b.get("train_epoch") or {}
    if te:
        L += ["", "One epoch of `eb.train` (60,000 samples of Fashion-MNIST's shape, minibatch 20, float32), its split "
              "(seconds per epoch; bookkeeping is the rest) and the same epoch in the public code bases' style:", "",
              "| method and sizes | free / nudged steps | epoch (s) | free | nudged | update | bookkeeping | "
              "public style (s) | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in te.items():
            sp = r.get("split") or {}
            parts = " | ".join(_num(sp.get(k)) if sp else "–" for k in ("free", "nudged", "update", "bookkeeping"))
            steps = f"{r['free_steps']} / {r['nudged_steps']}"
            if r.get("free_schedule") == "block":
                steps = f"{r['free_steps']} sweeps / {r['nudged_steps']} (public style: {r['public_free_steps']} / " \
                        f"{r['nudged_steps']})"
            L.append(f"| {_cell(name).replace('-', _NB_HYPHEN)} | {steps} | "
                     f"{_num(r['seconds'])} | {parts} | {_num(r['public_style_seconds'])} | {r['ratio']:.1f}× |")
        if any(r.get("free_schedule") == "block" for r in te.values()):
            L += ["", "The block row's free phase is block sweeps (odd layers, then even layers, each set to clip(pre), "
                  "its exact minimiser given its neighbours) where its public style runs the paper's synchronous "
                  "steps: its speed-up compares two ways to a free state, not two implementations of one."]
    gpu = b.get("device") == "cuda"
    L += ["", f"| target (set for {'an H100/H200' if gpu else 'the 2-core CPU'}) | value | required | status |",
          "|---|---|---|---|"]
    for t in b.get("targets", []):
        ok = t.get("holds", t.get("ok"))
        op = "≤" if t.get("op") == "<=" else "≥"
        L.append(f"| {_cell(t.get('name', '?'))} | {_num(t.get('value'))} | {op} {_num(t.get('bound'))} | "
                 + (f"✔ {HOLDS} |" if ok else f"✘ **{FAILS}** |"))
    ep = b.get("ep_epoch")
    if isinstance(ep, dict) and "epoch_time_s" in ep:
        L += ["", f"One Equilibrium Propagation epoch (784-500-10, 20 free / 4 nudged steps, minibatch 20, "
              f"60,000 synthetic samples): {ep['epoch_time_s']:.1f} s."]
    return L + [""]


def _bench_section(build: Path, root: Path) -> list[str]:
    """The relaxation-loop benchmark of this build (``<build>/bench.json``, from ``make bench``), when it
    was run, and the runs recorded on GPUs (``chapters/_measured/bench-*.json``)."""
    path = build / "bench.json"
    L = ["", "## Performance", "", "### This machine", ""]
    if path.exists():
        L += _bench_table(json.loads(path.read_text()))
    else:
        L += ["`make bench` has not been run for this build (it writes `_build/bench.json`).", ""]
    recorded = sorted((Path(root) / MEASURED).glob("bench-*.json"))
    L += ["### Recorded on a GPU", ""]
    if not recorded:
        return L + ["None recorded: `python -m ebmlib bench --device cuda` on a machine with one writes the "
                    "same table for it.", ""]
    L += ["These runs were made on a lent GPU machine with `python -m ebmlib bench --device cuda` and the file",
          f"it wrote is kept in `{MEASURED}/`; they are not re-measured when the site is built. Runs before the",
          "trainer benchmark list the 2-core CPU's targets; later ones the GPU's.", ""]
    for p in recorded:
        L += [f"`{MEASURED}/{p.name}`:", ""] + _bench_table(json.loads(p.read_text()))
    return L


def _breakable(name: str) -> str:
    """A long snake_case name that may wrap after its underscores (a zero-width space), on a phone's column."""
    return name.replace("_", "_\u200b")


def code_anchor(chapter: str, figure: str) -> str:
    """The HTML id of the code cell that made a figure (inserted before it by ``site.annotate_figures``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"code-{chapter}-{figure}").strip("-")


def write_page(build: Path, root: Path, stage: Path, *, single: bool = False,
               anchored: Optional[set[tuple[str, str]]] = None, downloads: Optional[dict[str, str]] = None) -> Path:
    """Write ``chapters/reproduce.md`` and the figure thumbnails into the staged book ``stage``."""
    import shutil

    stage = Path(stage)
    dest = stage / f"{PAGE}.md"
    images = dest.parent / "_reproduce"
    for s in collect(build):
        png = s["path"].parent / s.get("png", "")
        if s.get("png") and png.exists():
            (images / s["chapter"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(png, images / s["chapter"] / s["png"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(render(build, root, single=single, anchored=anchored, downloads=downloads))
    return dest
