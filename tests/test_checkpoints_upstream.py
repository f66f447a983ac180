"""Checkpoints cross the port's border both ways: upstream's pristine flashocc-r50 (its compiled-op imports
stubbed, nothing else touched) and the patched one have the same state_dict (names, shapes, dtypes), each
loads the other's checkpoint with strict=True, and from the same weights both give the same occupancy
logits on CPU, their BEV pooling done by the same sort-and-interval algorithm (upstream's bev_pool_v2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NO_SOURCES, PORT_FLASHOCC, PRISTINE_IMPORT_STUBS, pristine_flashocc_tree, upstream_sources_dir

torch = pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")
CONFIG = "projects/configs/flashocc/flashocc-r50.py"

# Builds one tree's model in a fresh process: `worker.py ROOT ROLE OUT CHECKPOINT`. Writes its state_dict's
# layout and a checkpoint (mmcv's save_checkpoint) from seed 0; then waits for CHECKPOINT, the other tree's (the two
# workers run side by side), loads it with strict=True (mmcv's load_checkpoint, as load_from and tools/test.py do)
# and writes the occupancy logits for inputs.pt.
WORKER = r'''
import importlib.util, json, os, sys, time, types
import torch

root, role, out, checkpoint = sys.argv[1:5]
sys.path.insert(0, root)
if role == "pristine":
    exec(PRISTINE_IMPORT_STUBS)  # its compiled ops are never called: pooling below
import projects.mmdet3d_plugin  # noqa: registers the models
from mmcv import Config
from mmcv.runner import load_checkpoint, save_checkpoint
from mmdet3d.models import build_model
from projects.mmdet3d_plugin.models.necks import view_transformer

spec = importlib.util.spec_from_file_location("reference", sys.argv[0].replace("worker.py", "reference.py"))
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)
if role == "pristine":
    view_transformer.bev_pool_v2 = reference.bev_pool_v2_sorted
else:
    from projects.mmdet3d_plugin.ops.bev_pool_v3 import bev_pool_v3_sorted
    view_transformer.bev_pool_v3 = bev_pool_v3_sorted

cfg = Config.fromfile(root + "/projects/configs/flashocc/flashocc-r50.py")
cfg.model.img_backbone.pretrained = None
torch.manual_seed(0)
model = build_model(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
model.init_weights()
model.eval()
layout = {name: [list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()}
json.dump(layout, open(f"{out}/{role}_layout.json", "w"))
save_checkpoint(model, f"{out}/{role}.pth.part")
os.replace(f"{out}/{role}.pth.part", f"{out}/{role}.pth")  # whole, for the other worker
deadline = time.time() + 600
while not os.path.exists(checkpoint):
    if time.time() > deadline:
        sys.exit(f"no {checkpoint} after 600 s: the other worker failed")
    time.sleep(0.2)
load_checkpoint(model, checkpoint, map_location="cpu", strict=True)
img_inputs = torch.load(f"{out}/inputs.pt")
with torch.no_grad():
    feats, _, _ = model.extract_feat(None, img_inputs=img_inputs, img_metas=[{}])
    logits = model.occ_head(feats[0])
torch.save(logits, f"{out}/{role}_logits.pt")
print("ok", role)
'''


def run_workers(tmp_path: Path, roots: dict[str, Path]) -> None:
    """Both trees' workers side by side, each loading the other's checkpoint; one failing ends the other."""
    env = {**os.environ, "FLASHOCC_DEVICE": "cpu"}
    env.pop("PYTHONPATH", None)
    other = {"pristine": "patched", "patched": "pristine"}
    workers = {}
    for role, root in roots.items():
        with (tmp_path / f"{role}.log").open("w") as log:
            workers[role] = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(root), role,
                                              str(tmp_path), str(tmp_path / f"{other[role]}.pth")],
                                             cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while any(proc.poll() is None for proc in workers.values()):
        if time.monotonic() > deadline or any(proc.returncode for proc in workers.values()):
            for proc in workers.values():
                proc.kill()  # our own workers, one of them already ended or both late
                proc.wait()
        time.sleep(0.2)
    for role, proc in workers.items():
        assert proc.returncode == 0, f"{role} model failed:\n{(tmp_path / f'{role}.log').read_text()[-5000:]}"


@pytest.fixture(scope="module")
def both_models(flashocc_root, tmp_path_factory):
    sources = upstream_sources_dir()
    if sources is None:
        pytest.skip(NO_SOURCES)
    out = tmp_path_factory.mktemp("checkpoints")
    pristine = pristine_flashocc_tree(sources, out)
    (out / "worker.py").write_text(f"PRISTINE_IMPORT_STUBS = {PRISTINE_IMPORT_STUBS!r}\n" + WORKER)
    (out / "reference.py").write_text((PORT_FLASHOCC / "projects/mmdet3d_plugin/ops/bev_pool_v3/reference.py")
                                      .read_text())
    from test_flashocc_model import load_parity_tool

    g = torch.Generator().manual_seed(0)
    rig = load_parity_tool(flashocc_root).rig(1, g)
    ego2global = torch.eye(4).repeat(1, 6, 1, 1)
    ego2global[..., :3, 3] = torch.tensor([1234.5, -876.25, 3.0])
    torch.save([torch.randn(1, 6, 3, 256, 704, generator=g), rig[0], ego2global, *rig[2:]], out / "inputs.pt")
    # each tree writes its checkpoint, then loads the other's: pristine weights into the patched model too
    run_workers(out, {"pristine": pristine, "patched": flashocc_root})
    return out


def test_state_dicts_have_upstreams_names_shapes_and_dtypes(both_models):
    pristine = json.loads((both_models / "pristine_layout.json").read_text())
    patched = json.loads((both_models / "patched_layout.json").read_text())
    assert len(pristine) > 250
    assert sorted(set(pristine) ^ set(patched)) == []
    assert {k: v for k, v in patched.items() if pristine[k] != v} == {}


def test_each_loads_the_others_checkpoint_strictly_and_gives_the_same_logits(both_models):
    # the patched model ran on the pristine weights, the pristine model on the patched ones; both trees build
    # the same weights from seed 0, so a strict load that mapped anything wrongly would show in the logits
    patched = torch.load(both_models / "patched_logits.pt")
    pristine = torch.load(both_models / "pristine_logits.pt")
    assert patched.shape == pristine.shape == (1, 200, 200, 16, 18)
    assert patched.abs().sum() > 0
    torch.testing.assert_close(patched, pristine, rtol=1e-5, atol=1e-5)  # measured: 3.6e-7 at most
    agree = (patched.argmax(-1) == pristine.argmax(-1)).float().mean().item()
    assert agree > 0.999, f"argmax agrees on {agree:.4%} of the voxels"


def test_a_checkpoint_with_a_renamed_tensor_is_refused_by_a_strict_load(both_models, flashocc_root):
    from mmcv import Config
    from mmcv.runner import load_checkpoint
    from mmdet3d.models import build_model

    state = torch.load(both_models / "pristine.pth", map_location="cpu")
    weights = state["state_dict"]
    name = next(k for k in weights if k.startswith("img_view_transformer."))
    weights[name.replace("img_view_transformer.", "img_view_transformer.renamed_")] = weights.pop(name)
    torch.save(state, both_models / "renamed.pth")
    cfg = Config.fromfile(str(flashocc_root / CONFIG))
    cfg.model.img_backbone.pretrained = None
    model = build_model(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    with pytest.raises(RuntimeError, match="missing keys"):
        load_checkpoint(model, str(both_models / "renamed.pth"), map_location="cpu", strict=True)
