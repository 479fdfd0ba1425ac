"""Only what changed re-runs: a content hash of everything a chapter's execution depends on.

A chapter is executed again by ``python -m ebmlib book`` only when one of its inputs changed:

- its **code cells** (their text, in order; prose and cell tags other than ``parameters`` do not count);
- its **parameters** (the profile's values merged with ``-p`` overrides, as papermill injects them);
- the **``ebmlib`` modules it uses**, found statically: every ``eb.NAME`` / ``ebb.NAME`` /
  ``from ebmlib… import NAME`` of its code cells is resolved to the module that defines ``NAME``, then
  closed under the imports between ``ebmlib`` modules (imports inside functions included). Each
  module is hashed as a file; the package ``__init__`` files on the way are hashed too, but their
  re-exports are not followed (otherwise ``import ebmlib`` would make every chapter depend on every
  module). A chapter that uses a package object as a whole (``f(eb)``) depends on everything its
  ``__init__`` imports;
- ``requirements.lock`` and the pipeline's own post-processing of executed notebooks;
- the **files it read** while it ran: :class:`ebmlib.book.Run` records, through an audit hook, every
  file opened for reading and every folder listed under the book root or the build folder (recorded
  sweeps, another chapter's saved networks, ``params/paper.yaml``); their hashes are checked again.

The hash and its parts are stored beside the executed notebook (``<chapter>.inputs.json``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "PACKAGE",
    "ModuleInfo",
    "module_graph",
    "used_modules",
    "chapter_inputs",
    "input_key",
    "hash_reads",
    "stale_reason",
    "record_path",
    "reads_path",
]

PACKAGE = "ebmlib"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha_file(path: Path) -> str:
    return _sha(Path(path).read_bytes())


@dataclass
class ModuleInfo:
    """One module of the package: its file, the package modules it imports, the names it defines or re-exports."""

    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)
    exports: dict[str, str] = field(default_factory=dict)
    all_names: Optional[list[str]] = None
    stars: list[str] = field(default_factory=list)


def _module_name(path: Path, pkg_dir: Path) -> str:
    rel = path.relative_to(pkg_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve_from(node: ast.ImportFrom, mod: ModuleInfo) -> Optional[str]:
    """The absolute module an ``ImportFrom`` reads from (``None`` for a relative import above the package)."""
    if not node.level:
        return node.module
    base = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    if node.level - 1 > len(base) - 1:
        return None
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _existing(name: str, modules: dict[str, ModuleInfo]) -> Optional[str]:
    """The longest prefix of the dotted ``name`` that is a module of the package."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def module_graph(pkg_dir: Path) -> dict[str, ModuleInfo]:
    """Every module under ``pkg_dir`` (a package folder such as ``<root>/ebmlib``), parsed, not imported."""
    pkg_dir = Path(pkg_dir)
    if not (pkg_dir / "__init__.py").exists():
        raise FileNotFoundError(f"pkg_dir: {pkg_dir} is not a package (no __init__.py)")
    modules: dict[str, ModuleInfo] = {}
    trees: dict[str, ast.Module] = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = _module_name(path, pkg_dir)
        modules[name] = ModuleInfo(name, path, path.name == "__init__.py")
        try:
            trees[name] = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError:
            trees[name] = ast.Module(body=[], type_ignores=[])  # its hash still changes; nothing to follow
    prefix = pkg_dir.name
    for name, mod in modules.items():
        tree = trees[name]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == prefix or a.name.startswith(prefix + "."):
                        hit = _existing(a.name, modules)
                        if hit:
                            mod.imports.add(hit)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(node, mod)
                if base is None or not (base == prefix or base.startswith(prefix + ".")):
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    hit = sub if sub in modules else _existing(base, modules)
                    if hit:
                        mod.imports.add(hit)
        for node in tree.body:  # what the module defines or re-exports at its top level
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                mod.exports[node.name] = name
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            mod.exports[n.id] = name
                            if n.id == "__all__" and node.value is not None:
                                try:
                                    mod.all_names = list(ast.literal_eval(node.value))
                                except ValueError:
                                    mod.all_names = None
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(node, mod)
                if base is None or not (base == prefix or base.startswith(prefix + ".")):
                    continue
                for a in node.names:
                    if a.name == "*":
                        if base in modules:
                            mod.stars.append(base)
                        continue
                    sub = f"{base}.{a.name}"
                    mod.exports[a.asname or a.name] = sub if sub in modules else (_existing(base, modules) or name)
    for mod in modules.values():
        for base in mod.stars:
            src = modules[base]
            names = src.all_names if src.all_names is not None else [n for n in src.exports if not n.startswith("_")]
            for n in names:
                mod.exports.setdefault(n, src.exports.get(n, base))
    return modules


