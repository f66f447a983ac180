"""Re-running a kit command under the workspace's environment: once, and never inherited by children."""

from __future__ import annotations

import os
import sys

import pytest

from flashocc_kit import stackenv
from flashocc_kit.errors import KitError


def test_a_reexeced_command_clears_its_marker_for_its_children(tmp_path, monkeypatch):
    monkeypatch.setenv(stackenv.REEXEC_ENV, "1")
    stackenv.ensure_stack(tmp_path, ("json",), "coverage")  # present here: nothing to do
    assert stackenv.REEXEC_ENV not in os.environ  # so `coverage`'s pytest can start launch scripts that re-exec


def test_a_second_reexec_is_refused_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    monkeypatch.setenv(stackenv.REEXEC_ENV, "1")  # this process already is the re-exec
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed twice"))
    with pytest.raises(KitError, match="no_such_module_here.*kit.py setup"):
        stackenv.ensure_stack(tmp_path, ("no_such_module_here",), "launch")


def test_a_missing_module_reexecs_under_the_workspace_environment(tmp_path, monkeypatch):
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    monkeypatch.delenv(stackenv.REEXEC_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", [str(stackenv.TOOLS_DIR / "kit.py"), "launch", "perf"])  # the kit's CLI
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    stackenv.ensure_stack(tmp_path, ("no_such_module_here",), "launch")
    (path, argv, env), = calls
    assert path == str(python.resolve()) and argv[1:] == [str(stackenv.TOOLS_DIR / "kit.py"), "launch", "perf"]
    assert env[stackenv.REEXEC_ENV] == "1"


def test_a_process_that_only_imported_the_kit_is_never_replaced(tmp_path, monkeypatch):
    """cli.main() called from a test or a tool: the message, not an exec that would end the caller."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    monkeypatch.delenv(stackenv.REEXEC_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("the caller's process was replaced"))
    with pytest.raises(KitError, match="no_such_module_here"):
        stackenv.ensure_stack(tmp_path, ("no_such_module_here",), "launch")
    stackenv.ensure_stack(tmp_path, ("no_such_module_here",), "summarize", required=False)  # does without
