"""The reference and teaching pages: bibliography links, glossary terms, notation, course plan, table of contents.

Fast (no build): the pages are read as text. The bibliography is also formatted with the same pybtex
``plain`` style the site uses (``bibtex_default_style: plain``), so a field that the style would not show
fails here, not only in the browser.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

from ebmlib.book.execute import chapters, toc_files

CHAPTERS = ROOT / "chapters"
BIB = CHAPTERS / "references.bib"

# Entries that have neither a DOI nor an arXiv version nor a stable address, each with its reason.
NO_IDENTIFIER = {
    "almeida1987learning": "IEEE First International Conference on Neural Networks (1987): no DOI or arXiv "
                           "version could be verified",
}

# The terms the chapters link at first use (issue 15); their exact names are part of the contract.
REQUIRED_TERMS = ("pinned unit", "Kolmogorov–Smirnov", "Richardson extrapolation", "feedforward state",
                  "Neumann series", "attenuation")

DOI = re.compile(r"^10\.\d{4,9}/\S+$")
ARXIV = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
TERM_ROLE = re.compile(r"\{term\}`([^`]+)`")
FENCE = re.compile(r"^(`{3,}|:{3,})\{(exercise|exercise-start)\}[ \t]*(.*)$", re.M)
EX_REF = re.compile(r"\{ref\}`(?:([^`<]*?)\s*<)?(ex-[A-Za-z0-9_-]+)>?`")
DOC_TIME = re.compile(r"\{doc\}`([^`]+)` \((?:about )?([0-9][0-9 hmin]*?)\)")
BEFORE = re.compile(r"^- \*Before\* \(about ([0-9][0-9 hmin]*?)\):(.*)$", re.M)


def _fields(entry) -> dict[str, str]:
    return {k.lower(): str(v) for k, v in entry.fields.items()}


@pytest.fixture(scope="module")
def bib():
    from pybtex.database import parse_file

    return parse_file(str(BIB))


def _links(f: dict[str, str]) -> list[str]:
    """The addresses the plain style links for an entry: doi.org, arxiv.org/abs or the url."""
    out = []
    if "doi" in f:
        out.append(f"https://doi.org/{f['doi']}")
    if "eprint" in f:
        out.append(f"https://arxiv.org/abs/{f['eprint']}")
    if "url" in f:
        out.append(f["url"])
    return out


def test_every_reference_has_a_doi_or_an_arxiv_link(bib):
    missing, malformed = [], []
    for key, entry in bib.entries.items():
        f = _fields(entry)
        if not _links(f):
            if key not in NO_IDENTIFIER:
                missing.append(key)
            continue
        assert key not in NO_IDENTIFIER, f"{key}: has an identifier now; remove it from NO_IDENTIFIER"
        if "doi" in f and not DOI.match(f["doi"]):
            malformed.append(f"{key}: doi {f['doi']!r}")
        if "eprint" in f and (not ARXIV.match(f["eprint"]) or f.get("archiveprefix", "").lower() != "arxiv"):
            malformed.append(f"{key}: eprint {f['eprint']!r} (needs a new-style arXiv id and archivePrefix = arXiv)")
        if "url" in f and not f["url"].startswith("https://"):
            malformed.append(f"{key}: url {f['url']!r} is not https")
        if "url" in f and f["url"].startswith("https://arxiv.org/abs/") and "eprint" in f:
            malformed.append(f"{key}: url repeats the eprint (the style shows both)")
    assert not missing, f"references without doi, eprint or url: {missing}"
    assert not malformed, "\n".join(malformed)
    for key in NO_IDENTIFIER:
        assert key in bib.entries, f"NO_IDENTIFIER names {key!r}, which is not in references.bib"


def test_the_plain_style_shows_every_link(bib):
    """Format the entries as sphinxcontrib-bibtex does (pybtex ``plain``) and find each link in the HTML."""
    from pybtex.plugin import find_plugin

    style = find_plugin("pybtex.style.formatting", "plain")()
    backend = find_plugin("pybtex.backends", "html")()
    rendered = {e.key: e.text.render(backend) for e in style.format_entries(bib.entries.values())}
    for key, entry in bib.entries.items():
        for link in _links(_fields(entry)):
            assert f'href="{link}"' in rendered[key], f"{key}: {link} is not linked in {rendered[key]!r}"


def _glossary_terms() -> set[str]:
    text = (CHAPTERS / "glossary.md").read_text()
    m = re.search(r"^```\{glossary\}[^\n]*\n(.*?)^```", text, re.S | re.M)
    assert m, "glossary.md: no {glossary} block"
    return {line.strip() for line in m.group(1).splitlines() if line.strip() and not line[0].isspace()}


def test_glossary_has_the_terms_the_chapters_link():
    terms = {t.lower() for t in _glossary_terms()}
    for t in REQUIRED_TERMS:
        assert t in _glossary_terms(), f"glossary: no term named exactly {t!r}"
    dangling = []
    for page in sorted(CHAPTERS.glob("*.md")):
        for raw in TERM_ROLE.findall(page.read_text()):
            target = raw.rsplit("<", 1)[1].rstrip(">").strip() if raw.rstrip().endswith(">") else raw.strip()
            if target.lower() not in terms:
                dangling.append(f"{page.name}: {{term}}`{raw}`")
    assert not dangling, "glossary terms linked but not defined:\n" + "\n".join(dangling)


def test_notation_and_glossary_keep_d_for_the_target():
    """``d`` is the target only: no italic d as a differential or a distance, no ``\\|`` inside a table row
    (MyST reads it as an escaped column bar, and ‖h‖ renders as |h|)."""
    other_d = re.compile(r"\\t?frac\{d\}|\{d\s*[+-]\s*1\}|\^\{?d\}?(?![a-zA-Z])|d\s*=\s*N\s*-\s*k|\bd[a-z]?/d[a-z\\]")
    for name in ("notation.md", "glossary.md"):
        text = (CHAPTERS / name).read_text()
        for line in text.splitlines():
            for math in re.findall(r"\$([^$]+)\$", line):
                assert not other_d.search(math), f"{name}: d used for something other than the target: ${math}$"
            if line.startswith("|"):
                assert "\\|" not in line, f"{name}: \\| inside a table row renders as a single bar: {line[:80]}"
    notation = (CHAPTERS / "notation.md").read_text()
    assert re.search(r"^\| \$d\$ \| target", notation, re.M), "notation: the row of d must say it is the target"
    assert re.search(r"^\| \$m = N - k\$ \|", notation, re.M), "notation: the distance from the output is m"


def _exercises() -> dict[str, str]:
    """label -> title of every exercise in the chapters (``{exercise}`` and gated ``{exercise-start}``)."""
    out = {}
    for page in sorted(CHAPTERS.glob("*.md")):
        text = page.read_text()
        for m in FENCE.finditer(text):
            head = text[m.end():m.end() + 400]
            label = re.search(r"^:label:\s*(\S+)", head, re.M)
            assert label, f"{page.name}: exercise {m.group(3)!r} has no label"
            out[label.group(1)] = m.group(3).strip()
    return out


@pytest.mark.parametrize("page", ["course.md", "instructor.md"])
def test_teacher_pages_name_only_existing_exercises(page):
    exercises = _exercises()
    assert len(exercises) >= 20
    text = (CHAPTERS / page).read_text()
    refs = EX_REF.findall(text)
    if page == "course.md":
        assert len(refs) >= 20, "course.md: the plans name the exercises by {ref}`Title <label>`"
    for title, label in refs:
        assert label in exercises, f"{page}: no exercise labelled {label!r} in the chapters"
        if title:
            assert title == exercises[label], f"{page}: {label} is titled {exercises[label]!r}, not {title!r}"


def _minutes(s: str) -> int:
    m = re.fullmatch(r"\s*(?:(\d+) h)?\s*(?:(\d+) min)?\s*", s)
    assert m and (m.group(1) or m.group(2)), f"not a duration: {s!r}"
    return 60 * int(m.group(1) or 0) + int(m.group(2) or 0)


def _chapter_times() -> dict[str, tuple[int, str]]:
    """chapter name -> (minutes to read, 'A–B h' with the exercises or '—'), from each chapter's Time line."""
    out = {}
    for ch in chapters(ROOT):
        text = (ROOT / f"{ch}.md").read_text()
        line = re.search(r"^\*\*Time\*\*:(.*)$", text, re.M)
        assert line, f"{ch}: no **Time** line"
        read = re.search(r"about (\d+) (minutes?|hours?) to read", line.group(1))
        assert read, f"{ch}: the Time line states no reading time: {line.group(1)!r}"
        minutes = int(read.group(1)) * (60 if read.group(2).startswith("hour") else 1)
        ex = re.search(r"(\d+[–-]\d+) hours? with the exercises", line.group(1))
        out[Path(ch).name] = (minutes, f"{ex.group(1).replace('-', '–')} h" if ex else "—")
    return out


