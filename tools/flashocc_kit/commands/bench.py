"""`kit.py bench`: benchmark the port against upstream (data pipeline, BEV pooling), in the kit's environment."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import positive_int
from ..bench import bevpool, common, data, pipeline, rays, rehearsal
from ..errors import KitError
from ..pins import default_sources_dir
from ..stackenv import ensure_stack
from ..synth.options import parse_image_size
from ..workspace import Workspace

NEEDS = ("numpy", "torch", "mmcv", "cv2")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the port (data pipeline, BEV pooling: against upstream; RayIoU rays)",
                       description="The port's data pipeline and BEV pooling against upstream's, in one process.")
    what = p.add_subparsers(dest="bench_command", required=True, metavar="<what>")
    add_pipeline(what)
    add_bevpool(what)
    add_rays(what)
    add_rehearsal(what)


def stack(args: argparse.Namespace) -> None:
    """Re-run under the workspace's environment if this interpreter lacks the training stack."""
    ensure_stack(Path(args.workspace), NEEDS, "bench")


def add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="upstream's train pipeline vs the port's: per-step ms, samples/s, "
                                        "DataLoader throughput, exactness",
                       description=pipeline.__doc__.splitlines()[0], epilog=pipeline.__doc__.split("\n", 2)[2])
    p.add_argument("--config", default=pipeline.TRAIN_CONFIG,
                   help=f"train config (default {pipeline.TRAIN_CONFIG})")
    p.add_argument("--depth-config", default=pipeline.DEPTH_CONFIG,
                   help=f"depth-supervised config for the {pipeline.DEPTH_STAGE} comparison "
                        f"(default {pipeline.DEPTH_CONFIG}; 'none' to skip)")
    p.add_argument("--samples", type=int, default=8, help="distinct samples (default 8)")
    p.add_argument("--rounds", type=int, default=4, help="passes over the samples, new seeds each (default 4)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, as in a DataLoader worker (default 1)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts (default 1 2)")
    p.add_argument("--loader-samples", type=int, default=32, help="samples per DataLoader run (default 32)")
    p.add_argument("--loader-repeats", type=int, default=2, help="DataLoader runs per setting (default 2)")
    p.add_argument("--image-size", default="1600x900", help="synthetic image size (default nuScenes' 1600x900)")
    p.add_argument("--data", help="an existing data root instead of the (cached) synthetic set")
    p.add_argument("--no-draft", action="store_true", help="skip the jpeg_draft variant and its PSNR")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 samples, 1 round, 704x396 images, 1 worker, 4 loader samples")
    p.add_argument("--json", help="also write the results (machine, versions, medians, ratios) here")
    p.set_defaults(func=cmd_pipeline)


def settings_from_args(args: argparse.Namespace) -> pipeline.Settings:
    if args.quick:
        args.samples, args.rounds, args.workers = min(args.samples, 2), 1, [1]
        args.loader_samples, args.loader_repeats = 4, 1
        if args.image_size == "1600x900":
            args.image_size = "704x396"
    for name in ("samples", "rounds", "threads", "loader_samples", "loader_repeats"):
        if getattr(args, name) < 1:
            raise KitError(f"--{name.replace('_', '-')} must be at least 1")
    if any(w < 0 for w in args.workers):
        raise KitError("--workers: counts must be 0 or more")
    width, height = parse_image_size(args.image_size)
    flashocc = Workspace.at(args.workspace).flashocc
    common.load_flashocc(flashocc)
    return pipeline.Settings(flashocc=flashocc, sources_dir=default_sources_dir(),
                             data=data.data_root(args.data, width, height, args.samples), config=args.config,
                             depth_config=None if args.depth_config == "none" else args.depth_config,
                             samples=args.samples, rounds=args.rounds, threads=args.threads, workers=args.workers,
                             loader_samples=max(args.loader_samples, 2), loader_repeats=args.loader_repeats,
                             draft=not args.no_draft)


