"""The book pipeline: what chapters call (``import ebmlib.book as ebb``) and how the book is made.

Chapters use the flat API below: ``ebb.Run`` (the execution context of a chapter, which
saves each figure with its sidecar), the claims ``ebb.at_most`` / ``ebb.at_least`` /
``ebb.within``, and ``ebb.versions``. The rest lives in modules loaded on demand:
``execute`` (papermill), ``site`` (Jupyter Book, student edition, PDF), ``reproduce``
(the generated page), ``browser`` (headless Chromium), ``bench`` and ``cli``
(``python -m ebmlib``). The science modules of ``ebmlib`` never import this package.
"""

from .claims import Claim, at_least, at_most, claim_holds, within
from .provenance import find_root, git_commit, versions
from .records import (
    METHODS,
    PUBLISHED,
    compare_published,
    effective_lr,
    effective_lr_figure,
    final_table_markdown,
    learning_curves,
    learning_curves_figure,
    load_records,
    paired_gap,
    published_table_markdown,
    search_table_markdown,
    select_scales,
    status_markdown,
    summarize,
    sweep_status,
    validate_record,
)
from .run import Run, load_sidecars, style

__all__ = [
    "Run",
    "Claim",
    "at_most",
    "at_least",
    "within",
    "claim_holds",
    "versions",
    "find_root",
    "git_commit",
    "load_sidecars",
    "style",
    "load_records",
    "validate_record",
    "sweep_status",
    "select_scales",
    "summarize",
    "paired_gap",
    "compare_published",
    "learning_curves",
    "learning_curves_figure",
    "effective_lr",
    "effective_lr_figure",
    "status_markdown",
    "final_table_markdown",
    "search_table_markdown",
    "published_table_markdown",
    "PUBLISHED",
    "METHODS",
]
