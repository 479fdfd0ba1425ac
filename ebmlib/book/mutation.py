"""Report of ``make mutate``: the mutation score per science module, and the unexplained survivors.

mutmut (3.x) writes, beside each mutated file under ``mutants/``, a ``.meta`` JSON whose
``exit_code_by_key`` maps every mutant to the exit code of the tests run against it: 1 killed,
0 survived, -24 (or 24) timed out, 33 no test covers the mutant, 34 skipped. A timeout counts as
killed (the tests noticed the change by not finishing). The score of a module is
``(killed + timeout) / (all − equivalent)``; survivors listed in the equivalents file (one
``mutant_name  reason`` per line, ``#`` comments) are equivalent mutants: they do not change what
the code computes, and the line says why.

``python -m ebmlib.book.mutation MUTANTS_DIR EQUIVALENTS_FILE [--min-score 0.9]`` prints the table,
lists every survivor that is not explained, and exits 1 when a module is under the minimum score or
a survivor is unexplained.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KILLED = {1, -24, 24, 36, 152}
SURVIVED = {0}


def load(mutants: Path) -> dict[str, dict[str, int | None]]:
    """``{module path: {mutant name: exit code}}`` from every ``.meta`` file under ``mutants/``."""
    out = {}
    for meta in sorted(Path(mutants).rglob("*.py.meta")):
        rel = meta.relative_to(mutants).as_posix()[: -len(".meta")]
        out[rel] = json.loads(meta.read_text())["exit_code_by_key"]
    return out


def equivalents(path: Path) -> dict[str, str]:
    """``{mutant name: reason}`` from the equivalents file (missing file: none)."""
    out = {}
    if not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, reason = line.partition(" ")
            out[name] = reason.strip()
    return out


def report(results: dict, equiv: dict[str, str], min_score: float) -> tuple[list[str], bool]:
    lines = [f"{'module':28s} {'mutants':>7s} {'killed':>6s} {'timeout':>7s} {'survived':>8s} {'equiv':>5s} "
             f"{'no test':>7s} {'score':>6s}"]
    ok = True
    unexplained = []
    for module, codes in results.items():
        vals = list(codes.values())
        killed = sum(v == 1 for v in vals)
        timeout = sum(v in KILLED - {1} for v in vals)
        survivors = [k for k, v in codes.items() if v in SURVIVED or v == 33]
        eq = [k for k in survivors if k in equiv]
        unexplained += [k for k in survivors if k not in equiv]
        untested = sum(v == 33 for v in vals)
        denom = len(vals) - len(eq)
        score = (killed + timeout) / denom if denom else 1.0
        ok &= score >= min_score
        lines.append(f"{module:28s} {len(vals):7d} {killed:6d} {timeout:7d} {len(survivors):8d} {len(eq):5d} "
                     f"{untested:7d} {score:6.1%}")
    if unexplained:
        ok = False
        lines += ["", f"{len(unexplained)} survivors neither killed nor listed as equivalent:"]
        lines += [f"  {k}" for k in unexplained]
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ebmlib.book.mutation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mutants", type=Path)
    ap.add_argument("equivalents", type=Path)
    ap.add_argument("--min-score", type=float, default=0.9)
    args = ap.parse_args(argv)
    results = load(args.mutants)
    if not results:
        print(f"error: no mutmut results under {args.mutants}", file=sys.stderr)
        return 2
    lines, ok = report(results, equivalents(args.equivalents), args.min_score)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
