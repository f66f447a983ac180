"""`kit.py launch`: the logic behind test/*.sh (those stay thin bash).

One training run, from the patched FlashOCC root, through torchrun; every change to the config
goes through `--cfg-options` (no file is edited); the exit status is the run's. Afterwards the
logs become the ModelZoo `<case>.log`, a JSON summary and curves (results.summary). Accuracy
runs then evaluate the final checkpoint with FlashOCC's own metric.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KitError
from .pins import KIT_ROOT
from .stackenv import ensure_stack
from .workspace import Workspace

CONFIG = "projects/configs/flashocc/flashocc-r50.py"
SMOKE_CONFIG = "projects/configs/flashocc/flashocc-r50-smoke.py"
SMOKE_ENV = "FLASHOCC_SMOKE"  # =1: the CPU smoke configuration, as --smoke
NETWORK = "FlashOCC_R50"
MODES = {
    "perf": "performance: a bounded number of iterations (--max-iters)",
    "full": "accuracy: --epochs epochs, then evaluation of the last (EMA) checkpoint",
    "seed": "the seed README's interface: --epochs=N is a performance run of N epochs, none the accuracy run",
    "smoke": "the CPU smoke run on the synthetic set: train, evaluate, pictures",
}
DEFAULTS = {"num_npu": 8, "batch_size": 4, "epochs": 24, "max_iters": 200,
            "smoke_num_npu": 2, "smoke_batch_size": 2, "smoke_epochs": 10}
# The synthetic set the smoke run trains on (generated on first use); the smoke baselines were
# measured on exactly this set.
SMOKE_DATA_ROOT = "data/nuscenes-synthetic"
SMOKE_DATA = {"width": 352, "height": 198, "train_scenes": 12, "val_scenes": 3, "samples_per_scene": 8, "seed": 0}
# Ascend run-time settings the reference scripts use; applied only on an Ascend host, only if unset.
ASCEND_ENV = {
    "ASCEND_SLOG_PRINT_TO_STDOUT": "0", "ASCEND_GLOBAL_LOG_LEVEL": "3", "ASCEND_GLOBAL_EVENT_ENABLE": "0",
    "HCCL_WHITELIST_DISABLE": "1", "HCCL_CONNECT_TIMEOUT": "1200",
    "TASK_QUEUE_ENABLE": "2", "CPU_AFFINITY_CONF": "1",
}


@dataclass
class Run:
    mode: str
    flashocc: Path
    config: str
    devices: int
    batch_size: int
    epochs: int | None
    max_iters: int | None
    precision: str
    smoke: bool
    work_dir: Path
    output_dir: Path
    data_root: str | None
    resume: str | None
    log_interval: int
    workers: int | None = None
    extra_cfg: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> bool:
        return self.mode in ("full", "smoke")

    @property
    def case_name(self) -> str:
        kind = "acc" if self.accuracy else "perf"
        tag = "_fp16backbone" if self.precision == "fp16-backbone" else ""
        smoke = "_cpusmoke" if self.smoke else ""
        return f"{NETWORK}{smoke}_bs{self.devices * self.batch_size}_{self.devices}p_{kind}{tag}"

    def cfg_options(self) -> list[str]:
        opts = [f"data.samples_per_gpu={self.batch_size}", f"log_config.interval={self.log_interval}"]
        if self.workers is not None:
            opts.append(f"data.workers_per_gpu={self.workers}")
        if self.precision == "fp16-backbone":
            opts.append("model.img_backbone_fp16=True")
        if self.max_iters is not None:  # bounded run: iterations, not epochs
            opts += ["runner.type=IterBasedRunner", f"runner.max_iters={self.max_iters}", "runner.max_epochs=None",
                     "checkpoint_config.by_epoch=False", f"checkpoint_config.interval={self.max_iters}"]
        else:
            opts.append(f"runner.max_epochs={self.epochs}")
        if self.data_root:
            root = self.data_root.rstrip("/") + "/"
            for split, infos in (("train", "train"), ("val", "val"), ("test", "val")):
                opts += [f"data.{split}.data_root={root}",
                         f"data.{split}.ann_file={root}bevdetv2-nuscenes_infos_{infos}.pkl"]
        return opts + self.extra_cfg


def torchrun() -> str:
    """torchrun of the active environment, else of the kit's environment."""
    venv_bin = KIT_ROOT / ".venv" / "bin"
    found = shutil.which("torchrun", path=os.environ.get("PATH", "") + os.pathsep + str(venv_bin))
    if not found:
        raise KitError("torchrun not found. Fix: `python3 tools/kit.py setup`, or activate the environment "
                       "that has torch.")
    return found


