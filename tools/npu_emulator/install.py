"""Prepares a Python environment for the NPU rehearsal: extension, mx-driving wheel, and the .pth hook.

The installer-facing API is two functions:

``prepare(python_env_prefix, mx_driving_version, cache_dir) -> Prepared``
    In the environment at ``python_env_prefix`` (a venv: ``<prefix>/bin/python``):
    1. builds the C++ extension with that environment's torch, once: it is cached in
       ``<cache_dir>/npu-emulator/<key>`` (key: sources, torch, Python, machine), so a second call
       reuses it in well under a second;
    2. installs the given ``mx-driving`` release from PyPI with ``pip install --no-deps --target``
       into ``<cache_dir>/npu-emulator/mx-driving/<version>-py<X.Y>-<machine>`` (once; the wheel's
       files are never edited); ``mx_driving_version=None`` skips it;
    3. writes ``flashocc_npu_emulator.pth`` (and its settings, ``flashocc_npu_emulator.json``) into the
       environment's site-packages. The hook does nothing unless ``FLASHOCC_EMULATE_NPU=1``.
    Run from another interpreter, it runs itself with the environment's Python.

``remove(python_env_prefix)``
    Deletes the .pth hook and its settings from the environment (the cache stays).

Command line (tools/ on PYTHONPATH, with the environment's Python)::

    PYTHONPATH=tools .venv/bin/python -m npu_emulator.install [--mx-driving VERSION | --no-mx-driving]
                                                               [--cache-dir DIR] [--remove]

Then ``FLASHOCC_EMULATE_NPU=1 .venv/bin/python -c "import torch, torch_npu, mx_driving"`` rehearses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from . import ENV_FLAG, TOOLS_DIR, stack_pins

PTH_NAME = "flashocc_npu_emulator.pth"
SETTINGS_NAME = "flashocc_npu_emulator.json"


@dataclasses.dataclass
class Prepared:
    """What prepare() set up, and how long each part took."""

    extension: str
    mx_driving_dir: str | None
    pth: str
    settings: str
    seconds: dict

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flashocc-kit"


def default_mx_driving_version() -> str | None:
    """The mx-driving release of this torch's stack (tools/pins.ini), if the kit has one."""
    import torch

    return stack_pins(torch.__version__).get("mx-driving")


def _same_environment(prefix: Path) -> bool:
    return Path(sys.prefix).resolve() == prefix.resolve()


def _python_of(prefix: Path) -> Path:
    return prefix / "bin" / "python"


def mx_driving_dir(cache_dir: Path, version: str) -> Path:
    tag = f"{version}-py{sys.version_info[0]}.{sys.version_info[1]}-{platform.machine()}"
    return cache_dir / "npu-emulator" / "mx-driving" / tag


def install_mx_driving(cache_dir: Path, version: str) -> Path:
    """pip install --no-deps --target (once per version, Python and machine); returns the target directory."""
    target = mx_driving_dir(cache_dir, version)
    if (target / "mx_driving" / "__init__.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
                               "--disable-pip-version-check", "--target", str(staging),
                               f"mx-driving=={version}"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not install mx-driving=={version} (exit {proc.returncode}):\n"
                               + (proc.stderr or proc.stdout)[-2000:])
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def write_hook(extension: Path, mx_dir: Path | None, site: Path | None = None) -> tuple[Path, Path]:
    """The .pth line runs npu_emulator.activate at start; it reads its paths from the settings file."""
    site = site if site is not None else site_packages()
    settings = site / SETTINGS_NAME
    settings.write_text(json.dumps({"extension": str(extension), "mx_driving_dir": str(mx_dir) if mx_dir else None,
                                    "tools": str(TOOLS_DIR)}, indent=1) + "\n")
    pth = site / PTH_NAME
    pth.write_text(f"{TOOLS_DIR}\nimport npu_emulator.activate as _npu_emulator; "
                   f"_npu_emulator.on_start({str(settings)!r})\n")
    return pth, settings


