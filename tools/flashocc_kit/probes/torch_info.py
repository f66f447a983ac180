"""Which torch this interpreter has, and whether torch_npu is installed beside it."""

import importlib.util
import json

try:
    import torch

    info = {"torch": torch.__version__, "npu": importlib.util.find_spec("torch_npu") is not None}
except ImportError:
    info = {"torch": None, "npu": False}
print(json.dumps(info))
