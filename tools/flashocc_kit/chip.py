"""Which Atlas chip generation this host has (A2 or A5), which decides the DrivingSDK package it needs.

DrivingSDK ships one `mx_driving` module in two PyPI packages (read from their wheels, 26.2.0.post2):
`mx-driving`, whose kernels sit in mx_driving/packages/vendors/customize (built for ascend910b, ascend910_93
and ascend310p: Atlas A2, A3 and 310P), and `mx-driving-a5`, whose kernels sit in
packages/vendors/customize_arch35 (ascend950: Atlas A5). A source build writes the same directories, with
`ci/build.sh --a5` for A5. At import, mx_driving (get_chip_info.py and `_set_env`) chooses the directory by
asking the driver: it loads libdrvdsmi_host.so from LD_LIBRARY_PATH (nowhere else), calls
`dsmi_get_chip_info(0, &{chip_type[32], chip_name[32], chip_version[32]})`, and takes the chip for an A5
when chip_name contains "95" or is "Ascend950PR"; when that fails it warns and takes `customize`, the A2
kernels. So a package of the wrong generation imports but has no kernels for the chip.

The kit asks the driver first, as DrivingSDK does, so that the two agree:

1. the driver: the same call through the same library (the one on LD_LIBRARY_PATH) and the same rule, run
   in a child process so that a hung or crashing driver costs a timeout, not the kit;
2. `npu-smi info`: its table names the chip of each NPU (910B3 on an Atlas A2, Ascend910 on an A3; an A5's
   is taken to read Ascend950PR, as its `npu-smi info -m` does, not seen here); the kit takes NPU 0's, as
   DrivingSDK takes device 0's. An A5 named only here still gets A2 kernels from mx_driving at import:
   doctor says so;
3. neither answers: unknown, and the kit takes an A2 (DrivingSDK's own fallback), saying so.

`setup --chip a2|a5` overrides all three (for an environment prepared on a host without the NPU it will run
on). CANN's files do not tell: <cann>/<arch>-linux/data/platform_config/ holds one .ini for each SoC the toolkit
can compile for (Ascend910B2.ini, Ascend950PR_9599.ini, ...), whichever the host has, and
ascend_toolkit_install.info names the toolkit's version and CPU architecture, not the device. From CANN 8.5 the
operator package is per chip family (ascend_ops_install.info), but that says what was installed, which a
container image carries to any host, not what the host has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .stackenv import kit_pythonpath

A2, A5 = "a2", "a5"
CHIPS = (A2, A5)
LABELS = {A2: "Atlas A2", A5: "Atlas A5"}
PACKAGES = {A2: "mx-driving", A5: "mx-driving-a5"}  # DrivingSDK's PyPI package for each
VENDORS = {A2: "customize", A5: "customize_arch35"}  # each build's kernels, in mx_driving/packages/vendors/
DRIVER_LIBRARY = "libdrvdsmi_host.so"
NPU_SMI = "npu-smi"
QUERY_TIMEOUT_S = 30  # a driver or npu-smi that does not answer in this time does not answer
_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+([^|]*?)\s*\|")  # "| 0     910B3      | OK ..." in `npu-smi info`


def is_a5(chip_name: str) -> bool:
    """DrivingSDK's own rule (mx_driving/__init__.py, `_set_env`), applied to any name the host reports."""
    return "95" in chip_name or chip_name == "Ascend950PR"


@dataclass(frozen=True)
class Chip:
    kind: str  # a2 | a5: the DrivingSDK build this host needs
    name: str  # the chip's name as the host reported it ("910B3", "Ascend950PR"); "" when nothing did
    source: str  # driver | npu-smi | --chip | assumed
    evidence: str  # the library or command that answered, or why nothing did

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def package(self) -> str:
        return PACKAGES[self.kind]

    def describe(self) -> str:
        if self.source == "driver":
            return f"{self.label} ({self.name}, from the driver: dsmi_get_chip_info through {self.evidence})"
        if self.source == "npu-smi":
            return f"{self.label} ({self.name}, from `npu-smi info`)"
        if self.source == "--chip":
            return f"{self.label} (--chip {self.kind}; {self.evidence})"
        return f"{self.label}, assumed: {self.evidence}; give `--chip a5` on an Atlas A5 host"


