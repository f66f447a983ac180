"""`kit.py contract`: the patches' mx_driving / torch_npu calls against the real PyPI wheels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import existing_file
from ..contract import check_patches
from ..pins import load_projects
from ..stacks import npu_contract


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("contract", help="check the patches' mx_driving/torch_npu calls against the real wheels")
    p.add_argument("patches", nargs="*", type=existing_file,
                   help="default: the kit's four patches")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    requirements = npu_contract()
    patches = [Path(p) for p in args.patches] or [p.patch_file for p in load_projects().values()]
    uses, problems = check_patches(patches, requirements)
    print(f"{len(uses)} uses of mx_driving / torch_npu in {', '.join(p.name for p in patches)}:")
    for use in uses:
        print(f"  {use.describe()}")
    failed = False
    for requirement, found in problems.items():
        print(f"{requirement}: {'ok' if not found else 'PROBLEMS'}")
        for problem in found:
            print(f"  {problem}")
        failed |= bool(found)
    return 1 if failed else 0
