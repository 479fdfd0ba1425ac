"""The browser checks fire on tiny hand-written pages, each with one known defect, and stay silent on a clean one.

The pages imitate what MathJax leaves in the DOM (``div.math`` with an ``.eqno`` and an
``mjx-container[display]`` holding an ``mjx-math`` of a given width) and a stand-in ``window.MathJax``
whose ``startup.document.math`` maps each container to its TeX source, so no MathJax is needed. The
theme's rules that matter are written inline: ``div.math`` a ``row-reverse`` flex box, clipping or not.
Each page is opened at 1400 px (a window) and at 390 px (the page in a 390 px frame).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ebmlib.book import browser

pytestmark = pytest.mark.slow

HEAD = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { margin: 0; font-family: sans-serif; }
main { padding: 0 16px; }
div.math { display: flex; flex-direction: row-reverse; align-items: center; gap: .5em; max-width: 100%; }
div.math.clip { overflow: hidden; }
div.math span.eqno { flex: 0 0 auto; }
mjx-container[display="true"] { display: block; flex-grow: 1; text-align: center; }
mjx-container.scroll { min-width: 0; overflow-x: auto; }
mjx-math { display: inline-block; height: 20px; background: #ddd; }
pre { font-size: 14px; overflow: auto; }
</style>
<script>
window.MathJax = {startup: {promise: Promise.resolve(), document: {math: []}}};
function tex(id, source) {
  window.MathJax.startup.document.math.push({typesetRoot: document.getElementById(id), math: source});
}
</script>
</head><body><main><section id="s1">
"""
TAIL = "</section></main></body></html>\n"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82")


def eq(ident: str, width: int, number: str = "(1)", div_class: str = "math", box_class: str = "scroll",
       source: str = r"E(h) = \sum_k \tfrac12 \|h_k\|^2", eqno_style: str = "") -> str:
    """A displayed equation as MathJax leaves it: a formula ``width`` px wide, its number, its TeX source."""
    return (f'<div class="{div_class}" id="equation-{ident}"><span class="eqno" style="{eqno_style}">{number}</span>'
            f'<mjx-container class="{box_class}" display="true" id="{ident}"><mjx-math style="width:{width}px">'
            f'</mjx-math></mjx-container></div><script>tex("{ident}", String.raw`{source}`)</script>')


PAGES = {
    "clean.html": HEAD + "<p>Inline formula <span class='math'><mjx-container><mjx-math style='width:40px'>"
    "</mjx-math></mjx-container></span> and <code>\\delta</code> in code.</p>"
    + eq("fits", 200)
    + "<pre>x = r'\\frac{a}{b}'  # TeX in code is legitimate: $\\delta$\n" + "y" * 100 + "</pre>"
    + "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
    + "<img src='dot.png' alt='a dot'>" + TAIL,
    "rawtex.html": HEAD + "<p>(c) $\\delta_k(t) = -\\beta \\dfrac{t^{m+1}}{(m+1)!}, g_k</p>" + TAIL,
    "clipped.html": HEAD + eq("wide", 1800, "(5)", div_class="math clip", box_class="",
                              source=r"h_{t+1} = h_t - \varepsilon\,\frac{\partial F}{\partial h}") + TAIL,
    "scrolls.html": HEAD + eq("long", 1800, "(7)", source=r"\mathrm{SNR}_k(M) := \frac{a}{b}") + TAIL,
    "overlap.html": HEAD + "<div style='position:relative'>"
    + eq("under", 200, "(9)", eqno_style="position:absolute; left:50%; top:0") + "</div>" + TAIL,
    "table.html": HEAD + "<div style='overflow:hidden'><table><tr><th>symbol</th><th>in ebmlib</th></tr>"
    "<tr><td style='white-space:nowrap'>" + "w" * 400 + "</td><td>x</td></tr></table></div>" + TAIL,
    "longcode.html": HEAD + "<div class='cell'><div class='cell_input'><div class='highlight'><pre>"
    "short = 1\n" + "z = " + "1 + " * 29 + "1\n</pre></div></div></div>" + TAIL,
    "image.html": HEAD + "<img src='missing.png' alt='gone'><img src='dot.png' alt='a dot'>" + TAIL,
    "overflow.html": HEAD + "<p>a commit " + "3d1b05d1" * 40 + "</p>" + TAIL,
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, browser.PageResult]:
    if browser.find_chromium() is None:
        msg = "chromium is not installed (make browser installs it: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; in CI the browser checks must run")
        pytest.skip(msg)
    site = tmp_path_factory.mktemp("site")
    for name, text in PAGES.items():
        (site / name).write_text(text)
    (site / "dot.png").write_bytes(PNG)
    res = browser.check_site(site, sorted(PAGES), screens=site / "screens", workers=2)
    return {r.page: r for r in res}