def driver_library(env: Mapping[str, str] = os.environ) -> Path | None:
    """libdrvdsmi_host.so in LD_LIBRARY_PATH, where DrivingSDK looks for it (CANN's set_env.sh puts the driver
    there); None when it is not, and then DrivingSDK, at import, falls back to its A2 kernels."""
    for folder in env.get("LD_LIBRARY_PATH", "").split(":"):
        if folder.strip() and (Path(folder.strip()) / DRIVER_LIBRARY).is_file():
            return Path(folder.strip()) / DRIVER_LIBRARY
    return None


def ask_driver(library: Path) -> tuple[str | None, str]:
    """The chip name dsmi_get_chip_info gives for device 0, or None and why not."""
    command = [sys.executable, "-m", "flashocc_kit.probes.dsmi_chip", str(library)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S,
                              env={**os.environ, **kit_pythonpath()})
    except subprocess.TimeoutExpired:
        return None, f"dsmi_get_chip_info through {library} did not return in {QUERY_TIMEOUT_S} s"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return None, f"the chip query through {library} failed ({why})"
    answer = json.loads(lines[-1])
    if answer["status"] != 0 or not answer["name"]:
        return None, f"dsmi_get_chip_info through {library} returned {answer['status']} and no chip name"
    return answer["name"], str(library)


def npu_smi_names(table: str) -> list[str]:
    """The chip name of each NPU in `npu-smi info`'s table, in order (a row's second line has a number there)."""
    names = []
    for line in table.splitlines():
        match = _NPU_ROW.match(line)
        if match and match.group(2) and not match.group(2).isdigit():
            names.append(match.group(2))
    return names


def ask_npu_smi() -> tuple[str | None, str]:
    """NPU 0's chip name as `npu-smi info` prints it, or None and why not."""
    tool = shutil.which(NPU_SMI)
    if tool is None:
        return None, "npu-smi is not on PATH"
    try:
        proc = subprocess.run([tool, "info"], capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"`npu-smi info` did not return in {QUERY_TIMEOUT_S} s"
    except OSError as exc:
        return None, f"`npu-smi info` could not run ({exc})"
    names = npu_smi_names(proc.stdout)
    if proc.returncode != 0 or not names:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        return None, f"`npu-smi info` exited {proc.returncode} naming no NPU ({last[0].strip()[:120]})"
    return names[0], tool


def detect(chosen: str | None = None, env: Mapping[str, str] = os.environ) -> Chip:
    """This host's chip: `chosen` (--chip) if given, else the driver's answer, else npu-smi's, else an assumed A2."""
    if chosen is not None:
        reported = detect(None, env)
        if reported.source == "assumed":
            return Chip(chosen, "", "--chip", "the host does not name its chip")
        said = f"the host reports {reported.describe()}"
        return Chip(chosen, reported.name, "--chip", f"as {said}" if reported.kind == chosen else f"but {said}")
    reasons = []
    library = driver_library(env)
    if library is None:
        reasons.append(f"{DRIVER_LIBRARY} is not on LD_LIBRARY_PATH")
    else:
        name, evidence = ask_driver(library)
        if name is not None:
            return Chip(A5 if is_a5(name) else A2, name, "driver", evidence)
        reasons.append(evidence)
    name, evidence = ask_npu_smi()
    if name is not None:
        return Chip(A5 if is_a5(name) else A2, name, "npu-smi", evidence)
    reasons.append(evidence)
    return Chip(A2, "", "assumed", "neither the driver nor npu-smi named the chip (" + "; ".join(reasons) + ")")


def build_chip(vendors: list[str]) -> str | None:
    """The chip a DrivingSDK build serves, from the kernel directories it has (None: neither, or both)."""
    found = [kind for kind, folder in VENDORS.items() if folder in vendors]
    return found[0] if len(found) == 1 else None
