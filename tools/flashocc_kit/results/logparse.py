"""Read what a FlashOCC run logged: training records from mmcv's logs, mIoU from the evaluation output.

Training records, from the first source that has any (mmcv 1.x TextLoggerHook, rank 0 only):
  1. `<work_dir>/<timestamp>.log.json`: run metadata on the first line, then one JSON object per logging
     interval ({"mode": "train", "epoch", "iter" (within the epoch), "lr", "memory" (MB, CUDA/NPU only),
     "data_time", "loss_*", "loss", "grad_norm", "time"}); NaN/Infinity written as Python's json does;
  2. `<work_dir>/<timestamp>.log`: "... - mmdet - INFO - Epoch [1][50/3517]\tlr: 1.000e-04, eta: ..., time: 4.200,
     data_time: 0.120, memory: 12345, loss_occ: 2.3100, loss: 2.3100, grad_norm: 5.0000";
  3. the captured console: the same text lines, but every rank's output interleaved, perhaps prefixed by the
     launcher ("[default0]:", "[rank0]:", "0: "), warnings in between, and the last line possibly cut off.
The evaluation: the "===>" lines FlashOCC's Metric_mIoU.count_miou prints (console), then mmcv's "val" JSON
lines, whose "mIoU" is that metric's per-class IoU array (18 values in [0, 1], the last one the 'free' class).

Everything here is standard library: the CI gate and `kit.py summarize` run under the system python3.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from ..errors import KitError
from ..occ3d import SCORED_CLASSES

# Launcher prefixes: torchrun --tee ("[default0]:"), newer torch ("[rank0]:"), srun --label ("0: "),
# Open MPI --tag-output ("[1,0]<stdout>:"). Nested ones (srun around torchrun) are peeled one by one.
_RANK_PREFIX = re.compile(r"^(?:\[[A-Za-z_]*\d+\]:|\d+: |\[\d+,\d+\]<std(?:out|err)>:)")
_TRAIN_TEXT = re.compile(
    r"(?:Epoch \[(?P<epoch>\d+)\]\[(?P<iter>\d+)/(?P<per_epoch>\d+)\]|Iter \[(?P<giter>\d+)/\d+\])\s+(?P<body>.*)")
# "key: number" pairs of a text train line. The value must end at a separator, so a line cut off by another
# rank's output ("loss: 2.3[default1]:...") loses that value instead of yielding a wrong one.
_KEY_VALUE = re.compile(
    r"(?P<key>[A-Za-z_][\w.]*): (?P<val>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))(?=[,\s]|$)", re.IGNORECASE)
# mmcv names its logs after runner.timestamp, time.strftime('%Y%m%d_%H%M%S').
_TIMESTAMP_NAME = re.compile(r"^\d{8}_\d{6}\.log$")
_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) - ")
_EVAL_HEADER = re.compile(r"===> per class IoU of (\d+) samples:")
_EVAL_CLASS = re.compile(r"===> (\S+) - IoU = (\S+)")
_EVAL_MIOU = re.compile(r"===> mIoU of (\d+) samples: (\S+)")
# Keys of a train record that are not loss components.
_NOT_LOSSES = {"loss", "time", "data_time", "memory", "eta", "lr", "grad_norm", "epoch", "iter", "mode"}


class NoIterationsError(KitError):
    """Not one training iteration was logged."""


class NonFiniteLossError(KitError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainRecord:
    """One logged training interval. mmcv averages time, data_time and the losses over the interval."""

    step: int  # global iteration: (epoch - 1) * iters_per_epoch + iter
    epoch: int
    iter: int  # within the epoch, as mmcv logs it (or global, for an IterBasedRunner)
    time: float  # seconds per iteration
    loss: float
    data_time: float | None = None
    losses: dict[str, float] = field(default_factory=dict)  # components: loss_occ, loss_depth, ...
    lr: float | None = None  # of the first parameter group
    memory_mb: int | None = None  # max allocated so far; CUDA/NPU only
    grad_norm: float | None = None


@dataclass
class TrainLog:
    """The training records of one run and where they came from."""

    records: list[TrainRecord]
    source: Path
    source_kind: str  # json | text | console
    iters_per_epoch: int | None
    iters_per_epoch_estimated: bool
    meta: dict = field(default_factory=dict)  # from the JSON log's first line: seed, exp_name
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return max(r.epoch for r in self.records)


@dataclass
class EvalResult:
    """The last complete evaluation: mIoU and per-class IoU in percent, as count_miou prints them."""

    miou: float
    per_class: dict[str, float | None]  # None: NaN (class absent from both prediction and ground truth)
    source: str
    samples: int | None = None
    epoch: int | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (epoch, mIoU) of every JSON val line
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunLogs:
    """The mmcv logs of a work dir: the newest run's JSON and text log (either may be missing)."""

    json_log: Path | None
    text_log: Path | None


