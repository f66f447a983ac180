"""Every FlashOCC config builds its model on the patched tree, except the five broken at the pin, which fail the
same way on upstream's pristine tree (so the kit did not break them).

The port touches the detectors, the view transformer and the ops every config uses; building each
model (no weights, no data) catches a patch that breaks a config nobody trains in the other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import PRISTINE_IMPORT_STUBS, pristine_flashocc_tree

pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

# Broken in upstream FlashOCC at the pin, with or without the kit (README, Known issues):
# config -> the error building it raises there.
BROKEN_UPSTREAM = {
    "flashocc/flashocc-r50-trt.py": "unexpected keyword argument 'wocc'",
    "flashocc/flashocc-r50-M0-trt.py": "unexpected keyword argument 'wocc'",
    "flashocc/flashocc-stbase-4d-stereo-512x1408_4x4_2e-4.py": "unexpected keyword argument 'class_wise'",
    "panoptic-flashocc/panoptic-flashocc-r50-depth-trt.py": "flashoccv2-r50-depth.py\" does not exist",
    "panoptic-flashocc/panoptic-flashocc-r50-depth-tiny-pano-trt.py":
        "flashoccv2-r50-depth-tiny-pano.py\" does not exist",
}


def config_names(flashocc_root) -> list[str]:
    root = flashocc_root / "projects" / "configs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))


def build(flashocc_root, name: str):
    from mmcv import Config
    from mmdet3d.models import build_model

    cfg = Config.fromfile(str(flashocc_root / "projects" / "configs" / name))
    return build_model(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))


def test_every_config_builds_except_the_known_broken(flashocc_root):
    names = config_names(flashocc_root)
    assert len(names) > 20, f"found only {len(names)} configs under projects/configs"
    assert set(BROKEN_UPSTREAM) <= set(names), "a known-broken config is gone: update BROKEN_UPSTREAM"
    failures = {}
    for name in names:
        try:
            model = build(flashocc_root, name)
        except Exception as error:  # noqa: BLE001 - every failure is reported below, by config
            failures[name] = f"{type(error).__name__}: {error}"
            continue
        assert sum(p.numel() for p in model.parameters()) > 0, f"{name}: a model without parameters"
    unexpected = {n: e for n, e in failures.items() if n not in BROKEN_UPSTREAM}
    assert not unexpected, "configs that no longer build:\n" + "\n".join(f"  {n}: {e}" for n, e in unexpected.items())
    for name, expected in BROKEN_UPSTREAM.items():
        assert name in failures, f"{name} builds now: drop it from BROKEN_UPSTREAM and the README"
        assert expected in failures[name], f"{name} fails differently than recorded: {failures[name]}"


# Builds configs of one tree in a fresh process: `build.py ROOT CONFIG...`, printing {config: error or null}.
BUILD = PRISTINE_IMPORT_STUBS + """
import json
root = sys.argv[1]
sys.path.insert(0, root)
import projects.mmdet3d_plugin  # noqa: registers the models
from mmcv import Config
from mmdet3d.models import build_model
errors = {}
for name in sys.argv[2:]:
    try:
        cfg = Config.fromfile(root + "/projects/configs/" + name)
        build_model(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
        errors[name] = None
    except Exception as error:
        errors[name] = f"{type(error).__name__}: {error}"
print(json.dumps(errors))
"""


def test_the_known_broken_configs_fail_the_same_way_on_upstreams_pristine_tree(flashocc_root, sources_dir, tmp_path):
    pristine = pristine_flashocc_tree(sources_dir, tmp_path)
    (tmp_path / "build.py").write_text(BUILD)
    control = "flashocc/flashocc-r50.py"  # builds on both trees: the pristine tree itself is sound
    env = {**os.environ, "FLASHOCC_DEVICE": "cpu"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(tmp_path / "build.py"), str(pristine), control, *BROKEN_UPSTREAM],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert errors[control] is None
    for name, expected in BROKEN_UPSTREAM.items():
        assert errors[name] is not None and expected in errors[name], f"{name} on the pristine tree: {errors[name]}"
