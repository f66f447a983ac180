"""`kit.py synth`: a small synthetic Occ3D-nuScenes data set in the exact layout FlashOCC reads.

This module and command.py, options.py, target.py and occ3d.py need only the standard library
(the kit's CLI runs under the system python3); the rest needs numpy, OpenCV, tqdm and pyquaternion
from the kit's environment.
"""

from .command import register

__all__ = ["register"]