def find_logs(work_dir: Path) -> RunLogs:
    """The newest `<timestamp>.log.json` of a work dir and its `<timestamp>.log` (timestamps sort by time).

    A resumed run writes a second pair; only the newest is read (summarize the older one by passing its file).
    """
    if not work_dir.is_dir():
        raise KitError(f"work dir {work_dir} does not exist: pass the --work-dir the training wrote to")
    stamps = {p.name[: -len(".log.json")] for p in work_dir.glob("*.log.json")}
    stamps |= {p.name[: -len(".log")] for p in work_dir.glob("*.log") if _TIMESTAMP_NAME.match(p.name)}
    if not stamps:
        return RunLogs(None, None)
    newest = max(stamps)
    json_log, text_log = work_dir / f"{newest}.log.json", work_dir / f"{newest}.log"
    return RunLogs(json_log if json_log.is_file() else None, text_log if text_log.is_file() else None)


def logs_since(work_dir: Path, stamp: str) -> list[RunLogs]:
    """Every run's logs in a work dir from the mmcv timestamp `stamp` (YYYYmmdd_HHMMSS) on, oldest first: the
    legs of a resumed run."""
    stamps = {p.name[: -len(".log.json")] for p in work_dir.glob("*.log.json")}
    stamps |= {p.name[: -len(".log")] for p in work_dir.glob("*.log") if _TIMESTAMP_NAME.match(p.name)}
    found = []
    for name in sorted(s for s in stamps if s >= stamp):
        json_log, text_log = work_dir / f"{name}.log.json", work_dir / f"{name}.log"
        found.append(RunLogs(json_log if json_log.is_file() else None, text_log if text_log.is_file() else None))
    return found


def join_legs(legs: list[TrainLog]) -> TrainLog:
    """The training of a run resumed (perhaps several times), oldest leg first: each leg's records up to where
    the next leg took over (an interrupted epoch is trained again from its start), then the last leg's."""
    last = legs[-1]
    records: list[TrainRecord] = []
    for leg, following in zip(legs, legs[1:] + [None]):
        if following is None or not following.records:
            records += leg.records
            continue
        first = following.records[0]
        records += [r for r in leg.records if r.step < first.step]
    joined = TrainLog(records=records, source=last.source, source_kind=last.source_kind,
                      iters_per_epoch=last.iters_per_epoch, iters_per_epoch_estimated=last.iters_per_epoch_estimated,
                      meta=last.meta, notes=[n for leg in legs for n in leg.notes])
    if len(legs) > 1:
        joined.notes.append(f"resumed: {len(legs)} legs joined ({', '.join(str(leg.source) for leg in legs)})")
    return joined


def read_lines(path: Path) -> tuple[list[str], str | None]:
    """The complete lines of a log, and its last line if that one was cut off (no newline: the writer died).

    Carriage returns split lines too: tqdm redraws its bar in place, and a "===>" line can follow one.
    """
    text = path.read_bytes().decode("utf-8", errors="replace")
    *complete, last = text.split("\n")
    lines = [seg for line in complete for seg in line.split("\r") if seg.strip()]
    return lines, (last if last.strip() else None)


