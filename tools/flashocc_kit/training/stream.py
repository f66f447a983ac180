"""Running a torchrun command: its output to the console and a log, signals to its ranks, why it failed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path


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


def report_failure(what: str, code: int, log: Path, work_dir: Path) -> int:
    """Print the log's tail and the cause; the exit status to give (never 0)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    tail = "\n".join(text.splitlines()[-40:])
    print(f"\n---- last lines of {log} ----\n{tail}\n----", file=sys.stderr)
    print(f"error: {what} failed with exit status {code}: {failure_cause(text)}\n"
          f"(full log: {log}; work dir: {work_dir})", file=sys.stderr)
    return code if code > 0 else 1
