"""Every mx_driving / torch_npu name and parameter list the patches use exists in the real wheels.

The wheels come from PyPI (cached in the kit cache); they are read, never imported (no CANN here).
"""

from __future__ import annotations

import pytest

from flashocc_kit import contract
from flashocc_kit.pins import load_projects
from flashocc_kit.pypi import download_wheel
from flashocc_kit.stacks import npu_contract

REQUIREMENTS = npu_contract()


@pytest.fixture(scope="module")
def wheels():
    return {req: contract.WheelSources.read(download_wheel(req)) for req in REQUIREMENTS}


def test_the_patches_use_drivingsdk_and_torch_npu_as_the_real_packages_define_them(wheels):
    uses = sorted({u for p in load_projects().values() for u in contract.uses_in_patch(p.patch_file.read_text())},
                  key=lambda u: (u.module, u.name, u.kind))
    names = {(u.kind, u.module, u.name) for u in uses}
    # the port's NPU surface, as the issue asks for it: found in the patch, not assumed
    assert {("call", "mx_driving", "bev_pool_v3"), ("call", "mx_driving", "bev_pool_v2"),
            ("call", "mx_driving", "bev_pool"), ("optimizer", "torch_npu.optim", "NpuFusedAdamW"),
            ("module", "torch_npu.contrib.transfer_to_npu", ""),
            ("chain", "mx_driving.patcher", "PatcherBuilder")} <= names
    for requirement, package in wheels.items():
        assert contract.check(uses, package) == [], requirement


BROKEN = '''diff --git a/projects/x.py b/projects/x.py
new file mode 100644
index 0000000000000000000000000000000000000000..1111111111111111111111111111111111111111
--- /dev/null
+++ b/projects/x.py
@@ -0,0 +1,9 @@
+import mx_driving
+from mx_driving.patcher import PatcherBuilder, Patch, no_such_patch
+NPU_OPTIMIZERS = {'AdamW': 'NpuFusedAdamX'}
+a = mx_driving.bev_pool_v4(1)
+b = mx_driving.bev_pool_v3(depth, feat)
+c = mx_driving.bev_pool_v3(depth, feat, rd, rf, rb, shape, chunk=2)
+torch.npu.set_devices(0)
+PatcherBuilder().add_module_patch('torch', Patch(f)).built().apply()
+importlib.import_module('torch_npu.contrib.transfer_to_gpu')
'''


def test_wrong_names_and_argument_lists_are_reported(wheels):
    uses = contract.uses_in_patch(BROKEN)
    problems = []
    for package in wheels.values():
        problems += contract.check(uses, package)
    text = "\n".join(problems)
    assert "mx_driving.bev_pool_v4" in text and "not defined" in text
    assert "needs ranks_depth, ranks_feat, ranks_bev, bev_feat_shape" in text
    assert "has no parameter(s) chunk" in text
    assert "no_such_patch" in text
    assert "torch_npu.npu.set_devices" in text
    assert "has no method built" in text
    assert "NpuFusedAdamX" in text
    assert "torch_npu.contrib.transfer_to_gpu (projects/x.py): no such module" in text
    assert "NPU_OPTIMIZERS (" not in text  # a name on the next line is not an import


def test_calls_spanning_lines_in_modified_files_are_read_whole():
    patch = '''diff --git a/a.py b/a.py
index 1111111111111111111111111111111111111111..2222222222222222222222222222222222222222 100644
--- a/a.py
+++ b/a.py
@@ -1,2 +1,5 @@
 x = 1
+y = mx_driving.bev_pool_v2(depth, feat,
+                           rd, rf, rb, shape,
+                           starts, lengths)
 z = 2
'''
    (use,) = contract.uses_in_patch(patch)
    assert (use.kind, use.name, use.positional) == ("call", "bev_pool_v2", 8)
