"""The public API rule, and chapters that keep to it.

``ebmlib`` exports, flat, every name of every science module's ``__all__`` and nothing else, each name
once; ``ebmlib.book`` is the pipeline. Chapters use ``eb.<name>`` and ``ebb.<name>`` of those exports
only (no ``eb.<module>.<name>``, no private names), call the library for logic, and keep every code
cell to at most 25 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT

import ebmlib as eb
import ebmlib.book as ebb

SCIENCE = ["activations", "checks", "network", "dynamics", "gradients", "response", "estimators", "measures",
           "langevin", "oneway", "problems", "learning", "data", "io", "comparison", "selection", "spiking"]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
MAX_CELL_LINES = 25


def code_cells(path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, code lines) of every ``{code-cell}`` of a MyST notebook, options left out."""
    lines = path.read_text().splitlines()
    cells, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```{code-cell}"):
            j, body = i + 1, []
            while not lines[j].startswith("```"):
                body.append(lines[j])
                j += 1
            while body and (body[0].startswith(":") or not body[0].strip()):
                body.pop(0)
            cells.append((i + 1, body))
            i = j
        i += 1
    return cells


def test_exports_are_the_union_of_the_science_modules():
    names = [n for m in SCIENCE for n in getattr(eb, m).__all__]
    assert len(names) == len(set(names)), "a public name is exported by two modules"
    assert sorted(eb.__all__) == sorted(["__version__", *names])
    for n in eb.__all__:
        assert hasattr(eb, n) and not n.startswith("_") or n == "__version__"
    science_files = {p.stem for p in (ROOT / "ebmlib").glob("*.py") if not p.stem.startswith("_")}
    assert science_files == set(SCIENCE), "a new science module must join the public API (SCIENCE above)"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_use_only_the_public_api(chapter):
    code = "\n".join("\n".join(b) for _, b in code_cells(chapter))
    tree = ast.parse(code)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            space = {"eb": eb.__all__, "ebb": ebb.__all__}.get(node.value.id)
            if space is not None and node.attr not in space:
                problems.append(f"{node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ebmlib"):
            # the exercise checks are public, one module per chapter: from ebmlib.exercises.chNN import check_…
            if re.fullmatch(r"ebmlib\.exercises(\.ch\d\d)?", node.module or "") and all(
                    not a.name.startswith("_") for a in node.names):
                continue
            problems.append(f"from {node.module} import …")
        if isinstance(node, ast.Import):
            problems += [a.name for a in node.names if a.name.startswith("ebmlib") and a.name not in
                         ("ebmlib", "ebmlib.book")]
    assert not problems, f"{chapter.name} reaches past the public API: {sorted(set(problems))}"
    assert not re.search(r"np\.polyfit\(np\.log", code), "use eb.loglog_slope"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_code_cells_are_short(chapter):
    long = [(line, len(body)) for line, body in code_cells(chapter) if len(body) > MAX_CELL_LINES]
    assert not long, f"{chapter.name}: cells over {MAX_CELL_LINES} lines at (line, length) {long}"


def test_the_checker_sees_what_it_must(tmp_path):
    bad = tmp_path / "99-bad.md"
    bad.write_text("```{code-cell} ipython3\n:tags: [x]\n\n" + "\n".join(["a = 1"] * 26) + "\n```\n")
    assert len(code_cells(bad)[0][1]) == 26
