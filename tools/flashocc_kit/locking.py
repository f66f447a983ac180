"""One holder at a time, across processes: an exclusive flock on a file beside what it guards."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def exclusively(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on path (created if need be) for the block; the lock ends with the process too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
