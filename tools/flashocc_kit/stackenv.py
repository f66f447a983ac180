"""The kit's environment: the one place that knows where it is and how to run things in it.

The kit's CLI starts under any python3 >= 3.8 with the standard library only. What needs the
training stack (numpy, torch, mmcv, matplotlib) runs in the environment `kit.py setup` creates,
<workspace>/.venv, or in the interpreter running the kit when that one has the stack already (an
activated Ascend conda environment, say):

- ensure_stack():   re-execute this kit command once under the environment's interpreter;
- run_probe():      run one of the probe modules (flashocc_kit/probes/) in an interpreter and read
                    the JSON it prints;
- torchrun():       the launcher of the interpreter that trains: `python -m torch.distributed.run`,
                    so the ranks run with that environment's packages.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .errors import KitError
from .pins import KIT_ROOT
from .settings import torchrun_override

VENV_DIR = ".venv"
STATE_FILE = "flashocc-kit-state.json"  # in an environment: what `setup` did there (its cell, its mmcv build)
REEXEC_ENV = "FLASHOCC_KIT_REEXEC"  # set for the re-executed process only
TOOLS_DIR = KIT_ROOT / "tools"


def venv_dir(workspace: Path) -> Path:
    return Path(workspace).resolve() / VENV_DIR


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def running_in(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == Path(venv).resolve()


def missing_here(modules: Sequence[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def kit_pythonpath(extra: Sequence[str] = ()) -> dict[str, str]:
    """Environment additions that make `flashocc_kit` importable in another interpreter."""
    parts = [str(TOOLS_DIR), *extra, os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in parts if p)}


def ensure_stack(workspace: Path, modules: Sequence[str], command: str, required: bool = True) -> None:
    """Return if `modules` import here; else re-exec this command under <workspace>/.venv, or explain the fix.

    required=False: where there is no such environment, return anyway (the command does without them).
    """
    # The marker guards this process's own re-exec only: children (the test suite under `coverage`,
    # the launch scripts it runs) must be free to re-exec themselves.
    reexeced = os.environ.pop(REEXEC_ENV, None)
    missing = missing_here(modules)
    if not missing:
        return
    venv = venv_dir(workspace)
    python = venv_python(venv)
    # Only the kit's CLI process re-executes itself: a caller that imported the kit (a test, a tool) keeps its
    # process and gets the message instead.
    is_cli = Path(sys.argv[0]).resolve() == (TOOLS_DIR / "kit.py").resolve()
    if reexeced or not python.exists() or running_in(venv) or not is_cli:
        if not required:
            return
        raise KitError(f"`{command}` needs {', '.join(missing)}, which {sys.executable} does not have. "
                       f"Fix: run `python3 tools/kit.py setup` (creates {venv}), or activate "
                       "an environment with the training stack.")
    argv = [str(python), str(TOOLS_DIR / "kit.py"), *sys.argv[1:]]
    os.execve(str(python), argv, {**os.environ, REEXEC_ENV: "1"})


def run_probe(python: Path, probe: str, *args: str, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run flashocc_kit/probes/<probe>.py in `python`; its last stdout line is JSON.

    A probe that cannot run at all (the interpreter is broken, the probe crashed) gives
    {"error": <its last stderr line>}.
    """
    proc = subprocess.run([str(python), "-m", f"flashocc_kit.probes.{probe}", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {}), **kit_pythonpath()})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}
    return json.loads(lines[-1])


def torchrun() -> list[str]:
    """The launcher for this interpreter's environment (FLASHOCC_TORCHRUN overrides it)."""
    override = torchrun_override()
    if override:
        return override
    if importlib.util.find_spec("torch") is None:
        raise KitError(f"torch is not importable by {sys.executable}, so there is no torchrun. "
                       "Fix: `python3 tools/kit.py setup`, or activate the environment that has torch.")
    return [sys.executable, "-m", "torch.distributed.run"]
