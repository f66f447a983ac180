"""`kit.py coverage` counts what worker processes run: the data check's pool and the data loaders execute patched
code in forked workers, which end with os._exit, so coverage.py must be told to save their data."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flashocc_kit.coverage_report import rcfile_text

coverage = pytest.importorskip("coverage", reason="needs coverage.py: run the suite with `python3 tools/kit.py test`")

WORKER_SCRIPT = """
    import multiprocessing
    import target

    if __name__ == "__main__":
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.map(target.in_a_worker, [1]) == [2]
            pool.close()  # as the data check does: the worker ends by itself
            pool.join()
"""


def test_lines_run_in_a_forked_pool_worker_are_counted(tmp_path):
    (tmp_path / "target.py").write_text("def in_a_worker(x):\n    return x + 1\n")
    (tmp_path / "script.py").write_text(textwrap.dedent(WORKER_SCRIPT))
    data_file = tmp_path / "cov" / ".coverage"
    data_file.parent.mkdir()
    rcfile = tmp_path / "coveragerc"
    rcfile.write_text(rcfile_text(data_file, ["*/target.py"]))
    env = {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_START"}  # not the outer coverage run's
    subprocess.run([sys.executable, "-m", "coverage", "run", f"--rcfile={rcfile}", "script.py"], cwd=tmp_path,
                   env=env, check=True)
    subprocess.run([sys.executable, "-m", "coverage", "combine", f"--rcfile={rcfile}", "-q"], cwd=data_file.parent,
                   env=env, check=True)
    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    measured = {Path(f).name: set(data.lines(f) or ()) for f in data.measured_files()}
    assert 2 in measured.get("target.py", set()), f"the worker's line was not recorded: {measured}"
