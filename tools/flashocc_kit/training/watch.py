"""The stall watch: a run whose ranks stop making progress is ended, not left to hold its devices.

Progress is the run's output (any rank's, any byte: a progress bar counts) and, while training, each
rank's heartbeat file (the port's RankHeartbeatHook writes <dir>/rank<N>.json every iteration). Each
launch has its own heartbeat directory, <work dir>/.heartbeat/<launch id>/, and its heartbeats carry
that id and the host: files of another launch (a crashed run before a resume, another node sharing the
work dir) are never read as this run's, so they can neither stall it nor name a process to signal. A
run is stalled when a training rank's heartbeat is older than the timeout, or, when no rank is
training (start-up, checkpoint, validation), when there is no output for it: while heartbeats are
fresh, silence is a long log interval, not a stall. The timeout is --stall-timeout, else a margin
past the slowest step logged so far; before the first heartbeat it is the start-up allowance (building
the model and the first batches), or --stall-timeout if that is longer.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

HEARTBEATS = ".heartbeat"  # in the work dir: <launch id>/rank<N>.json per rank
LAUNCH_ENV = "FLASHOCC_LAUNCH_ID"  # read by the port's heartbeat hook: the launch its heartbeats belong to
STARTUP_SECONDS = 900.0  # before the first heartbeat: model build, data set, the first batches
MARGIN_SECONDS = 180.0  # past the slowest step seen
MINIMUM_SECONDS = 300.0


@dataclass
class Heartbeat:
    rank: int
    epoch: int
    iter: int
    phase: str
    time: float
    pid: int | None = None
    host: str | None = None
    launch: str | None = None

    def where(self) -> str:
        return f"rank {self.rank}: {self.phase}, epoch {self.epoch}, iteration {self.iter}"


def new_launch_id() -> str:
    """This launch's id: unique across hosts sharing a work dir, and readable (when, where, which process)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}-{os.getpid()}"


def heartbeat_dir(work_dir: Path, launch: str) -> Path:
    return Path(work_dir) / HEARTBEATS / launch


def read_heartbeats(directory: Path, launch: str | None = None) -> dict[int, Heartbeat]:
    """The heartbeats in directory; with `launch`, only those this launch's ranks wrote on this host."""
    beats = {}
    host = socket.gethostname()
    for path in Path(directory).glob("rank*.json"):
        try:
            data = json.loads(path.read_text())
            beat = Heartbeat(int(data["rank"]), int(data["epoch"]), int(data["iter"]), str(data["phase"]),
                             float(data["time"]), data.get("pid"), data.get("host"), data.get("launch"))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced right now, or not a heartbeat
        if launch is not None and (beat.launch != launch or beat.host != host):
            continue  # another launch's, or another host's
        beats[beat.rank] = beat
    return beats


@dataclass
class StallWatch:
    directory: Path  # this launch's heartbeat directory
    ranks: list[int]  # the global ranks this node runs
    timeout: float | None = None  # --stall-timeout; None: the default rule
    launch: str | None = None  # this launch's id: heartbeats of any other are not this run's
    started: float = field(default_factory=time.time)
    last_output: float = field(default_factory=time.time)
    slowest_step: float = 0.0
    _previous: dict[int, Heartbeat] = field(default_factory=dict)

    def output_seen(self) -> None:
        self.last_output = time.time()

    @property
    def startup_limit(self) -> float:
        """Until a rank's first heartbeat: building the model and the data set is not a step, whatever the limit."""
        return max(STARTUP_SECONDS, self.timeout or 0.0)

    def limit(self, beats: dict[int, Heartbeat]) -> float:
        if not beats:
            return self.startup_limit
        if self.timeout is not None:
            return self.timeout
        return max(MINIMUM_SECONDS, self.slowest_step + MARGIN_SECONDS)

    def check(self, now: float | None = None) -> str | None:
        """None while the run makes progress; else why it is stalled, naming each rank and where it was."""
        now = time.time() if now is None else now
        beats = read_heartbeats(self.directory, self.launch)
        for rank, beat in beats.items():  # the step times the heartbeats show
            before = self._previous.get(rank)
            if before and beat.phase == before.phase == "train" and beat.iter > before.iter:
                self.slowest_step = max(self.slowest_step, (beat.time - before.time) / (beat.iter - before.iter))
        self._previous = beats
        limit = self.limit(beats)
        silent = now - self.last_output
        training = [b for b in beats.values() if b.phase == "train"]
        stale = sorted(b.rank for b in training if now - b.time > limit)
        missing = [r for r in self.ranks if r not in beats] if now - self.started > self.startup_limit else []
        iterating = any(now - b.time <= limit for b in training)
        quiet = silent > limit and not iterating
        if not quiet and not stale and not missing:
            return None
        parts = []
        if stale:
            parts.append(f"rank(s) {', '.join(map(str, stale))} stopped logging iterations")
        if missing:
            parts.append(f"rank(s) {', '.join(map(str, missing))} never logged an iteration")
        if silent > limit:
            parts.append(f"no output for {silent:.0f} s")
        where = "; ".join(f"{b.where()} ({now - b.time:.0f} s ago)" for b in sorted(beats.values(),
                                                                                     key=lambda b: b.rank))
        return (f"stalled: {' and '.join(parts)} (limit {limit:.0f} s)" + (f". Last heard: {where}" if where else ""))