def strip_rank_prefix(line: str) -> tuple[str, str]:
    """(prefix, rest): the launcher's rank prefixes peeled off the start of a console line."""
    prefix = ""
    while match := _RANK_PREFIX.match(line):
        prefix += match.group(0)
        line = line[match.end():]
    return prefix, line


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _first_lr(value: object) -> float | None:
    """mmcv logs one lr, or a dict of them (one per optimizer); the first stands for all."""
    if isinstance(value, dict):
        value = next(iter(value.values()), None)
    return _number(value)


def _record(epoch: int, it: int, values: dict[str, object]) -> TrainRecord | None:
    """A record from a train line's values, or None if the line lacks the step time or the loss (cut off)."""
    time, loss = _number(values.get("time")), _number(values.get("loss"))
    if time is None or loss is None:
        return None
    memory = _number(values.get("memory"))
    losses = {k: float(v) for k, v in values.items()
              if k.startswith("loss") and k not in _NOT_LOSSES and _number(v) is not None}
    return TrainRecord(step=0, epoch=epoch, iter=it, time=time, loss=loss, data_time=_number(values.get("data_time")),
                       losses=losses, lr=_first_lr(values.get("lr")),
                       memory_mb=int(memory) if memory is not None and math.isfinite(memory) else None,
                       grad_norm=_number(values.get("grad_norm")))


@dataclass
class _Parsed:
    """What one source yielded, before records are deduplicated and numbered."""

    records: list[tuple[str, TrainRecord]] = field(default_factory=list)  # (rank prefix, record)
    val_lines: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    per_epoch: set[int] = field(default_factory=set)  # the N of "[k/N]"
    iter_global: bool = False  # "Iter [k/N]": an IterBasedRunner counts iterations globally
    skipped: int = 0  # lines that looked like train lines but were incomplete or unreadable
    truncated: bool = False
    lines: int = 0


def parse_json_log(path: Path) -> _Parsed:
    out = _Parsed()
    lines, last = read_lines(path)
    if last is not None:
        lines.append(last)  # a complete object may just miss its newline; a cut-off one fails json.loads below
    out.lines = len(lines)
    for number, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            if number == len(lines) - 1 and last is not None:
                out.truncated = True  # reported as cut off, not as unreadable
            else:
                out.skipped += 1
            continue
        if not isinstance(obj, dict):
            out.skipped += 1
        elif "mode" not in obj:
            if number == 0:
                out.meta = {k: v for k, v in obj.items() if k in ("seed", "exp_name")}
        elif obj["mode"] == "train":
            epoch, it = obj.get("epoch"), obj.get("iter")
            record = _record(epoch, it, obj) if isinstance(epoch, int) and isinstance(it, int) else None
            if record is None:
                out.skipped += 1
            else:
                out.records.append(("", record))
        elif obj["mode"] == "val":
            out.val_lines.append(obj)
    return out


def parse_text_lines(lines: Iterable[str]) -> _Parsed:
    """Train records from mmcv's text format: the text log, or a console where ranks interleave."""
    out = _Parsed()
    for line in lines:
        out.lines += 1
        prefix, rest = strip_rank_prefix(line)
        match = _TRAIN_TEXT.search(rest)
        if not match:
            continue
        values = {m.group("key"): float(m.group("val")) for m in _KEY_VALUE.finditer(match.group("body"))}
        # "lr_<optimizer>: ..." when there are several optimizers: keep the first as lr
        lr_keys = [k for k in values if k.startswith("lr_")]
        if "lr" not in values and lr_keys:
            values["lr"] = values[lr_keys[0]]
        if match.group("giter"):
            out.iter_global = True
            epoch, it = 1, int(match.group("giter"))
        else:
            epoch, it = int(match.group("epoch")), int(match.group("iter"))
            out.per_epoch.add(int(match.group("per_epoch")))
        record = _record(epoch, it, values)
        if record is None:
            out.skipped += 1
        else:
            out.records.append((prefix, record))
    return out


def parse_text_log(path: Path) -> _Parsed:
    lines, last = read_lines(path)
    out = parse_text_lines(lines)
    out.truncated = last is not None
    return out