def _prepare_here(cache_dir: Path, mx_driving_version: str | None, site_dir: Path | None = None) -> Prepared:
    import torch  # noqa: F401  (imported first: its import time is not the build's)

    from .build import build_extension
    from .dsmi import build_stub

    seconds = {}
    started = time.monotonic()
    extension = build_extension(cache_dir)
    build_stub(extension.parent)
    seconds["extension"] = round(time.monotonic() - started, 2)
    mx_dir = None
    if mx_driving_version:
        started = time.monotonic()
        mx_dir = install_mx_driving(cache_dir, mx_driving_version)
        seconds["mx_driving"] = round(time.monotonic() - started, 2)
    pth, settings = write_hook(extension, mx_dir, site_dir)
    return Prepared(str(extension), str(mx_dir) if mx_dir else None, str(pth), str(settings), seconds)


def prepare(python_env_prefix: str | os.PathLike, mx_driving_version: str | None,
            cache_dir: str | os.PathLike | None = None, site_dir: str | os.PathLike | None = None) -> Prepared:
    """Set up the NPU rehearsal in the environment at python_env_prefix (see the module docstring).

    site_dir: where the .pth goes instead of the environment's site-packages (tests).
    """
    prefix = Path(python_env_prefix)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    site = Path(site_dir) if site_dir is not None else None
    if _same_environment(prefix):
        return _prepare_here(cache, mx_driving_version, site)
    python = _python_of(prefix)
    if not python.is_file():
        raise FileNotFoundError(f"no Python at {python}: is {prefix} a virtual environment?")
    args = [str(python), "-m", "npu_emulator.install", "--cache-dir", str(cache), "--json"]
    args += ["--mx-driving", mx_driving_version] if mx_driving_version else ["--no-mx-driving"]
    args += ["--site-dir", str(site)] if site is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TOOLS_DIR), os.environ.get("PYTHONPATH", "")])}
    env.pop(ENV_FLAG, None)  # prepare the environment, do not rehearse in it
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"preparing the NPU rehearsal in {prefix} failed (exit {proc.returncode}):\n"
                           + (proc.stderr or proc.stdout)[-3000:])
    return Prepared(**json.loads(proc.stdout.strip().splitlines()[-1]))


def remove(python_env_prefix: str | os.PathLike) -> list[str]:
    """Delete the hook from the environment; returns what was removed."""
    prefix = Path(python_env_prefix)
    if not _same_environment(prefix):
        proc = subprocess.run([str(_python_of(prefix)), "-m", "npu_emulator.install", "--remove", "--json"],
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(TOOLS_DIR)})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])
    removed = []
    for name in (PTH_NAME, SETTINGS_NAME):
        path = site_packages() / name
        if path.exists():
            path.unlink()
            removed.append(str(path))
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npu_emulator.install",
                                     description="Prepare this Python environment for the NPU rehearsal "
                                                 f"(then run with {ENV_FLAG}=1).")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--mx-driving", metavar="VERSION",
                        help="the mx-driving release to install (default: the stack's, from torch's version)")
    choice.add_argument("--no-mx-driving", action="store_true", help="do not install mx-driving")
    parser.add_argument("--cache-dir", default=None, help=f"where builds and wheels are kept ({default_cache_dir()})")
    parser.add_argument("--site-dir", default=None, help="write the .pth here, not into site-packages (tests)")
    parser.add_argument("--remove", action="store_true", help="remove the .pth hook from this environment")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.remove:
        removed = remove(sys.prefix)
        print(json.dumps(removed) if args.json else "\n".join(f"removed {p}" for p in removed) or "nothing to remove")
        return 0
    version = None if args.no_mx_driving else (args.mx_driving or default_mx_driving_version())
    prepared = prepare(sys.prefix, version, args.cache_dir, args.site_dir)
    if args.json:
        print(prepared.to_json())
    else:
        print(f"extension   {prepared.extension}\nmx-driving  {prepared.mx_driving_dir or '(not installed)'}\n"
              f"hook        {prepared.pth}\nseconds     {prepared.seconds}\n"
              f"rehearse with {ENV_FLAG}=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
