"""nuScenes' official scene splits (nuscenes.utils.splits, devkit 1.1), standard library only.

Upstream's converter (create_nuscenes_infos) files a scene under train or val by its name alone, so the
generator names its scenes from these lists. The names are scene-NNNN; stored here as number ranges.
"""

from __future__ import annotations

from ..occ3d import NUSCENES_VERSION

VERSIONS = (NUSCENES_VERSION, "v1.0-mini")  # v1.0-test has no annotations, nothing the generator could fill
DEFAULT_VERSION = NUSCENES_VERSION

_TRAIN = (
    "1-2 4-11 19-34 41-76 120-135 138-139 149-152 154-155 157-168 170-185 187-188 190-196 199-200 202-204 "
    "206-214 218-220 222 224-264 283-306 315-318 321 323-324 328 347-386 388-403 405-408 410-459 461-465 "
    "467-469 471-472 474-480 499-502 504-515 517-518 525-539 541-546 566 568 570-578 580 582-600 639-679 681 "
    "683-689 695-698 700-701 703-719 726-728 730-731 733-741 744 746-747 749-752 757-765 767-769 786-787 "
    "789-792 803-806 808-813 815-817 819-822 847-856 858 860-866 868-873 875-878 880 882-903 945 947 949 "
    "952-953 955-961 975-984 988-992 994-1025 1044-1058 1074-1102 1104-1110"
)
_VAL = (
    "3 12-18 35-36 38-39 92-110 221 268-278 329-332 344-346 519-524 552-565 625-627 629-630 632-638 770-771 "
    "775 777-778 780-784 794-800 802 904-917 919-931 962-963 966-969 971-972 1059-1073"
)
_MINI_TRAIN = "61 553 655 757 796 1077 1094 1100"  # in splits.mini_train's order
_MINI_VAL = "103 916"


def _names(ranges: str) -> tuple[str, ...]:
    names = []
    for part in ranges.split():
        first, _, last = part.partition("-")
        names.extend(f"scene-{n:04d}" for n in range(int(first), int(last or first) + 1))
    return tuple(names)


# version -> split -> scene names, in the devkit's order
SCENES = {
    "v1.0-trainval": {"train": _names(_TRAIN), "val": _names(_VAL)},
    "v1.0-mini": {"train": _names(_MINI_TRAIN), "val": _names(_MINI_VAL)},
}
DEVKIT_SPLIT = {  # the nuscenes.utils.splits attribute each list is
    "v1.0-trainval": {"train": "train", "val": "val"},
    "v1.0-mini": {"train": "mini_train", "val": "mini_val"},
}


def scene_names(version: str, split: str) -> tuple[str, ...]:
    return SCENES[version][split]
