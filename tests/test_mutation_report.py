"""The `make mutate` report (ebmlib.book.mutation) and the list of equivalent mutants the tests own."""

from __future__ import annotations

import json
import re

from conftest import ROOT

from ebmlib.book import mutation

EQUIV = ROOT / "tests" / "mutants_equivalent.txt"


def test_equivalents_name_existing_functions_and_give_a_reason():
    listed = mutation.equivalents(EQUIV)
    for name, reason in listed.items():
        m = re.fullmatch(r"ebmlib\.(\w+?)\.x(ǁ[A-Za-z_][A-Za-z0-9_]*ǁ|_)([A-Za-z_]\w*?)__mutmut_\d+", name)
        assert m, f"not a mutmut mutant name: {name}"
        module, _, func = m.groups()
        src = (ROOT / "ebmlib" / f"{module}.py").read_text()
        assert re.search(rf"def {re.escape(func)}\(", src), f"{name}: no function {func} in {module}.py"
        assert len(reason.split()) >= 3, f"{name}: give the reason it is equivalent"


def test_report_scores_and_flags_unexplained_survivors(tmp_path):
    d = tmp_path / "ebmlib"
    d.mkdir()
    codes = {"ebmlib.m.x_f__mutmut_1": 1, "ebmlib.m.x_f__mutmut_2": 0, "ebmlib.m.x_f__mutmut_3": -24,
             "ebmlib.m.x_f__mutmut_4": 0}
    (d / "m.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    eq = tmp_path / "eq.txt"
    eq.write_text("# comment\nebmlib.m.x_f__mutmut_2  the default only changes speed\n")
    results = mutation.load(tmp_path)
    lines, ok = mutation.report(results, mutation.equivalents(eq), 0.9)
    # 2 of the 3 non-equivalent mutants caught (one by timeout): 66.7 %, and one survivor unexplained
    assert not ok and "66.7%" in lines[1] and lines[-1].strip() == "ebmlib.m.x_f__mutmut_4"
    eq.write_text("ebmlib.m.x_f__mutmut_2 a reason\nebmlib.m.x_f__mutmut_4 another reason\n")
    lines, ok = mutation.report(results, mutation.equivalents(eq), 0.9)
    assert ok and "100.0%" in lines[1]
    assert mutation.main([str(tmp_path), str(eq)]) == 0
    assert mutation.main([str(tmp_path / "nothing"), str(eq)]) == 2
