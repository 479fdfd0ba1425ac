"""The layers of ``ebmlib``: the science never imports the pipeline (``ebmlib.book``), and no module
imports names upward from a package ``__init__``.

Read with ``ast``, without importing anything: every import of every module is resolved to the
absolute module it names.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PKG = ROOT / "ebmlib"
BOOK = PKG / "book"
# The one module outside ebmlib/book allowed to import it: ``python -m ebmlib`` is the pipeline's CLI.
ENTRY_POINTS = {PKG / "__main__.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, as_module: str | None = None) -> str:
    """The package a module's relative imports start from."""
    name = as_module or _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _is_package(module: str) -> bool:
    return (ROOT.joinpath(*module.split(".")) / "__init__.py").exists()


def _is_submodule(package: str, name: str) -> bool:
    d = ROOT.joinpath(*package.split("."))
    return (d / f"{name}.py").exists() or (d / name / "__init__.py").exists()


def _imports(path: Path, as_module: str | None = None) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` for every import of the file (names empty for ``import m``).

    ``as_module`` reads the file as if it were that module (for the self-test).
    """
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(path, as_module).split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module, [a.name for a in node.names]))
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import statement can load: the module, and each name that is a submodule of it."""
    return [module] + [f"{module}.{n}" for n in names if _is_package(module) and _is_submodule(module, n)]


def test_the_modules_are_found():
    names = {_module_name(p) for p in _modules()}
    assert {"ebmlib", "ebmlib.network", "ebmlib.book", "ebmlib.book.run", "ebmlib.book.cli"} <= names


def test_science_never_imports_the_pipeline():
    bad = []
    for path in _modules():
        if BOOK in path.parents or path in ENTRY_POINTS:
            continue
        for line, module, names in _imports(path):
            for target in _targets(module, names):
                if target == "ebmlib.book" or target.startswith("ebmlib.book."):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "the science modules must not import the pipeline (ebmlib.book):\n" + "\n".join(bad)


def test_no_import_upward_from_a_package_init():
    """``from . import x`` / ``from .. import x`` / ``from ebmlib import x`` only for submodules ``x``."""
    bad = []
    for path in _modules():
        for line, module, names in _imports(path):
            if not (module == "ebmlib" or module.startswith("ebmlib.")) or not _is_package(module):
                continue
            for n in names:
                if n == "*" or not _is_submodule(module, n):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {n!r} from the package {module}'s __init__")
    assert not bad, "import from the module that defines a name, not from a package __init__:\n" + "\n".join(bad)


def test_the_checker_sees_what_it_must(tmp_path):
    """The rules above catch the forms they are about (guards against a checker that sees nothing)."""
    probe = tmp_path / "probe.py"
    probe.write_text("from . import book\nfrom .book.run import Run\nimport ebmlib.book.cli\n"
                     "from . import __version__, network\nfrom .. import book as b\n")
    found = _imports(probe, as_module="ebmlib.probe")
    targets = [t for _, m, n in found for t in _targets(m, n)]
    assert {"ebmlib.book", "ebmlib.book.run", "ebmlib.book.cli", "ebmlib.network"} <= set(targets)
    upward = [n for _, m, ns in found if m == "ebmlib" for n in ns if not _is_submodule(m, n)]
    assert upward == ["__version__"]
    nested = _imports(probe, as_module="ebmlib.book.probe")  # relative to ebmlib.book: "from .. import book"
    assert (5, "ebmlib", ["book"]) in nested and (1, "ebmlib.book", ["book"]) in nested


@pytest.mark.parametrize(
    "code",
    [
        # the science loads without the pipeline
        "import sys, ebmlib; bad = sorted(m for m in sys.modules if m.startswith('ebmlib.book'));"
        " assert not bad, bad",
        # the chapters' API stays light: no papermill / jupytext / Jupyter Book at import time
        "import sys, ebmlib.book; heavy = {'papermill', 'jupytext', 'jupyter_book', 'myst_nb', 'sphinx'};"
        " bad = sorted(heavy & set(sys.modules)); assert not bad, bad",
    ],
    ids=["science-without-pipeline", "light-book-api"],
)
def test_import_time_layers(code):
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_one_version():
    """``ebmlib/_version.py`` holds the version; the sidecars' provenance and pyproject.toml agree with it."""
    from ebmlib._version import __version__
    from ebmlib.book.provenance import versions

    assert versions(ROOT)["ebmlib"] == __version__
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared and declared.group(1) == __version__
