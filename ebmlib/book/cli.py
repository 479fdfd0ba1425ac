"""Command line: ``python -m ebmlib {list,run,build,book,student,pdf,bench} …``.

Examples::

    python -m ebmlib list
    python -m ebmlib run 01-energy --profile smoke -p eps 0.2
    python -m ebmlib run all --profile book
    python -m ebmlib build                 # site from the executed notebooks
    python -m ebmlib book --profile book   # run what changed + build site, student edition, PDF
    python -m ebmlib book --force          # execute every chapter again
    python -m ebmlib student               # the student edition (solutions removed)
    python -m ebmlib pdf                   # _build/pdf/book.pdf via headless Chromium
    python -m ebmlib sweep fmnist-784-500-10   # a paper-scale training sweep on Dask (resumes)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def _overrides(pairs: list[list[str]] | None) -> dict[str, Any]:
    """``-p name value`` pairs as a dict; each value is read as YAML (``-p eps_list "[0.1, 0.2]"``)."""
    out = {}
    for name, value in pairs or []:
        out[name] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 on a usage or input error)."""
    from .execute import chapter_name, chapter_parameters, chapters, execute, execute_missing
    from .provenance import find_root
    from .site import build, build_all, pdf

    ap = argparse.ArgumentParser(prog="python -m ebmlib", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--build-dir", type=Path, default=None, help="output folder (default: _build)")

    p_list = sub.add_parser("list", help="chapters and their parameters")
    common(p_list)

    p_run = sub.add_parser("run", help="execute chapters with papermill under a profile")
    p_run.add_argument("chapters", nargs="*", default=["all"], help="chapter names (e.g. 01-energy) or 'all'")
    p_run.add_argument("--profile", default="book", help="smoke | book | paper (params/<profile>.yaml)")
    p_run.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="override one parameter")
    common(p_run)

    p_build = sub.add_parser("build", help="build the website from the executed notebooks")
    p_build.add_argument("--edition", default="full", choices=["full", "student"])
    p_build.add_argument("--builder", default="html", choices=["html", "singlehtml"])
    common(p_build)

    p_book = sub.add_parser("book", help="execute the chapters whose inputs changed, then build the website, "
                                          "the student edition and the PDF")
    p_book.add_argument("--profile", default="book")
    p_book.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"))
    p_book.add_argument("--force", action="store_true", help="execute every chapter, changed or not")
    p_book.add_argument("--no-student", action="store_true", help="skip the student edition")
    p_book.add_argument("--no-pdf", action="store_true", help="skip the PDF (skipped anyway without chromium)")
    common(p_book)

    p_student = sub.add_parser("student", help="the student edition (no solutions); executes missing chapters first")
    p_student.add_argument("--profile", default="book", help="profile for chapters not executed yet")
    common(p_student)

    p_pdf = sub.add_parser("pdf", help="the book as one PDF (headless Chromium); executes missing chapters first")
    p_pdf.add_argument("--profile", default="book", help="profile for chapters not executed yet")
    p_pdf.add_argument("--out", type=Path, default=None, help="PDF path (default: <build>/pdf/book.pdf)")
    common(p_pdf)

    p_bench = sub.add_parser("bench", help="benchmark the relaxation loop (writes _build/bench.json)")
    p_bench.add_argument("rest", nargs=argparse.REMAINDER)

    p_sweep = sub.add_parser("sweep", help="a paper-scale training sweep on Dask (params/paper.yaml: sweeps)")
    p_sweep.add_argument("rest", nargs=argparse.REMAINDER)

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sweep"]:  # its own options go through untouched
        from .sweep import main as sweep_main

        return sweep_main(argv[1:])
    if argv[:1] == ["bench"]:  # its own options (--quick, --chapters, ...) go through untouched
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            root = find_root()
            for c in chapters(root):
                params = chapter_parameters(root / f"{c}.md")
                print(f"{chapter_name(c)}")
                for k, v in params.items():
                    print(f"    {k} = {v!r}")
        elif args.cmd == "run":
            execute(args.chapters, profile=args.profile, overrides=_overrides(args.p), build_dir=args.build_dir)
        elif args.cmd == "build":
            out = build(build_dir=args.build_dir, edition=args.edition, builder=args.builder)
            print(f"open {out / 'index.html'}")
        elif args.cmd == "book":
            t0 = time.perf_counter()
            times = execute(["all"], profile=args.profile, overrides=_overrides(args.p), build_dir=args.build_dir,
                            reuse=not args.force)
            t1 = time.perf_counter()
            built = build_all(build_dir=args.build_dir, student=not args.no_student,
                              with_pdf=False if args.no_pdf else None)
            for name, wall in times.items():
                print(f"  executed {name:32s} {wall:7.1f} s")
            n = len(chapters(find_root()))
            print(f"{len(times)} of {n} chapters executed, {n - len(times)} reused, in {t1 - t0:.1f} s; "
                  f"sites built in {time.perf_counter() - t1:.1f} s")
            print(f"open {built['html'] / 'chapters' / 'intro.html'}")
        elif args.cmd == "student":
            execute_missing(profile=args.profile, build_dir=args.build_dir)
            out = build(build_dir=args.build_dir, edition="student")
            print(f"open {out / 'chapters' / 'intro.html'}")
        elif args.cmd == "pdf":
            execute_missing(profile=args.profile, build_dir=args.build_dir)
            print(f"wrote {pdf(build_dir=args.build_dir, out=args.out)}")
        elif args.cmd == "bench":
            from .bench import main as bench_main

            return bench_main(args.rest)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
