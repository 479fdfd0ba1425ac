"""The site as a reader meets it: every page in headless Chromium, the reproduce page, the student edition.

Browser checks (``ebmlib.book.browser``; their criteria are in its docstring): each page of ``_toc.yml`` is
opened in headless Chromium at 1400 px and at 390 px (a phone) with a small probe script injected into a
private copy of the site. After the ``load`` event and MathJax's typesetting promise, the probe records
whether math rendered (``mjx-container`` elements present, no MathJax error) and whether TeX source is left
in the visible text outside code (``\\frac``, ``\\delta``, ``$…$``, ``\\(``, ``$$``); whether a displayed
equation, an inline formula or a table is cut off (not reachable by scrolling), overlaps its equation number,
or at desktop width needs sideways scrolling; whether a code cell or output has a line over 100 characters or
scrolls at desktop width; whether every ``<img>`` was decoded (``naturalWidth > 0``); and whether a cell
output shows an error. Internal links are resolved on disk (file and ``#id``), and resources that would need
the network are reported. A screenshot of each page at each width goes to ``_build/screens/``.
``tests/test_browser_pages.py`` shows each check firing on a tiny hand-written page.

Without Chromium these tests skip locally with the reason, and FAIL in CI (``CI`` set): the Makefile's
``browser`` target installs it (Debian ``chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

from ebmlib.book import browser, reproduce, site
from ebmlib.book.execute import chapters, toc_files

pytestmark = pytest.mark.slow

SCREENS = ROOT / "_build" / "screens"
CELL = re.compile(r'class="cell( [^"]*)? docutils container"')


def _need_chromium() -> None:
    if browser.find_chromium() is None:
        msg = "chromium is not installed (make browser installs it: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; in CI the browser checks must run")
        pytest.skip(msg)


def _pages(root: Path = ROOT) -> list[str]:
    return [f"{f}.html" for f in toc_files(root)]


@pytest.fixture(scope="module")
def browser_results(smoke_site):
    _need_chromium()
    return browser.check_site(smoke_site, _pages(), screens=SCREENS, workers=2)


def test_every_page_reads_well_in_chromium(browser_results):
    """Every page at 1400 px and at 390 px: no defect that fails (``python -m ebmlib.book.browser check`` lists them)."""
    bad = [r for r in browser_results if not r.ok]
    assert not bad, "defects a reader would meet:\n" + browser.format_defects(bad)
    for r in browser_results:
        assert r.screenshot and Path(r.screenshot).stat().st_size > 0, f"{r.page}: no screenshot"
        for w in browser.WIDTHS:
            assert w in r.screenshots and Path(r.screenshots[w]).stat().st_size > 0, f"{r.page}: no screenshot at {w} px"


def test_math_renders_on_every_chapter(browser_results):
    by_page = {r.page: r for r in browser_results}
    for chapter in chapters(ROOT):
        r = by_page[f"{chapter}.html"]
        assert r.math_source > 0, f"{chapter}: no math found in the page"
        assert r.math >= r.math_source, f"{chapter}: {r.math} of {r.math_source} formulas rendered"
        figures = len(re.findall(r"^```\{glue:figure\}", (ROOT / f"{chapter}.md").read_text(), flags=re.M))
        assert figures >= 1 and r.images >= figures, f"{chapter}: {r.images} images for its {figures} figures"


def test_offline_and_downloadable(smoke_site):
    """No page needs the network for scripts, styles, fonts or math; each chapter offers its .ipynb."""
    for rel in _pages():
        text = (smoke_site / rel).read_text()
        assert not re.search(r'<script[^>]+src="(https?:)?//', text), f"{rel}: a script comes from the network"
        assert not re.search(r'<link[^>]+href="(https?:)?//[^"]+\.css', text), f"{rel}: a stylesheet needs the network"
    for chapter in chapters(ROOT):
        nb = smoke_site / "_sources" / f"{chapter}.ipynb"
        assert nb.exists(), f"{chapter}: the executed notebook is not offered for download"
        assert json.loads(nb.read_text())["cells"], f"{chapter}: the downloadable notebook is empty"
        page = (smoke_site / f"{chapter}.html").read_text()
        assert f"_sources/{chapter}.ipynb" in page, f"{chapter}: no download button for the .ipynb"
        # launch buttons only where they can work (ebmlib.book.site.repository; tests/test_pipeline_cache.py)
        if site.repository(ROOT) is None:
            assert "mybinder.org" not in page and "colab.research" not in page, f"{chapter}: a button to a placeholder"
        else:
            assert "mybinder.org/v2/gh/" in page and f"{chapter}.ipynb" in page, f"{chapter}: no Binder button"


def test_reproduce_page_lists_every_figure_and_claim(smoke_build, smoke_site):
    html = (smoke_site / f"{reproduce.PAGE}.html").read_text()
    sidecars = reproduce.collect(smoke_build)
    assert sidecars, "no sidecar to list"
    for s in sidecars:
        anchor = f'id="{reproduce.anchor(s["chapter"], s["figure"])}"'
        assert anchor in html, f"reproduce page lacks {s['chapter']}/{s['figure']}"
        section = html.split(anchor, 1)[1].split('<section id="repro-', 1)[0]
        for name, c in s["claims"].items():
            row = re.search(r"<tr[^>]*>(?:(?!</tr>).)*?<code[^>]*><span[^>]*>" + re.escape(name)
                            + r"</span></code>(?:(?!</tr>).)*</tr>", section, re.S)
            assert row, f"reproduce page: no row for claim {name} of {s['figure']}"
            status = reproduce.HOLDS if c["holds"] else reproduce.FAILS
            assert status in row.group(0), f"reproduce page: claim {name} of {s['figure']} should read {status}"
    for key in ("torch", "numpy", "python", "CPU count", "commit"):
        assert key in html, f"reproduce page: environment lacks {key}"


def test_reproduce_page_shows_a_failing_claim(tmp_path):
    """A failing claim reads FAILS on the page and in its summary (a synthetic sidecar)."""
    side = {"figure": "toy", "chapter": "00-toy", "profile": "smoke", "seed": 0, "device": "cpu",
            "dtype": "float64", "versions": {"git_commit": "abc", "torch": "x"}, "params": {"n": 1},
            "wall_s": 0.1, "caption": "A toy.", "png": "toy.png",
            "claims": {"good": {"value": 1.0, "bound": 2.0, "op": "<=", "holds": True, "statement": "ok"},
                       "bad": {"value": 3.0, "bound": 2.0, "op": "<=", "holds": False, "statement": "too big"}}}
    d = tmp_path / "figures" / "00-toy"
    d.mkdir(parents=True)
    (d / "toy.json").write_text(json.dumps(side))
    text = reproduce.render(tmp_path, ROOT, image_dir=None)
    assert re.search(r"`bad` \| 3 \| ≤ 2 \| ✘ \*\*FAILS\*\*", text), text
    assert re.search(r"`good` \| 1 \| ≤ 2 \| ✔ holds", text)
    assert "**FAILS**: 00-toy / toy / `bad`" in text and ":class: danger" in text
    assert "1 FAIL" in text


def test_reproduce_page_shows_the_benchmarks(smoke_site, tmp_path):
    """The page shows this machine's bench.json when there is one, and every GPU run kept in chapters/_measured."""
    recorded = sorted((ROOT / reproduce.MEASURED).glob("bench-*.json"))
    assert recorded, "no recorded GPU benchmark in chapters/_measured"
    html = (smoke_site / f"{reproduce.PAGE}.html").read_text()
    for p in recorded:
        b = json.loads(p.read_text())
        assert b["device"] == "cuda" and b["machine"]["gpu"] in html and p.name in html
        for r in b["relaxation"]:
            assert f"{r['speedup_vs_autograd']:.1f}×" in html
    local = {"device": "cpu", "threads": 2, "torch": "t", "repetitions": 3, "machine": {"cpu": "CPU-X", "cores": 2},
             "relaxation": [{"sizes": [4, 3], "batch": 2, "step_time_s": 1e-5, "roofline_ratio": 0.5,
                             "autograd_step_time_s": 2e-4, "speedup_vs_autograd": 20.0}],
             "targets": [{"name": "t1", "value": 0.5, "bound": 0.6, "holds": False}]}
    (tmp_path / "bench.json").write_text(json.dumps(local))
    text = reproduce.render(tmp_path, ROOT, image_dir=None)
    mine = text.split("### This machine", 1)[1].split("### Recorded on a GPU", 1)[0]
    assert "CPU-X" in mine and "| 4\u20113 | 2 | ? | 10.0 | 0.50 | 200.0 | 20.0× |" in mine and "**FAILS**" in mine


