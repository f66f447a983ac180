"""The curves PNG of a run: loss and step time against iteration, the steady-state window shaded.

The only part of the results package that needs a third-party library: matplotlib, imported here on first use
(its object API with the Agg canvas, so a caller's pyplot backend and state stay untouched).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .logparse import TrainRecord


def write_curves(records: Sequence[TrainRecord], window: tuple[int, int], path: Path, title: str) -> Path:
    """Two panels sharing the iteration axis: total loss (and its components), step and data time.

    Raises ImportError when matplotlib is missing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r.step for r in records]
    fig = Figure(figsize=(10, 7), constrained_layout=True)
    FigureCanvasAgg(fig)
    loss_ax, time_ax = fig.subplots(2, 1, sharex=True)
    loss_ax.plot(steps, [r.loss for r in records], label="loss", color="black", linewidth=1.5)
    for name in sorted({k for r in records for k in r.losses}):
        # a component absent from a record (never in mmcv logs, possible in hand-made ones) leaves a gap
        loss_ax.plot(steps, [r.losses.get(name, float("nan")) for r in records], label=name, linewidth=1,
                     linestyle="--")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(loc="upper right", fontsize="small")
    time_ax.plot(steps, [r.time for r in records], label="step time", color="tab:blue", marker=".")
    if any(r.data_time is not None for r in records):
        time_ax.plot(steps, [r.data_time if r.data_time is not None else float("nan") for r in records],
                     label="data time", color="tab:orange", marker=".", linewidth=1)
    time_ax.set_ylabel("seconds per iteration")
    time_ax.set_xlabel("iteration")
    time_ax.legend(loc="upper right", fontsize="small")
    for ax in (loss_ax, time_ax):
        ax.axvspan(window[0], window[1], color="tab:green", alpha=0.12, label="_steady state")
        ax.grid(True, alpha=0.3)
    time_ax.annotate("steady-state window", xy=(window[0], 1), xycoords=("data", "axes fraction"),
                     xytext=(3, -12), textcoords="offset points", fontsize="small", color="tab:green")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
