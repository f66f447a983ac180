"""Pictures of an evaluated run: ground truth and prediction side by side, seen from above."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .occ3d import FREE, OCC_CLASSES, info_file
from .synth.render import PALETTE

UNOBSERVED = np.array([200, 200, 200], dtype=np.uint8)  # voxels no camera sees: not scored


def top_view(semantics: np.ndarray) -> np.ndarray:
    """(Dx, Dy, Dz) labels -> (Dx, Dy): the class of the highest non-free voxel of each column."""
    occupied = semantics != FREE
    highest = semantics.shape[2] - 1 - np.argmax(occupied[:, :, ::-1], axis=2)
    top = np.take_along_axis(semantics, highest[..., None], axis=2)[..., 0]
    return np.where(occupied.any(axis=2), top, FREE)


def bev_rgb(semantics: np.ndarray, mask_camera: np.ndarray | None = None) -> np.ndarray:
    """An RGB image, ego x (forward) up and y (left) left; unobserved columns grey."""
    top = top_view(semantics)
    rgb = PALETTE[top].astype(np.uint8)
    rgb[top == FREE] = 255
    if mask_camera is not None:
        rgb[~mask_camera.astype(bool).any(axis=2)] = UNOBSERVED
    return rgb[::-1, ::-1]


def _prediction(result) -> np.ndarray:
    occ = result["pred_occ"] if isinstance(result, dict) else result
    return np.asarray(occ.cpu() if hasattr(occ, "cpu") else occ)


def render_comparison(pairs: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], out: Path) -> Path:
    """pairs: (title, gt semantics, predicted semantics, gt camera mask) -> one PNG, a row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(pairs), 2, figsize=(8, 4 * len(pairs) + 0.8), squeeze=False)
    present: set[int] = set()
    for row, (title, gt, pred, mask) in enumerate(pairs):
        for col, (name, labels) in enumerate((("ground truth", gt), ("prediction", pred))):
            axes[row, col].imshow(bev_rgb(labels, mask), interpolation="nearest")
            axes[row, col].set_title(f"{title}: {name}", fontsize=9)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            present |= set(np.unique(top_view(labels)).tolist())
    handles = [Patch(color=PALETTE[c] / 255, label=OCC_CLASSES[c]) for c in sorted(present) if c != FREE]
    handles.append(Patch(color=UNOBSERVED / 255, label="not seen by a camera (not scored)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("BEV, ego forward up: ground truth vs prediction (validation samples)", fontsize=10)
    fig.tight_layout(rect=(0, 0.8 / (4 * len(pairs) + 0.8) + 0.03, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def render_run(flashocc: Path, results_pkl: Path, root: Path, out_dir: Path, samples: int = 4) -> list[Path]:
    """BEV pictures for validation samples spread over an evaluated run (dataset order: by timestamp).

    root: the data root the infos are in; their occ_path is relative to the FlashOCC root.
    """
    with (root / info_file("val")).open("rb") as fh:
        infos = sorted(pickle.load(fh)["infos"], key=lambda info: info["timestamp"])
    with results_pkl.open("rb") as fh:
        results = pickle.load(fh)
    pairs = []
    picked = sorted({round(i * (len(results) - 1) / max(1, samples - 1)) for i in range(samples)})  # spread out
    for info, result in [(infos[i], results[i]) for i in picked]:
        labels = np.load(flashocc / info["occ_path"] / "labels.npz")
        pairs.append((info["token"][:8], labels["semantics"], _prediction(result), labels["mask_camera"]))
    return [render_comparison(pairs, out_dir / "bev_gt_vs_prediction.png")]
