"""A small synthetic Occ3D-nuScenes data set in the exact layout FlashOCC reads (`kit.py synth`).

options.py and target.py need only the standard library (the kit's CLI checks a request before it
starts the environment's interpreter); the rest needs numpy, OpenCV, tqdm and pyquaternion from the
kit's environment.
"""