def kinds(r: browser.PageResult, width: int | None = None, failing: bool = True) -> set[str]:
    return {d.kind for d in r.defects if (width is None or d.width in (width, None)) and d.fails == failing}


def test_a_clean_page_has_no_defect(results):
    r = results["clean.html"]
    assert r.defects == [], "\n".join(map(str, r.defects))
    assert r.images == 1 and set(r.screenshots) == set(browser.WIDTHS)
    assert all(Path(p).stat().st_size > 0 for p in r.screenshots.values())


def test_raw_tex_in_the_text_is_found(results):
    found = [d for d in results["rawtex.html"].defects if d.kind == "raw-tex"]
    assert len(found) == 1 and found[0].width is None and found[0].fails
    assert r"$\delta_k(t) = -\beta \dfrac{t^{m+1}}" in found[0].detail and "#s1" in found[0].detail


def test_a_clipped_equation_is_found_at_both_widths(results):
    r = results["clipped.html"]
    for w in browser.WIDTHS:
        ds = [d for d in r.defects if d.width == w and d.kind == "equation-clipped"]
        assert len(ds) == 1 and ds[0].fails, r.defects
        assert "eq. (5)" in ds[0].detail and r"h_{t+1} = h_t - \varepsilon" in ds[0].detail
        assert "formula 1800 px" in ds[0].detail


def test_a_scrolling_equation_fails_on_a_desktop_and_is_a_note_on_a_phone(results):
    r = results["scrolls.html"]
    desk = [d for d in r.defects if d.width == 1400]
    phone = [d for d in r.defects if d.width == 390]
    assert [d.kind for d in desk] == ["equation-scrolls"] and desk[0].fails and "eq. (7)" in desk[0].detail
    assert [d.kind for d in phone] == ["equation-scrolls"] and not phone[0].fails
    assert r"\mathrm{SNR}_k(M)" in phone[0].detail


def test_an_equation_under_its_number_is_found(results):
    assert "equation-overlaps-number" in kinds(results["overlap.html"], 1400)


def test_a_clipped_table_is_found(results):
    for w in browser.WIDTHS:
        assert "table-clipped" in kinds(results["table.html"], w)


def test_a_code_line_over_100_characters_is_found(results):
    ds = [d for d in results["longcode.html"].defects if d.kind == "code-too-wide"]
    assert len(ds) == 1 and ds[0].width is None
    assert "1 of 2 lines over 100 chars (longest 121)" in ds[0].detail and "cell 1 input" in ds[0].detail


def test_an_undecoded_image_is_found(results):
    ds = [d for d in results["image.html"].defects if d.kind == "image"]
    assert len(ds) == 1 and "missing.png" in ds[0].detail and results["image.html"].images == 2


def test_a_page_that_scrolls_sideways_is_found_with_its_culprit(results):
    for w in browser.WIDTHS:
        ds = [d for d in results["overflow.html"].defects if d.width == w and d.kind == "page-overflow"]
        assert len(ds) == 1 and ds[0].fails and "p “a commit 3d1b05d1" in ds[0].detail, results["overflow.html"].defects


def test_every_defective_page_fails_and_the_report_lists_it(results):
    for name, r in results.items():
        assert r.ok == (name in ("clean.html",)), (name, r.problems)
    text = browser.format_defects(list(results.values()))
    assert "rawtex.html" in text and "equation-clipped" in text and "failing defects" in text


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="widths"):
        browser.check_site(tmp_path, [], widths=(100,))
    with pytest.raises(ValueError, match="workers"):
        browser.check_site(tmp_path, [], workers=0)
    with pytest.raises(FileNotFoundError, match="pages"):
        browser.check_site(tmp_path, ["nope.html"])
    with pytest.raises(FileNotFoundError, match="html_dir"):
        browser.site_pages(tmp_path / "nope")