def test_course_times_follow_the_chapters():
    times = _chapter_times()
    text = (CHAPTERS / "course.md").read_text()
    rows = dict((m.group(1), (m.group(2), m.group(3))) for m in
                re.finditer(r"^\| \{doc\}`([^`]+)` \| ([^|]+?) \| ([^|]+?) \|$", text, re.M))
    assert set(rows) == set(times), f"course.md: the time table lists {sorted(rows)}, the book has {sorted(times)}"
    for ch, (read, ex) in rows.items():
        assert _minutes(read) == times[ch][0], f"course.md: {ch} reads in {times[ch][0]} min, the table says {read}"
        assert ex == times[ch][1], f"course.md: {ch} takes {times[ch][1]} with the exercises, the table says {ex}"
    quoted = {"notation": 10}
    quoted.update({ch: t[0] for ch, t in times.items()})
    for doc, t in DOC_TIME.findall(text):
        assert doc in quoted, f"course.md: a time is given for {doc!r}, which has none"
        assert _minutes(t) == quoted[doc], f"course.md: {doc} ({t}), but its Time line says {quoted[doc]} min"
    totals = []
    for total, items in BEFORE.findall(text):
        parts = DOC_TIME.findall(items)
        assert parts, f"course.md: a session's reading names no page with its time: {items!r}"
        assert _minutes(total) == sum(_minutes(t) for _, t in parts), f"course.md: {total} != the sum of {parts}"
        totals.append(_minutes(total))
    assert len(totals) == 3 + 6, "course.md: one *Before* line per session of the two plans"
    for plan, n in (("Three sessions", 3), ("Six sessions", 6)):
        section = text.split(f"## {plan}", 1)[1].split("\n## ", 1)[0]
        stated = re.search(r"Reading before the sessions: about ([0-9][0-9 hmin]*?) in all", section)
        assert stated, f"course.md: {plan} states no total reading time"
        own = [_minutes(t) for t, _ in BEFORE.findall(section)]
        assert len(own) == n and _minutes(stated.group(1)) == sum(own), f"course.md: {plan}: total != sum {own}"


def test_toc_has_the_teacher_pages_before_the_reference():
    files = toc_files(ROOT)
    for page in ("chapters/course", "chapters/instructor"):
        assert page in files, f"_toc.yml does not list {page}"
        assert page not in chapters(ROOT), f"{page} must not be an executable chapter (no kernelspec)"
    assert files.index("chapters/instructor") < files.index("chapters/glossary")
    for page in ("chapters/course", "chapters/instructor"):
        assert "kernelspec" not in (ROOT / f"{page}.md").read_text()
