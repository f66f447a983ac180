"""The one exception type the CLI turns into a clear message and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable


class KitError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class SourcesUnavailable(KitError):
    """An upstream project can be neither copied from a sources directory nor fetched."""


def exit_status(command: Callable[[], int]) -> int:
    """Run a command-line entry point: a KitError prints its message and gives 2, Ctrl-C 130."""
    try:
        return command()
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
