"""`python3 tools/kit.py <command>`: the kit's single entry point. It only dispatches: each command is a
module of flashocc_kit.commands."""

from __future__ import annotations

import argparse

from .commands import COMMANDS
from .errors import exit_status
from .pins import default_workspace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kit.py", description="FlashOCC Ascend porting kit")
    parser.add_argument("--workspace", default=str(default_workspace()),
                        help="where FlashOCC/, mmcv/, mmdetection/ live (default: the kit root, "
                             "or $FLASHOCC_KIT_WORKSPACE)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    def run() -> int:  # the parser reads the environment (the default workspace): its errors are the user's too
        args = build_parser().parse_args(argv)
        return args.func(args)

    return exit_status(run)
