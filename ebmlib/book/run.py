"""The execution context of a chapter: the house style of figures and the sidecar of each.

``Run.save`` writes ``<build_dir>/figures/<chapter>/<figure>.png`` and a JSON
sidecar beside it with the provenance of the figure and its ``claims``
(:mod:`ebmlib.book.claims`): named numbers with the bound they must meet and
whether they hold. ``tests/`` reads every sidecar (:func:`load_sidecars`) and
fails when a claim does not hold.
"""

from __future__ import annotations

import html
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..checks import resolve_device
from ..io import atomic_write_bytes, atomic_write_json
from .claims import Claim
from .provenance import find_root, versions

__all__ = ["Run", "style", "load_sidecars", "claims_html", "claims_text", "sci", "READS_ENV"]

# Set by the pipeline (``python -m ebmlib run``): the file where ``Run`` logs what the chapter reads.
READS_ENV = "EBMLIB_READS_LOG"
SCREEN_DPI = 110  # the on-screen size of a figure: pixels per inch of its size in the page
SAVE_DPI = 200    # the resolution it is saved at (PNG file, site, PDF)


def style() -> None:
    """The house style of every figure: saved at ``SAVE_DPI``, shown at the size ``SCREEN_DPI`` gives."""
    import matplotlib

    matplotlib.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": SCREEN_DPI,
            "savefig.dpi": SAVE_DPI,
            "savefig.bbox": "tight",
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 10,
            "legend.frameon": False,
            "figure.constrained_layout.use": True,
        }
    )


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()] if x.ndim else _jsonable(x.item())
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (torch.dtype, torch.device)):
        return str(x)
    return x


