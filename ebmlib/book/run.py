"""The execution context of a chapter: the house style of figures and the sidecar of each.

``Run.save`` writes ``<build_dir>/figures/<chapter>/<figure>.png`` and a JSON
sidecar beside it with the provenance of the figure and its ``claims``
(:mod:`ebmlib.book.claims`): named numbers with the bound they must meet and
whether they hold. ``tests/`` reads every sidecar (:func:`load_sidecars`) and
fails when a claim does not hold.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..checks import resolve_device
from ..io import atomic_write_bytes, atomic_write_json
from .claims import Claim
from .provenance import find_root, versions

__all__ = ["Run", "style", "load_sidecars"]


def style() -> None:
    """The house style of every figure."""
    import matplotlib

    matplotlib.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 110,
            "savefig.dpi": 110,
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
        self.root = find_root()
        # a relative build_dir is relative to the book root (the runner passes e.g. "_build")
        self.build_dir = self.root / Path(build_dir or "_build")
        self.fig_dir = self.build_dir / "figures" / chapter
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        self._versions = versions(self.root)
        self._t = time.perf_counter()
        self.saved: list[Path] = []
        style()

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
        fig.savefig(buf, format="png")
        png = self.fig_dir / f"{figure}.png"
        atomic_write_bytes(png, buf.getvalue())
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
            "data": _jsonable(data),
            "claims": {c.name: _jsonable(c.to_json()) for c in claims},
        }
        atomic_write_json(self.fig_dir / f"{figure}.json", sidecar)
        self.saved.append(png)
        self.glue(figure, fig)
        plt.close(fig)
        _show_claims(figure, claims)
        self._t = time.perf_counter()


def _show_claims(figure: str, claims: Iterable[Claim]) -> None:
    lines = []
    for c in claims:
        b = f"[{c.bound[0]:.3g}, {c.bound[1]:.3g}]" if isinstance(c.bound, tuple) else f"{c.bound:.3g}"
        mark = "holds" if c.holds else "FAILS"
        lines.append(f"  {mark:5s}  {c.name}: {c.value:.6g} {c.op} {b}  ({c.statement})")
    if lines:
        print(f"claims of figure {figure!r}:\n" + "\n".join(lines))


def load_sidecars(build_dir: Path) -> list[dict[str, Any]]:
    """Every sidecar under ``<build_dir>/figures``, sorted by chapter and figure."""
    out = []
    for p in sorted(Path(build_dir, "figures").glob("*/*.json")):
        out.append(json.loads(p.read_text()))
    return out
