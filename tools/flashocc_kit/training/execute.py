"""A whole run: checks, the smoke set on first use, the meeting of the nodes, training under the stall
watch, evaluation, the summaries and pictures."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from .. import ascend
from ..errors import KitError
from ..locking import exclusively
from ..results.profile import collect as collect_profile
from ..settings import forced_device
from .checkpoints import check_resume_path, finish_leg, read_legs, resume_point, start_leg
from .commands import rank_environment, test_command, train_command
from .nodes import Nodes, meet
from .preflight import check_data_quickly, check_devices, check_work_dir, device_count
from .run import MODES, NETWORK, SMOKE_DATA, Run
from .stream import report_failure, stream
from .watch import LAUNCH_ENV, StallWatch, heartbeat_dir, new_launch_id

RESULTS = "results.pkl"  # tools/test.py --out, in the work dir; the metrics land beside it (.metrics.json)
HEARTBEAT_ENV = "FLASHOCC_HEARTBEAT_DIR"  # read by the port's tools/train.py


def ensure_smoke_data(root: Path, data_root: str) -> None:
    """Generate the smoke run's synthetic set at root (data_root as the infos name it) the first time, once however
    many launchers or test sessions want it (the nodes of a run on one machine, or on a shared filesystem); reuse it
    afterwards."""
    from ..synth.cache import generate_or_copy
    from ..synth.generate import FORMAT_VERSION, generate
    from ..synth.options import SynthOptions
    from ..synth.target import read_marker

    wanted = SynthOptions(**SMOKE_DATA)
    with exclusively(root.parent / f".{root.name}.lock"):
        marker = read_marker(root) if root.is_dir() else None
        if marker is None:
            generate_or_copy(wanted, root, data_root, log=lambda line: print(line, flush=True))
        elif marker.get("format_version") != FORMAT_VERSION and marker.get("parameters") == wanted.parameters():
            # an older generator's smoke set lacks what this kit reads (e.g. occ3d_panoptic/): the same set, anew
            print(f"regenerating the synthetic smoke set in {root}: it has format {marker.get('format_version')}, "
                  f"this kit writes {FORMAT_VERSION}", flush=True)
            generate(wanted, root, data_root, overwrite=True)
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
    kind = "npu" if run.emulate_npu else "cpu" if run.smoke else forced_device() or device_count(run)[0]
    return {"versions": versions, "python": sys.version.split()[0], "device": kind, "device_count": run.devices,
            "nodes": run.nodes, "host": os.uname().nodename, "emulated": run.emulate_npu}


def describe_lr(lr) -> str:
    return "(the config's optimizer sets none)" if lr is None else f"{lr:.2e}"


def describe(run: Run) -> str:
    length = f"{run.max_iters} iterations" if run.max_iters else f"{run.epochs} epochs"
    nodes = f"{run.nodes} nodes x " if run.nodes > 1 else ""
    rehearsal = ("\n  NPU EMULATED on this CPU (a rehearsal of the NPU run: its code paths, not its speed)"
                 if run.emulate_npu else "")
    return (f"{run.case_name}: {MODES[run.mode]}{rehearsal}\n  FlashOCC {run.flashocc}\n  config {run.config}, "
            f"{nodes}{run.devices} x {run.batch_size} samples (global batch {run.global_batch}), {length}, "
            f"{run.precision}\n  lr {describe_lr(run.lr)}: {run.lr_rule}\n  data {run.data_dir}\n"
            f"  work dir {run.work_dir}\n  output {run.output_dir}")


def resolve_resume(run: Run) -> Path | None:
    """The checkpoint the run continues from: --resume PATH as given, or for `auto` the newest sound one."""
    if run.resume is None:
        return None
    if run.resume != "auto":
        return check_resume_path(Path(run.resume))
    found, skipped = resume_point(run.work_dir)
    for why in skipped:
        print(f"warning: not resuming from {why}", file=sys.stderr)
    print(f"resuming from {found}" if found else f"nothing to resume in {run.work_dir}: starting afresh", flush=True)
    return found


def prepare(run: Run) -> None:
    """Everything that can fail before the ranks start, so that it fails here, with its reason."""
    check_work_dir(run.work_dir, run.smoke)
    check_devices(run)
    run.resume_from = resolve_resume(run)
    if run.smoke:
        ensure_smoke_data(run.data_dir, run.data_root)
    if run.data_check:
        check_data_quickly(run)


def execute(run: Run) -> int:
    nodes = run.cluster
    print(describe(run), flush=True)
    failure = None
    try:
        prepare(run)
    except KitError as exc:
        failure = str(exc)
    meet(nodes, failure, run.node_timeout)  # every node checked, or none starts
    launch = new_launch_id()
    beats = heartbeat_dir(run.work_dir, launch)
    env = {**rank_environment(run), HEARTBEAT_ENV: str(beats), LAUNCH_ENV: launch}
    try:
        return train_and_evaluate(run, nodes, env, StallWatch(beats, node_ranks(run, nodes), run.stall_timeout,
                                                              launch=launch))
    finally:
        shutil.rmtree(beats, ignore_errors=True)  # this launch's own; other launches' are not ours to remove


def node_ranks(run: Run, nodes: Nodes) -> list[int]:
    """The global ranks this node's torchrun starts."""
    first = nodes.rank * run.devices
    return list(range(first, first + run.devices))


