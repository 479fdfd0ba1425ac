"""The shared pieces of the exercise checks: Verdict, compare, sci."""

import pytest
import torch

from ebmlib.exercises import Verdict, compare, sci


def test_compare_verdicts():
    ref = torch.tensor([1.0, -2.0], dtype=torch.float64)
    assert compare("g", [1.0, -2.0], ref)
    assert not compare("g", [1.0, 2.0], ref)  # a sign error
    assert not compare("g", None, ref) and "None" in str(compare("g", None, ref))
    assert not compare("g", [1.0], ref) and "shape" in str(compare("g", [1.0], ref))
    assert not compare("g", [float("nan"), -2.0], ref)
    assert not compare("g", "abc", ref)
    assert compare("g", [1.0 + 1e-12, -2.0], ref) and not compare("g", [1.001, -2.0], ref)
    with pytest.raises(TypeError, match="expected"):
        compare("g", [1.0], [1.0])
    v = Verdict(True, "fine")
    assert str(v).startswith("Correct") and v._repr_markdown_().startswith("**Correct.**")


def test_sci():
    assert sci(1.23e-9) == "1.2 × 10⁻⁹" and sci(3e5) == "3.0 × 10⁵" and sci(0.0) == "0"
    assert sci(0.05) == "0.050" and sci(12.0) == "12" and sci(-4.5e-7, 2) == "-4.50 × 10⁻⁷"


def test_verdict_plain_text_is_short_lines():
    v = Verdict(False, "word " * 60)
    assert repr(v).startswith("Not yet: ") and max(len(line) for line in repr(v).splitlines()) <= 100
