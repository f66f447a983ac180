"""`kit.py test`: set up (or reuse) the kit's environment and run the test suite in it.

This is the command the README gives and CI runs. Where the upstream sources cannot be had (a
fresh machine without GitHub or a sources directory), it sets up the Python stack alone and the
tests that need the sources skip, each printing why.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..errors import SourcesUnavailable
from ..installer import Setup, SetupOptions, setup
from ..pins import KIT_ROOT, default_sources_dir
from ..workspace import Workspace

TEST_REQUIREMENTS = KIT_ROOT / "tests" / "requirements.txt"
PYTEST_NO_TESTS = 5


def prepare_environment(opts: SetupOptions) -> Setup:
    try:
        setup(opts)
        steps = Setup(opts, total_steps=1)  # for the test tools below
    except SourcesUnavailable as exc:
        print(f"\nnote: {exc}\nThe upstream sources are unavailable here: setting up the Python stack only; "
              "the tests that need the sources will skip and say so.\n", flush=True)
        steps = Setup(opts, total_steps=3)  # the venv, the stack, the test tools
        steps.venv()
        steps.stack()
    steps.pinned("test tools from tests/requirements.txt", _test_pins(), "pip-tests")
    return steps


def _test_pins() -> list[str]:
    return [line.split("#")[0].strip() for line in TEST_REQUIREMENTS.read_text().splitlines()
            if line.split("#")[0].strip()]


def run_pytest(python: Path, pytest_args: list[str]) -> int:
    cmd = [str(python), "-m", "pytest", *pytest_args]
    print(f"$ {' '.join(cmd)}", flush=True)
    code = subprocess.call(cmd, cwd=KIT_ROOT)
    if code == PYTEST_NO_TESTS:
        print("error: pytest collected no tests; that is a failure, not a pass", file=sys.stderr)
        return 1
    return code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="set up the environment if needed, then run the test suite (what CI runs)")
    p.add_argument("--venv", help="environment to use (default: <workspace>/.venv)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest (after --)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    opts = SetupOptions(workspace=ws.root, venv=Path(args.venv).resolve() if args.venv else ws.default_venv,
                        from_dir=default_sources_dir(), base_python=Path(sys.executable), torch_mode="auto")
    steps = prepare_environment(opts)
    pytest_args = [a for a in args.pytest_args if a != "--"]
    return run_pytest(steps.python, pytest_args)