def _describe(path: Path | None, what: str, parsed: _Parsed | None, error: str | None = None) -> str:
    if path is None:
        return f"{what}: none found"
    if error:
        return f"{what} {path}: {error}"
    assert parsed is not None
    extra = f", {parsed.skipped} incomplete or unreadable" if parsed.skipped else ""
    return f"{what} {path}: {parsed.lines} lines, {len(parsed.records)} training records{extra}"


def _safe(parse, path: Path | None) -> tuple[_Parsed | None, str | None]:
    if path is None:
        return None, None
    if not path.is_file():
        return None, "missing"
    try:
        return parse(path), None
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"


def _one_stream(records: list[tuple[str, TrainRecord]]) -> tuple[list[TrainRecord], str | None]:
    """Records of a single rank: when several ranks' lines carry records, the lowest rank prefix's."""
    streams = {prefix for prefix, _ in records}
    if len(streams) <= 1:
        return [r for _, r in records], None
    keep = min(streams, key=lambda p: [int(n) for n in re.findall(r"\d+", p)] or [-1])
    note = f"training lines from {len(streams)} ranks: used {keep or 'the unprefixed ones'}"
    return [r for p, r in records if p == keep], note


def _dedupe(records: list[TrainRecord]) -> tuple[list[TrainRecord], int]:
    seen: set[tuple[int, int]] = set()
    unique = []
    for record in records:
        key = (record.epoch, record.iter)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique, len(records) - len(unique)


def _number_steps(records: list[TrainRecord], per_epoch: int | None, iter_global: bool) -> list[TrainRecord]:
    if iter_global or per_epoch is None:
        return [replace(r, step=r.iter) for r in records]
    return [replace(r, step=(r.epoch - 1) * per_epoch + r.iter) for r in records]


def check_finite(log: TrainLog) -> None:
    """Fail, naming the iteration, at the first record whose loss (or a component) is NaN or infinite."""
    last_good: TrainRecord | None = None
    for record in log.records:
        bad = {k: v for k, v in {"loss": record.loss, **record.losses}.items() if not math.isfinite(v)}
        if bad:
            where = f"iteration {record.step} (epoch {record.epoch}, iter {record.iter}"
            where += f"/{log.iters_per_epoch})" if log.iters_per_epoch else ")"
            before = (f"the last finite loss was {last_good.loss:.4f} at iteration {last_good.step}"
                      if last_good else "it was never finite")
            values = ", ".join(f"{k} = {v}" for k, v in bad.items())
            raise NonFiniteLossError(
                f"the loss became non-finite at {where}: {values} ({log.source}); {before}. "
                "The run diverged: lower the learning rate or check the data and the mixed-precision "
                "loss scale, then train again")
        last_good = record


