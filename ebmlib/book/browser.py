"""Check the built site as a reader sees it: every page opened in headless Chromium, at several widths.

For each page and each window width (``WIDTHS``: 1400 px, a desktop, and 390 px, a phone) ``check_site``
launches Chromium once, on a private copy of the site into which a small probe script is injected at the
end of ``<body>``. After the window's ``load`` event and MathJax's typesetting (``MathJax.startup.promise``),
the probe opens every collapsed block (``<details>``, toggled solutions) so that hidden code and math are
measured too, measures, closes them again and records its findings in the DOM, read back with
``--dump-dom`` (the screenshot is taken by the same launch). Each finding is a :class:`Defect`
``(page, width, kind, detail)``; ``width`` is ``None`` for the findings that do not depend on it.

The kinds, and the precise criteria:

- ``raw-tex``: TeX source left in the visible text: ``$$``, ``\\(``, ``\\)``, ``\\[``, ``\\]``, a
  backslash command (``\\frac``, ``\\delta``, ``\\,``, ``\\{``) or a ``$…$`` pair, in a text node that is
  not inside ``pre``, ``code``, ``kbd``, ``samp``, a highlighted block or a formula MathJax rendered.
  ``math``: MathJax missing or failed, a formula left untypeset, or a MathJax error (``mjx-merror``).
- Horizontal fit, for displayed equations (the ``mjx-math`` inside ``mjx-container[display]``), tables,
  inline formulas and code blocks. Starting from the element's box (for code: its full ``scrollWidth``),
  the probe walks up its ancestors; each ancestor whose ``overflow-x`` is not ``visible`` is a clipper, with
  the visible box ``[left + clientLeft, left + clientLeft + clientWidth]``. Where the content passes that box
  by more than ``TOLERANCE_PX``: if the clipper scrolls (``overflow-x: auto|scroll``) the part past its
  right edge is *reachable* by scrolling and counted as ``scroll`` px, the part past its left edge, before
  the scroll origin, is not (it is ``hidden`` px); from there on the clipper's own box stands for the
  content. If the clipper does not scroll (``hidden``, ``clip``) the part outside is ``hidden`` px and the
  content is cut to the box. Past the viewport (``documentElement.clientWidth``) it counts as ``scroll``
  px too. Kinds: ``equation-clipped`` / ``table-clipped`` / ``math-clipped`` (inline formula) /
  ``code-clipped`` (``hidden`` px: part of it can be neither seen nor scrolled to), ``equation-scrolls`` /
  ``table-scrolls`` (``scroll`` px: wider than its box, reachable only sideways), ``math-scrolls`` and
  ``code-scrolls`` (the same, reported at desktop width only; for code only when no line is over
  ``MAX_CODE_CHARS``, the others being ``code-too-wide`` already), and ``equation-overlaps-number`` (the
  visible part of a displayed equation and its ``.eqno`` overlap by more than ``TOLERANCE_PX`` both
  ways). An equation's detail names its number, its label and the start of its TeX source, the width of
  the formula and the width visible: what to break by hand (MathJax 3 does not break lines).
- ``page-overflow``: the page itself scrolls sideways (``scrollWidth > clientWidth`` of the document);
  the detail names the outermost culprits that no box clips (a table, a paragraph with a long word).
- ``code-too-wide``: a line of a code block (cell input, cell output, any ``pre``) longer than
  ``MAX_CODE_CHARS`` characters (the text, independent of the width).
- ``image``: an ``<img>`` the browser did not decode (``complete`` and ``naturalWidth > 0``: a missing
  or broken file has a natural width of 0). ``cell-error``: a cell output that shows a traceback or error.
- ``link`` / ``network`` (the HTML parsed without the browser): an internal link whose file or ``#id``
  does not exist; a script, style or image that would need the network. ``load``: no probe result.

Every defect fails the check (``Defect.fails``) except, at a width below ``DESKTOP_PX``, an equation or
table that is reachable by scrolling sideways (``*-scrolls``, then a *note*): on a phone a sideways swipe
inside the block is the norm (and a code line of at most 100 characters cannot fit 390 px, so code is not
measured there). At desktop width such a block is cut off to a reader who does not think of scrolling, and
fails. Headless Chromium makes no window narrower than ``MIN_WINDOW_PX``: a narrower width is the page in
an ``<iframe>`` of that width (its own viewport: media queries and layout are the page's).

Command line: ``python -m ebmlib.book.browser check HTML_DIR [--width 1400 --width 390] [--json FILE]``
prints every defect, a count per page and kind, and exits with 1 when a defect fails.
"""

