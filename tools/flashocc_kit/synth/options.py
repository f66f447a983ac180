"""The generator's parameters, their allowed ranges and the argparse options (standard library only)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from ..errors import KitError
from ..occ3d import info_file
from .splits import DEFAULT_VERSION, DEVKIT_SPLIT, VERSIONS, scene_names

NUSCENES_SIZE = (1600, 900)
ASPECT = 16 / 9
ASPECT_TOLERANCE = 0.02  # relative; the rig's intrinsics are nuScenes' scaled per axis
MIN_SIZE = (64, 36)
MAX_SIZE = (3200, 1800)
RANGES = {  # option -> (minimum, maximum), inclusive
    "train_scenes": (1, 1000),
    "val_scenes": (1, 1000),
    "samples_per_scene": (1, 40),  # nuScenes scenes hold about 40 key frames
    "seed": (0, 2**32 - 1),
    "workers": (1, 64),
}
MAX_SAMPLES = 20_000


@dataclass(frozen=True)
class SynthOptions:
    width: int = NUSCENES_SIZE[0]
    height: int = NUSCENES_SIZE[1]
    train_scenes: int = 8
    val_scenes: int = 2
    samples_per_scene: int = 4
    seed: int = 0
    workers: int = 1
    version: str = DEFAULT_VERSION  # the nuScenes tables written, and whose official splits name the scenes

    def check(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise KitError(f"--{name.replace('_', '-')} {value}: must be between {low} and {high}")
        total = (self.train_scenes + self.val_scenes) * self.samples_per_scene
        if total > MAX_SAMPLES:
            raise KitError(f"{total} samples requested ((train-scenes + val-scenes) x samples-per-scene); "
                           f"the generator stops at {MAX_SAMPLES}. Fix: ask for fewer scenes or samples.")
        check_version(self.version, self.train_scenes, self.val_scenes)
        check_image_size(self.width, self.height)

    def parameters(self) -> dict:
        """What determines the output (the worker count does not), for the marker file."""
        params = asdict(self)
        params.pop("workers")
        return params


def check_version(version: str, train_scenes: int, val_scenes: int) -> None:
    """Each scene takes a name of the version's official split, so the splits bound the scene counts."""
    if version not in VERSIONS:
        raise KitError(f"--version {version}: expected one of {', '.join(VERSIONS)}")
    for split, wanted in (("train", train_scenes), ("val", val_scenes)):
        limit = len(scene_names(version, split))
        if wanted > limit:
            raise KitError(f"--{split}-scenes {wanted}: {version} has {limit} {split} scenes "
                           f"(nuscenes.utils.splits.{DEVKIT_SPLIT[version][split]}), and every generated scene "
                           f"takes one of their names. Fix: ask for at most {limit}"
                           + (", or use --version v1.0-trainval" if version != DEFAULT_VERSION else ""))


def check_image_size(width: int, height: int) -> None:
    allowed = (f"allowed: {MIN_SIZE[0]}x{MIN_SIZE[1]} to {MAX_SIZE[0]}x{MAX_SIZE[1]}, 16:9 within "
               f"{ASPECT_TOLERANCE:.0%} (e.g. 1600x900, 704x396, 352x198)")
    if not (MIN_SIZE[0] <= width <= MAX_SIZE[0] and MIN_SIZE[1] <= height <= MAX_SIZE[1]):
        raise KitError(f"--image-size {width}x{height}: out of range; {allowed}")
    if abs(width / height / ASPECT - 1) > ASPECT_TOLERANCE:
        raise KitError(f"--image-size {width}x{height}: aspect {width / height:.3f} is not 16:9 (1.778), "
                       f"which the nuScenes camera rig needs; {allowed}")


def parse_image_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise KitError(f"--image-size {text!r}: expected WIDTHxHEIGHT, e.g. 704x396") from None
    check_image_size(width, height)
    return width, height


def crop_fits(width: int, height: int, input_size: tuple[int, int], resize_min: float = -0.06) -> bool:
    """Whether PrepareImageInputs' crop stays inside the image at the smallest random resize."""
    # It scales an image by input_W / image_W plus a jitter from data_config['resize'] (flashocc-r50:
    # -0.06..0.11) and crops input_H rows off the bottom; src_size is not read at all.
    input_h, input_w = input_size
    return height * (input_w / width + resize_min) >= input_h


def data_config_advice(width: int, height: int) -> str:
    """What flashocc-r50.py's data_config needs for images of this size."""
    text = (f"data_config for {width}x{height} images: src_size=({height}, {width}) (documentation only: "
            "PrepareImageInputs takes each image's own size). Keep input_size=(256, 704): the rig's "
            "intrinsics scale with the image, so the network sees the same view as on nuScenes")
    if not crop_fits(width, height, (256, 704)):
        text += " -- except that these images are too tall for it, choose a smaller input_size"
    text += "."
    if width < 704:
        text += f" (PrepareImageInputs scales {width} px up to 704, so the inputs carry less detail.)"
    if crop_fits(width, height, (128, 352)):
        text += " For a faster CPU run, input_size=(128, 352) works too."
    return text + " Any input_size must be multiples of 32 with input_H <= image_H * (input_W / image_W - 0.06)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthOptions()
    parser.add_argument("--out", default="data/nuscenes",
                        help="data root to create (default: data/nuscenes). A relative path is taken from "
                             "--relative-to and stored as given in the infos, like create_data_bevdet.py does")
    parser.add_argument("--relative-to", metavar="DIR",
                        help="directory relative --out paths start from: where training runs and the infos' "
                             "relative paths resolve (default: the workspace's FlashOCC checkout)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="same seed, same bytes (default: 0)")
    parser.add_argument("--image-size", default=f"{defaults.width}x{defaults.height}", metavar="WxH",
                        help="camera image size, 16:9 (default: nuScenes' 1600x900; 704x396 for a smoke run)")
    parser.add_argument("--train-scenes", type=int, default=defaults.train_scenes, metavar="N",
                        help=f"scenes in {info_file('train')} (default: {defaults.train_scenes})")
    parser.add_argument("--val-scenes", type=int, default=defaults.val_scenes, metavar="N",
                        help=f"scenes in ..._val.pkl (default: {defaults.val_scenes})")
    parser.add_argument("--samples-per-scene", type=int, default=defaults.samples_per_scene, metavar="N",
                        help=f"key frames per scene, 0.5 s apart (default: {defaults.samples_per_scene})")
    parser.add_argument("--version", default=defaults.version, choices=VERSIONS,
                        help="nuScenes tables to write under <out>/<version>/ and the official splits the scene "
                             f"names come from (default: {defaults.version}; v1.0-mini: at most "
                             f"{len(scene_names('v1.0-mini', 'train'))} train and "
                             f"{len(scene_names('v1.0-mini', 'val'))} val scenes)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes rendering samples (default: the CPUs available, at most 8)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a synthetic data set generated earlier at --out")


def options_from_args(args: argparse.Namespace, default_workers: int) -> SynthOptions:
    width, height = parse_image_size(args.image_size)
    opts = SynthOptions(width=width, height=height, train_scenes=args.train_scenes, val_scenes=args.val_scenes,
                        samples_per_scene=args.samples_per_scene, seed=args.seed, version=args.version,
                        workers=args.workers if args.workers is not None else default_workers)
    opts.check()
    return opts
