"""Every chapter executes under the smoke profile; every claim of every figure holds; the site builds.

These tests share one smoke execution of the whole book (the ``smoke_build`` fixture).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import ROOT

from ebmlib.book.claims import claim_holds
from ebmlib.book.execute import chapter_name, chapters, execute

pytestmark = pytest.mark.slow

REQUIRED = ("figure", "chapter", "profile", "seed", "device", "dtype", "versions", "params", "wall_s", "data", "claims")


def _sidecars(build: Path) -> list[Path]:
    return sorted((build / "figures").glob("*/*.json"))


def test_every_chapter_executed(smoke_build):
    for chapter in chapters(ROOT):
        nb = smoke_build / "executed" / f"{chapter}.ipynb"
        assert nb.exists(), f"{chapter} was not executed"
        cells = json.loads(nb.read_text())["cells"]
        for cell in cells:
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", f"{chapter}: a cell raised {out.get('ename')}"


def test_every_chapter_has_figures_with_claims(smoke_build):
    for chapter in chapters(ROOT):
        name = chapter_name(chapter)
        side = list((smoke_build / "figures" / name).glob("*.json"))
        assert len(side) >= 1, f"{name} saved no figure"
        assert any(json.loads(p.read_text())["claims"] for p in side), f"{name}: no figure makes a claim"


def test_every_claim_holds(smoke_build):
    failing = []
    for p in _sidecars(smoke_build):
        s = json.loads(p.read_text())
        for key in REQUIRED:
            assert key in s, f"{p}: sidecar lacks {key!r}"
        assert s["profile"] == "smoke"
        assert (p.parent / s["png"]).exists()
        for name, c in s["claims"].items():
            assert set(c) >= {"value", "bound", "holds", "statement"}
            value = c["value"] if c["value"] is not None else math.nan
            recomputed = claim_holds(value, c["bound"], c["op"])
            assert recomputed == c["holds"], f"{p.name}:{name} records holds={c['holds']} but recomputes {recomputed}"
            if not recomputed:
                failing.append(f"{s['chapter']}/{s['figure']}:{name} = {c['value']} {c['op']} {c['bound']}")
    assert not failing, "claims that do not hold:\n" + "\n".join(failing)


def test_same_seed_same_sidecar_numbers(smoke_build, tmp_path):
    """Re-executing the first chapter with the same seed reproduces its sidecar numbers exactly (CPU)."""
    chapter = chapters(ROOT)[0]
    name = chapter_name(chapter)
    execute([name], profile="smoke", build_dir=tmp_path, root=ROOT)
    for p in sorted((smoke_build / "figures" / name).glob("*.json")):
        a = json.loads(p.read_text())
        b = json.loads((tmp_path / "figures" / name / p.name).read_text())
        assert a["data"] == b["data"], f"{p.name}: plotted data differ between two runs with seed {a['seed']}"
        assert {k: v["value"] for k, v in a["claims"].items()} == {k: v["value"] for k, v in b["claims"].items()}


def test_unknown_parameter_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no parameter 'nonsense'"):
        execute(["01-energy"], profile="smoke", overrides={"nonsense": 1}, build_dir=tmp_path, root=ROOT)
    with pytest.raises(ValueError, match="profile"):
        execute(["01-energy"], profile="nope", build_dir=tmp_path, root=ROOT)


def test_site_builds_strictly_with_offline_math(smoke_site):
    index = smoke_site / "chapters" / "01-energy.html"
    assert index.exists()
    html = index.read_text()
    assert "_static/mathjax/tex-chtml.js" in html, "MathJax must be served by the site itself"
    assert "cdn.jsdelivr" not in html
    assert (smoke_site / "_static" / "mathjax" / "tex-chtml.js").exists()
