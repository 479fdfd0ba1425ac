"""Where a result came from: the book root, the git commit, the versions of the software."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .._version import __version__

__all__ = ["find_root", "git_commit", "versions"]


def find_root(start: Optional[Path] = None) -> Path:
    """The repository root: the nearest folder above ``start`` holding ``_toc.yml``."""
    p = Path(start or Path.cwd()).resolve()
    for q in (p, *p.parents):
        if (q / "_toc.yml").exists():
            return q
    raise FileNotFoundError("build_dir: could not find the book root (_toc.yml) above " + str(p))


def git_commit(root: Path) -> str:
    """The checked-out commit, with ``+dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions(root: Optional[Path] = None) -> dict[str, str]:
    """The commit and the versions of ebmlib, torch, numpy and Python (recorded in every sidecar)."""
    return {
        "git_commit": git_commit(root or find_root()),
        "ebmlib": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
