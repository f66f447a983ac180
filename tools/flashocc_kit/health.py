"""Is an environment ready to train FlashOCC, and if not, what fixes it (`kit.py doctor`, the end of `setup`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import rehearsal
from .ascend import cann_home, cann_version
from .chip import A5, DRIVER_LIBRARY, LABELS, VENDORS, Chip, build_chip, detect, driver_library
from .settings import EMULATE_ENV
from .stackenv import STATE_FILE, run_probe, venv_python
from .stacks import load_stacks
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


def cann_check(cann: Path) -> Check:
    version, source = cann_version(cann)
    if version is None:
        return Check("CANN", True, f"{cann}, version unknown (no <arch>-linux/ascend_toolkit_install.info or "
                                   "compiler/version.info there)", required=False)
    return Check("CANN", True, f"{version} at {cann} ({source.relative_to(cann)})", required=False)


def host_chip(state: dict) -> Chip:
    """The host's chip as it reports it; where it names none, the one `setup --chip` was given."""
    found = detect()
    if found.source == "assumed" and state.get("chip"):
        return Chip(state["chip"], "", "--chip", "given to setup; the host does not name its chip")
    return found


def chip_check(chip: Chip) -> Check:
    """The NPU's generation and who said so; for an Atlas A5, mx_driving must get the driver's answer too."""
    if chip.source == "assumed":
        return Check("NPU chip", False, chip.describe(), "python3 tools/kit.py setup --chip a5, if this is an "
                     "Atlas A5 host (the A2 build is what DrivingSDK takes when it cannot tell either)", required=False)
    if chip.kind == A5 and chip.source != "driver":
        why = f"{DRIVER_LIBRARY} is not on LD_LIBRARY_PATH" if driver_library() is None else "the driver did not answer"
        return Check("NPU chip", False, f"{chip.describe()}; but mx_driving asks the driver at import, and here {why}: "
                     "it would take its A2 kernels, which the A5 build does not have",
                     f"put the folder holding {DRIVER_LIBRARY} (usually /usr/local/Ascend/driver/lib64/driver) on "
                     "LD_LIBRARY_PATH", required=chip.source == "npu-smi")
    return Check("NPU chip", True, chip.describe())


def drivingsdk_build_check(python: Path, chip: Chip, torch: str) -> Check | None:
    """Whether the installed DrivingSDK was built for this chip (its kernel directory) and this torch (its
    Requires-Dist); None when none is installed (the mx_driving check says so)."""
    build = run_probe(python, "drivingsdk_build")
    if "error" in build:
        return Check("DrivingSDK build", False, f"cannot be read ({build['error']})", SETUP_FIX)
    installed = [(name, version) for name, version in build["distributions"].items() if version]
    if not installed:
        return None
    name, version = installed[-1]
    built_for = build_chip(build["vendors"])
    wants = run_probe(python, "requires", name, "torch")
    stack = next((s for s in load_stacks().values() if s.takes_torch(torch)), None)
    wheel = stack.drivingsdk(chip.kind) if stack else None
    problems = []
    if built_for != chip.kind and chip.source == "assumed" and built_for == A5:
        problems.append(f"its kernels are for {LABELS[A5]}, and nothing here names the chip: mx_driving, unable to "
                        "ask the driver either, would take its A2 kernels")
    elif built_for != chip.kind:
        vendors = ", ".join(build["vendors"]) or "none"
        problems.append(f"its kernels are for {LABELS[built_for]}" if built_for else
                        f"it has no kernels for either chip (packages/vendors: {vendors})")
    if wants.get("satisfied") is False:
        problems.append(f"it needs {wants['spec']}, and torch is {torch}")
    kernels = f"kernels for {LABELS[built_for]} (vendors/{VENDORS[built_for]})" if built_for else "no kernels"
    detail = (f"{name} {version}: {kernels}" + (f", built for {wants['spec']}" if wants.get("spec") else "")
              + f"; this host: {chip.label}, torch {torch}")
    if not problems:
        return Check("DrivingSDK build", True, detail)
    if wheel is None:
        serving = " or ".join(s.name for s in load_stacks().values() if s.drivingsdk(chip.kind))
        fix = f"set up a stack with DrivingSDK for {chip.label}: python3 tools/kit.py setup --stack {serving}"
    else:
        fix = (f"{python} -m pip uninstall -y {' '.join(n for n, _ in installed)} && {python} -m pip install "
               f"--no-deps {wheel}")
        if chip.source == "assumed" and built_for == A5:
            fix = (f"on an {LABELS[A5]}, put the folder holding {DRIVER_LIBRARY} (usually "
                   f"/usr/local/Ascend/driver/lib64/driver) on LD_LIBRARY_PATH; on an {LABELS[chip.kind]}: {fix}")
    return Check("DrivingSDK build", False, f"{detail}: " + "; ".join(problems), fix)


def run_checks(ws: Workspace, venv: Path) -> list[Check]:
    checks = checkout_checks(ws)
    python = venv_python(venv)
    if not python.exists():
        checks.append(Check("environment", False, f"no virtual environment at {venv}", SETUP_FIX))
        return checks
    state_file = venv / STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    cell = state.get("cell", "?") if state_file.is_file() else "? (no setup record)"
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
    cann = cann_home()
    ascend = cann is not None
    chip = host_chip(state) if cann is not None else None
    if cann is None:
        checks.append(Check("CANN", True, "not found (not an Ascend host)", required=False))
    else:
        checks += [cann_check(cann), chip_check(chip)]
    for module, fix in (("torch_npu", "python3 tools/kit.py setup (installs the stack's torch-npu from PyPI)"),
                        ("mx_driving", "python3 tools/kit.py setup (installs the stack's mx-driving from PyPI), "
                                       "or setup --drivingsdk DIR to build it from a DrivingSDK checkout")):
        found = not _is_error(info[module])
        detail = str(info[module]) if found or ascend else "not installed (needed on Ascend hosts only)"
        checks.append(Check(module, found, detail, fix if ascend else "", required=ascend))
    if chip is not None:
        build = drivingsdk_build_check(python, chip, str(info["torch"]))
        checks += [build] if build else []
    checks.append(Check("FlashOCC plugin", info["plugin"] == "imports", f"projects.mmdet3d_plugin {info['plugin']}",
                        SETUP_FIX))
    if not ascend:  # the rehearsal stands in for an NPU where there is none
        checks.append(rehearsal_check(python))
    return checks
