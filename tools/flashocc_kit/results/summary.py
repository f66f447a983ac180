"""Run summaries: steady-state performance, loss and mIoU of a finished run, as the launch scripts publish them.

`summarize_run` writes, into the case's output directory (test/output/<CASE_NAME>/ by the launchers' convention):
  <CASE_NAME>.log           Ascend ModelZoo `key = value` lines: Network, DeviceType, RankSize, BatchSize, CaseName,
                            E2ETrainingTime, TrainingTime, ActualFPS, ActualLoss (+ mIoU when there was an eval)
  <CASE_NAME>_summary.json  the same values and the detail behind them (what `kit.py gate` reads)
  <CASE_NAME>_curves.png    loss and step time against iteration, the steady-state window shaded
The numbers: TrainingTime is the mean logged step time over the steady-state window (warm-up records skipped),
ActualFPS = global batch / TrainingTime, ActualLoss the mean loss of the last logged record(s).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KitError
from . import logparse, plot
from .logparse import EvalResult, TrainLog

DEVICES = ("npu", "cuda", "cpu")
PRECISIONS = ("fp32", "fp16-backbone")
SCHEMA = 1


@dataclass(frozen=True)
class CaseInfo:
    """What ran: the launcher knows it, the logs do not."""

    case_name: str  # names the output files: <case_name>.log, <case_name>_summary.json, <case_name>_curves.png
    device: str  # npu | cuda | cpu: what trained; baselines are keyed by it
    rank_size: int  # training processes (one per device)
    batch_size: int  # samples per device (the config's samples_per_gpu)
    precision: str = "fp32"  # fp32 | fp16-backbone
    network: str = "FlashOCC"
    accuracy: bool = False  # an accuracy run must end with an evaluation; a performance run need not
    device_type: str = field(default_factory=platform.machine)  # ModelZoo's DeviceType: `uname -m`
    lr: float | None = None  # the optimizer's learning rate the run was given
    lr_rule: str | None = None  # how it was chosen (the launcher's rule, or --lr)
    emulated: bool = False  # the NPU rehearsal: an NPU's code paths on a CPU, not an NPU's figures

    def __post_init__(self) -> None:
        if not self.case_name or "/" in self.case_name or self.case_name.startswith("."):
            raise KitError(f"case name {self.case_name!r}: needs a plain file name (it names the output files)")
        if self.device not in DEVICES:
            raise KitError(f"device {self.device!r}: choose from {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise KitError(f"precision {self.precision!r}: choose from {', '.join(PRECISIONS)}")
        if self.rank_size < 1 or self.batch_size < 1:
            raise KitError(f"rank size {self.rank_size} and batch size {self.batch_size} must both be at least 1")

    @property
    def global_batch(self) -> int:
        return self.rank_size * self.batch_size


@dataclass(frozen=True)
class Warmup:
    """Which logged records are warm-up: the first `records` if set, else the first `fraction` (rounded up)."""

    records: int | None = None
    fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.records is not None and self.records < 0:
            raise KitError(f"warm-up of {self.records} records: must be 0 or more")
        if not 0 <= self.fraction < 1:
            raise KitError(f"warm-up fraction {self.fraction}: must be at least 0 and below 1")

    def count(self, total: int) -> int:
        if self.records is not None:
            return self.records
        return math.ceil(round(self.fraction * total, 9))  # round: 0.1 * 30 is 3.0000000000000004

    def describe(self) -> str:
        if self.records is not None:
            return f"first {self.records} logged records"
        return f"first {self.fraction:.0%} of logged records"

    @classmethod
    def parse(cls, text: str) -> Warmup:
        """'5': the first 5 records; '0.2' or '20%': the first fifth."""
        text = text.strip()
        try:
            if text.endswith("%"):
                return cls(fraction=float(text[:-1]) / 100)
            if text.isdigit():
                return cls(records=int(text))
            return cls(fraction=float(text))
        except ValueError:
            raise KitError(f"--warmup {text!r}: give a record count (5) or a fraction (0.2 or 20%)") from None


@dataclass(frozen=True)
class SummaryOptions:
    warmup: Warmup = Warmup()
    min_records: int = 3  # steady-state records needed for a mean and percentiles worth reporting
    loss_window: int = 1  # ActualLoss: mean of the last this many logged records (each already an interval mean)


@dataclass
class Summary:
    """Everything written about one run; `to_dict` is the JSON summary."""

    case: CaseInfo
    training_time_s: float  # steady-state mean seconds per step
    fps: float
    actual_loss: float
    step_time_s: dict[str, float]  # mean, p50, p90, p99, min, max over the window
    data_time_s_mean: float | None
    memory_mb_max: int | None
    window: dict[str, Any]  # first_iter, last_iter, records, skipped_records, total_records, warmup
    train: TrainLog
    evaluation: EvalResult | None
    e2e_seconds: float | None
    e2e_source: str
    loss_window: int
    console_logs: list[Path] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str | None] = field(default_factory=dict)
    resumed: dict[str, Any] | None = None  # a resumed run: from where, and its legs
    profile: dict[str, Any] | None = None  # --profile: the step split, the top operators, where the trace is

    def modelzoo(self) -> list[tuple[str, str]]:
        """The ModelZoo log lines, in the order the DrivingSDK launch scripts write them."""
        c = self.case
        rows = [("Network", c.network), ("DeviceType", c.device_type), ("RankSize", str(c.rank_size)),
                ("BatchSize", str(c.batch_size)), ("CaseName", c.case_name),
                ("E2ETrainingTime", "NA" if self.e2e_seconds is None else str(round(self.e2e_seconds))),
                ("TrainingTime", f"{self.training_time_s:.4f}"), ("ActualFPS", f"{self.fps:.2f}"),
                ("ActualLoss", f"{self.actual_loss:.4f}")]
        if self.evaluation is not None:
            rows.append(("mIoU", f"{self.evaluation.miou:.2f}"))
        return rows

    def modelzoo_text(self) -> str:
        return "".join(f"{key} = {value}\n" for key, value in self.modelzoo())

    def to_dict(self) -> dict[str, Any]:
        c, ev = self.case, self.evaluation
        last = self.train.records[-1]
        return _finite_only({
            "schema": SCHEMA,
            "case_name": c.case_name, "network": c.network, "device": c.device, "device_type": c.device_type,
            "rank_size": c.rank_size, "batch_size": c.batch_size, "global_batch": c.global_batch,
            "precision": c.precision, "accuracy_run": c.accuracy, "lr": c.lr, "lr_rule": c.lr_rule,
            "emulated": c.emulated,
            "modelzoo": dict(self.modelzoo()),
            "e2e_training_time_s": self.e2e_seconds, "e2e_source": self.e2e_source,
            "training_time_s": self.training_time_s, "fps": self.fps,
            "actual_loss": self.actual_loss, "actual_loss_records": self.loss_window,
            "final_loss_components": last.losses,
            "step_time_s": self.step_time_s, "data_time_s_mean": self.data_time_s_mean,
            "memory_mb_max": self.memory_mb_max,
            "steady_state": self.window,
            "epochs": self.train.epochs, "iters_per_epoch": self.train.iters_per_epoch,
            "iters_per_epoch_estimated": self.train.iters_per_epoch_estimated,
            "last_iter": last.step,
            "accuracy": None if ev is None else {
                "miou": ev.miou, "per_class_iou": ev.per_class, "samples": ev.samples, "epoch": ev.epoch,
                "source": ev.source, "history": [{"epoch": e, "miou": m} for e, m in ev.history]},
            "environment": self.environment,
            "resumed": self.resumed,
            "profile": None if self.profile is None else {k: v for k, v in self.profile.items() if k != "table"},
            "run": self.train.meta,
            "sources": {"train_records": str(self.train.source), "train_records_kind": self.train.source_kind,
                        "console_logs": [str(p) for p in self.console_logs]},
            "files": self.files,
            "notes": self.notes,
        })

    def describe(self) -> str:
        """A few lines for the launcher's console."""
        w = self.window
        lines = [f"{k} = {v}" for k, v in self.modelzoo()]
        t = self.step_time_s
        lines.append(f"steady state: iterations {w['first_iter']}-{w['last_iter']}, {w['records']} of "
                     f"{w['total_records']} logged records (warm-up skipped: {w['warmup']}); "
                     f"step time p50/p90/p99 {t['p50']:.3f}/{t['p90']:.3f}/{t['p99']:.3f} s")
        if self.profile is not None:
            lines += [self.profile["table"],
                      f"trace: {self.profile['trace_dir']} (open it in {self.profile['opens_in']})"]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"{kind}: {path}" for kind, path in self.files.items() if path]
        return "\n".join(lines)


