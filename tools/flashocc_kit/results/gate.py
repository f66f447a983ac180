"""`kit.py gate`: does a run's JSON summary hold up against its published baseline?

Exit 0 when every check passes, 1 when one fails, 2 when the input is unusable (a missing or malformed file, no
matching baseline, nothing to compare). A performance summary (no mIoU) is checked on step time only; an accuracy
summary on mIoU, and on step time as well when the baseline has one. Standard library only: CI runs it under the
system python3.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import KitError
from ..pins import KIT_ROOT

DEFAULT_BASELINES = KIT_ROOT / "tools" / "baselines.json"
REQUIRED_KEYS = ("device", "precision", "global_batch")  # every baseline is keyed by these
OPTIONAL_KEYS = ("rank_size", "network", "case_name")  # ... and by these where it gives them


class UnusableInput(KitError):
    """The gate cannot judge: a file is missing or malformed, or no baseline fits (exit 2)."""


@dataclass(frozen=True)
class Tolerances:
    """How far a run may fall behind its baseline. These defaults are the only ones: the baselines file and the
    command line override them, and the CLI's help shows them from here."""

    step_time_factor: float = 1.05  # pass: measured step time <= baseline step time x factor
    miou_drop: float = 0.3  # pass: measured mIoU >= baseline mIoU - drop (points)

    def __post_init__(self) -> None:
        if not self.step_time_factor > 0 or not self.miou_drop >= 0:
            raise UnusableInput(f"tolerances {self}: the step-time factor must be above 0, the mIoU drop 0 or more")


@dataclass(frozen=True)
class Baseline:
    name: str
    keys: dict[str, Any]  # the matching keys this entry gives
    step_time_s: float | None
    miou: float | None
    epochs: int | None
    lr: float | None
    tolerances: dict[str, float]
    hardware: str
    source: str  # the key into the file's "sources", or the source itself
    source_text: str  # what that key says


@dataclass(frozen=True)
class Check:
    metric: str
    baseline: float
    measured: float
    limit: float
    op: str  # <= or >=
    digits: int

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit if self.op == "<=" else self.measured >= self.limit

    def row(self) -> dict[str, str]:
        d = self.digits
        return {"metric": self.metric, "baseline": f"{self.baseline:.{d}f}", "measured": f"{self.measured:.{d}f}",
                "limit": f"{self.op} {self.limit:.{d}f}", "verdict": "PASS" if self.passed else "FAIL"}


