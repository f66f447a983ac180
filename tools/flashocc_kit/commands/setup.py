"""`kit.py setup`: sources, patches and a virtual environment with the patched stack (the seed's steps 1-5),
for the interpreter it runs under."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..argtypes import existing_dir
from ..chip import CHIPS
from ..installer import SetupOptions, setup
from ..pins import default_sources_dir
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="sources + patches + a virtual environment with the patched stack")
    p.add_argument("--stack", help="a stack of `kit.py stacks` (default: the one pins.ini marks default); an "
                                   "interpreter that has torch already sets up that torch's stack")
    p.add_argument("--venv", help="virtual environment to create or update (default: <workspace>/.venvs/<cell>, "
                                  "linked as <workspace>/.venv)")
    p.add_argument("--drivingsdk", metavar="DIR", type=existing_dir,
                   help="build mx_driving from this DrivingSDK checkout (ci/build.sh) "
                        "instead of installing its wheel from PyPI (Ascend hosts)")
    p.add_argument("--chip", choices=CHIPS,
                   help="the NPU's generation, which decides DrivingSDK's package: a2 (mx-driving) or a5 "
                        "(mx-driving-a5, on the stacks of torch >= 2.6); default: as the driver or npu-smi reports it, "
                        "else a2 (Ascend hosts; give it to prepare an environment for another host's NPU)")
    p.add_argument("--from", dest="from_dir", type=existing_dir, help="directory of pristine checkouts (see `sources`)")
    p.add_argument("--torch", dest="torch_mode", choices=("auto", "keep", "install"), default="auto",
                   help="auto: keep a torch the base interpreter already has (Ascend images ship torch "
                        "with torch_npu), else install the lock's; keep/install force either")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    opts = SetupOptions(
        workspace=ws.root,
        venv=Path(args.venv).resolve() if args.venv else None,
        from_dir=Path(args.from_dir) if args.from_dir else default_sources_dir(),
        base_python=Path(sys.executable),
        torch_mode=args.torch_mode,
        stack=args.stack,
        drivingsdk=Path(args.drivingsdk).resolve() if args.drivingsdk else None,
        chip=args.chip,
    )
    started = time.monotonic()
    setup(opts)
    print(f"setup took {time.monotonic() - started:.0f} s")
    return 0