def _finite_only(value: Any) -> Any:
    """NaN and infinities as null: the JSON summary stays strict JSON for CI tools."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_only(v) for v in value]
    return value


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def build_summary(train: TrainLog, evaluation: EvalResult | None, case: CaseInfo, *,
                  options: SummaryOptions = SummaryOptions(), e2e_seconds: float | None = None,
                  e2e_source: str = "launcher", environment: Mapping[str, Any] | None = None,
                  console_logs: Sequence[Path] = ()) -> Summary:
    """The numbers of a run from its parsed logs; writes nothing."""
    records = train.records
    total = len(records)
    skip = options.warmup.count(total)
    steady = records[skip:]
    if len(steady) < max(options.min_records, 1):
        raise KitError(
            f"only {len(steady)} logged training record(s) remain for the steady state after skipping "
            f"{min(skip, total)} of {total} as warm-up ({options.warmup.describe()}); "
            f"at least {options.min_records} are needed. "
            "Fix: lower the warm-up (--warmup), log more often (the config's log_config interval) or train longer")
    if case.accuracy and evaluation is None:
        raise KitError(
            f"{case.case_name} is an accuracy run but no evaluation result was found: no '===> mIoU of N samples' "
            f"line in {', '.join(map(str, console_logs)) or '(no console log given)'} and no 'val' line with mIoU "
            f"in the JSON log. Pass the console log of the evaluation (dist_test.sh output) or check that it finished")
    times = [r.time for r in steady]
    data_times = [r.data_time for r in steady if r.data_time is not None]
    memory = [r.memory_mb for r in records if r.memory_mb is not None]
    loss_window = min(options.loss_window, total)
    mean_time = statistics.fmean(times)
    if mean_time <= 0:
        raise KitError(f"the logged step times of iterations {steady[0].step}-{steady[-1].step} average "
                       f"{mean_time} s: not a usable timing ({train.source})")
    notes = list(train.notes)
    if evaluation is not None:
        notes += evaluation.notes
    if e2e_seconds is None:
        notes.append("E2ETrainingTime unknown (written as NA): the launcher passes it; no text log to estimate it")
    if loss_window < options.loss_window:
        notes.append(f"ActualLoss averages all {total} logged records (fewer than the {options.loss_window} asked)")
    return Summary(
        case=case, training_time_s=mean_time, fps=case.global_batch / mean_time,
        actual_loss=statistics.fmean(r.loss for r in records[-loss_window:]),
        step_time_s={"mean": mean_time, "p50": percentile(times, 50), "p90": percentile(times, 90),
                     "p99": percentile(times, 99), "min": min(times), "max": max(times)},
        data_time_s_mean=statistics.fmean(data_times) if data_times else None,
        memory_mb_max=max(memory) if memory else None,
        window={"first_iter": steady[0].step, "last_iter": steady[-1].step, "records": len(steady),
                "skipped_records": skip, "total_records": total, "warmup": options.warmup.describe()},
        train=train, evaluation=evaluation, e2e_seconds=e2e_seconds,
        e2e_source=e2e_source if e2e_seconds is not None else "unknown", loss_window=loss_window,
        console_logs=list(console_logs), environment=dict(environment or {}), notes=notes)


def output_paths(output_dir: Path, case_name: str) -> dict[str, Path]:
    return {"modelzoo_log": output_dir / f"{case_name}.log", "summary": output_dir / f"{case_name}_summary.json",
            "curves": output_dir / f"{case_name}_curves.png"}


def write_summary(summary: Summary, output_dir: Path, *, plot_curves: bool = True) -> dict[str, Path]:
    """Write the ModelZoo log, the curves (when asked and matplotlib is there) and the JSON summary."""
    paths = output_paths(output_dir, summary.case.case_name)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths["modelzoo_log"].write_text(summary.modelzoo_text())
    summary.files = {"modelzoo_log": str(paths["modelzoo_log"]), "curves": None,
                     "summary": str(paths["summary"])}
    if summary.profile is not None:
        summary.files.update(profile_trace=summary.profile["trace_dir"], profile_table=summary.profile["table_png"])
    if plot_curves:
        w = summary.window
        try:
            plot.write_curves(summary.train.records, (w["first_iter"], w["last_iter"]), paths["curves"],
                              f"{summary.case.case_name}: {summary.case.rank_size} x {summary.case.device}, "
                              f"global batch {summary.case.global_batch}, {summary.case.precision}")
            summary.files["curves"] = str(paths["curves"])
        except ImportError:
            summary.notes.append(f"no curves PNG: matplotlib is not installed for {sys.executable}")
    text = json.dumps(summary.to_dict(), indent=2, allow_nan=False, default=str)
    paths["summary"].write_text(text + "\n")
    return paths


def summarize_run(work_dir: Path, console_logs: Path | Sequence[Path] | None, output_dir: Path, case: CaseInfo, *,
                  e2e_seconds: float | None = None, options: SummaryOptions = SummaryOptions(),
                  environment: Mapping[str, Any] | None = None, iters_per_epoch: int | None = None,
                  plot_curves: bool = True, metrics_file: Path | None = None, resumed: Mapping[str, Any] | None = None,
                  legs_since: str | None = None, profile: Mapping[str, Any] | None = None) -> Summary:
    """Parse a finished run and write its ModelZoo log, JSON summary and curves into output_dir.

    work_dir: the training's --work-dir (mmcv's <timestamp>.log.json and .log; the newest run's are read).
    console_logs: captured stdout/stderr of the training and, for accuracy runs, of a separate evaluation, in the
        order they ran (the last complete "===> mIoU" block wins); None or () when there is none.
    e2e_seconds: the launcher's wall time of the run; None estimates it from the text log's timestamps.
    environment: recorded as given (versions, device kind and count...); must be JSON-serializable.
    iters_per_epoch: numbers the iterations when the logs do not show it (only the JSON log survived).
    legs_since: for a resumed run, the mmcv timestamp its first leg started at: every leg's logs are joined.
    resumed: recorded as given (from where the run was resumed, its legs).
    Raises KitError (subclasses NoIterationsError, NonFiniteLossError) with a message naming the problem.
    """
    if console_logs is None:
        console_logs = []
    elif isinstance(console_logs, (str, os.PathLike)):
        console_logs = [Path(console_logs)]
    console_logs = [Path(p) for p in console_logs]
    logs = logparse.find_logs(Path(work_dir))
    train = logparse.parse_train(logs, console_logs, iters_per_epoch)
    earlier = [leg for leg in logparse.logs_since(Path(work_dir), legs_since) if leg != logs] if legs_since else []
    if earlier:
        legs = [logparse.parse_train(leg, (), iters_per_epoch, check=False) for leg in earlier]
        train = logparse.join_legs([leg for leg in legs if leg.records] + [train])
    evaluation = logparse.parse_eval(console_logs, logs.json_log, metrics_file)
    e2e_source = "launcher"
    if e2e_seconds is None:
        e2e_seconds = logparse.text_log_span(logs.text_log)
        e2e_source = f"estimated from the timestamps of {logs.text_log}"
    summary = build_summary(train, evaluation, case, options=options, e2e_seconds=e2e_seconds,
                            e2e_source=e2e_source, environment=environment, console_logs=console_logs)
    summary.resumed = dict(resumed) if resumed else None
    summary.profile = dict(profile) if profile else None
    write_summary(summary, Path(output_dir), plot_curves=plot_curves)
    return summary