def test_student_edition_has_no_solutions(smoke_build, smoke_site):
    student = site.build(build_dir=smoke_build, root=ROOT, edition="student")
    for chapter in chapters(ROOT):
        full = (smoke_site / f"{chapter}.html").read_text()
        stud = (student / f"{chapter}.html").read_text()
        nb = json.loads((smoke_build / "executed" / f"{chapter}.ipynb").read_text())
        removed = site.strip_solutions(nb)
        n_full, n_stud = len(CELL.findall(full)), len(CELL.findall(stud))
        assert "solution-start" not in json.dumps(nb) and "solution-end" not in json.dumps(nb)
        assert n_full - n_stud == removed, f"{chapter}: {n_full - n_stud} code cells gone, expected {removed}"
        assert 'class="solution' not in stud, f"{chapter}: a solution block is still in the student page"
        assert "Solution to" not in stud
        assert "exercise" in stud, f"{chapter}: the exercises themselves must remain"
        if 'class="solution' in full:
            assert removed > 0 or "Solution to" in full


def test_strip_solutions_keeps_text_around_the_gate():
    nb = {"cells": [
        {"cell_type": "markdown", "source": "Before.\n\n```{solution-start} ex\n:class: dropdown\n```\n\nHidden text."},
        {"cell_type": "code", "source": "secret = 1"},
        {"cell_type": "markdown", "source": "```{solution-end}\n```\n\nAfter."},
    ]}
    assert site.strip_solutions(nb) == 1
    text = "".join(c["source"] for c in nb["cells"])
    assert "Before." in text and "After." in text
    assert "Hidden" not in text and "secret" not in text


def test_pdf_of_the_book(smoke_build, smoke_site, tmp_path):
    """``make pdf``: the single-page book printed by headless Chromium, math typeset (no raw TeX left)."""
    _need_chromium()
    pdf = site.pdf(build_dir=smoke_build, root=ROOT, out=tmp_path / "book.pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF"), "not a PDF"
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= 2 * len(chapters(ROOT)), f"only {pages} pages for {len(chapters(ROOT))} chapters"
    pdftotext = shutil.which("pdftotext")
    if pdftotext:  # poppler-utils, when installed: the text layer has no TeX source left
        text = subprocess.run([pdftotext, str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        assert "Glossary" in text
        raw = re.findall(r"\\\(|\\\[|\$\$", text)
        assert not raw, f"raw TeX delimiters in the PDF: {len(raw)}"
