"""Running a torchrun command: its output to the console and a log, signals to its ranks, why it failed."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .signals import signal_descendant
from .watch import StallWatch, read_heartbeats

STALL_EXIT = 124  # as timeout(1) does: the run was ended for making no progress
POLL_SECONDS = 2.0
STACK_DUMP_SECONDS = 5.0  # for the ranks' stacks to reach the log
TERMINATE_SECONDS = 20.0


def _pump(stream, chunks: queue.Queue) -> None:
    """Read the child's output as it comes (bytes: a progress bar without newlines counts too)."""
    while True:
        data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        chunks.put(data)
        if not data:
            return


def stream(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, watch: StallWatch | None = None) -> int:
    """Run cmd, its output to the terminal and to log; Ctrl-C/TERM reach the whole process group. With a
    watch, a run that stops making progress is ended: its ranks' stacks are logged first (SIGUSR1)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)}", flush=True)
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)

        def forward(signum, _frame):
            os.killpg(proc.pid, signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        chunks: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, chunks), daemon=True)
        reader.start()
        stalled = None
        ended_at = None
        try:
            while True:
                try:
                    data = chunks.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    data = None
                if data:  # flushed as it comes: the log is followed live (tail -f, tests)
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()
                    fh.write(data)
                    fh.flush()
                    if watch is not None:
                        watch.output_seen()
                elif data == b"":
                    break
                if watch is not None and stalled is None:
                    stalled = watch.check()
                    if stalled:
                        _end_stalled_run(proc, watch, fh, stalled)
                        ended_at = time.time()
                if ended_at is not None and time.time() - ended_at > TERMINATE_SECONDS:
                    os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if stalled:
        print(f"error: {stalled}", file=sys.stderr)
        return STALL_EXIT
    return code


def _end_stalled_run(proc: subprocess.Popen, watch: StallWatch, fh, reason: str) -> None:
    """Log why, ask each rank for its Python stack, then end the whole process group."""
    fh.write(f"\n[kit stall watch] {reason}\n[kit stall watch] the ranks' stacks follow; then the run "
             "is ended\n".encode())
    fh.flush()
    for beat in read_heartbeats(watch.directory, watch.launch).values():
        if beat.pid:  # only a rank of this launch, on this host: a stale PID may be a stranger's now
            signal_descendant(int(beat.pid), signal.SIGUSR1)
    deadline = time.time() + STACK_DUMP_SECONDS
    while time.time() < deadline:  # let the stacks reach the pipe; the pump keeps reading meanwhile
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)


# One entry of torchrun's error summary ("Failures:" and "Root Cause (first observed failure):").
FAILED_RANK = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+).*?traceback\s*:\s*([^\n]*)", re.S)


def failed_ranks(log_text: str) -> list[tuple[int, int, str]]:
    """(rank, exit code, traceback line) of every rank torchrun's summary lists, root cause first."""
    root = log_text.rfind("Root Cause")
    if root < 0:
        return []
    others = log_text.rfind("Failures:", 0, root)  # the list before the root cause, when there is one
    summary = log_text[root:] + "\n" + (log_text[others:root] if others >= 0 else "")
    found: dict[int, tuple[int, int, str]] = {}
    for rank, code, trace in FAILED_RANK.findall(summary):
        found.setdefault(int(rank), (int(rank), int(code), trace.strip()))
    return list(found.values())


def failure_cause(log_text: str) -> str:
    """One sentence on why a torchrun run failed: the rank that caused it, its exit, the last error line.

    A rank killed by a signal (the OOM killer, an operator) is the cause even when torchrun first observed
    another rank failing: the others die of the lost connection to it, often before torchrun sees the kill.
    """
    parts = []
    ranks = failed_ranks(log_text)
    if ranks:
        killed = [entry for entry in ranks if entry[1] < 0]
        rank, code, trace = (killed or ranks)[0]
        what = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        parts.append(f"rank {rank} failed ({what}): {trace}")
        others = [entry for entry in ranks if entry[0] != rank]
        if others:
            parts.append("then " + ", ".join(f"rank {r} ({'signal ' + str(-c) if c < 0 else 'exit code ' + str(c)})"
                                             for r, c, _ in others))
    errors = re.findall(r"^(?:\[rank\d+\]:\s*)?(\w+(?:Error|Exception)\b[^\n]*)$", log_text, re.M)
    if errors:
        parts.append(f"last error: {errors[-1].strip()}")
    return "; ".join(parts) or "no cause found in the output (see the log tail above)"


def report_failure(what: str, code: int, log: Path, work_dir: Path) -> int:
    """Print the log's tail and the cause; the exit status to give (never 0)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    tail = "\n".join(text.splitlines()[-40:])
    print(f"\n---- last lines of {log} ----\n{tail}\n----", file=sys.stderr)
    print(f"error: {what} failed with exit status {code}: {failure_cause(text)}\n"
          f"(full log: {log}; work dir: {work_dir})", file=sys.stderr)
    return code if code > 0 else 1
