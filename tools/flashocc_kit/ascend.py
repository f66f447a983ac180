"""The Ascend host: where CANN is, its version, and the run-time settings the reference port's scripts use."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

CANN_DEFAULT = Path("/usr/local/Ascend/ascend-toolkit/latest")
# Ascend run-time settings of the reference scripts; applied only on an Ascend host, only if unset.
RUNTIME_ENV = {
    "ASCEND_SLOG_PRINT_TO_STDOUT": "0", "ASCEND_GLOBAL_LOG_LEVEL": "3", "ASCEND_GLOBAL_EVENT_ENABLE": "0",
    "HCCL_WHITELIST_DISABLE": "1", "HCCL_CONNECT_TIMEOUT": "1200",
    "TASK_QUEUE_ENABLE": "2", "CPU_AFFINITY_CONF": "1", "COMBINED_ENABLE": "1",
}


def cann_home() -> Path | None:
    """The CANN toolkit, if this is an Ascend host."""
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        if os.environ.get(var) and Path(os.environ[var]).is_dir():
            return Path(os.environ[var])
    return CANN_DEFAULT if CANN_DEFAULT.is_dir() else None


def cann_version(cann: Path) -> tuple[str | None, Path | None]:
    """CANN's version and the file that says it: <cann>/<arch>-linux/ascend_toolkit_install.info's `version=`
    (what CANN's install guide has users read, and torch_npu's collect_env), else compiler/version.info's
    `Version=` (what DrivingSDK's build reads); (None, None) when neither is there."""
    candidates = [cann / f"{platform.machine()}-linux" / "ascend_toolkit_install.info",
                  *sorted(cann.glob("*-linux/ascend_toolkit_install.info")), cann / "compiler" / "version.info"]
    for path in candidates:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip().lower() == "version" and value.strip():
                return value.strip(), path
    return None, None


def host_address() -> str | None:
    """This host's first address, as `hostname -I` lists them (the reference scripts' HCCL_IF_IP)."""
    try:
        listed = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    except OSError:  # no hostname tool: HCCL picks an interface itself
        return None
    return listed[0] if listed else None


def runtime_environment() -> dict[str, str]:
    """The reference scripts' settings this process does not set itself (empty off Ascend)."""
    if cann_home() is None:
        return {}
    wanted = dict(RUNTIME_ENV)
    address = host_address()
    if address:  # HCCL's interface for the collectives; several NICs otherwise leave it guessing
        wanted["HCCL_IF_IP"] = address
    return {k: v for k, v in wanted.items() if k not in os.environ}


def quiet_device_logs(devices: int) -> None:
    """Device-side log level 'error' (msnpureport), where the tool exists."""
    tool = shutil.which("msnpureport")
    if tool is None:
        return
    for device_id in range(devices):
        subprocess.run([tool, "-g", "error", "-d", str(device_id)], capture_output=True, check=False)