from __future__ import annotations

import argparse
import html as htmllib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

__all__ = ["WIDTHS", "DESKTOP_PX", "MAX_CODE_CHARS", "TOLERANCE_PX", "MIN_WINDOW_PX", "find_chromium", "chromium_args", "Defect",
           "PageResult", "check_page", "check_site", "site_pages", "format_defects", "print_pdf", "screenshot",
           "main"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MARK = "data-ebmlib-check"
WIDTHS = (1400, 390)  # desktop, phone (CSS px)
HEIGHTS = {390: 844}  # window height per width; others get 900
DESKTOP_PX = 1000
MAX_CODE_CHARS = 100
TOLERANCE_PX = 1.0
SCROLL_KINDS = frozenset({"equation-scrolls", "table-scrolls", "code-scrolls", "math-scrolls"})

_PROBE = r"""
<script>
(function () {
  var TOL = __TOL__, MAXCHARS = __MAXCHARS__;
  document.querySelectorAll('img').forEach(function (i) { i.loading = 'eager'; });
  var SKIP = /^(PRE|CODE|KBD|SAMP|SCRIPT|STYLE|TEXTAREA|MJX-CONTAINER|MJX-ASSISTIVE-MML)$/;
  var TEX = /\$\$|\\[()\[\]{},;!]|\\[A-Za-z]+|\$[^$\n]+\$/;
  function where(el) {
    var s = el.closest('section[id]');
    return s ? '#' + s.id : '';
  }
  function squash(s, n) { s = s.replace(/\s+/g, ' ').trim(); return s.length > n ? s.slice(0, n) + '…' : s; }
  function rawTex(root) {
    var out = [], walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, null), n;
    while ((n = walk.nextNode())) {
      var skip = false;
      for (var a = n.parentElement; a; a = a.parentElement)
        if (SKIP.test(a.tagName) || a.classList.contains('highlight')) { skip = true; break; }
      if (skip) continue;
      var m = TEX.exec(n.nodeValue);
      if (m) out.push({text: squash(n.nodeValue.slice(Math.max(0, m.index - 30), m.index + 70), 100),
                       where: where(n.parentElement)});
    }
    return out;
  }
  // the horizontal fit of content [l, r] starting at the element `start` (see the module's docstring)
  function fit(l, r, start) {
    var hidden = 0, scroll = 0;
    for (var a = start; a; a = a.parentElement) {
      var cs = getComputedStyle(a);
      if (cs.overflowX === 'visible') continue;
      var b = a.getBoundingClientRect(), bl = b.left + a.clientLeft, br = bl + a.clientWidth;
      if (a === document.documentElement) { bl = 0; br = a.clientWidth; }
      var outL = Math.max(0, bl - l), outR = Math.max(0, r - br);
      if (outL + outR <= TOL) continue;
      if (cs.overflowX === 'auto' || cs.overflowX === 'scroll') {
        var lost = Math.max(0, outL - a.scrollLeft);
        hidden += lost; scroll += outL + outR - lost;
        if (a === document.documentElement) { l = bl; r = br; } else { l = b.left; r = b.right; }
      } else {
        hidden += outL + outR; l = Math.max(l, bl); r = Math.min(r, br);
      }
    }
    var vw = document.documentElement.clientWidth;
    return {hidden: hidden, scroll: scroll, page: Math.max(0, r - vw) + Math.max(0, -l), l: l, r: r};
  }
  function round(x) { return Math.round(x); }
  function expand() {
    var undo = [];
    document.querySelectorAll('details:not([open])').forEach(function (d) {
      d.open = true; undo.push(function () { d.open = false; });
    });
    document.querySelectorAll('.toggle-hidden').forEach(function (e) {
      e.classList.remove('toggle-hidden'); undo.push(function () { e.classList.add('toggle-hidden'); });
    });
    return function () { undo.forEach(function (f) { f(); }); };
  }
  function measure(main) {
    var tex = new Map();
    try {
      for (var it of MathJax.startup.document.math) if (it.typesetRoot) tex.set(it.typesetRoot, it.math);
    } catch (e) { /* no MathJax */ }
    var eqs = [], inline = [], tables = [], code = [];
    main.querySelectorAll('mjx-container').forEach(function (c) {
      var m = c.querySelector(':scope > mjx-math');
      if (!m) return;
      var mr = m.getBoundingClientRect();
      if (mr.width === 0 && mr.height === 0) return;
      var f = fit(mr.left, mr.right, c), src = squash(tex.get(c) || c.textContent, 70);
      if (c.getAttribute('display') !== 'true') {
        if (f.hidden > TOL || f.scroll > TOL || f.page > TOL)
          inline.push({tex: src, hidden: round(f.hidden), scroll: round(f.scroll + f.page), where: where(c)});
        return;
      }
      var div = c.closest('div.math'), no = div ? div.querySelector('.eqno') : null, overlap = 0;
      if (no) {
        var er = no.getBoundingClientRect();
        var ox = Math.min(er.right, f.r) - Math.max(er.left, f.l);
        var oy = Math.min(er.bottom, mr.bottom) - Math.max(er.top, mr.top);
        if (ox > TOL && oy > TOL) overlap = ox;
      }
      eqs.push({eq: no ? squash(no.textContent.replace('#', ''), 12) : '', id: div ? div.id : '', tex: src,
                width: round(mr.width), box: round(Math.max(0, f.r - f.l)), hidden: round(f.hidden), scroll: round(f.scroll),
                page: round(f.page), overlap: round(overlap), where: where(c), y: round(mr.top + window.scrollY)});
    });
    main.querySelectorAll('table').forEach(function (t) {
      var tr = t.getBoundingClientRect();
      if (tr.width === 0 && tr.height === 0) return;
      var tw = Math.max(tr.width, t.scrollWidth + t.clientLeft), f = fit(tr.left, tr.left + tw, t);
      var head = Array.prototype.map.call(t.querySelectorAll('tr:first-child > *'), function (x) {
        return squash(x.textContent, 20); }).join(' | ');
      tables.push({head: squash(head, 80), width: round(tw), box: round(Math.max(0, f.r - f.l)),
                   hidden: round(f.hidden), scroll: round(f.scroll), page: round(f.page), where: where(t),
                   y: round(tr.top + window.scrollY)});
    });
    var cells = Array.prototype.slice.call(main.querySelectorAll('div.cell'));
    main.querySelectorAll('pre').forEach(function (p) {
      var lines = p.textContent.replace(/\n$/, '').split('\n'), long = lines.filter(function (s) {
        return s.length > MAXCHARS; });
      var cell = p.closest('div.cell'), part = p.closest('.cell_output') ? 'output' : 'input';
      var label = cell ? 'cell ' + (cells.indexOf(cell) + 1) + ' ' + part : 'code block';
      var first = cell ? squash((cell.querySelector('.cell_input pre') || p).textContent.split('\n')[0], 50) : '';
      var pr = p.getBoundingClientRect(), entry = {label: label, first: first, where: where(p),
        lines: lines.length, long: long.length, longest: Math.max.apply(null, lines.map(function (s) { return s.length; })),
        sample: long.length ? squash(long[0], 60) : '', hidden: 0, scroll: 0, page: 0};
      if (pr.width > 0 || pr.height > 0) {
        var f = fit(pr.left, pr.left + p.scrollWidth + p.clientLeft, p), cs = getComputedStyle(p);
        var pad = parseFloat(cs.paddingLeft) + parseFloat(cs.paddingRight);
        entry.hidden = round(f.hidden); entry.scroll = round(f.scroll); entry.page = round(f.page);
        entry.fits = Math.floor((p.clientWidth - pad) / ((p.scrollWidth - pad) / Math.max(1, entry.longest)));
      }
      if (entry.long || entry.hidden > TOL || entry.scroll > TOL || entry.page > TOL) code.push(entry);
    });
    var de = document.documentElement, vw = de.clientWidth, wide = [];
    // what pushes the page sideways: the outermost elements past the viewport that no box clips or scrolls
    function free(e) {
      for (var a = e; a && a !== document.body; a = a.parentElement) {
        var cs = getComputedStyle(a);
        if (cs.position === 'fixed' || (a !== e && cs.overflowX !== 'visible')) return false;
      }
      return true;
    }
    function past(e) {  // its box, or text overflowing its box, passes the viewport
      var r = e.getBoundingClientRect();
      return r.right > vw + TOL || (e.clientWidth > 0 && getComputedStyle(e).overflowX === 'visible' &&
                                     r.left + e.scrollWidth > vw + TOL);
    }
    if (de.scrollWidth - vw > TOL) {
      var all = Array.prototype.filter.call(document.body.querySelectorAll('*'), function (e) {
        return past(e) && free(e); });
      var seen = [];
      all.filter(function (e) { return !all.some(function (d) { return d !== e && e.contains(d); }); })
        .forEach(function (e) {
          e = e.closest('table, pre, figure, p, li, dt, dd, h1, h2, h3, h4, h5, h6') || e;
          if (seen.indexOf(e) >= 0 || seen.length >= 3) return;
          seen.push(e);
          wide.push(e.tagName.toLowerCase() + (typeof e.className === 'string' && e.className ? '.' + e.className.split(' ').join('.') : '')
                    + ' “' + squash(e.textContent, 50) + '” (' + where(e) + ')');
        });
    }
    return {equations: eqs, inline: inline, tables: tables, code: code,
            pageOverflow: round(Math.max(0, de.scrollWidth - vw)), wide: wide};
  }
  function done(mathError) {
    var main = document.querySelector('main') || document.body, undo = expand(), r;
    try {
      var imgs = Array.prototype.map.call(document.images, function (i) {
        return {src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0};
      });
      var errs = [];
      document.querySelectorAll('.cell_output .traceback, .cell_output .error, .output.traceback, .output.error')
        .forEach(function (e) { errs.push(e.textContent.trim().slice(0, 200)); });
      document.querySelectorAll('.cell_output .stderr, .cell_output .output').forEach(function (e) {
        var t = e.textContent;
        if (/Traceback \(most recent call last\)/.test(t) || (e.classList.contains('stderr') && /Error/.test(t)))
          errs.push(t.trim().slice(0, 200));
      });
      r = {width: window.innerWidth,
           math: document.querySelectorAll('mjx-container').length,
           mathSource: document.querySelectorAll('.math').length,
           mathErrors: document.querySelectorAll('mjx-merror').length,
           mathJax: !!(window.MathJax && window.MathJax.startup),
           mathError: mathError || null, rawTex: rawTex(document.body), images: imgs, errors: errs,
           layout: measure(main)};
    } catch (e) {
      r = {probeError: String(e && e.stack || e)};
    }
    undo();
    var json = JSON.stringify(r);
    document.documentElement.setAttribute('MARK', json);
    if (window.parent !== window) window.parent.postMessage({ebmlibCheck: json}, '*');
  }
  window.addEventListener('load', function () {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise)
      MathJax.startup.promise.then(function () { done(null); }, function (e) { done(String(e)); });
    else done(null);
  });
})();
</script>
""".replace("MARK", MARK).replace("__TOL__", repr(TOLERANCE_PX)).replace("__MAXCHARS__", str(MAX_CODE_CHARS))

# Headless Chromium will not make a window narrower than MIN_WINDOW_PX: a narrower width is a page of
# that width in an <iframe> (its own viewport, so media queries and layout are the page's) that hands
# the probe's record up to the frame dumped by --dump-dom.
MIN_WINDOW_PX = 500
_FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>html, body { margin: 0; padding: 0; overflow: hidden; }
iframe { border: 0; display: block; width: WPX; height: HPX; }</style></head><body><iframe src="SRC"></iframe><script>
window.addEventListener('message', function (e) {
  if (e.data && e.data.ebmlibCheck) document.documentElement.setAttribute('MARK', e.data.ebmlibCheck);
});</script></body></html>
""".replace("MARK", MARK)


def find_chromium() -> Optional[str]:
    """The Chromium executable (``$CHROMIUM`` or the first of ``chromium``, ``chromium-browser``, … on PATH)."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_args(user_dir: str, budget_ms: int = 8000) -> list[str]:
    """Flags that keep headless Chromium offline, quiet and deterministic (see TOOLCHAIN.md)."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("chromium: not found; install it (Debian: apt-get install -y chromium) or set $CHROMIUM")
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={user_dir}",
            f"--virtual-time-budget={budget_ms}"]


def _chromium(extra: list[str], url: str, timeout: float = 90, budget_ms: int = 8000) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="ebmlib-chromium-") as user:
        return subprocess.run(chromium_args(user, budget_ms) + extra + [url], capture_output=True, text=True,
                              timeout=timeout)


def _window(width: int) -> str:
    return f"{width},{HEIGHTS.get(width, 900)}"


def screenshot(page: Path, png: Path, size: str = "1280,900") -> Path:
    """A screenshot of ``page`` (its first screen) written to ``png``."""
    if not re.fullmatch(r"\d+,\d+", size):
        raise ValueError(f"size: expected 'WIDTH,HEIGHT', got {size!r}")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    _chromium([f"--screenshot={png}", f"--window-size={size}"], Path(page).resolve().as_uri())
    if not png.exists():
        raise RuntimeError(f"chromium: no screenshot written for {page}")
    return png


def print_pdf(page: Path, pdf: Path, budget_ms: int = 30000) -> Path:
    """Print ``page`` to ``pdf`` after MathJax has had ``budget_ms`` of virtual time to typeset."""
    pdf = Path(pdf)
    pdf.parent.mkdir(parents=True, exist_ok=True)
    if pdf.exists():
        pdf.unlink()
    proc = _chromium([f"--print-to-pdf={pdf}", "--no-pdf-header-footer"], Path(page).resolve().as_uri(),
                     timeout=300, budget_ms=budget_ms)
    if not pdf.exists() or pdf.stat().st_size == 0:
        raise RuntimeError(f"chromium: no PDF written for {page}: {proc.stderr[-2000:]}")
    return pdf


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.resources: list[str] = []
        self.refresh = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.ids.add(a[key])  # type: ignore[arg-type]
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])  # type: ignore[arg-type]
        if tag in ("script", "img") and a.get("src"):
            self.resources.append(a["src"])  # type: ignore[arg-type]
        if tag == "link" and a.get("href") and (a.get("rel") or "") in ("stylesheet", "preload", "icon"):
            self.resources.append(a["href"])  # type: ignore[arg-type]
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            self.refresh = True


_parsed: dict[Path, _Links] = {}


def _parse(path: Path) -> _Links:
    if path not in _parsed:
        p = _Links()
        p.feed(path.read_text(errors="replace"))
        _parsed[path] = p
    return _parsed[path]


def _link_problems(html_dir: Path, page: Path) -> tuple[list[str], list[str]]:
    """Broken internal links, and resources that would need the network."""
    parsed = _parse(page)
    broken, network = [], []
    for href in parsed.links:
        u = urlsplit(href)
        if u.scheme or href.startswith("//"):
            continue  # external links (launch buttons, references) are not followed
        target = page if not u.path else (page.parent / unquote(u.path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            broken.append(href)
        elif u.fragment and target.suffix == ".html" and unquote(u.fragment) not in _parse(target).ids:
            broken.append(href)
    for src in parsed.resources:
        u = urlsplit(src)
        if u.scheme in ("http", "https") or src.startswith("//"):
            network.append(src)
        elif not u.scheme and u.path and not (page.parent / unquote(u.path)).exists():
            broken.append(src)
    return broken, network


@dataclass(frozen=True)
class Defect:
    """One thing a reader would meet: on ``page``, at window ``width`` (CSS px; ``None``: at every width)."""

    page: str
    width: Optional[int]
    kind: str
    detail: str

    @property
    def fails(self) -> bool:
        """Whether the defect fails the check (see the module's docstring)."""
        return not (self.kind in SCROLL_KINDS and self.width is not None and self.width < DESKTOP_PX)

    def __str__(self) -> str:
        w = "all" if self.width is None else f"{self.width}px"
        return f"{self.page} @{w} [{self.kind}]{'' if self.fails else ' (note)'} {self.detail}"


@dataclass
class PageResult:
    """What a reader would meet on one page, at every width checked; ``problems`` is empty when it is sound."""

    page: str
    math: int = 0
    math_source: int = 0
    images: int = 0
    screenshot: Optional[str] = None
    screenshots: dict[int, str] = field(default_factory=dict)
    defects: list[Defect] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """The failing defects, as text."""
        return [str(d) for d in self.defects if d.fails]

    @property
    def ok(self) -> bool:
        return not self.problems


def _eq_name(e: dict[str, Any]) -> str:
    label = f"eq. {e['eq']}" if e["eq"] else "unnumbered equation"
    if e["id"]:
        label += f" #{e['id']}"
    return f"{label} “{e['tex']}” ({e['where']})"


def _layout_defects(page: str, width: int, lay: dict[str, Any]) -> list[Defect]:
    """Defects of the horizontal-fit measurements of one page at one width."""
    out: list[Defect] = []

    def add(kind: str, detail: str) -> None:
        out.append(Defect(page, width, kind, detail))

    def fit(kind: str, name: str, box: dict[str, Any]) -> None:
        """``kind``-clipped when part of it is cut off, else ``kind``-scrolls when it scrolls (in its box or the page)."""
        if box["hidden"] > TOLERANCE_PX:
            add(f"{kind}-clipped", f"{name}: {box['hidden']} px cut off")
        elif box["scroll"] > TOLERANCE_PX or box["page"] > TOLERANCE_PX:
            add(f"{kind}-scrolls", f"{name}: {box['scroll'] + box['page']} px past the box")

    for e in lay["equations"]:
        fit("equation", f"{_eq_name(e)}, formula {e['width']} px, {e['box']} px visible", e)
        if e["overlap"] > TOLERANCE_PX:
            add("equation-overlaps-number", f"{_eq_name(e)}: overlaps its number by {e['overlap']} px")
    for m in lay["inline"]:
        if m["hidden"] > TOLERANCE_PX:
            add("math-clipped", f"inline formula “{m['tex']}” ({m['where']}): {m['hidden']} px cut off")
        elif width >= DESKTOP_PX:
            add("math-scrolls", f"inline formula “{m['tex']}” ({m['where']}): {m['scroll']} px past its line")
    for t in lay["tables"]:
        fit("table", f"table [{t['head']}] ({t['where']}), {t['width']} px, {t['box']} px visible", t)
    for c in lay["code"]:
        name = f"{c['label']} ({c['where']})" + (f" starting {c['first']!r}" if c["first"] else "")
        if c["hidden"] > TOLERANCE_PX:
            add("code-clipped", f"{name}: {c['hidden']} px cut off")
        elif (c["scroll"] > TOLERANCE_PX or c["page"] > TOLERANCE_PX) and width >= DESKTOP_PX \
                and c["longest"] <= MAX_CODE_CHARS:  # longer lines are code-too-wide already
            add("code-scrolls", f"{name}: {c['scroll'] + c['page']} px past the box, longest line {c['longest']} chars, "
                                f"about {c.get('fits', '?')} fit")
    if lay["pageOverflow"] > TOLERANCE_PX:
        add("page-overflow", f"the page scrolls sideways by {lay['pageOverflow']} px: " + "; ".join(lay["wide"]))
    return out


def _probe_defects(page: str, r: dict[str, Any]) -> list[Defect]:
    """Defects that do not depend on the window width (raw TeX, math, images, errors, long code lines)."""
    out: list[Defect] = []

    def add(kind: str, detail: str) -> None:
        out.append(Defect(page, None, kind, detail))

    if r["mathSource"] and not r["mathJax"]:
        add("math", "MathJax did not load")
    if r["mathSource"] and r["math"] == 0:
        add("math", f"{r['mathSource']} formulas but none rendered by MathJax")
    if r["mathErrors"]:
        add("math", f"{r['mathErrors']} MathJax errors (mjx-merror)")
    if r["mathError"]:
        add("math", f"MathJax failed: {r['mathError']}")
    for t in r["rawTex"]:
        add("raw-tex", f"“{t['text']}” ({t['where']})")
    for i in r["images"]:
        if not i["ok"]:
            add("image", f"not decoded (naturalWidth 0): {i['src']}")
    for e in r["errors"]:
        add("cell-error", repr(e))
    for c in r["layout"]["code"]:
        if c["long"]:
            name = f"{c['label']} ({c['where']})" + (f" starting {c['first']!r}" if c["first"] else "")
            add("code-too-wide", f"{name}: {c['long']} of {c['lines']} lines over {MAX_CODE_CHARS} chars "
                                 f"(longest {c['longest']}), e.g. {c['sample']!r}")
    return out


def _run_probe(copy_dir: Path, rel: str, width: int, png: Optional[Path]) -> tuple[Optional[dict[str, Any]], str]:
    """One Chromium launch on the probed copy at ``width``: the probe's record (or None) and what went wrong."""
    url = copy_dir / rel
    if width < MIN_WINDOW_PX:
        url = url.with_name(f"{url.stem}.frame{width}.html")
        w, h = _window(width).split(",")
        url.write_text(_FRAME.replace("WPX", f"{w}px").replace("HPX", f"{h}px").replace("SRC", Path(rel).name))
    extra = ["--dump-dom", f"--window-size={_window(width)}"]
    if png is not None:
        png.parent.mkdir(parents=True, exist_ok=True)
        if png.exists():
            png.unlink()
        extra.append(f"--screenshot={png}")
    try:
        proc = _chromium(extra, url.resolve().as_uri())
    except subprocess.TimeoutExpired:
        return None, "chromium timed out"
    m = re.search(MARK + r'="([^"]*)"', proc.stdout)
    if m is None:
        return None, "the page never finished loading (no probe result in the DOM)"
    r = json.loads(htmllib.unescape(m.group(1)))
    if "probeError" in r:
        return None, f"the probe failed: {r['probeError'][:300]}"
    return r, ""


def _png_name(rel: str, width: int, first: bool) -> str:
    stem = rel.replace("/", "__").removesuffix(".html")
    return f"{stem}.png" if first else f"{stem}@{width}.png"


def check_page(copy_dir: Path, html_dir: Path, rel: str, screens: Optional[Path],
               widths: Sequence[int] = WIDTHS) -> PageResult:
    """Open ``rel`` (a page of the probed copy ``copy_dir`` of ``html_dir``) at every width and check it.

    The screenshot of the first width is ``screens/<page>.png``, the others ``screens/<page>@<width>.png``.
    """
    widths = _check_widths(widths)
    res = PageResult(page=rel)
    broken, network = _link_problems(html_dir, (html_dir / rel).resolve())
    res.defects += [Defect(rel, None, "link", f"broken link or missing file: {h}") for h in broken]
    res.defects += [Defect(rel, None, "network", f"needs the network: {h}") for h in network]
    for n, width in enumerate(widths):
        png = Path(screens) / _png_name(rel, width, n == 0) if screens is not None else None
        r, why = _run_probe(copy_dir, rel, width, png)
        if png is not None:
            if png.exists() and png.stat().st_size > 0:
                res.screenshots[width] = str(png)
            else:
                res.defects.append(Defect(rel, width, "load", "no screenshot written"))
        if r is None:
            res.defects.append(Defect(rel, width, "load", why))
            continue
        if r["width"] != width:
            res.defects.append(Defect(rel, width, "load", f"the window is {r['width']} px wide, not {width}"))
        if n == 0 or not res.math_source:
            res.math, res.math_source, res.images = r["math"], r["mathSource"], len(r["images"])
            known = {(d.kind, d.detail) for d in res.defects if d.width is None}
            res.defects += [d for d in _probe_defects(rel, r) if (d.kind, d.detail) not in known]
        res.defects += _layout_defects(rel, width, r["layout"])
    if widths and widths[0] in res.screenshots:
        res.screenshot = res.screenshots[widths[0]]
    return res


def _check_widths(widths: Sequence[int]) -> list[int]:
    out = list(widths)
    if not out or not all(isinstance(w, int) and not isinstance(w, bool) and 200 <= w <= 4000 for w in out):
        raise ValueError(f"widths: expected window widths in CSS px between 200 and 4000, got {widths!r}")
    return out


def check_site(html_dir: Path, pages: list[str], screens: Optional[Path] = None, workers: int = 2,
               widths: Sequence[int] = WIDTHS) -> list[PageResult]:
    """Check every page (paths relative to ``html_dir``, e.g. ``chapters/01-energy.html``) at every width.

    One Chromium launch per page and width, at most ``workers`` at a time; one result per page, in order.
    """
    html_dir = Path(html_dir).resolve()
    if not html_dir.is_dir():
        raise FileNotFoundError(f"html_dir: {html_dir} is not a folder")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive integer, got {workers!r}")
    widths = _check_widths(widths)
    for rel in pages:
        if not (html_dir / rel).exists():
            raise FileNotFoundError(f"pages: {rel} is not in {html_dir}")
    _parsed.clear()
    with tempfile.TemporaryDirectory(prefix="ebmlib-site-") as tmp:
        copy = Path(tmp) / "site"
        shutil.copytree(html_dir, copy)
        for rel in pages:
            p = copy / rel
            text = p.read_text()
            i = text.rfind("</body>")
            if i < 0:
                raise ValueError(f"pages: {rel} has no </body>")
            p.write_text(text[:i] + _PROBE + text[i:])
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda rel: check_page(copy, html_dir, rel, screens, widths), pages))