def _resolve_chain(pkg: str, attrs: list[str], modules: dict[str, ModuleInfo]) -> set[str]:
    """The modules that ``pkg.attr1.attr2…`` needs: the defining module of the first non-module attribute."""
    mod = pkg
    for a in attrs:
        sub = f"{mod}.{a}"
        if sub in modules:
            mod = sub
            continue
        target = modules[mod].exports.get(a)
        if target is None:  # unknown name: depend on the module and all it imports
            return {mod}
        return {target}
    return {mod}  # the module itself (a package: its __init__ and everything that imports)


def _parse_cell(code: str) -> Optional[ast.Module]:
    lines = [ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))]  # IPython magics
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def used_modules(code: Iterable[str], modules: dict[str, ModuleInfo], package: str = PACKAGE) -> set[str]:
    """The package modules that the code cells ``code`` use, closed under the imports between modules.

    ``code`` that cannot be parsed makes the package's ``__init__`` and all it imports a dependency.
    """
    direct: set[str] = set()
    trees = []
    for cell in code:
        tree = _parse_cell(cell)
        if tree is None:
            direct.add(package)
        else:
            trees.append(tree)
    aliases: dict[str, str] = {}  # names bound to package modules, in any cell (a kernel shares them)
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    hit = _existing(a.name, modules) if a.name.split(".")[0] == package else None
                    if hit:
                        aliases[a.asname or package] = hit if a.asname else package
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module and \
                    node.module.split(".")[0] == package:
                base = _existing(node.module, modules)
                if base is None:
                    continue
                rest = node.module[len(base) + 1:].split(".") if node.module != base else []
                for a in node.names:
                    if a.name == "*":
                        direct.add(base)
                        continue
                    sub = f"{base}.{a.name}"
                    if sub in modules and not rest:
                        aliases[a.asname or a.name] = sub  # a module: what is used of it counts
                    else:
                        direct |= _resolve_chain(base, [*rest, a.name], modules)
    for tree in trees:
        parents: dict[int, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[id(child)] = node
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in aliases:
                attrs, cur = [], node
                while isinstance(parents.get(id(cur)), ast.Attribute) and parents[id(cur)].value is cur:
                    cur = parents[id(cur)]
                    attrs.append(cur.attr)
                if attrs:
                    direct |= _resolve_chain(aliases[node.id], attrs, modules)
                else:
                    direct.add(aliases[node.id])  # the object used whole: all that importing it runs
    closure, todo = set(), list(direct)
    while todo:
        m = todo.pop()
        if m in closure:
            continue
        closure.add(m)
        todo.extend(modules[m].imports - closure)
    return closure


def _files_of(mods: set[str], modules: dict[str, ModuleInfo]) -> set[Path]:
    """The modules' files and the ``__init__`` files of the packages above them (imported on the way)."""
    files = set()
    for m in mods:
        files.add(modules[m].path)
        parts = m.split(".")
        for i in range(1, len(parts)):
            pkg = ".".join(parts[:i])
            if pkg in modules:
                files.add(modules[pkg].path)
    return files


def _json_sha(x: Any) -> str:
    return _sha(json.dumps(x, sort_keys=True, default=str).encode())


def chapter_inputs(code: list[str], params: dict[str, Any], root: Path, *, pipeline: str = "") -> dict[str, Any]:
    """The static inputs of one chapter: hashes of its code, parameters, package files, lock file, pipeline.

    ``code`` is the list of its code cells (``parameters`` cell first marked by the caller if wanted);
    ``pipeline`` a text standing for the post-processing code (its hash is stored).
    """
    if not isinstance(code, list) or not all(isinstance(c, str) for c in code):
        raise TypeError("code: expected a list of code-cell sources (str)")
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict, got {type(params).__name__}")
    root = Path(root)
    modules = module_graph(root / PACKAGE)
    files = _files_of(used_modules(code, modules), modules)
    lock = root / "requirements.lock"
    return {
        "code": _json_sha(code),
        "params": _json_sha(params),
        "modules": {str(p.relative_to(root)): _sha_file(p) for p in sorted(files)},
        "lock": _sha_file(lock) if lock.exists() else "missing",
        "pipeline": _sha(pipeline.encode()),
    }


def input_key(inputs: dict[str, Any]) -> str:
    """One hash of the static inputs (``chapter_inputs``)."""
    if not isinstance(inputs, dict):
        raise TypeError(f"inputs: expected a dict, got {type(inputs).__name__}")
    return _json_sha(inputs)


def _locate(tag: str, root: Path, build: Path) -> Path:
    kind, _, rel = tag.partition(":")
    return (root if kind == "root" else build) / rel


def _tag(path: Path, root: Path, build: Path) -> Optional[str]:
    """``build:rel`` or ``root:rel`` for a path inside the build folder or the book root, else ``None``."""
    p = Path(os.path.abspath(path))
    for kind, base in (("build", build), ("root", root)):  # the build folder may lie inside the root
        try:
            return f"{kind}:{p.relative_to(base).as_posix()}"
        except ValueError:
            continue
    return None


def _hash_one(path: Path, kind: str) -> Optional[str]:
    try:
        if kind == "list":
            return _json_sha(sorted(os.listdir(path)))
        return _sha_file(path)
    except OSError:
        return None  # gone: the chapter must run again


def hash_reads(reads_file: Path, *, root: Path, build: Path, exclude: Iterable[Path] = ()) -> dict[str, str]:
    """The files and folders a chapter read (``Run``'s log ``reads_file``), each with its current hash.

    Keys are ``open|root:<path>`` or ``list|build:<path>``; paths outside the root and the build
    folder, inside the package or a virtual environment, and under ``exclude`` are left out.
    """
    root, build = Path(root).resolve(), Path(build).resolve()
    skip = [Path(os.path.abspath(e)) for e in exclude] + [root / PACKAGE, root / ".venv", root / ".git"]
    out: dict[str, str] = {}
    if not Path(reads_file).exists():
        return out
    for line in Path(reads_file).read_text().splitlines():
        kind, _, raw = line.partition("\t")
        if kind not in ("open", "list") or not raw:
            continue
        p = Path(os.path.abspath(raw))
        if any(p == s or s in p.parents for s in skip) or "__pycache__" in p.parts or p.suffix == ".pyc":
            continue
        tag = _tag(p, root, build)
        if tag is None or f"{kind}|{tag}" in out:
            continue
        h = _hash_one(p, kind)
        if h is not None:
            out[f"{kind}|{tag}"] = h
    return out


def stale_reason(record: Optional[dict[str, Any]], inputs: dict[str, Any], *, root: Path, build: Path) -> Optional[str]:
    """Why a chapter must run again (a short sentence), or ``None`` when its stored result can be reused."""
    if record is None:
        return "never executed in this build folder"
    old = record.get("inputs") or {}
    if record.get("key") != input_key(inputs):
        changed = [k for k in ("code", "params", "lock", "pipeline") if old.get(k) != inputs.get(k)]
        mods_old, mods_new = old.get("modules", {}), inputs.get("modules", {})
        mods = sorted(m for m in set(mods_old) | set(mods_new) if mods_old.get(m) != mods_new.get(m))
        words = {"code": "its code cells", "params": "its parameters", "lock": "requirements.lock",
                 "pipeline": "the pipeline's post-processing"}
        parts = [words[k] for k in changed] + ([f"library files {', '.join(mods)}"] if mods else [])
        return "changed: " + ("; ".join(parts) or "its inputs")
    root, build = Path(root).resolve(), Path(build).resolve()
    for key, h in (record.get("reads") or {}).items():
        kind, _, tag = key.partition("|")
        if _hash_one(_locate(tag, root, build), kind) != h:
            return f"changed: {'the folder' if kind == 'list' else 'the file'} it read, {tag.split(':', 1)[1]}"
    for rel in record.get("outputs") or []:
        if not (build / rel).exists():
            return f"missing output {rel}"
    return None


def record_path(executed: Path) -> Path:
    """Where the hash record of an executed notebook lives: beside it, ``<chapter>.inputs.json``."""
    executed = Path(executed)
    return executed.with_name(executed.stem + ".inputs.json")


def reads_path(build: Path, chapter: str) -> Path:
    """The log of files a running chapter read (written by ``Run``, read by :func:`hash_reads`)."""
    return Path(build) / "cache" / f"{Path(chapter).name}.reads"
