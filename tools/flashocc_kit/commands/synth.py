"""`kit.py synth`: generate the synthetic Occ3D-nuScenes set (in the kit's environment: numpy, OpenCV)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import KitError
from ..stackenv import ensure_stack
from ..synth import options, target
from ..workspace import Workspace

NEEDS = ("numpy", "cv2", "tqdm", "pyquaternion")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a small synthetic Occ3D-nuScenes data set for smoke runs",
                       description="Generate a synthetic Occ3D-nuScenes data set (images, LiDAR, occupancy "
                                   "labels and their panoptic version for --eval ray-iou, bevdetv2-nuscenes "
                                   "infos) that FlashOCC's pipeline reads as it reads the real one. Same seed and "
                                   "options, same bytes.",
                       epilog="Image size and data_config: PrepareImageInputs ignores src_size and scales each "
                              "image by input_W / image_W, and the rig's intrinsics scale with the image, so "
                              "input_size=(256, 704) fits any 16:9 size (set src_size=(H, W) for the record); "
                              "(128, 352) for a faster CPU run. The command prints this for the size chosen.")
    options.add_arguments(p)
    p.set_defaults(func=run)


def resolve(args: argparse.Namespace, default_relative_to: Path) -> tuple[Path, Path]:
    """(directory relative --out paths start from, the data root to write)."""
    relative_to = Path(args.relative_to).resolve() if args.relative_to else default_relative_to
    if not Path(args.out).expanduser().is_absolute() and not relative_to.is_dir():
        raise KitError(f"--out {args.out} is relative to {relative_to}, which does not exist. "
                       "Fix: run `kit.py sources` first, pass --relative-to, or give an absolute --out")
    return relative_to, target.resolve_out(args.out, relative_to)


def run(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workspace)
    relative_to, out_dir = resolve(args, ws.flashocc)
    options.options_from_args(args, 1)  # range errors now, before any interpreter is started
    target.check_target(out_dir, args.overwrite)
    ensure_stack(ws.root, NEEDS, "synth")
    from ..synth.generate import default_workers, generate

    opts = options.options_from_args(args, default_workers())
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
