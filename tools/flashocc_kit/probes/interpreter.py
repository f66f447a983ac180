"""The interpreter a setup is for: its Python version and machine, and the torch (and torch_npu) it has."""

import importlib.util
import json
import platform
import sys

info = {"python": "{}.{}".format(*sys.version_info[:2]), "python_full": platform.python_version(),
        "machine": platform.machine(), "executable": sys.executable, "prefix": sys.prefix,
        "torch": None, "torch_npu": importlib.util.find_spec("torch_npu") is not None}
try:
    import torch

    info["torch"] = torch.__version__
except ImportError:
    pass
print(json.dumps(info))
