"""Checks for the scaffolded exercises: a student's answer in, a verdict out.

Each chapter's exercises have their checks in ``ebmlib.exercises.chNN`` (``ch04`` for chapter 04).
A check compares the student's answer with the reference computed by the library and returns a
:class:`Verdict` whose ``str`` says what is right or what is wrong, so a notebook cell ending with
``check_xxx(answer)`` prints a sentence, not a stack trace. Checks validate their arguments like the
rest of ``ebmlib`` and raise an error naming the argument when it has the wrong type or shape.
"""

from .verdict import Verdict, compare, sci

__all__ = ["Verdict", "compare", "sci"]
