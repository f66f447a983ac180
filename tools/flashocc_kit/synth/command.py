"""The `synth` subcommand: check the request here, then generate under the workspace's environment.

The kit's CLI runs under the system python3 with the standard library only; the generator needs
numpy and OpenCV, so the command re-runs itself as `python -m flashocc_kit.synth` with the
interpreter of the environment `kit.py setup` creates (or runs here, if this interpreter is that
environment's or, lacking one, has the packages).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from ..errors import KitError
from ..workspace import Workspace
from . import options, target

NEEDS = ("numpy", "cv2", "tqdm", "pyquaternion")
TOOLS_DIR = Path(__file__).resolve().parents[2]


def has_generator_packages(python: Path | None = None) -> bool:
    """Whether this interpreter (or `python`) can import what the generator needs."""
    if python is None:
        return all(importlib.util.find_spec(name) is not None for name in NEEDS)
    probe = subprocess.run([str(python), "-c", f"import {', '.join(NEEDS)}"], capture_output=True)
    return probe.returncode == 0


def generator_python(venv: Path) -> Path | None:
    """The interpreter to generate with, None for this one: the workspace environment when it is complete
    (one stack, so one set of bytes per seed), else this interpreter if it has the packages."""
    python = venv / "bin" / "python"
    inside = Path(sys.prefix).resolve() == venv.resolve()
    if not inside and python.exists() and has_generator_packages(python):
        return python
    if has_generator_packages():
        return None
    raise KitError(f"synth needs {', '.join(NEEDS)}: {sys.executable} lacks them"
                   + (f" and so does {python}" if python.exists() else f", and there is no environment at {venv}")
                   + ". Fix: run `python3 tools/kit.py setup` first")


def resolve(args: argparse.Namespace, default_relative_to: Path) -> tuple[Path, Path]:
    """(directory relative --out paths start from, the data root to write)."""
    relative_to = Path(args.relative_to).resolve() if args.relative_to else default_relative_to
    if not Path(args.out).expanduser().is_absolute() and not relative_to.is_dir():
        raise KitError(f"--out {args.out} is relative to {relative_to}, which does not exist. "
                       "Fix: run `kit.py sources` first, pass --relative-to, or give an absolute --out")
    return relative_to, target.resolve_out(args.out, relative_to)


def run_here(args: argparse.Namespace, relative_to: Path) -> int:
    """Generate in this interpreter and report."""
    from .generate import default_workers, generate

    opts = options.options_from_args(args, default_workers())
    _, out_dir = resolve(args, relative_to)
    print(f"synth: {opts.train_scenes} train + {opts.val_scenes} val scenes x {opts.samples_per_scene} samples, "
          f"{opts.width}x{opts.height}, seed {opts.seed}, {opts.workers} worker(s) -> {out_dir}", flush=True)
    summary = generate(opts, out_dir, args.out, overwrite=args.overwrite)
    scores = [s for split in summary["validation"]["geometry"].values() for s in split.values()] or [0.0]
    print(f"wrote {summary['train']} train + {summary['val']} val samples to {summary['out']} "
          f"in {summary['seconds']:.1f} s")
    print(f"validated: every file decodes; in the cameras checked, {min(scores):.0%}-{max(scores):.0%} of the "
          "voxel faces seen show their class")
    if not Path(args.out).expanduser().is_absolute():
        print(f"the infos' paths start with {args.out!r}: run training from {relative_to}")
    print(options.data_config_advice(opts.width, opts.height))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    relative_to, out_dir = resolve(args, ws.flashocc)
    options.options_from_args(args, 1)  # range errors now, before any interpreter is started
    target.check_target(out_dir, args.overwrite)
    python = generator_python(ws.default_venv)
    if python is None:
        return run_here(args, relative_to)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TOOLS_DIR), os.environ.get("PYTHONPATH")]))}
    cmd = [str(python), "-m", "flashocc_kit.synth",
           *options.forward_arguments(args, args.out, str(relative_to))]
    return subprocess.run(cmd, env=env).returncode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a small synthetic Occ3D-nuScenes data set for smoke runs",
                       description="Generate a synthetic Occ3D-nuScenes data set (images, LiDAR, occupancy "
                                   "labels, bevdetv2-nuscenes infos) that FlashOCC's pipeline reads as it reads "
                                   "the real one. Same seed and options, same bytes.",
                       epilog="Image size and data_config: PrepareImageInputs ignores src_size and scales each "
                              "image by input_W / image_W, and the rig's intrinsics scale with the image, so "
                              "input_size=(256, 704) fits any 16:9 size (set src_size=(H, W) for the record); "
                              "(128, 352) for a faster CPU run. The command prints this for the size chosen.")
    options.add_arguments(p)
    p.set_defaults(func=cmd_synth)
