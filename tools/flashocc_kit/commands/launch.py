"""`kit.py launch`: one training run through torchrun (the logic behind test/*.sh, which stay thin bash)."""

from __future__ import annotations

import argparse
import importlib.util
import os

from ..argtypes import non_negative_int, positive_int
from ..rehearsal import activate_here
from ..settings import EMULATE_ENV, SMOKE_ENV, emulating_npu, forced_device, torchrun_override
from ..stackenv import ensure_stack
from ..training.commands import train_command
from ..training.execute import describe, execute, resolve_resume
from ..training.nodes import Nodes
from ..training.run import (
    CONFIG,
    DEVICES,
    MAX_ITERS,
    MODES,
    PRECISIONS,
    PRESETS,
    PROFILE_STEPS,
    PROFILE_WARMUP,
    SMOKE_CONFIG,
    SMOKE_DEVICES,
    LaunchRequest,
    build_run,
    locate_flashocc,
)
from ..workspace import Workspace

NEEDS = ("numpy", "matplotlib", "mmcv", "torch")


def options_table(parser: argparse.ArgumentParser) -> str:
    """The options as README's table (one row each, the help text as written here): README holds it, a test keeps
    the two equal, and `kit.py launch --options-table` prints it anew."""
    rows = ["| option | meaning |", "|---|---|"]
    for action in parser._actions:
        if not action.option_strings or isinstance(action, (argparse._HelpAction, OptionsTable)):
            continue
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            choices = "{" + ",".join(action.choices) + "}" if action.choices else None
            name += f" {action.metavar or choices or action.dest.upper()}"
            name += " ..." if action.nargs in ("+", "*") else ""
        rows.append(f"| `{name}` | {action.help} |".replace("|all", "\\|all"))
    return "\n".join(rows)


