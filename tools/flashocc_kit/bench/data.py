"""The benchmarks' data: a synthetic set at nuScenes resolution from `kit.py synth`, generated once
and kept in the kit's cache (a 1600x900 sample takes seconds to render)."""

from __future__ import annotations

from pathlib import Path

from ..errors import KitError
from ..hostinfo import usable_cpus
from ..occ3d import info_file
from ..pins import cache_dir

SAMPLES_PER_SCENE = 2


def synthetic_set(width: int, height: int, train_samples: int, seed: int = 0) -> Path:
    """A synthetic data root with at least `train_samples` training samples (cached)."""
    from ..synth import target
    from ..synth.generate import generate
    from ..synth.options import SynthOptions

    scenes = max(1, -(-train_samples // SAMPLES_PER_SCENE))
    root = cache_dir() / "bench" / f"synth-{width}x{height}-train{scenes * SAMPLES_PER_SCENE}-seed{seed}"
    if target.read_marker(root) is not None:
        return root
    opts = SynthOptions(width=width, height=height, train_scenes=scenes, val_scenes=1,
                        samples_per_scene=SAMPLES_PER_SCENE, seed=seed,
                        workers=max(1, min(4, usable_cpus())))
    print(f"bench: generating {scenes * SAMPLES_PER_SCENE} synthetic samples at {width}x{height} into {root} "
          "(once; cached)", flush=True)
    generate(opts, root, str(root), progress=False)
    return root


def data_root(args_data: str | None, width: int, height: int, train_samples: int) -> Path:
    if args_data:
        root = Path(args_data).expanduser().resolve()
        if not (root / info_file("train")).is_file():
            raise KitError(f"--data {root}: no {info_file('train')} there. Fix: point --data at a "
                           "FlashOCC data root, or leave it out for the synthetic set")
        return root
    return synthetic_set(width, height, train_samples)
