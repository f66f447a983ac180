"""`kit.py bench`: the port's data pipeline and BEV pooling against upstream's, measured in one process.

    bench pipeline   upstream's pristine train pipeline vs the patched one (per step, DataLoader, depth stage)
    bench bevpool    the portable bev_pool_v3 + sort-free prepare vs upstream's sort-and-interval algorithm
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..stackenv import ensure_stack

NEEDS = ("numpy", "torch", "mmcv", "cv2")


def register(sub: argparse._SubParsersAction) -> None:
    from . import bevpool, pipeline

    p = sub.add_parser("bench", help="benchmark the port against upstream (data pipeline, BEV pooling)",
                       description=__doc__.splitlines()[0])
    what = p.add_subparsers(dest="bench_command", required=True, metavar="<what>")
    pipeline.add_parser(what)
    bevpool.add_parser(what)


def stack(args: argparse.Namespace) -> None:
    """Re-run under the workspace's environment if this interpreter lacks the training stack."""
    ensure_stack(Path(args.workspace), NEEDS, "bench")