class OptionsTable(argparse.Action):
    """--options-table: print the table and stop, as --help does."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(options_table(parser))
        parser.exit()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="one training run through torchrun (what test/*.sh call)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="modes:\n" + "\n".join(f"  {k:6s} {v}" for k, v in MODES.items()))
    p.add_argument("mode", choices=MODES)
    p.add_argument("--num-npu", type=int, metavar="N",
                   help=f"devices (processes) per node (default {DEVICES}; smoke: {SMOKE_DEVICES}); more than the node "
                        "has is refused before torchrun")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="samples per device (default: the config's data.samples_per_gpu: 4, smoke 2)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="epochs of an accuracy run, or of a performance run instead of --max-iters (default: the "
                        "config's runner.max_epochs: 24, smoke 10)")
    p.add_argument("--max-iters", type=int, metavar="N",
                   help=f"iterations of a performance run (default {MAX_ITERS})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16-backbone: the image backbone under autocast (the fp16 scripts set it; default fp32)")
    p.add_argument("--data-root", metavar="DIR",
                   help="dataset root, holding the info files (default: the config's data_root)")
    p.add_argument("--work-dir", metavar="DIR",
                   help="checkpoints and mmcv's logs; must be writable, with room for checkpoints (default: "
                        "work_dirs/<case name> under the FlashOCC root)")
    p.add_argument("--output-dir", metavar="DIR",
                   help="the summaries (default: test/output/<case name> under the FlashOCC root)")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="resume from a checkpoint, or from the newest sound one in the work dir")
    p.add_argument("--config", metavar="PATH", help=f"the config to train (default {CONFIG}; smoke: {SMOKE_CONFIG})")
    p.add_argument("--workers", type=int, metavar="N",
                   help="data-loader workers per device (default: the config's data.workers_per_gpu)")
    p.add_argument("--log-interval", type=int, metavar="N",
                   help="iterations per log line (default 1 perf, 10 accuracy, 5 smoke)")
    p.add_argument("--smoke", action="store_true", help=f"the CPU smoke configuration (or {SMOKE_ENV}=1)")
    p.add_argument("--emulate-npu", action="store_true",
                   help="rehearse the NPU run on this CPU: torch_npu, hccl and DrivingSDK's Python code over the kit's "
                        f"emulated NPU (or {EMULATE_ENV}=1); the summary is marked emulated")
    p.add_argument("--lr", type=float, metavar="LR",
                   help="learning rate (default: the config's, scaled by sqrt(global batch / the config's global "
                        "batch), to 3 digits: 192 -> 2.45e-4, the reference port's)")
    p.add_argument("--preset", choices=PRESETS, help="a published recipe: " + "; ".join(
        f"{name}: {values['about']}" for name, values in PRESETS.items()) + " (explicit options win)")
    p.add_argument("--stall-timeout", type=float, metavar="SECONDS",
                   help="end the run when a rank makes no progress this long (default: the slowest step so far + "
                        "3 minutes, at least 5; 15 minutes to the first heartbeat, or this if longer)")
    p.add_argument("--node-timeout", type=float, metavar="SECONDS",
                   help="multi-node: how long the nodes' launchers wait for each other before torchrun (default 600)")
    p.add_argument("--no-data-check", dest="data_check", action="store_false",
                   help="skip the quick data check before torchrun (a few samples per info file and the checkpoint "
                        "the config loads; `kit.py check-data` checks everything)")
    p.add_argument("--profile", action="store_true",
                   help=f"profile a window of training steps ({PROFILE_STEPS} after {PROFILE_WARMUP} warm-up steps) on "
                        "rank 0: torch_npu.profiler on the NPU, torch.profiler elsewhere; the outputs gain the trace, "
                        "and the summary the top operators and the step's split")
    p.add_argument("--profile-steps", type=positive_int, metavar="N",
                   help=f"steps in the profiled window (default {PROFILE_STEPS}; implies --profile)")
    p.add_argument("--profile-warmup", type=non_negative_int, metavar="N",
                   help=f"steps before the window (default {PROFILE_WARMUP}; implies --profile)")
    p.add_argument("--profile-ranks", metavar="R[,R...]|all",
                   help="the ranks that record (default 0; implies --profile)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="further config overrides (mmcv's; no file is edited)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--options-table", action=OptionsTable, help="print these options as README's table, and stop")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # the environment is read once, before anything else: a bad value is named before any work is done
    if args.emulate_npu:
        os.environ[EMULATE_ENV] = "1"  # for this launcher, its re-execution in the kit's environment and the ranks
    cluster = Nodes.from_environment()
    forced_device()
    torchrun_override()
    emulate = emulating_npu()
    ws = Workspace.at(args.workspace)
    # first, before anything prints: a re-execution in the kit's environment would print it again
    ensure_stack(ws.root, NEEDS, "launch")  # the config is read with mmcv; the ranks run in this environment
    flashocc = locate_flashocc(ws.flashocc)
    if emulate and importlib.util.find_spec("torch_npu") is None:
        activate_here()  # already in the kit's environment, started without the flag: as its .pth hook would
    request = LaunchRequest(mode=args.mode, num_npu=args.num_npu, batch_size=args.batch_size, epochs=args.epochs,
                            max_iters=args.max_iters, precision=args.precision, data_root=args.data_root,
                            work_dir=args.work_dir, output_dir=args.output_dir, resume=args.resume,
                            config=args.config, workers=args.workers, log_interval=args.log_interval,
                            smoke=args.smoke, lr=args.lr, preset=args.preset, stall_timeout=args.stall_timeout,
                            node_timeout=args.node_timeout, data_check=args.data_check, emulate_npu=emulate,
                            profile=args.profile, profile_steps=args.profile_steps,
                            profile_warmup=args.profile_warmup, profile_ranks=args.profile_ranks,
                            cfg_options=args.cfg_options)
    training_run = build_run(request, flashocc, cluster)
    if args.dry_run:
        print(describe(training_run))
        training_run.resume_from = resolve_resume(training_run)
        print(" ".join(train_command(training_run)))
        return 0
    return execute(training_run)
