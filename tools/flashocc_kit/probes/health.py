"""What `kit.py doctor` needs to know about an environment: versions, compiled ops, devices, the plugin.

Usage: python -m flashocc_kit.probes.health FLASHOCC_ROOT
"""

import importlib
import json
import sys

# modules without a usable __version__, and the distributions that install them (DrivingSDK: A2's or A5's)
DISTRIBUTIONS = {"mx_driving": ("mx-driving", "mx-driving-a5"), "torch_npu": ("torch-npu",)}


def version(module):
    try:
        imported = importlib.import_module(module)
        from importlib import metadata

        for distribution in DISTRIBUTIONS.get(module, ()):
            try:
                return metadata.version(distribution)
            except metadata.PackageNotFoundError:
                pass
        return getattr(imported, "__version__", "?")
    except Exception as exc:  # noqa: BLE001 (any failure to import is the answer)
        return "ERROR: " + (str(exc).splitlines() or [type(exc).__name__])[0]


def first_line(exc):
    return (str(exc).splitlines() or [""])[0]


info = {"python": sys.version.split()[0], "executable": sys.executable}
for name in ("torch", "torchvision", "numpy", "mmcv", "mmdet", "mmseg", "mmdet3d", "torch_npu", "mx_driving"):
    info[name] = version(name)
try:
    import mmcv.ops  # noqa: F401
    from mmcv.utils import ext_loader

    ext_loader.load_ext("_ext", ["nms"])
    info["mmcv_ops"] = "compiled"
except Exception as exc:  # noqa: BLE001
    info["mmcv_ops"] = "ERROR: " + first_line(exc)
try:
    import torch

    info["cuda"] = torch.cuda.is_available()
    info["npu"] = hasattr(torch, "npu") and torch.npu.is_available()
except Exception:  # noqa: BLE001
    info["cuda"] = info["npu"] = False
try:
    sys.path.insert(0, sys.argv[1])
    import projects.mmdet3d_plugin  # noqa: F401

    info["plugin"] = "imports"
except Exception as exc:  # noqa: BLE001
    info["plugin"] = "ERROR: " + type(exc).__name__ + ": " + first_line(exc)
print(json.dumps(info))