def parse_train(logs: RunLogs, console_logs: Sequence[Path] = (), iters_per_epoch: int | None = None,
                *, check: bool = True) -> TrainLog:
    """The run's training records: from the JSON log, else the text log, else the console logs.

    iters_per_epoch numbers the records globally when no text source shows it ("[k/N]"); without either it is
    estimated as the largest iteration logged in an epoch. With check, a non-finite loss raises
    NonFiniteLossError; no record at all raises NoIterationsError naming every file looked at.
    """
    json_parsed, json_error = _safe(parse_json_log, logs.json_log)
    text_parsed, text_error = _safe(parse_text_log, logs.text_log)
    consoles = []
    for path in console_logs:
        parsed, error = _safe(parse_text_log, path)
        consoles.append((path, parsed, error))

    looked_at = [_describe(logs.json_log, "JSON log", json_parsed, json_error),
                 _describe(logs.text_log, "text log", text_parsed, text_error)]
    looked_at += [_describe(p, "console log", parsed, err) for p, parsed, err in consoles]
    candidates = [("json", logs.json_log, json_parsed), ("text", logs.text_log, text_parsed)]
    candidates += [("console", p, parsed) for p, parsed, _ in consoles]
    chosen = next(((kind, path, parsed) for kind, path, parsed in candidates if parsed and parsed.records), None)
    if chosen is None:
        raise NoIterationsError(
            "no training iteration was logged. Looked at:\n  " + "\n  ".join(looked_at) + "\n"
            "The run probably stopped before its first logging interval (log_config interval, 50 iterations by "
            "default): the console log shows why. For a short smoke run, lower the interval.")
    kind, path, parsed = chosen
    assert path is not None and parsed is not None

    notes: list[str] = []
    if kind != "json":
        notes.append(f"training records read from the {kind} log {path} (" + "; ".join(looked_at[:1]) + ")")
    records, mixed = _one_stream(parsed.records)
    if mixed:
        notes.append(mixed)
    records, duplicates = _dedupe(records)
    if duplicates:
        notes.append(f"{duplicates} duplicate training record(s) ignored (same epoch and iteration)")
    if parsed.skipped:
        notes.append(f"{parsed.skipped} incomplete or unreadable line(s) skipped in {path}")
    if parsed.truncated:
        notes.append(f"the last line of {path} was cut off (the writer stopped mid-line) and was ignored")

    # "[k/N]" is in every text source; the JSON log has no N.
    shown = set().union(*(p.per_epoch for _, _, p in candidates if p is not None))
    iter_global = parsed.iter_global or (kind == "json" and _iters_look_global(records))
    estimated = False
    per_epoch = max(shown) if shown else iters_per_epoch
    if per_epoch is None and not iter_global:
        per_epoch, estimated = max(r.iter for r in records), True
        if max(r.epoch for r in records) > 1:
            notes.append(f"iterations per epoch not logged: estimated as {per_epoch} (the largest logged iteration); "
                         "global iteration numbers may run short by up to one logging interval per epoch")
    log = TrainLog(records=_number_steps(records, per_epoch, iter_global), source=path, source_kind=kind,
                   iters_per_epoch=None if iter_global else per_epoch, iters_per_epoch_estimated=estimated,
                   meta=json_parsed.meta if json_parsed else {}, notes=notes)
    if check:
        check_finite(log)
    return log


def _iters_look_global(records: list[TrainRecord]) -> bool:
    """An IterBasedRunner logs global iterations that keep rising across epochs; an epoch-based one restarts."""
    pairs = list(zip(records, records[1:]))
    epochs_change = any(b.epoch != a.epoch for a, b in pairs)
    return epochs_change and all(b.iter > a.iter for a, b in pairs)


def text_log_span(path: Path | None) -> float | None:
    """Seconds between the first and the last timestamped line of an mmcv text log (the run's wall time)."""
    if path is None or not path.is_file():
        return None
    stamps = []
    for line in read_lines(path)[0]:
        match = _TIMESTAMP.match(line)
        if match:
            stamps.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
                          + int(match.group(2)) / 1000)
    return stamps[-1] - stamps[0] if len(stamps) >= 2 else None


# --- evaluation ---------------------------------------------------------------------------------------------------