def cmd_pipeline(args: argparse.Namespace) -> int:
    stack(args)
    document = pipeline.run(settings_from_args(args))
    for name, target in document["targets"].items():
        print(f"target {name} >= {target['target']}x: measured {target['measured']:.2f}x -> "
              f"{'met' if target['met'] else 'NOT met'}")
    if args.json:
        common.write_json(args.json, document)
        print(f"wrote {args.json}")
    return 0


def add_bevpool(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bevpool", help="portable bev_pool_v3 + sort-free prepare vs upstream's sort-and-interval: "
                                       "time and peak memory",
                       description=bevpool.__doc__.splitlines()[0], epilog=bevpool.__doc__.split("\n", 2)[2],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4], help="batch sizes (default 1 2 4)")
    p.add_argument("--repeat", type=int, default=7, help="timed rounds per case (default 7)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: steadier numbers)")
    p.add_argument("--quick", action="store_true", help="smoke run: B=1, 1 round")
    p.add_argument("--json", help="also write the results here")
    p.set_defaults(func=cmd_bevpool)


def cmd_bevpool(args: argparse.Namespace) -> int:
    stack(args)
    if args.quick:
        args.batch, args.repeat = [1], 1
    if args.repeat < 1 or args.threads < 1 or any(b < 1 for b in args.batch):
        raise KitError("--batch, --repeat and --threads must be at least 1")
    flashocc = Workspace.at(args.workspace).flashocc
    document = bevpool.run(flashocc, args.batch, args.repeat, args.threads)
    print(bevpool.report(document))
    print("peak MiB: torch profiler, live tensor bytes above the inputs during prepare + forward + backward; "
          "RSS: the process's high-water mark increase over one step (includes what the allocator holds)")
    print(f"target: fwd+bwd >= {bevpool.TARGET_RATIO}x with peak memory no higher, outputs agreeing -> "
          f"{'met' if document['target']['met'] else 'NOT met'}")
    if args.json:
        common.write_json(args.json, document)
        print(f"wrote {args.json}")
    return 0




def add_rays(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rays", help="RayIoU's ray casting with the portable dvr op: rays/s, the val split's time",
                       description=rays.__doc__.splitlines()[0], epilog=rays.__doc__.split("\n", 2)[2],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=6, help="synthetic samples timed (default 6)")
    p.add_argument("--origins", type=int, default=8, help="LiDAR origins per sample (default 8, the metric's most)")
    p.add_argument("--workers", type=int, nargs="*", default=None,
                   help="worker process counts to time besides in-process (default: 2 and this host's cores)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 sample, 2 origins, 1 worker process")
    p.add_argument("--json", help="also write the results here")
    p.set_defaults(func=cmd_rays)


def cmd_rays(args: argparse.Namespace) -> int:
    stack(args)
    if args.quick:
        args.samples, args.origins, args.workers = 1, 2, [1]
    if args.workers is None:
        args.workers = sorted({2, common.machine()["cores"]})
    rays.check_settings(args.samples, args.origins, args.workers)
    document = rays.run(Workspace.at(args.workspace).flashocc, args.samples, args.origins, args.workers)
    print(rays.report(document))
    if args.json:
        common.write_json(args.json, document)
        print(f"wrote {args.json}")
    return 0


def add_rehearsal(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rehearsal", help="the smoke perf run on the CPU and on the emulated NPU: step times, their "
                                         "ratio, and how far the losses drift",
                       description=rehearsal.__doc__.splitlines()[0], epilog=rehearsal.__doc__.split("\n", 2)[2],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-iters", type=positive_int, default=30, help="iterations of each run (default 30)")
    p.add_argument("--num-npu", type=positive_int, default=2, help="ranks of each run (default 2)")
    p.add_argument("--json", help="also write the results here")
    p.set_defaults(func=cmd_rehearsal)


def cmd_rehearsal(args: argparse.Namespace) -> int:
    document = rehearsal.run(Workspace.at(args.workspace).flashocc, args.max_iters, args.num_npu)
    print(rehearsal.report(document))
    if args.json:
        common.write_json(args.json, document)
        print(f"wrote {args.json}")
    return 0