@dataclass
class GateResult:
    summary_path: Path
    baseline: Baseline
    tolerances: Tolerances
    checks: list[Check]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def report(self) -> str:
        from ..tables import format_table

        tol = self.tolerances
        b = self.baseline
        lines = [f"summary:  {self.summary_path}",
                 f"baseline: {b.name}: {b.hardware or 'hardware not given'} (source: {b.source or 'not given'})",
                 f"tolerances: step time <= baseline x {tol.step_time_factor:g}, mIoU >= baseline - {tol.miou_drop:g}",
                 "", format_table([c.row() for c in self.checks]), ""]
        lines += [f"note: {n}" for n in self.notes]
        failed = [c.metric for c in self.checks if not c.passed]
        lines.append(f"FAIL: {', '.join(failed)}" if failed else f"PASS: {len(self.checks)} check(s)")
        return "\n".join(lines)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UnusableInput(f"{what} {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnusableInput(f"{what} {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UnusableInput(f"{what} {path}: expected a JSON object at the top")
    return data


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def load_baselines(path: Path) -> list[Baseline]:
    """The baselines file's entries, checked: a malformed entry is named rather than skipped."""
    data = _read_json(path, "baselines file")
    entries = data.get("baselines")
    if not isinstance(entries, list) or not entries:
        raise UnusableInput(f"baselines file {path}: no \"baselines\" list")
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    names = {f.name for f in fields(Tolerances)}
    out = []
    for index, entry in enumerate(entries):
        name = entry.get("name", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
        where = f"baselines file {path}, entry {name}"
        if not isinstance(entry, dict) or any(entry.get(k) is None for k in REQUIRED_KEYS):
            raise UnusableInput(f"{where}: needs {', '.join(REQUIRED_KEYS)}")
        for key in ("step_time_s", "miou", "lr"):
            if entry.get(key) is not None and not _positive(entry[key]):
                raise UnusableInput(f"{where}: {key} must be a positive number, not {entry[key]!r}")
        if entry.get("step_time_s") is None and entry.get("miou") is None:
            raise UnusableInput(f"{where}: gives neither step_time_s nor miou")
        tolerances = entry.get("tolerances") or {}
        unknown = set(tolerances) - names
        if unknown:
            raise UnusableInput(f"{where}: unknown tolerance(s) {', '.join(sorted(unknown))}; "
                                f"known: {', '.join(sorted(names))}")
        source = str(entry.get("source", ""))
        out.append(Baseline(name=name, keys={k: entry[k] for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if k in entry},
                            step_time_s=entry.get("step_time_s"), miou=entry.get("miou"), epochs=entry.get("epochs"),
                            lr=entry.get("lr"),
                            tolerances=tolerances, hardware=str(entry.get("hardware", "")), source=source,
                            source_text=str(sources.get(source, source))))
    return out


def _describe_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k} {key[k]}" for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if key.get(k) is not None)


def select_baseline(baselines: list[Baseline], key: dict[str, Any]) -> Baseline:
    """The most specific baseline whose every key matches the run's."""
    matching = [b for b in baselines if all(key.get(k) == v for k, v in b.keys.items())]
    if not matching:
        near = [b.name for b in baselines if all(key.get(k) == b.keys[k] for k in ("device", "precision"))]
        raise UnusableInput(f"no baseline for {_describe_key(key)}" +
                            (f" (same device and precision: {', '.join(near)})" if near else "") +
                            ". Fix: add one to the baselines file, or pass --device/--precision/--global-batch "
                            "to compare against another")
    best = max(len(b.keys) for b in matching)
    top = [b for b in matching if len(b.keys) == best]
    if len(top) > 1:
        raise UnusableInput(f"several baselines match {_describe_key(key)} equally: {', '.join(b.name for b in top)}."
                            " Fix: give them network or case_name keys that tell them apart")
    return top[0]


def _measured(summary: dict, path: Path) -> tuple[float | None, float | None]:
    step_time = summary.get("training_time_s")
    accuracy = summary.get("accuracy")
    miou = accuracy.get("miou") if isinstance(accuracy, dict) else None
    for name, value in (("training_time_s", step_time), ("accuracy.miou", miou)):
        if value is not None and not _positive(value):
            raise UnusableInput(f"summary {path}: {name} is {value!r}, not a positive number")
    if step_time is None and miou is None:
        raise UnusableInput(f"summary {path} has neither a step time (training_time_s) nor an mIoU: "
                            "is it a kit summary (<CASE>_summary.json)?")
    return step_time, miou


def check_alike(summary: dict, path: Path, baseline: Baseline) -> None:
    """A baseline is only compared with a run trained like it: the same learning rate (the global batch is
    part of the lookup)."""
    if baseline.lr is None:
        return
    lr = summary.get("lr")
    if lr is None:
        raise UnusableInput(f"summary {path} records no learning rate, and baseline {baseline.name} was trained with "
                            f"lr {baseline.lr:g}: the runs may differ. Fix: summarize again with --lr as the run used")
    if not math.isclose(lr, baseline.lr, rel_tol=1e-3):
        raise UnusableInput(f"summary {path} was trained with lr {lr:g}, baseline {baseline.name} with lr "
                            f"{baseline.lr:g} at global batch {baseline.keys.get('global_batch')}: unlike runs are "
                            f"not compared. Fix: train with the baseline's lr (`--lr {baseline.lr:g}`, or the "
                            "launcher's default for that global batch)")


def run_gate(summary_path: Path, baselines_path: Path, *, overrides: dict[str, Any] | None = None,
             tolerances: dict[str, float] | None = None) -> GateResult:
    """Compare a summary with its baseline. overrides replace the summary's device/precision/global_batch for the
    lookup; tolerances (step_time_factor, miou_drop) replace the baseline's and the defaults."""
    summary = _read_json(summary_path, "summary")
    key = {k: summary.get(k) for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS)}
    if key["global_batch"] is None and summary.get("rank_size") and summary.get("batch_size"):
        key["global_batch"] = summary["rank_size"] * summary["batch_size"]
    key.update({k: v for k, v in (overrides or {}).items() if v is not None})
    step_time, miou = _measured(summary, summary_path)
    if summary.get("emulated") and key.get("device") == "npu":
        raise UnusableInput(f"summary {summary_path} is of an emulated NPU (the rehearsal on a CPU): its step time and "
                            "mIoU are a CPU's, not comparable with the NPU baselines. Fix: gate a run on a real NPU")
    baseline = select_baseline(load_baselines(baselines_path), key)
    check_alike(summary, summary_path, baseline)
    tol = replace(Tolerances(), **baseline.tolerances)
    tol = replace(tol, **{k: v for k, v in (tolerances or {}).items() if v is not None})

    checks: list[Check] = []
    notes: list[str] = []
    if step_time is not None and baseline.step_time_s is not None:
        limit = round(baseline.step_time_s * tol.step_time_factor, 6)  # 4.22 x 1.05 is 4.431000000000001
        checks.append(Check("step time (s/step)", baseline.step_time_s, step_time, limit, "<=", 3))
    elif step_time is not None:
        notes.append(f"step time not checked: baseline {baseline.name} has none")
    if miou is not None:
        if baseline.miou is None:
            raise UnusableInput(f"summary {summary_path} is an accuracy result (mIoU {miou}) but baseline "
                                f"{baseline.name} has no mIoU to compare with")
        epochs = summary.get("epochs")
        if baseline.epochs is not None and epochs is not None and epochs != baseline.epochs:
            raise UnusableInput(f"summary {summary_path} trained {epochs} epoch(s); baseline {baseline.name}'s mIoU "
                                f"is after {baseline.epochs}: the mIoUs are not comparable")
        checks.append(Check("mIoU (%)", baseline.miou, miou, round(baseline.miou - tol.miou_drop, 6), ">=", 2))
    if not checks:
        raise UnusableInput(f"nothing to compare: summary {summary_path} has no mIoU and baseline {baseline.name} "
                            "has no step time")
    return GateResult(summary_path, baseline, tol, checks, notes)
