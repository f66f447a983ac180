"""A profiled run's outputs: the rank's record read (the port's StepProfilerHook writes it), its trace copied beside
the summaries, the top-operator table and the step split as text and as a picture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import KitError

PROFILE_DIR = "profile"  # in the work dir: the hook's traces and profile_rank<R>.json
PHASES = ("data", "forward", "backward", "optimizer")
VIEWERS = {"torch.profiler": "TensorBoard (torch-tb-profiler) or https://ui.perfetto.dev",
           "torch_npu.profiler": "MindStudio Insight (or TensorBoard with torch-tb-profiler)"}


def read_record(work_dir: Path) -> dict:
    """The lowest rank's profile record of the run."""
    found = sorted(Path(work_dir, PROFILE_DIR).glob("profile_rank*.json"),
                   key=lambda p: int(p.stem.replace("profile_rank", "")))
    if not found:
        raise KitError(f"--profile: no profile record in {Path(work_dir, PROFILE_DIR)}: did the profiled rank train? "
                       "(the training log says whether StepProfilerHook was added)")
    record = json.loads(found[0].read_text())
    if not record.get("recorded_steps"):
        raise KitError(f"--profile: {found[0]} recorded no step: the run ended before the window "
                       f"(warm-up {record.get('wait')} steps). Fix: train longer, or a smaller --profile-warmup")
    return record


def split_rows(record: dict) -> list[tuple[str, float, float]]:
    """(phase, mean ms per step, share of the step) for data wait, forward, backward, optimizer and the rest."""
    mean = record["mean_seconds"]
    step = mean["step"]
    rows = [(phase, mean.get(phase, 0.0) * 1000, mean.get(phase, 0.0) / step) for phase in PHASES]
    rest = step - sum(mean.get(phase, 0.0) for phase in PHASES)
    return [*rows, ("other (hooks, logging)", max(rest, 0.0) * 1000, max(rest, 0.0) / step)]


def operator_rows(record: dict) -> list[tuple[str, float, float, float]]:
    """(operator, self ms per step, share of the step, calls per step), most self time first."""
    step_ms = record["mean_seconds"]["step"] * 1000
    return [(op["name"], op["self_ms_per_step"], op["self_ms_per_step"] / step_ms, op["calls_per_step"])
            for op in record["top_operators"]]


def table(record: dict) -> str:
    """The step split and the top operators, for the console and the summary's readers."""
    step_ms = record["mean_seconds"]["step"] * 1000
    lines = [f"profile: rank {record['rank']}, {record['profiler']} on {record['device']}, "
             f"{record['recorded_steps']} steps after {record['wait']} warm-up steps: {step_ms:.1f} ms a step",
             f"  {'phase':28s} {'ms/step':>9s} {'share':>7s}"]
    lines += [f"  {name:28s} {ms:9.1f} {share:7.1%}" for name, ms, share in split_rows(record)]
    lines.append(f"  {'operator (self time)':52s} {'ms/step':>9s} {'share':>7s} {'calls':>7s}")
    lines += [f"  {name[:52]:52s} {ms:9.2f} {share:7.1%} {calls:7.1f}"
              for name, ms, share, calls in operator_rows(record)]
    if not record["top_operators"]:
        lines.append("  (no operator table: the profiler's analysis wrote none; open the trace)")
    return "\n".join(lines)


def draw(record: dict, path: Path, title: str) -> Path:
    """The table as a PNG (README shows one from a CPU smoke run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = [[name, f"{ms:.1f}", f"{share:.1%}"] for name, ms, share in split_rows(record)]
    ops = [[name[:60], f"{ms:.2f}", f"{share:.1%}", f"{calls:.1f}"] for name, ms, share, calls in operator_rows(record)]
    height = 1.2 + 0.28 * (len(split) + len(ops) + 4)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, height),
                                      gridspec_kw={"height_ratios": [len(split) + 1, max(len(ops), 1) + 1]})
    for axis in (top, bottom):
        axis.axis("off")
    top.set_title(title, fontsize=10, loc="left")
    top.table(cellText=split, colLabels=["step phase", "ms/step", "share"], loc="upper left",
              colWidths=[0.5, 0.15, 0.15], cellLoc="left")
    if ops:
        bottom.table(cellText=ops, colLabels=["operator (self time)", "ms/step", "share", "calls/step"],
                     loc="upper left", colWidths=[0.6, 0.13, 0.12, 0.13], cellLoc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def collect(work_dir: Path, output_dir: Path, case_name: str) -> dict:
    """Copy the trace next to the summaries, draw the table; the summary's `profile` entry."""
    record = read_record(work_dir)
    traces = Path(output_dir) / f"{case_name}_profile"
    if traces.exists():
        shutil.rmtree(traces)
    shutil.copytree(Path(work_dir, PROFILE_DIR), traces)
    picture = draw(record, Path(output_dir) / f"{case_name}_profile.png",
                   f"{case_name}: where a step's time goes ({record['profiler']}, {record['recorded_steps']} steps)")
    return {**{k: record[k] for k in ("rank", "device", "profiler", "wait", "recorded_steps", "mean_seconds",
                                      "top_operators")},
            "split": [{"phase": name, "ms_per_step": ms, "share": share} for name, ms, share in split_rows(record)],
            "trace_dir": str(traces), "opens_in": VIEWERS.get(record["profiler"], "TensorBoard"),
            "table_png": str(picture), "table": table(record)}
