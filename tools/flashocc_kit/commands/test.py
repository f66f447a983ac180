"""`kit.py test`: set up (or reuse) the kit's environment for a cell and run the test suite in it.

This is the command the README gives and CI runs. Where the upstream sources cannot be had (a
fresh machine without GitHub or a sources directory), it sets up the Python stack alone and the
tests that need the sources skip, each printing why, and pytest's summary says how many could not run.
`--require-sources` (what CI runs) refuses to go on without the sources and counts every such skip as a
failure, so that a broken or partial environment cannot read green. `--short` runs the set each further cell of
the support matrix is held to (the tests marked `cell`: the port's portable ops, the gloo DDP test,
a short two-rank training with an evaluation and a resume). Without pytest arguments the whole suite runs as two
pytest sessions side by side: that set and the rest.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import KitError, SourcesUnavailable
from ..installer import Setup, SetupOptions, applicable_pins, setup
from ..pins import KIT_ROOT, default_sources_dir
from ..stacks import read_lock, record
from ..workspace import Workspace

TEST_REQUIREMENTS = KIT_ROOT / "tests" / "requirements.txt"
REQUIRE_ENV = "FLASHOCC_KIT_REQUIRE_SOURCES"  # read by tests/conftest.py
PYTEST_NO_TESTS = 5
SHORT_MARKER = "cell"


def prepare_environment(opts: SetupOptions, require_sources: bool) -> Setup:
    try:
        steps = setup(opts)
        steps.runner.total = steps.runner.step + 1  # the test tools below
    except SourcesUnavailable as exc:
        if require_sources:
            raise KitError(f"{exc}\n--require-sources: the tests that need the upstream sources cannot run here, and "
                           "CI counts that as a failure. Fix: make GitHub reachable, or set FLASHOCC_KIT_SOURCES to "
                           "a directory of pristine checkouts (README, Air-gapped sites)") from None
        print(f"\nnote: {exc}\nThe upstream sources are unavailable here: setting up the Python stack only; "
              "the tests that need the sources will skip and say so.\n", flush=True)
        steps = Setup(opts)
        todo = steps.stack_steps()
        steps.runner.total = len(todo) + 1  # and the test tools
        for step in todo:
            step()
    steps.pinned("test tools from tests/requirements.txt", applicable_pins(steps.python, read_lock(TEST_REQUIREMENTS)),
                 "pip-tests")
    return steps


def pytest_command(python: Path, pytest_args: list[str], require_sources: bool) -> tuple[list[str], dict | None]:
    cmd = [str(python), "-m", "pytest", *pytest_args]
    env = {**os.environ, REQUIRE_ENV: "1"} if require_sources else None  # conftest then fails such skips
    prefix = f"{REQUIRE_ENV}=1 " if require_sources else ""
    print(f"$ {prefix}{' '.join(cmd)}", flush=True)
    return cmd, env


def summary_line(line: str, last: str) -> str:
    """pytest's closing line ("== 3 passed in 1.2s =="), or the one seen so far."""
    if re.search(r"\b(passed|failed|error|skipped|no tests ran)\b", line) and line.startswith("="):
        return line.strip("= \n")
    return last


def pytest_status(code: int) -> int:
    if code == PYTEST_NO_TESTS:
        print("error: pytest collected no tests; that is a failure, not a pass", file=sys.stderr)
        return 1
    return code


def run_pytest(python: Path, pytest_args: list[str], require_sources: bool = False) -> tuple[int, str]:
    """pytest's exit status (no tests collected counts as a failure) and its closing summary line."""
    cmd, env = pytest_command(python, pytest_args, require_sources)
    proc = subprocess.Popen(cmd, cwd=KIT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env=env)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        last = summary_line(line, last)
    return pytest_status(proc.wait()), last or "no tests collected"


def run_suite(python: Path, log_dir: Path, require_sources: bool = False) -> tuple[int, str]:
    """The whole suite as two pytest sessions side by side: the cell set (-m cell, what every other cell runs) and
    the rest. Each is a chain of tests that mostly keep one core busy, so one session after another left a core idle
    for most of the run. The rest prints as it goes; the cell set, in the background, writes a log printed after."""
    log = log_dir / "pytest-cell-set.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd, env = pytest_command(python, ["-m", SHORT_MARKER], require_sources)
    print(f"  (in the background, beside the next: its output in {log}, shown at the end)", flush=True)
    with log.open("w") as out:
        # a session of its own: its process group is stopped whole below; under Linux's autogroup it is also a
        # scheduling group of its own, weighed as one job against this session's (CI measured it so)
        cell_set = subprocess.Popen(cmd, cwd=KIT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
    try:
        code, summary = run_pytest(python, ["-m", f"not {SHORT_MARKER}"], require_sources)
        cell_code = cell_set.wait()
    finally:
        if cell_set.poll() is None:  # interrupted: our own session's group
            os.killpg(cell_set.pid, signal.SIGTERM)
            cell_set.wait()
    text = log.read_text(errors="replace")
    print(f"\nthe cell set (pytest -m {SHORT_MARKER}), run beside the rest ({log}):\n{text}", end="", flush=True)
    cell_summary = ""
    for line in text.splitlines():
        cell_summary = summary_line(line, cell_summary)
    cell_code = pytest_status(cell_code)
    print(f"\nthe rest: {summary or 'no summary'} (exit {code}); the cell set: {cell_summary or 'no summary'} "
          f"(exit {cell_code})", flush=True)
    return (0 if code == cell_code == 0 else 1), f"{summary}; cell set: {cell_summary}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="set up the environment if needed, then run the test suite (what CI runs)")
    p.add_argument("--stack", help="the stack to test under this interpreter (default: as `setup` chooses)")
    p.add_argument("--short", action="store_true",
                   help=f"only the tests every cell of the matrix is held to (pytest -m {SHORT_MARKER})")
    p.add_argument("--venv", help="environment to use (default: the cell's, <workspace>/.venvs/<cell>)")
    p.add_argument("--require-sources", action="store_true",
                   help="fail where the upstream sources or the stack are missing, and count every test that skips "
                        "for want of them as a failure (what CI runs)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest (after --)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    opts = SetupOptions(workspace=ws.root, venv=Path(args.venv).resolve() if args.venv else None,
                        from_dir=default_sources_dir(), base_python=Path(sys.executable), torch_mode="auto",
                        stack=args.stack)
    started = time.monotonic()
    steps = prepare_environment(opts, args.require_sources)
    pytest_args = [a for a in args.pytest_args if a != "--"]
    if args.short:
        pytest_args = ["-m", SHORT_MARKER, *pytest_args]
    if pytest_args:
        code, summary = run_pytest(steps.python, pytest_args, args.require_sources)
    else:
        code, summary = run_suite(steps.python, steps.runner.log_dir, args.require_sources)
    record(ws.root, steps.plan.cell.id, "test", ok=code == 0, result=summary or f"exit {code}",
           selection="short" if args.short else "full" if not pytest_args else " ".join(pytest_args),
           seconds=round(time.monotonic() - started))
    return code