def torchrun_prefix(devices: int) -> list[str]:
    """Single- or multi-node, from NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT."""
    return [torchrun(), f"--nnodes={os.environ.get('NNODES', '1')}",
            f"--node_rank={os.environ.get('NODE_RANK', '0')}", f"--nproc_per_node={devices}",
            f"--master_addr={os.environ.get('MASTER_ADDR', '127.0.0.1')}",
            f"--master_port={os.environ.get('MASTER_PORT', '29500')}"]


def train_command(run: Run) -> list[str]:
    cmd = [*torchrun_prefix(run.devices), "tools/train.py", run.config, "--launcher", "pytorch",
           "--work-dir", str(run.work_dir), "--seed", "0"]
    if run.resume == "auto":
        cmd.append("--auto-resume")
    elif run.resume:
        cmd += ["--resume-from", run.resume]
    return cmd + ["--cfg-options", *run.cfg_options()]


def test_command(run: Run, checkpoint: Path, results: Path) -> list[str]:
    opts = [o for o in run.cfg_options() if o.startswith(("data.", "model."))]
    return [*torchrun_prefix(run.devices), "tools/test.py", run.config, str(checkpoint), "--launcher", "pytorch",
            "--eval", "mIoU", "--out", str(results), "--tmpdir", str(run.work_dir / ".eval_tmp"),
            "--cfg-options", *opts]


def device_environment(run: Run) -> dict[str, str]:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(run.flashocc), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    if run.smoke:
        cores = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1) // run.devices)
        env.update({"FLASHOCC_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(cores),
                    "MKL_NUM_THREADS": str(cores)})
    from .environment import cann_home

    if cann_home() is not None and not run.smoke:
        env.update({k: v for k, v in ASCEND_ENV.items() if k not in os.environ})
    return env


def ascend_device_logs(devices: int) -> None:
    """Device-side log level 'error' (msnpureport), where the tool exists."""
    tool = shutil.which("msnpureport")
    if tool is None:
        return
    for device_id in range(devices):
        subprocess.run([tool, "-g", "error", "-d", str(device_id)], capture_output=True, check=False)


