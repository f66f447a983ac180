"""Whether the NPU rehearsal works in this environment: run with FLASHOCC_EMULATE_NPU=1, it makes a tensor on the
emulated NPU and says where torch_npu and mx_driving were imported from.

Usage: FLASHOCC_EMULATE_NPU=1 python -m flashocc_kit.probes.rehearsal
"""

import json

import mx_driving
import torch
import torch_npu

print(json.dumps({"device": str(torch.ones(2).npu().device), "devices": torch.npu.device_count(),
                  "torch_npu": torch_npu.__file__, "mx_driving": mx_driving.__file__}))