def _float_or_none(text: str) -> float | None:
    """A printed IoU: a number, 'nan' (class absent) -> None; raises ValueError on garbage."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(text)
    return None if math.isnan(value) else value


def parse_eval_lines(lines: Iterable[str]) -> tuple[list[dict], list[str]]:
    """Complete count_miou blocks ({samples, classes, miou}) in order, and notes on incomplete ones."""
    blocks: list[dict] = []
    notes: list[str] = []
    current: dict | None = None
    for line in lines:
        if match := _EVAL_MIOU.search(line):
            block = current or {"samples": None, "classes": {}}
            try:
                block["miou"] = _float_or_none(match.group(2))
            except ValueError:
                notes.append(f"unreadable mIoU line ignored: {line.strip()!r}")
                current = None
                continue
            block["samples"] = block["samples"] or int(match.group(1))
            blocks.append(block)
            current = None
        elif match := _EVAL_HEADER.search(line):
            if current is not None and current["classes"]:
                notes.append("an evaluation printed per-class IoUs but no mIoU (cut off): ignored")
            current = {"samples": int(match.group(1)), "classes": {}}
        elif match := _EVAL_CLASS.search(line):
            try:
                value = _float_or_none(match.group(2))
            except ValueError:
                notes.append(f"unreadable per-class line ignored: {line.strip()!r}")
                continue
            if current is None:
                current = {"samples": None, "classes": {}}
            name = match.group(1)
            if name in current["classes"] and current["classes"][name] != value:
                current = {"samples": None, "classes": {}}  # a new evaluation whose header was lost
            current["classes"][name] = value
    if current is not None and current["classes"]:
        notes.append("the last evaluation printed per-class IoUs but no mIoU (cut off): ignored")
    return blocks, notes


def _nanmean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def _from_val_line(obj: dict) -> tuple[float, dict[str, float | None]] | None:
    """(mIoU, per class) in percent from a JSON val line, averaged over the 17 classes as count_miou does."""
    values = obj.get("mIoU")
    if not isinstance(values, list) or len(values) not in (len(SCORED_CLASSES), len(SCORED_CLASSES) + 1):
        return None
    fractions = [_number(v) for v in values[: len(SCORED_CLASSES)]]
    fractions = [None if v is None or not math.isfinite(v) else v for v in fractions]
    miou = _nanmean(fractions)
    if miou is None:
        return None
    per_class = {n: None if v is None else round(v * 100, 2) for n, v in zip(SCORED_CLASSES, fractions)}
    return round(miou * 100, 2), per_class


def read_metrics_file(path: Path) -> EvalResult:
    """The metrics JSON the patched tools/test.py writes next to its --out (<stem>.metrics.json)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KitError(f"metrics file {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or "miou" not in data:
        metric = data.get("metric") if isinstance(data, dict) else "?"
        raise KitError(f"metrics file {path} holds no mIoU (its metric: {metric})")
    per_class = data.get("per_class_iou") or {}
    return EvalResult(miou=data["miou"], per_class={n: per_class.get(n) for n in SCORED_CLASSES if n in per_class},
                      source=f"metrics file {path}", samples=data.get("samples"))


def parse_eval(console_logs: Sequence[Path] = (), json_log: Path | None = None,
               metrics_file: Path | None = None) -> EvalResult | None:
    """The evaluation of a run: the metrics file tools/test.py wrote if there is one; else the last complete
    evaluation printed in the console logs (in the order given), else that of the JSON val lines.

    None when none has one. Console and JSON log both present: the console's wins, and a disagreement is noted.
    """
    notes: list[str] = []
    console: EvalResult | None = None
    if metrics_file is not None and metrics_file.is_file():
        console = read_metrics_file(metrics_file)
        console_logs = ()  # the printed text is for people; the file is what the evaluation computed
    for path in console_logs:
        if not path.is_file():
            continue
        lines, _ = read_lines(path)
        blocks, block_notes = parse_eval_lines(strip_rank_prefix(line)[1] for line in lines)
        notes += [f"{path}: {n}" for n in block_notes]
        if blocks and blocks[-1]["miou"] is not None:
            last = blocks[-1]
            console = EvalResult(miou=last["miou"], per_class=dict(last["classes"]), source=f"console {path}",
                                 samples=last["samples"])
    history: list[tuple[int, float]] = []
    json_last: tuple[int | None, float, dict] | None = None
    if json_log is not None and json_log.is_file():
        for obj in parse_json_log(json_log).val_lines:
            parsed = _from_val_line(obj)
            if parsed is None:
                continue
            epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
            history.append((epoch if epoch is not None else len(history) + 1, parsed[0]))
            json_last = (epoch, *parsed)
    result = console
    if result is None and json_last is not None:
        epoch, miou, per_class = json_last
        result = EvalResult(miou=miou, per_class=per_class, source=f"JSON log {json_log}", epoch=epoch)
    elif result is not None and json_last is not None and abs(json_last[1] - result.miou) <= 0.011:
        result.epoch = json_last[0]  # the same evaluation, seen by both
    elif result is not None and json_last is not None:
        notes.append(f"the console's last mIoU {result.miou} differs from the JSON log's last ({json_last[1]}, "
                     f"epoch {json_last[0]}): a separate evaluation run? the console's is reported")
    if result is None:
        return None
    missing = [n for n in SCORED_CLASSES if n not in result.per_class]
    if missing:
        notes.append(f"per-class IoU missing for {', '.join(missing)} (lines lost in the output)")
    result.history = history
    result.notes = notes
    return result
