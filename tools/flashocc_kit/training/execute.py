"""A whole run: the smoke set on first use, training, evaluation, the summaries and pictures."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .. import ascend
from ..errors import KitError
from .commands import rank_environment, test_command, train_command
from .run import MODES, NETWORK, SMOKE_DATA, Run
from .stream import report_failure, stream

RESULTS = "results.pkl"  # tools/test.py --out, in the work dir; the metrics land beside it (.metrics.json)


def ensure_smoke_data(run: Run) -> None:
    """Generate the smoke run's synthetic set the first time; reuse it afterwards."""
    from ..synth.generate import generate
    from ..synth.options import SynthOptions
    from ..synth.target import read_marker

    root = run.data_dir
    wanted = SynthOptions(**SMOKE_DATA)
    marker = read_marker(root) if root.is_dir() else None
    if marker is None:
        print(f"generating the synthetic smoke set in {root} ({SMOKE_DATA})", flush=True)
        generate(wanted, root, run.data_root)
    elif marker.get("parameters") != wanted.parameters():
        print(f"note: {root} was generated with {marker.get('parameters')}, not the smoke run's {SMOKE_DATA}: "
              "results are not comparable with the smoke baselines", file=sys.stderr)


def final_checkpoint(run: Run) -> Path:
    if run.max_iters is not None:
        candidates = [run.work_dir / f"iter_{run.max_iters}.pth"]
    else:
        candidates = [run.work_dir / f"epoch_{run.epochs}_ema.pth", run.work_dir / f"epoch_{run.epochs}.pth"]
    if run.smoke:  # short runs: the EMA has barely moved from the initial weights
        candidates.reverse()
    for path in candidates:
        if path.exists():
            return path
    raise KitError(f"no final checkpoint in {run.work_dir} (looked for {', '.join(c.name for c in candidates)})")


def environment_report(run: Run) -> dict:
    from importlib import metadata

    versions = {}
    for dist in ("torch", "torchvision", "torch_npu", "mx-driving", "mmcv-full", "mmdet", "mmdet3d", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    kind = "cpu" if run.smoke else os.environ.get("FLASHOCC_DEVICE") or _detected_device(run)
    return {"versions": versions, "python": sys.version.split()[0], "device": kind, "device_count": run.devices,
            "nodes": int(os.environ.get("NNODES", "1")), "host": os.uname().nodename}


def _detected_device(run: Run) -> str:
    sys.path.insert(0, str(run.flashocc))
    try:
        from projects import device  # the port's own decision, not a second copy of it

        return device.device_type()
    finally:
        sys.path.remove(str(run.flashocc))


def describe_lr(lr) -> str:
    return "(the config's optimizer sets none)" if lr is None else f"{lr:.2e}"


def describe(run: Run) -> str:
    length = f"{run.max_iters} iterations" if run.max_iters else f"{run.epochs} epochs"
    nodes = f"{run.nodes} nodes x " if run.nodes > 1 else ""
    return (f"{run.case_name}: {MODES[run.mode]}\n  FlashOCC {run.flashocc}\n  config {run.config}, "
            f"{nodes}{run.devices} x {run.batch_size} samples (global batch {run.global_batch}), {length}, "
            f"{run.precision}\n  lr {describe_lr(run.lr)}: {run.lr_rule}\n  data {run.data_dir}\n"
            f"  work dir {run.work_dir}\n  output {run.output_dir}")


def execute(run: Run) -> int:
    print(describe(run), flush=True)
    if run.smoke:
        ensure_smoke_data(run)
    env = rank_environment(run)
    if "TASK_QUEUE_ENABLE" in env:
        ascend.quiet_device_logs(run.devices)
    run.output_dir.mkdir(parents=True, exist_ok=True)
    for stale in run.output_dir.glob(f"{run.case_name}*"):  # a failed run must not leave an old summary
        stale.unlink()
    console = run.output_dir / "train_console.log"
    console.write_text(describe(run) + "\n")  # the run's parameters, the lr rule among them, head the log
    started = time.time()
    code = stream(train_command(run), run.flashocc, env, console)
    if code != 0:
        return report_failure("training", code, console, run.work_dir)
    e2e = time.time() - started
    logs = [console]
    if run.accuracy:
        eval_log = run.output_dir / "eval_console.log"
        if eval_log.exists():
            eval_log.unlink()
        results = run.work_dir / RESULTS
        code = stream(test_command(run, final_checkpoint(run), results), run.flashocc, env, eval_log)
        if code != 0:
            return report_failure("evaluation", code, eval_log, run.work_dir)
        logs.append(eval_log)
    return summarize(run, logs, e2e)


def summarize(run: Run, logs: list[Path], e2e: float) -> int:
    from ..results.summary import CaseInfo, summarize_run

    environment = environment_report(run)
    case = CaseInfo(case_name=run.case_name, device=environment["device"], rank_size=run.devices * run.nodes,
                    batch_size=run.batch_size, precision=run.precision, network=NETWORK, accuracy=run.accuracy,
                    lr=run.lr, lr_rule=run.lr_rule)
    metrics = run.work_dir / RESULTS.replace(".pkl", ".metrics.json") if run.accuracy else None
    summary = summarize_run(run.work_dir, logs, run.output_dir, case, e2e_seconds=e2e, environment=environment,
                            metrics_file=metrics)
    print(summary.describe())
    if run.smoke and run.accuracy:
        from ..visualize import render_run

        for picture in render_run(run.flashocc, run.work_dir / RESULTS, run.data_dir, run.output_dir):
            print(f"picture: {picture}")
    print(f"outputs in {run.output_dir}")
    return 0
