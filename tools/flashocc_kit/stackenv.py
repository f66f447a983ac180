"""Commands that need the training stack run under the kit's environment.

The kit's CLI starts under any python3 (stdlib only). A command that needs numpy, torch or
matplotlib re-executes itself, once, with the workspace's .venv interpreter when the current one
lacks them; an activated environment that has them (an Ascend conda env, say) is used as it is.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .errors import KitError
from .pins import KIT_ROOT

REEXEC_ENV = "FLASHOCC_KIT_REEXEC"


def ensure_stack(workspace: Path, modules: tuple[str, ...], command: str) -> None:
    """Return if `modules` import here; else re-exec under <workspace>/.venv, or explain the fix."""
    # The marker guards this process's own re-exec only: children (the test suite under `coverage`,
    # the launch scripts it runs) must be free to re-exec themselves.
    reexeced = os.environ.pop(REEXEC_ENV, None)
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    python = Path(workspace).resolve() / ".venv" / "bin" / "python"
    here = Path(sys.prefix).resolve()
    if reexeced or not python.exists() or here == python.parent.parent.resolve():
        raise KitError(f"`{command}` needs {', '.join(missing)}, which {sys.executable} does not have. "
                       f"Fix: run `python3 tools/kit.py setup` (creates {python.parent.parent}), or activate "
                       "an environment with the training stack.")
    argv = [str(python), str(KIT_ROOT / "tools" / "kit.py"), *sys.argv[1:]]
    os.execve(str(python), argv, {**os.environ, REEXEC_ENV: "1"})
