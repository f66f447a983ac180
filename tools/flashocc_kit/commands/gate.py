"""`kit.py gate`: compare a run's JSON summary with its baseline; exit 0 pass, 1 fail, 2 unusable."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import non_negative_float, positive_float
from ..results.gate import DEFAULT_BASELINES, Tolerances, run_gate


def register(sub: argparse._SubParsersAction) -> None:
    d = Tolerances()
    p = sub.add_parser("gate", help="compare a run's JSON summary with its baseline: exit 0 pass, 1 fail, 2 unusable")
    p.add_argument("--summary", required=True, help="<CASE>_summary.json written by the launcher or `summarize`")
    p.add_argument("--baselines", default=str(DEFAULT_BASELINES), help="default: tools/baselines.json")
    p.add_argument("--step-time-tolerance", type=positive_float, dest="step_time_factor", metavar="FACTOR",
                   help=f"pass if step time <= baseline x this (default: the baseline's, else {d.step_time_factor})")
    p.add_argument("--miou-tolerance", type=non_negative_float, dest="miou_drop", metavar="POINTS",
                   help=f"pass if mIoU >= baseline - this (default: the baseline's, else {d.miou_drop})")
    p.add_argument("--device", help="look up the baseline of this device (npu, cuda, cpu) instead of the summary's")
    p.add_argument("--precision", help="... of this precision (fp32, fp16-backbone)")
    p.add_argument("--global-batch", type=int, help="... of this global batch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = run_gate(Path(args.summary), Path(args.baselines),
                      overrides={"device": args.device, "precision": args.precision,
                                 "global_batch": args.global_batch},
                      tolerances={"step_time_factor": args.step_time_factor, "miou_drop": args.miou_drop})
    print(result.report())
    return 0 if result.passed else 1
