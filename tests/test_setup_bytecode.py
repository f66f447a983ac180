"""setup compiles what pip leaves uncompiled: the editable checkouts and the kit. Where PYTHONDONTWRITEBYTECODE is
set (as on this kit's CI machines) no process writes bytecode, and each rank would compile FlashOCC, mmdet3d and mmdet
from source at every start (about 1.5 s of a 12 s start on a 2-core machine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conftest import KIT_ROOT


def test_setup_left_bytecode_for_each_editable_checkout_and_the_kit(flashocc_root):
    import mmdet
    import mmdet3d

    # modules no test imports (an optional backend's, an export's, a script's): only setup's compile writes theirs
    never_imported = [flashocc_root / "tools" / "analysis_tools" / "get_flops.py",
                      Path(mmdet3d.__file__).parent / "core" / "visualizer" / "open3d_vis.py",
                      Path(mmdet.__file__).parent / "core" / "export" / "pytorch2onnx.py",
                      KIT_ROOT / "tools" / "npu_emulator" / "bench.py"]
    missing = [str(path) for path in never_imported if not Path(importlib.util.cache_from_source(path)).is_file()]
    assert not missing, f"no bytecode for this interpreter: {missing} (setup's bytecode step)"