class Run:
    """The execution context of one chapter: where figures go and what they record.

    Create it once in a chapter, right after the ``parameters`` cell::

        run = ebb.Run("01-energy", profile=profile, seed=seed, device=device,
                         dtype=dtype, params=dict(eps=eps), build_dir=build_dir)
    """

    def __init__(
        self,
        chapter: str,
        *,
        profile: str,
        seed: int,
        device: str = "cpu",
        dtype: str = "float64",
        params: Optional[dict[str, Any]] = None,
        build_dir: Optional[str] = None,
    ):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an integer, got {type(seed).__name__}")
        self.chapter = chapter
        self.profile = profile
        self.seed = seed
        self.device = resolve_device(device)
        self.dtype = getattr(torch, dtype)
        self.params = dict(params or {})
        try:
            self.root = find_root()
        except FileNotFoundError:  # a notebook opened alone (Colab, a download): its own folder
            self.root = Path.cwd()
        # a relative build_dir is relative to the book root (the runner passes e.g. "_build")
        self.build_dir = self.root / Path(build_dir or "_build")
        self.fig_dir = self.build_dir / "figures" / chapter
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        self._versions = versions(self.root)
        self._t = time.perf_counter()
        self.saved: list[Path] = []
        style()
        log = os.environ.get(READS_ENV)
        if log:
            _watch_reads(Path(log), roots=[self.root, self.build_dir],
                         skip=[self.fig_dir, self.root / ".venv", self.root / ".git", Path(__file__).parents[1]])

    def generator(self, offset: int = 0) -> torch.Generator:
        """A ``torch.Generator`` on the run's device seeded with ``seed + offset``."""
        return torch.Generator(device=self.device).manual_seed(self.seed + offset)

    def tensor(self, x: Any) -> torch.Tensor:
        """``x`` as a tensor of the run's dtype on the run's device."""
        return torch.as_tensor(x).to(device=self.device, dtype=self.dtype)

    def path(self, name: str) -> Path:
        """A path for an extra output of this chapter (beside its figures)."""
        return self.fig_dir / name

    def input_path(self, chapter: str, name: str) -> Path:
        """An output ``name`` of an earlier ``chapter`` in the same build folder (chapters run in
        table-of-contents order); a clear :class:`FileNotFoundError` naming the command when missing."""
        p = self.build_dir / "figures" / chapter / name
        if not p.exists():
            raise FileNotFoundError(
                f"name: {p} does not exist; execute chapter {chapter} first, with the same profile and build "
                f"folder: python -m ebmlib run {chapter} --profile {self.profile}")
        return p

    def glue(self, name: str, value: Any) -> None:
        """Glue a number (or figure) for the prose: ``{glue:text}`name:.3g```.

        Returns nothing, so a cell ending with it shows no stray value.
        """
        from myst_nb import glue

        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, np.generic):
            value = value.item()  # numpy scalars break glue's text/plain formatting
        glue(name, value, display=False)

    def save(
        self,
        fig: Any,
        figure: str,
        *,
        data: dict[str, Any],
        claims: Sequence[Claim] = (),
        params: Optional[dict[str, Any]] = None,
        caption: str = "",
    ) -> None:
        """Write the PNG and its sidecar, glue the figure as ``figure``, show the claims.

        Returns nothing (so a notebook cell ending with it shows no dict); the
        sidecar is ``run.path(figure + ".json")``.
        """
        import io

        import matplotlib.pyplot as plt

        wall = time.perf_counter() - self._t
        names = [c.name for c in claims]
        if len(set(names)) != len(names):
            raise ValueError(f"claims: duplicate claim names in {names}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=SAVE_DPI, bbox_inches="tight")
        png_bytes = buf.getvalue()
        png = self.fig_dir / f"{figure}.png"
        atomic_write_bytes(png, png_bytes)
        sidecar = {
            "figure": figure,
            "chapter": self.chapter,
            "profile": self.profile,
            "seed": self.seed,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "versions": self._versions,
            "params": _jsonable({**self.params, **(params or {})}),
            "wall_s": round(wall, 3),
            "caption": caption,
            "png": png.name,
            "dpi": SAVE_DPI,
            "data": _jsonable(data),
            "claims": {c.name: _jsonable(c.to_json()) for c in claims},
        }
        atomic_write_json(self.fig_dir / f"{figure}.json", sidecar)
        self.saved.append(png)
        self.glue(figure, _screen_image(png_bytes, fig.dpi))
        plt.close(fig)
        _show_claims(self.chapter, figure, claims)
        self._t = time.perf_counter()


def _screen_image(png: bytes, screen_dpi: float) -> Any:
    """The PNG as an IPython image shown at the size ``screen_dpi`` gives (it holds ``SAVE_DPI`` pixels per inch)."""
    import struct

    from IPython.display import Image

    w = struct.unpack(">I", png[16:20])[0]  # the IHDR chunk of a PNG
    # the width only: with a fixed height a narrow (phone) column would squash the image
    return Image(data=png, format="png", width=max(1, round(w * screen_dpi / SAVE_DPI)))


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def sci(x: Any, digits: int = 3) -> str:
    """A number for a reader: ``0.0123``, ``4.56``, ``1.2 × 10⁻⁸`` (never ``1.2e-08``); ``none`` for a missing value."""
    if x is None:
        return "none"
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"x: expected a number, got {type(x).__name__}")
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits: expected a positive integer, got {digits!r}")
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.{digits}g}"
    mant, exp = f"{x:.{digits - 1}e}".split("e")
    mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
    return f"{mant} × 10{str(int(exp)).translate(_SUPERSCRIPT)}"


def _bound_text(c: Claim) -> str:
    if isinstance(c.bound, tuple):
        return f"∈ [{sci(c.bound[0])}, {sci(c.bound[1])}]"
    return f"{'≤' if c.op == '<=' else '≥'} {sci(c.bound)}"


def claims_text(figure: str, claims: Sequence[Claim]) -> str:
    """The claims of a figure as plain text, one line each (the fallback of the table)."""
    lines = [f"claims of figure {figure!r}:"]
    for c in claims:
        mark = "holds" if c.holds else "FAILS"
        lines.append(f"  {mark:5s}  {c.name}: {sci(c.value, 6)} {_bound_text(c)}  ({c.statement})")
    return "\n".join(lines)


