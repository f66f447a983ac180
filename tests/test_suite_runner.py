"""`kit.py test` without pytest arguments: the whole suite as two pytest sessions side by side (the cell set and the
rest), with a stand-in pytest: both run, at once, each exit status counts, the cell set's output comes after."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flashocc_kit.commands.test import SHORT_MARKER, run_suite

FAKE_PYTEST = """#!/bin/sh
# stands in for `python -m pytest -m <marker>`: says which half it is, takes two seconds, exits as the test says
shift 2  # -m pytest
case "$2" in
  "{marker}") half=cell; status="${{CELL_STATUS:-0}}" ;;
  *) half=rest; status="${{REST_STATUS:-0}}" ;;
esac
echo "$half started $FLASHOCC_KIT_REQUIRE_SOURCES"
sleep 2
echo "=================== 3 passed in 2.00s ($half) ==================="
exit "$status"
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    python = tmp_path / "python"
    python.write_text(FAKE_PYTEST.format(marker=SHORT_MARKER))
    python.chmod(0o755)
    return python


@pytest.mark.parametrize("rest, cell, code", [(0, 0, 0), (1, 0, 1), (0, 1, 1), (0, 5, 1), (5, 0, 1)])
def test_the_whole_suite_runs_as_two_sessions_side_by_side(fake_python, tmp_path, capsys, monkeypatch, rest, cell,
                                                           code):
    monkeypatch.setenv("REST_STATUS", str(rest))
    monkeypatch.setenv("CELL_STATUS", str(cell))
    started = time.monotonic()
    status, summary = run_suite(fake_python, tmp_path / "logs", require_sources=True)
    assert time.monotonic() - started < 3.5, "the two sessions ran one after the other"  # each takes 2 s
    assert status == code
    assert summary == "3 passed in 2.00s (rest); cell set: 3 passed in 2.00s (cell)"
    out = capsys.readouterr().out
    assert out.index("rest started 1") < out.index("cell started 1")  # the cell set's output after the rest's
    assert f"-m {SHORT_MARKER}" in out and f"-m not {SHORT_MARKER}" in out
    assert (tmp_path / "logs" / "pytest-cell-set.log").read_text().startswith("cell started 1")
