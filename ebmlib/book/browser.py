"""Check the built site as a reader sees it: every page opened in headless Chromium.

For each page, ``check_site`` works on a private copy of the site into which a small script is
injected at the end of ``<body>``. After the window's ``load`` event and MathJax's typesetting
(``MathJax.startup.promise``), the script records in the DOM (read back with ``--dump-dom``):

- the number of rendered formulas (``mjx-container``) and of MathJax errors (``mjx-merror``),
  and any raw TeX delimiter (``$$``, ``\\(``, ``\\[``) left in visible text outside code;
- for every ``<img>``: whether the browser decoded it (``complete`` and ``naturalWidth > 0``):
  an image that is missing or broken has a natural width of 0;
- cell outputs that show a traceback or an error.

Independently of the browser, the page's HTML is parsed for internal links (each target file must
exist, each ``#fragment`` must be an ``id`` of its target) and for resources that would need the
network (scripts, styles, images from ``http(s)://``). A screenshot of each page (the real site, not
the copy) goes to ``screens/<page>.png``. Chromium runs at most ``workers`` at a time.
"""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

__all__ = ["find_chromium", "chromium_args", "PageResult", "check_page", "check_site", "print_pdf", "screenshot"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MARK = "data-ebmlib-check"

_PROBE = """
<script>
(function () {
  document.querySelectorAll('img').forEach(function (i) { i.loading = 'eager'; });
  function visibleTex() {
    var out = [], skip = /^(PRE|CODE|SCRIPT|STYLE|TEXTAREA|MJX-CONTAINER|MJX-ASSISTIVE-MML)$/;
    var walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, null);
    var n;
    while ((n = walk.nextNode())) {
      var p = n.parentElement, hidden = false;
      while (p) { if (skip.test(p.tagName) || (p.classList && p.classList.contains('highlight'))) { hidden = true; break; } p = p.parentElement; }
      if (!hidden && /\\$\\$|\\\\\\(|\\\\\\[/.test(n.nodeValue)) out.push(n.nodeValue.trim().slice(0, 80));
    }
    return out;
  }
  function done(mathError) {
    var imgs = Array.prototype.map.call(document.images, function (i) {
      return {src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0};
    });
    var errs = [];
    document.querySelectorAll('.cell_output .traceback, .cell_output .error, .output.traceback, .output.error')
      .forEach(function (e) { errs.push(e.textContent.trim().slice(0, 200)); });
    document.querySelectorAll('.cell_output .stderr, .cell_output .output').forEach(function (e) {
      var t = e.textContent;
      if (/Traceback \\(most recent call last\\)/.test(t) || (e.classList.contains('stderr') && /Error/.test(t)))
        errs.push(t.trim().slice(0, 200));
    });
    var r = {math: document.querySelectorAll('mjx-container').length,
             mathSource: document.querySelectorAll('.math').length,
             mathErrors: document.querySelectorAll('mjx-merror').length,
             mathJax: !!(window.MathJax && window.MathJax.startup),
             mathError: mathError || null, rawTex: visibleTex(), images: imgs, errors: errs};
    document.documentElement.setAttribute('MARK', JSON.stringify(r));
  }
  window.addEventListener('load', function () {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise)
      MathJax.startup.promise.then(function () { done(null); }, function (e) { done(String(e)); });
    else done(null);
  });
})();
</script>
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


def screenshot(page: Path, png: Path, size: str = "1280,900") -> Path:
    """A screenshot of ``page`` (its first screen) written to ``png``."""
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


@dataclass
class PageResult:
    """What a reader would meet on one page; ``problems`` is empty when the page is sound."""

    page: str
    math: int = 0
    math_source: int = 0
    images: int = 0
    screenshot: Optional[str] = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_page(copy_dir: Path, html_dir: Path, rel: str, screens: Optional[Path]) -> PageResult:
    """Open ``rel`` (a page of the probed copy ``copy_dir`` of ``html_dir``) and check it."""
    res = PageResult(page=rel)
    broken, network = _link_problems(html_dir, (html_dir / rel).resolve())
    res.problems += [f"broken link or missing file: {h}" for h in broken]
    res.problems += [f"needs the network: {h}" for h in network]
    try:
        proc = _chromium(["--dump-dom"], (copy_dir / rel).resolve().as_uri())
    except subprocess.TimeoutExpired:
        res.problems.append("chromium timed out")
        return res
    m = re.search(MARK + r'="([^"]*)"', proc.stdout)
    if m is None:
        res.problems.append("the page never finished loading (no probe result in the DOM)")
        return res
    r = json.loads(htmllib.unescape(m.group(1)))
    res.math, res.math_source, res.images = r["math"], r["mathSource"], len(r["images"])
    if r["mathSource"] and not r["mathJax"]:
        res.problems.append("MathJax did not load")
    if r["mathSource"] and r["math"] == 0:
        res.problems.append(f"{r['mathSource']} formulas but none rendered by MathJax")
    if r["mathErrors"]:
        res.problems.append(f"{r['mathErrors']} MathJax errors (mjx-merror)")
    if r["mathError"]:
        res.problems.append(f"MathJax failed: {r['mathError']}")
    res.problems += [f"raw TeX left in the text: {t!r}" for t in r["rawTex"]]
    res.problems += [f"image did not load: {i['src']}" for i in r["images"] if not i["ok"]]
    res.problems += [f"cell output shows an error: {e!r}" for e in r["errors"]]
    if screens is not None:
        png = Path(screens) / (rel.replace("/", "__").removesuffix(".html") + ".png")
        try:
            res.screenshot = str(screenshot(html_dir / rel, png))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            res.problems.append(f"screenshot failed: {e}")
    return res


def check_site(html_dir: Path, pages: list[str], screens: Optional[Path] = None, workers: int = 2) -> list[PageResult]:
    """Check every page (paths relative to ``html_dir``, e.g. ``chapters/01-energy.html``)."""
    html_dir = Path(html_dir).resolve()
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
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda rel: check_page(copy, html_dir, rel, screens), pages))