def claims_html(figure: str, claims: Sequence[Claim]) -> str:
    """The claims of a figure as a compact HTML table: claim, value, bound, status, what would make it fail."""
    rows = []
    for c in claims:
        status = ('<span class="ebm-holds">✔ holds</span>' if c.holds
                  else '<span class="ebm-fails">✘ <strong>FAILS</strong></span>')
        rows.append(f"<tr><td><code>{html.escape(c.name)}</code></td><td>{html.escape(sci(c.value, 4))}</td>"
                    f"<td>{html.escape(_bound_text(c))}</td><td>{status}</td>"
                    f"<td>{html.escape(c.statement)}</td></tr>")
    return (f'<table class="table ebm-claims" data-figure="{html.escape(figure)}">'
            "<thead><tr><th>claim</th><th>value</th><th>required</th><th>status</th>"
            "<th>what it checks (and what would make it fail)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _show_claims(chapter: str, figure: str, claims: Sequence[Claim]) -> None:
    """Display the claims as one output (HTML table, plain-text fallback); the site moves it under the figure."""
    claims = list(claims)
    if not claims:
        return
    text = claims_text(figure, claims)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with the book's requirements
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(text)
        return
    display({"text/html": claims_html(figure, claims), "text/plain": text}, raw=True,
            metadata={"ebmlib": {"claims_of": figure, "chapter": chapter}})


_WATCH: dict[str, Any] = {"file": None, "seen": set(), "roots": (), "skip": (), "installed": False}


def _audit(event: str, args: tuple) -> None:
    """Log every file opened for reading and every folder listed under the watched roots (see ``cache``)."""
    if event == "open":
        kind = "open"
        path, mode = args[0], args[1]
        flags = args[2] if len(args) > 2 else 0
        if mode is not None:
            if any(ch in str(mode) for ch in "wax+"):
                return
        elif isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            return
    elif event in ("os.listdir", "os.scandir"):
        kind, path = "list", args[0]
    else:
        return
    f = _WATCH["file"]
    if f is None or path is None or isinstance(path, int):
        return
    try:
        p = os.path.abspath(os.fsdecode(path))
        if (kind, p) in _WATCH["seen"]:
            return
        _WATCH["seen"].add((kind, p))
        if not any(p == r or p.startswith(r + os.sep) for r in _WATCH["roots"]):
            return
        if any(p == s or p.startswith(s + os.sep) for s in _WATCH["skip"]):
            return
        if kind == "list" and p in {os.path.abspath(e or ".") for e in sys.path if isinstance(e, str)}:
            return  # the import system listing a folder of sys.path (the chapter's own folder among them)
        f.write(f"{kind}\t{p}\n")
        f.flush()
    except Exception:  # never let the log break the chapter's own file access
        return


def _watch_reads(log: Path, *, roots: Sequence[Path], skip: Sequence[Path]) -> None:
    """Start logging reads to ``log`` (truncated); the audit hook is installed once per process."""
    if _WATCH["file"] is not None:
        _WATCH["file"].close()
    log.parent.mkdir(parents=True, exist_ok=True)
    _WATCH["file"] = open(log, "w")  # noqa: SIM115 - kept open: the hook writes as the chapter reads
    _WATCH["seen"] = set()
    _WATCH["roots"] = tuple(os.path.abspath(r) for r in roots)
    _WATCH["skip"] = tuple(os.path.abspath(s) for s in skip)
    if not _WATCH["installed"]:
        sys.addaudithook(_audit)
        _WATCH["installed"] = True


def load_sidecars(build_dir: Path) -> list[dict[str, Any]]:
    """Every sidecar under ``<build_dir>/figures``, sorted by chapter and figure."""
    out = []
    for p in sorted(Path(build_dir, "figures").glob("*/*.json")):
        out.append(json.loads(p.read_text()))
    return out
