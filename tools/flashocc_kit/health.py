"""Is an environment ready to train FlashOCC, and if not, what fixes it (`kit.py doctor`, the end of `setup`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import rehearsal
from .ascend import cann_home
from .settings import EMULATE_ENV
from .stackenv import STATE_FILE, run_probe, venv_python
from .workspace import Workspace

SETUP_FIX = "python3 tools/kit.py setup"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.required else "note")
        text = f"{mark} {self.name:22s} {self.detail}"
        if not self.ok and self.fix:
            text += f"\n     fix: {self.fix}"
        return text


def _is_error(value: object) -> bool:
    return isinstance(value, str) and value.startswith("ERROR")


def checkout_checks(ws: Workspace) -> list[Check]:
    checks = []
    for row in ws.status_rows():
        ok = row["pin ok"] != "NO" and row["patch"] == "applied"
        detail = f"{row['path']} @ {row['revision']}, patch {row['patch']}"
        checks.append(Check(f"checkout {row['project']}", ok, detail,
                            "python3 tools/kit.py sources && python3 tools/kit.py apply"))
    return checks


def rehearsal_check(python: Path) -> Check:
    """The NPU rehearsal (--emulate-npu): prepared, and a tensor really lands on the emulated NPU."""
    found = run_probe(python, "rehearsal", env={EMULATE_ENV: "1"})
    if "error" in found:
        return Check("NPU rehearsal", False, f"not available ({found['error'][-200:]})", rehearsal.SETUP_FIX,
                     required=False)
    return Check("NPU rehearsal", True, f"available: a tensor on {found['device']} of {found['devices']} emulated "
                                        f"NPUs; mx_driving from {Path(found['mx_driving']).parent.parent}")


def run_checks(ws: Workspace, venv: Path) -> list[Check]:
    checks = checkout_checks(ws)
    python = venv_python(venv)
    if not python.exists():
        checks.append(Check("environment", False, f"no virtual environment at {venv}", SETUP_FIX))
        return checks
    state = venv / STATE_FILE
    cell = json.loads(state.read_text()).get("cell", "?") if state.is_file() else "? (no setup record)"
    checks.append(Check("environment", True, f"{Path(venv).resolve()} (cell {cell})"))
    info = run_probe(python, "health", str(ws.flashocc), cwd=ws.flashocc if ws.flashocc.is_dir() else None)
    if "error" in info:
        checks.append(Check("environment", False, str(info["error"])[-300:], SETUP_FIX))
        return checks
    py = tuple(int(x) for x in info["python"].split(".")[:2])
    checks.append(Check("python", py >= (3, 8), f"{info['python']} ({info['executable']})"))
    for module in ("torch", "torchvision", "mmcv", "mmdet", "mmseg", "mmdet3d"):
        checks.append(Check(module, not _is_error(info[module]), str(info[module]), SETUP_FIX))
    numpy_ok = not _is_error(info["numpy"]) and int(str(info["numpy"]).split(".")[0]) < 2
    checks.append(Check("numpy", numpy_ok,
                        f"{info['numpy']} (the locks pin numpy 1.x: the mmcv 1.x family predates numpy 2)",
                        "pip install 'numpy<2' (the lock pins it)"))
    backends = [name for name in ("cuda", "npu") if info.get(name)] or ["cpu only"]
    checks.append(Check("mmcv ops", info["mmcv_ops"] == "compiled",
                        f"{info['mmcv_ops']}; devices: {', '.join(backends)}", SETUP_FIX))
    ascend = cann_home() is not None
    checks.append(Check("CANN", True, str(cann_home()) if ascend else "not found (not an Ascend host)",
                        required=False))
    for module, fix in (("torch_npu", "python3 tools/kit.py setup (installs the stack's torch-npu from PyPI)"),
                        ("mx_driving", "python3 tools/kit.py setup (installs the stack's mx-driving from PyPI), "
                                       "or setup --drivingsdk DIR to build it from a DrivingSDK checkout")):
        found = not _is_error(info[module])
        detail = str(info[module]) if found or ascend else "not installed (needed on Ascend hosts only)"
        checks.append(Check(module, found, detail, fix if ascend else "", required=ascend))
    checks.append(Check("FlashOCC plugin", info["plugin"] == "imports", f"projects.mmdet3d_plugin {info['plugin']}",
                        SETUP_FIX))
    if not ascend:  # the rehearsal stands in for an NPU where there is none
        checks.append(rehearsal_check(python))
    return checks
