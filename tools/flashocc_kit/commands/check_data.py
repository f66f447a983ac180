"""`kit.py check-data`: check a data root against a config before a long run; a report naming each bad file."""

from __future__ import annotations

import argparse
import json

from ..argtypes import existing_dir, positive_int
from ..datacheck import check_data
from ..hostinfo import usable_cpus
from ..stackenv import ensure_stack
from ..training.run import CONFIG, locate_flashocc
from ..workspace import Workspace

NEEDS = ("numpy", "mmcv", "PIL", "tqdm")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="check the info files, images, LiDAR files, Occ3D labels and the "
                                          "pretrained checkpoint a config reads; exit 1 on any problem")
    p.add_argument("--data-root", type=existing_dir, help="dataset root (default: the config's ann_files)")
    p.add_argument("--config", default=CONFIG, help=f"the config to check against (default {CONFIG})")
    p.add_argument("--sample", type=positive_int, metavar="N",
                   help="check N random samples per info file (a quick look)")
    p.add_argument("--workers", type=positive_int, default=min(8, usable_cpus()),
                   help="processes decoding files (default: the CPUs, at most 8)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    flashocc = locate_flashocc(ws.flashocc)
    ensure_stack(ws.root, NEEDS, "check-data")
    data_root = str(args.data_root) if args.data_root else None
    report = check_data(flashocc, args.config, data_root, args.sample, args.workers,
                        progress=not args.json)
    if args.json:
        print(json.dumps({"ok": report.ok, "checked": report.checked, "total": report.total,
                          "problems": report.problems}, indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1
