"""`python -m flashocc_kit.synth ...`: the generator under the environment's interpreter (see command.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import exit_status
from . import options
from .command import run_here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashocc_kit.synth", description=__doc__)
    options.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.relative_to is None and not Path(args.out).expanduser().is_absolute():
        parser.error("a relative --out needs --relative-to here")
    return exit_status(lambda: run_here(args, Path(args.relative_to or ".")))


if __name__ == "__main__":
    sys.exit(main())
