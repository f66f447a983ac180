"""`kit.py coverage`: the suite under coverage.py; how many of the lines the patches add were executed."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..coverage_report import TARGET, print_report, report, run_suite
from ..errors import KitError
from ..stackenv import ensure_stack


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coverage", help="run the tests under coverage; report the patches' added lines executed")
    p.add_argument("--report-only", action="store_true", help="report the last run's data again")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest (after --)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ensure_stack(Path(args.workspace), ("coverage", "pytest"), "coverage")
    work = Path(args.workspace).resolve() / ".kit" / "coverage"
    data_file = work / ".coverage"
    if not args.report_only:
        data_file = run_suite([a for a in args.pytest_args if a != "--"], work)
    if not data_file.exists():
        raise KitError(f"no coverage data in {work}: run `python3 tools/kit.py coverage` first")
    percent = print_report(report(data_file, Path(args.workspace).resolve()))
    return 0 if percent >= TARGET else 1
