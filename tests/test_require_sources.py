"""The suite's own rule for CI (tests/conftest.py): under `kit.py test --require-sources` a test that skips for
want of the sources or the stack fails, wherever the skip comes from; a skip about the platform stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import KIT_ROOT, NOT_APPLICABLE, REQUIRE_ENV

EXAMPLES = f'''
import pytest

def test_passes():
    assert True

def test_skips_for_the_sources():
    pytest.skip("needs the pristine upstream sources")

@pytest.fixture
def stack():
    pytest.skip("the patched stack is not installed")

def test_skips_in_a_fixture(stack):
    pass

def test_skips_for_the_platform():
    pytest.skip("{NOT_APPLICABLE} no shellcheck wheel on this architecture")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
'''
MODULE_SKIP = 'import pytest\npytest.importorskip("no_such_module_anywhere", reason="needs the stack")\n'


def run(tmp_path, require: bool, *files: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_examples.py").write_text(EXAMPLES)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    env = {**os.environ, "PYTHONPATH": str(KIT_ROOT / "tests")}
    env.pop(REQUIRE_ENV, None)
    if require:
        env[REQUIRE_ENV] = "1"
    # the kit's conftest as a plugin, over tests that are not the kit's
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), *(str(tmp_path / f) for f in files)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_without_require_sources_skips_are_counted_and_named(tmp_path):
    proc = run(tmp_path, False, "test_examples.py", "test_module_skip.py")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "4 test(s) could not run here" in proc.stdout
    assert "1 passed, 4 skipped, 1 xfailed" in proc.stdout


def test_under_require_sources_every_skip_but_the_platforms_fails(tmp_path):
    proc = run(tmp_path, True, "test_examples.py")
    assert proc.returncode == 1, proc.stdout[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error"), summary  # the fixture's: error
    assert "counts as a failure: Skipped: needs the pristine upstream sources" in proc.stdout
    proc = run(tmp_path, True, "test_module_skip.py")  # a module-level importorskip stops the collection
    assert proc.returncode != 0 and "ERROR test_module_skip.py" in proc.stdout, proc.stdout[-2000:]


def test_kit_test_require_sources_hands_the_rule_to_pytest(tmp_path, monkeypatch, capsys):
    """`kit.py test --require-sources` runs pytest so that the rule above applies (and a plain run does not)."""
    from flashocc_kit.commands.test import run_pytest

    (tmp_path / "test_examples.py").write_text(EXAMPLES)
    monkeypatch.setenv("PYTHONPATH", str(KIT_ROOT / "tests"))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    args = ["-p", "conftest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
            str(tmp_path / "test_examples.py")]
    assert run_pytest(Path(sys.executable), args)[0] == 0
    code, summary = run_pytest(Path(sys.executable), args, require_sources=True)
    assert code == 1 and summary.startswith("1 failed"), summary
