"""The interpreter a setup is for: its Python version and machine, and the torch (and torch_npu) it has.

With --without-torch (a setup that installs torch whatever this one has) torch is not imported: that takes seconds."""

import importlib.util
import json
import platform
import sys

info = {"python": "{}.{}".format(*sys.version_info[:2]), "python_full": platform.python_version(),
        "machine": platform.machine(), "executable": sys.executable, "prefix": sys.prefix,
        "torch": None, "torch_npu": importlib.util.find_spec("torch_npu") is not None}
if "--without-torch" not in sys.argv:
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
print(json.dumps(info))
