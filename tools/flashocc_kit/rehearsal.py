"""The NPU rehearsal as the kit's commands see it: preparing it in an environment (setup), switching it on in the
launcher's own process, and saying whether it is ready (doctor). The emulation itself is tools/npu_emulator."""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

from .errors import KitError
from .pins import cache_dir

SETUP_FIX = "python3 tools/kit.py setup (prepares the rehearsal in the kit's environment off Ascend hosts)"


def prepare(venv: Path, mx_driving: str):
    """Build (or reuse) the emulator's extension, install DrivingSDK's wheel for it, hook it into the venv."""
    from npu_emulator import install

    try:
        return install.prepare(venv, mx_driving, cache_dir())
    except (OSError, RuntimeError) as exc:
        raise KitError(f"the NPU rehearsal could not be prepared in {venv}: {exc}") from None


def settings_file(site_packages: Path) -> Path:
    from npu_emulator import install

    return site_packages / install.SETTINGS_NAME


def activate_here() -> None:
    """Switch the emulated NPU on in this process, as the environment's .pth hook does in a new interpreter."""
    from npu_emulator import activate

    settings = settings_file(Path(sysconfig.get_paths()["purelib"]))
    if not settings.is_file():
        raise KitError(f"--emulate-npu: the NPU rehearsal is not prepared in {sys.prefix}. Fix: {SETUP_FIX}")
    activate.on_start(settings)


def describe(site_packages: Path) -> str | None:
    """What the rehearsal of an environment is made of, or None when it is not prepared there."""
    settings = settings_file(site_packages)
    if not settings.is_file():
        return None
    recorded = json.loads(settings.read_text())
    mx_dir = recorded.get("mx_driving_dir")
    parts = [f"extension {Path(recorded['extension']).name}" if recorded.get("extension") else "no extension"]
    parts.append(f"DrivingSDK from {Path(mx_dir).name}" if mx_dir else "no DrivingSDK wheel")
    return ", ".join(parts)
