"""`kit.py summarize`: re-summarize a finished run from its logs: ModelZoo log, JSON summary and curves PNG."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from ..argtypes import existing_dir
from ..errors import KitError
from ..results.summary import DEVICES, PRECISIONS, CaseInfo, SummaryOptions, Warmup, output_paths, summarize_run
from ..stackenv import ensure_stack
from ..training.run import OUTPUT_DIR
from ..workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summarize", help="re-summarize a finished run: ModelZoo log, JSON summary and curves PNG")
    p.add_argument("--work-dir", required=True, type=existing_dir,
                   help="the training's work dir (holds <timestamp>.log.json)")
    p.add_argument("--console-log", action="append", default=[],
                   help="captured console output (training, then evaluation); repeat for several")
    p.add_argument("--case-name", required=True, help="names the outputs: <CASE>.log, <CASE>_summary.json, ...")
    p.add_argument("--out", help="output directory (default: test/output/<CASE> under the FlashOCC root)")
    p.add_argument("--device", choices=DEVICES, help="npu, cuda or cpu")
    p.add_argument("--rank-size", type=int, help="number of training processes")
    p.add_argument("--batch-size", type=int, help="samples per device")
    p.add_argument("--precision", choices=PRECISIONS, help="default fp32")
    p.add_argument("--network", help="default FlashOCC")
    p.add_argument("--device-type", help="ModelZoo DeviceType (default: `uname -m`)")
    p.add_argument("--accuracy", action="store_true", default=None, help="an accuracy run: an mIoU must be found")
    p.add_argument("--e2e-time", type=float, help="wall time of the run in seconds (default: from the text log)")
    p.add_argument("--warmup", help="warm-up to skip: a number of logged records (5) or a fraction (0.2, 20%%); "
                                    f"default: the {Warmup().describe().replace('%', '%%')}")
    p.add_argument("--min-records", type=int, default=SummaryOptions.min_records,
                   help=f"steady-state records needed (default {SummaryOptions.min_records})")
    p.add_argument("--loss-window", type=int, default=SummaryOptions.loss_window,
                   help=f"ActualLoss averages this many last records (default {SummaryOptions.loss_window})")
    p.add_argument("--iters-per-epoch", type=int, help="when no text log shows it")
    p.add_argument("--environment", help="JSON file recorded as the summary's environment block")
    p.add_argument("--lr", type=float, help="the learning rate the run was given (the gate compares it with the "
                                            "baseline's; default: an earlier summary's)")
    p.add_argument("--no-plot", action="store_true", help="skip the curves PNG")
    p.add_argument("--metrics", help="the <results>.metrics.json tools/test.py wrote (default: none; the mIoU is "
                                     "then read from the console logs)")
    p.set_defaults(func=run)


def _previous(path: Path) -> dict[str, Any]:
    """An earlier summary of the same case: its case fields, environment and E2E time are the defaults."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def run(args: argparse.Namespace) -> int:
    if not args.no_plot:  # the curves need matplotlib: the kit's environment has it
        ensure_stack(Path(args.workspace), ("matplotlib",), "summarize", required=False)
    out = Path(args.out) if args.out else Workspace.at(args.workspace).flashocc / OUTPUT_DIR / args.case_name
    before = _previous(output_paths(out, args.case_name)["summary"])

    def pick(name: str, key: str | None = None, default: Any = None) -> Any:
        value = getattr(args, name)
        return value if value is not None else before.get(key or name, default)

    missing = [f"--{n.replace('_', '-')}" for n in ("device", "rank_size", "batch_size") if pick(n) is None]
    if missing:
        earlier = output_paths(out, args.case_name)["summary"]
        raise KitError(f"{', '.join(missing)} needed: no earlier summary at {earlier} to take them from")
    case = CaseInfo(case_name=args.case_name, device=pick("device"), rank_size=int(pick("rank_size")),
                    batch_size=int(pick("batch_size")), precision=pick("precision", default="fp32"),
                    network=pick("network", default="FlashOCC"), accuracy=bool(pick("accuracy", "accuracy_run")),
                    device_type=pick("device_type", default=platform.machine()), lr=pick("lr"),
                    lr_rule="--lr of `kit.py summarize`" if args.lr is not None else before.get("lr_rule"))
    environment = before.get("environment") or {}
    if args.environment:
        try:
            environment = json.loads(Path(args.environment).read_text())
        except (OSError, ValueError) as exc:
            raise KitError(f"--environment {args.environment}: not a readable JSON file ({exc})") from None
    e2e = args.e2e_time
    if e2e is None and before.get("e2e_source") == "launcher":
        e2e = before.get("e2e_training_time_s")  # the launcher measured it: better than a log estimate
    warmup = Warmup.parse(args.warmup) if args.warmup else Warmup()
    options = SummaryOptions(warmup=warmup, min_records=args.min_records, loss_window=args.loss_window)
    summary = summarize_run(Path(args.work_dir), [Path(p) for p in args.console_log], out, case, e2e_seconds=e2e,
                            options=options, environment=environment, iters_per_epoch=args.iters_per_epoch,
                            plot_curves=not args.no_plot, metrics_file=Path(args.metrics) if args.metrics else None)
    print(summary.describe())
    return 0