def train_and_evaluate(run: Run, nodes: Nodes, env: dict[str, str], watch: StallWatch) -> int:
    if "TASK_QUEUE_ENABLE" in env:
        ascend.quiet_device_logs(run.devices)
    run.output_dir.mkdir(parents=True, exist_ok=True)
    if nodes.rank == 0:
        for stale in run.output_dir.glob(f"{run.case_name}*"):  # a failed run must not leave an old summary
            stale.unlink()
    console = run.output_dir / "train_console.log"
    console.write_text(describe(run) + "\n")  # the run's parameters, the lr rule among them, head the log
    started = time.time()
    if nodes.rank == 0:
        start_leg(run.work_dir, started, run.resume_from)
    code = stream(train_command(run), run.flashocc, env, console, watch)
    if nodes.rank == 0:
        finish_leg(run.work_dir, time.time() - started, "ok" if code == 0 else f"exit {code}")
    if code != 0:
        return report_failure("training", code, console, run.work_dir)
    if nodes.rank != 0:
        print(f"node {nodes.rank}: training done. Node 0 ({nodes.master_addr}) evaluates and writes the summaries, "
              f"in its {run.output_dir}")
        return 0
    logs = [console]
    if run.accuracy:
        eval_log = run.output_dir / "eval_console.log"
        if eval_log.exists():
            eval_log.unlink()
        results = run.work_dir / RESULTS
        code = stream(test_command(run, final_checkpoint(run), results), run.flashocc, env, eval_log,
                      StallWatch(watch.directory, [], run.stall_timeout, launch=watch.launch))
        if code != 0:
            return report_failure("evaluation", code, eval_log, run.work_dir)
        logs.append(eval_log)
    return summarize(run, logs)


def summarize(run: Run, logs: list[Path]) -> int:
    from ..results.summary import CaseInfo, summarize_run

    legs = read_legs(run.work_dir)
    if run.resume_from is None:
        legs = legs[-1:]
    environment = environment_report(run)
    case = CaseInfo(case_name=run.case_name, device=environment["device"], rank_size=run.devices * run.nodes,
                    batch_size=run.batch_size, precision=run.precision, network=NETWORK, accuracy=run.accuracy,
                    lr=run.lr, lr_rule=run.lr_rule, emulated=run.emulate_npu)
    metrics = run.work_dir / RESULTS.replace(".pkl", ".metrics.json") if run.accuracy else None
    profile = collect_profile(run.work_dir, run.output_dir, run.case_name) if run.profile else None
    resumed = {"from": str(run.resume_from), "legs": legs} if run.resume_from is not None else None
    summary = summarize_run(run.work_dir, logs, run.output_dir, case, e2e_seconds=sum(leg["seconds"] for leg in legs),
                            environment=environment, metrics_file=metrics, resumed=resumed,
                            legs_since=legs[0]["stamp"] if resumed else None, profile=profile)
    print(summary.describe())
    if run.smoke and run.accuracy:
        from ..visualize import render_run

        for picture in render_run(run.flashocc, run.work_dir / RESULTS, run.data_dir, run.output_dir):
            print(f"picture: {picture}")
    print(f"outputs in {run.output_dir}")
    return 0