def stream(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> int:
    """Run cmd, its output to the terminal and to log; Ctrl-C/TERM reach the whole process group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)}", flush=True)
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

        def forward(signum, _frame):
            os.killpg(proc.pid, signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # flushed per line: the log is followed live (tail -f, tests)
                sys.stdout.write(line)
                sys.stdout.flush()
                fh.write(line)
                fh.flush()
            return proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+).*?traceback\s*:\s*([^\n]*)",
                        re.S)


def failure_cause(log_text: str) -> str:
    """One sentence on why a torchrun run failed: the root-cause rank, its exit, the last error line."""
    parts = []
    match = ROOT_CAUSE.search(log_text)
    if match:
        rank, code, trace = match.groups()
        code_i = int(code)
        what = f"killed by signal {-code_i}" if code_i < 0 else f"exit code {code_i}"
        parts.append(f"rank {rank} failed ({what}): {trace.strip()}")
    errors = re.findall(r"^(?:\[rank\d+\]:\s*)?(\w+(?:Error|Exception)\b[^\n]*)$", log_text, re.M)
    if errors:
        parts.append(f"last error: {errors[-1].strip()}")
    return "; ".join(parts) or "no cause found in the output (see the log tail above)"


def fail(run: Run, what: str, code: int, log: Path) -> int:
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
    print(f"\n---- last lines of {log} ----\n{tail}\n----", file=sys.stderr)
    print(f"error: {what} failed with exit status {code}: {failure_cause(log.read_text(errors='replace'))}\n"
          f"(full log: {log}; work dir: {run.work_dir})", file=sys.stderr)
    return code if code > 0 else 1


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


def locate_flashocc(args: argparse.Namespace) -> Path:
    """The FlashOCC root: the current directory (scripts run from there), else the workspace's."""
    cwd = Path.cwd()
    if (cwd / "tools" / "train.py").is_file() and (cwd / "projects").is_dir():
        return cwd
    candidate = Workspace.at(args.workspace).flashocc
    if (candidate / "tools" / "train.py").is_file():
        print(f"note: not in a FlashOCC root; using {candidate}", file=sys.stderr)
        return candidate
    raise KitError(f"run this from the patched FlashOCC root (`cd FlashOCC`); {cwd} is not one and "
                   f"{candidate} does not exist. Fix: `python3 tools/kit.py setup`.")


def build_run(args: argparse.Namespace) -> Run:
    smoke = args.mode == "smoke" or args.smoke or os.environ.get(SMOKE_ENV) == "1"
    # the seed's interface: --epochs=N is an N-epoch performance run, no argument the accuracy run
    mode = {"seed": "perf" if args.epochs else "full"}.get(args.mode, args.mode)
    flashocc = locate_flashocc(args)
    devices = args.num_npu if args.num_npu is not None else DEFAULTS["smoke_num_npu" if smoke else "num_npu"]
    batch = args.batch_size if args.batch_size is not None else DEFAULTS["smoke_batch_size" if smoke else "batch_size"]
    for name, value in (("--num-npu", devices), ("--batch-size", batch), ("--epochs", args.epochs),
                        ("--max-iters", args.max_iters), ("--log-interval", args.log_interval)):
        if value is not None and value < 1:
            raise KitError(f"{name} must be at least 1, got {value}")
    if mode == "perf":
        if args.epochs and args.max_iters:
            raise KitError("give --epochs or --max-iters, not both")
        epochs, max_iters = args.epochs, None if args.epochs else (args.max_iters or DEFAULTS["max_iters"])
    else:
        if args.max_iters:
            raise KitError(f"--max-iters is for performance runs; `{args.mode}` trains --epochs epochs")
        epochs, max_iters = args.epochs or DEFAULTS["smoke_epochs" if smoke else "epochs"], None
    config = args.config or (SMOKE_CONFIG if smoke else CONFIG)
    if not (flashocc / config).is_file():
        raise KitError(f"config {config} not found under {flashocc}: are the kit's patches applied? "
                       "(`python3 tools/kit.py status`)")
    run = Run(mode=mode, flashocc=flashocc, config=config, devices=devices, batch_size=batch, epochs=epochs,
              max_iters=max_iters, precision=args.precision, smoke=smoke, work_dir=Path(), output_dir=Path(),
              data_root=args.data_root, resume=args.resume,
              log_interval=args.log_interval or (1 if mode == "perf" else 5 if smoke else 10),
              workers=args.workers, extra_cfg=args.cfg_options or [])
    run.work_dir = Path(args.work_dir or flashocc / "work_dirs" / run.case_name).resolve()
    run.output_dir = Path(args.output_dir or flashocc / "test" / "output" / run.case_name).resolve()
    return run


def ensure_smoke_data(run: Run) -> None:
    """Generate the smoke run's synthetic set the first time; reuse it afterwards."""
    from .synth.generate import generate
    from .synth.options import SynthOptions
    from .synth.target import read_marker

    prefix = run.data_root or SMOKE_DATA_ROOT
    root = Path(prefix) if Path(prefix).is_absolute() else run.flashocc / prefix
    wanted = SynthOptions(**SMOKE_DATA)
    marker = read_marker(root) if root.is_dir() else None
    if marker is None:
        print(f"generating the synthetic smoke set in {root} ({SMOKE_DATA})", flush=True)
        generate(wanted, root, prefix)
    elif marker.get("parameters") != wanted.parameters():
        print(f"note: {root} was generated with {marker.get('parameters')}, not the smoke run's {SMOKE_DATA}: "
              "results are not comparable with the smoke baselines", file=sys.stderr)


def execute(run: Run) -> int:
    print(f"{run.case_name}: {MODES[run.mode]}\n  FlashOCC {run.flashocc}\n  config {run.config}, "
          f"{run.devices} x {run.batch_size} samples, "
          + (f"{run.max_iters} iterations" if run.max_iters else f"{run.epochs} epochs")
          + f", {run.precision}\n  work dir {run.work_dir}\n  output {run.output_dir}", flush=True)
    if run.smoke:
        ensure_smoke_data(run)
    env = device_environment(run)
    if "TASK_QUEUE_ENABLE" in env:
        ascend_device_logs(run.devices)
    run.output_dir.mkdir(parents=True, exist_ok=True)
    for stale in run.output_dir.glob(f"{run.case_name}*"):  # a failed run must not leave an old summary
        stale.unlink()
    console = run.output_dir / "train_console.log"
    console.unlink(missing_ok=True)
    started = time.time()
    code = stream(train_command(run), run.flashocc, env, console)
    if code != 0:
        return fail(run, "training", code, console)
    e2e = time.time() - started
    logs = [console]
    if run.accuracy:
        eval_log = run.output_dir / "eval_console.log"
        eval_log.unlink(missing_ok=True)
        results = run.work_dir / "results.pkl"
        code = stream(test_command(run, final_checkpoint(run), results), run.flashocc, env, eval_log)
        if code != 0:
            return fail(run, "evaluation", code, eval_log)
        logs.append(eval_log)
    return summarize(run, logs, e2e)


def summarize(run: Run, logs: list[Path], e2e: float) -> int:
    from .results.summary import CaseInfo, summarize_run

    case = CaseInfo(case_name=run.case_name, device=environment_report(run)["device"], rank_size=run.devices,
                    batch_size=run.batch_size, precision=run.precision, network=NETWORK, accuracy=run.accuracy)
    summary = summarize_run(run.work_dir, logs, run.output_dir, case, e2e_seconds=e2e,
                            environment=environment_report(run))
    print(summary.describe())
    if run.smoke and run.accuracy:
        from .visualize import render_run

        for picture in render_run(run.flashocc, run.work_dir / "results.pkl", run.data_root, run.output_dir):
            print(f"picture: {picture}")
    print(f"outputs in {run.output_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="one training run through torchrun (what test/*.sh call)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="modes:\n" + "\n".join(f"  {k:6s} {v}" for k, v in MODES.items()))
    p.add_argument("mode", choices=MODES)
    p.add_argument("--num-npu", type=int, help=f"devices per node (default {DEFAULTS['num_npu']}; "
                                                f"smoke: {DEFAULTS['smoke_num_npu']} CPU processes)")
    p.add_argument("--batch-size", type=int, help=f"samples per device (default {DEFAULTS['batch_size']})")
    p.add_argument("--epochs", type=int, help=f"epochs (accuracy default {DEFAULTS['epochs']})")
    p.add_argument("--max-iters", type=int, help=f"iterations of a performance run (default {DEFAULTS['max_iters']})")
    p.add_argument("--precision", choices=("fp32", "fp16-backbone"), default="fp32")
    p.add_argument("--data-root", help="dataset root (default: the config's, data/nuscenes/)")
    p.add_argument("--work-dir", help="default: work_dirs/<case name> under the FlashOCC root")
    p.add_argument("--output-dir", help="default: test/output/<case name> under the FlashOCC root")
    p.add_argument("--resume", help="checkpoint to resume from, or 'auto' for the latest in the work dir")
    p.add_argument("--config", help=f"config (default {CONFIG})")
    p.add_argument("--workers", type=int, help="data-loader workers per device (default: the config's, 4)")
    p.add_argument("--log-interval", type=int, help="iterations per log line (default 1 perf, 10 accuracy, 5 smoke)")
    p.add_argument("--smoke", action="store_true", help=f"the CPU smoke configuration (or {SMOKE_ENV}=1)")
    p.add_argument("--cfg-options", nargs="+", help="more config overrides, key=value")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.set_defaults(func=_cmd_launch)


def _cmd_launch(args: argparse.Namespace) -> int:
    run = build_run(args)
    if args.dry_run:
        print(" ".join(train_command(run)))
        return 0
    ensure_stack(Path(args.workspace), ("numpy", "matplotlib"), "launch")
    return execute(run)
