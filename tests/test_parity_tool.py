"""tools/bev_pool_parity.py, the first command on a new device: passes on CPU, fails above tolerance."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")


def parity(flashocc_root, tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "parity.json"
    proc = subprocess.run([sys.executable, "tools/bev_pool_parity.py", "--batch", "1", "--repeat", "1",
                           "--json", str(out), *args], cwd=flashocc_root, capture_output=True, text=True,
                          timeout=600)
    document = json.loads(out.read_text()) if out.exists() else {}
    return proc, document.get("cases", [])


def test_parity_passes_on_cpu_at_flashocc_shapes(flashocc_root, tmp_path):
    proc, rows = parity(flashocc_root, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "implementation = portable" in proc.stdout and "parity ok" in proc.stdout
    assert [r["case"] for r in rows] == ["random", "flashocc B=1"]
    flashocc = rows[1]
    assert flashocc["points"] > 200_000  # six cameras of 88 x 16 x 44 frustum points, most inside the grid
    assert all(flashocc[k]["ok"] and flashocc[k]["max_abs_err"] < 1e-4 for k in ("forward", "grad_depth", "grad_feat"))
    assert flashocc["sort_and_interval_ms_per_call"] > 0


def test_parity_fails_above_tolerance(flashocc_root, tmp_path):
    proc, _ = parity(flashocc_root, tmp_path, "--atol", "0", "--rtol", "0")  # float32 sums never agree exactly
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout
