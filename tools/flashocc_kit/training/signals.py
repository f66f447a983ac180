"""Signals to processes of this launch only: a PID read from a file is checked to be our descendant first.

A heartbeat names its rank's PID, but a file can outlive its process: the PID may since belong to a stranger
(reused after a crash), or to a process on another host sharing the work dir. So before each signal the
process is opened (a pidfd where Linux and Python offer one, so that the process checked is the process
signalled) and its parent chain, read from /proc, must lead to this launcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

PROC = Path("/proc")


def parent_of(pid: int) -> int | None:
    """The parent PID of pid (None: gone, or no /proc to ask)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def is_descendant(pid: int, ancestor: int | None = None) -> bool:
    """Whether pid is a child, grandchild, ... of ancestor (default: this process)."""
    ancestor = os.getpid() if ancestor is None else ancestor
    seen = set()
    current = parent_of(pid)
    while current and current not in seen:
        if current == ancestor:
            return True
        seen.add(current)
        current = parent_of(current)
    return False


def signal_descendant(pid: int, signum: int = signal.SIGUSR1) -> bool:
    """Send signum to pid if it is a descendant of this process; whether it was sent."""
    if pid <= 1 or pid == os.getpid():
        return False
    pidfd = None
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone, or pidfds not allowed here: check and signal by PID
            pidfd = None
    try:
        if not is_descendant(pid):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(pid, signum)
            return True
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
