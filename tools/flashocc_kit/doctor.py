"""`kit.py doctor`: is this environment ready to train FlashOCC, and if not, what fixes it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .environment import cann_home, venv_python
from .pins import default_workspace
from .workspace import Workspace

# Runs inside the target environment; prints one JSON object.
PROBE = r"""
import importlib, json, sys
out = {"python": sys.version.split()[0], "executable": sys.executable}

def version(module):
    try:
        m = importlib.import_module(module)
        return getattr(m, "__version__", "?")
    except Exception as exc:
        return "ERROR: " + (str(exc).splitlines() or [type(exc).__name__])[0]

for module in ("torch", "torchvision", "numpy", "mmcv", "mmdet", "mmseg", "mmdet3d", "torch_npu", "mx_driving"):
    out[module] = version(module)
try:
    import mmcv.ops  # noqa: F401
    from mmcv.utils import ext_loader
    ext_loader.load_ext("_ext", ["nms"])
    out["mmcv_ops"] = "compiled"
except Exception as exc:
    out["mmcv_ops"] = "ERROR: " + str(exc).splitlines()[0]
try:
    import torch
    out["cuda"] = torch.cuda.is_available()
    out["npu"] = hasattr(torch, "npu") and torch.npu.is_available()
except Exception:
    out["cuda"] = out["npu"] = False
try:
    sys.path.insert(0, sys.argv[1])
    import projects.mmdet3d_plugin  # noqa: F401
    out["plugin"] = "imports"
except Exception as exc:
    out["plugin"] = "ERROR: " + type(exc).__name__ + ": " + (str(exc).splitlines() or [""])[0]
print(json.dumps(out))
"""


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


def run_checks(ws: Workspace, venv: Path) -> list[Check]:
    from .cli import status_rows

    checks: list[Check] = []
    setup_fix = "python3 tools/kit.py setup"
    python = venv_python(venv)
    for row in status_rows(ws):
        ok = row["pin ok"] != "NO" and row["patch"] == "applied"
        checks.append(Check(f"checkout {row['project']}", ok,
                            f"{row['path']} @ {row['revision']}, patch {row['patch']}",
                            "python3 tools/kit.py sources && python3 tools/kit.py apply"))
    if not python.exists():
        checks.append(Check("environment", False, f"no virtual environment at {venv}", setup_fix))
        return checks
    proc = subprocess.run([str(python), "-c", PROBE, str(ws.flashocc)], capture_output=True, text=True,
                          cwd=ws.flashocc if ws.flashocc.is_dir() else None)
    if proc.returncode != 0:
        checks.append(Check("environment", False, proc.stderr.strip()[-300:], setup_fix))
        return checks
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    py = tuple(int(x) for x in info["python"].split(".")[:2])
    checks.append(Check("python", py >= (3, 8), f"{info['python']} ({info['executable']})"))
    for module in ("torch", "torchvision", "mmcv", "mmdet", "mmseg", "mmdet3d"):
        checks.append(Check(module, not _is_error(info[module]), str(info[module]), setup_fix))
    numpy_ok = not _is_error(info["numpy"]) and int(str(info["numpy"]).split(".")[0]) < 2
    checks.append(Check("numpy", numpy_ok, f"{info['numpy']} (torch 2.1 and mmcv 1.x need numpy < 2)",
                        "pip install 'numpy<2' (requirements.txt pins it)"))
    backends = [name for name in ("cuda", "npu") if info.get(name)] or ["cpu only"]
    checks.append(Check("mmcv ops", info["mmcv_ops"] == "compiled",
                        f"{info['mmcv_ops']}; devices: {', '.join(backends)}", setup_fix))
    ascend = cann_home() is not None
    checks.append(Check("CANN", True, str(cann_home()) if ascend else "not found (not an Ascend host)",
                        required=False))
    for module, fix in (("torch_npu", "install the torch_npu matching your torch and CANN (Ascend's PyTorch adapter)"),
                        ("mx_driving", "install DrivingSDK: `pip install mx-driving` (torch 2.6-2.8) or build it "
                                       "from https://gitee.com/ascend/DrivingSDK")):
        found = not _is_error(info[module])
        detail = str(info[module]) if found or ascend else "not installed (needed on Ascend hosts only)"
        checks.append(Check(module, found, detail, fix if ascend else "", required=ascend))
    checks.append(Check("FlashOCC plugin", info["plugin"] == "imports", f"projects.mmdet3d_plugin {info['plugin']}",
                        setup_fix))
    return checks


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the environment and the checkouts; say how to fix what is missing")
    p.add_argument("--venv", help="environment to check (default: <workspace>/.venv)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace or default_workspace())
    venv = Path(args.venv).resolve() if args.venv else ws.default_venv
    checks = run_checks(ws, venv)
    if args.json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        print("\n".join(c.line() for c in checks))
    failed = [c for c in checks if c.required and not c.ok]
    if failed:
        print(f"\n{len(failed)} problem(s): training is not possible until they are fixed.", file=sys.stderr)
        return 1
    return 0