def site_pages(html_dir: Path) -> list[str]:
    """Every HTML page of a built site, relative to it: not ``_static``/``_sources``, the index, search or
    redirect pages."""
    html_dir = Path(html_dir)
    if not html_dir.is_dir():
        raise FileNotFoundError(f"html_dir: {html_dir} is not a folder")
    out = []
    for p in sorted(html_dir.rglob("*.html")):
        rel = p.relative_to(html_dir).as_posix()
        if rel.split("/")[0] in ("_static", "_sources", "_images") or rel in ("genindex.html", "search.html"):
            continue
        if _parse(p.resolve()).refresh:
            continue
        out.append(rel)
    return out


def format_defects(results: list[PageResult]) -> str:
    """Every defect, one per line, then the count per page and kind (failing and notes)."""
    lines = [str(d) for r in results for d in r.defects]
    counts = Counter((d.page, d.kind, d.fails) for r in results for d in r.defects)
    lines.append("")
    lines.append(f"{'page':40} {'kind':26} {'fails':>5} {'notes':>5}")
    for page, kind in sorted({(p, k) for p, k, _ in counts}):
        lines.append(f"{page:40} {kind:26} {counts[(page, kind, True)]:5d} {counts[(page, kind, False)]:5d}")
    n_fail = sum(v for (_, _, f), v in counts.items() if f)
    n_note = sum(v for (_, _, f), v in counts.items() if not f)
    lines.append(f"{len(results)} pages: {n_fail} failing defects, {n_note} notes")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m ebmlib.book.browser check HTML_DIR``: print the defects; exit 1 when one fails."""
    ap = argparse.ArgumentParser(prog="python -m ebmlib.book.browser", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check every page of a built site in headless Chromium")
    c.add_argument("html_dir", type=Path)
    c.add_argument("--page", action="append", help="a page relative to HTML_DIR (default: every page)")
    c.add_argument("--width", type=int, action="append", help=f"window width in px (default: {WIDTHS})")
    c.add_argument("--screens", type=Path, help="write a screenshot of each page and width here")
    c.add_argument("--json", type=Path, help="also write the defects as JSON here")
    c.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    pages = args.page or site_pages(args.html_dir)
    results = check_site(args.html_dir, pages, screens=args.screens, workers=args.workers,
                         widths=args.width or WIDTHS)
    print(format_defects(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(d) | {"fails": d.fails} for r in results for d in r.defects], indent=1))
    return 1 if any(not r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
