"""mmcv.patch, proven with two CPU processes over gloo: init_dist, train_step, val_step, forward.

Runs against mmcv-full 1.7.2 from PyPI with and without the patch (the unpatched one must fail,
which shows the test can fail), and against the mmcv installed in the kit's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import free_port
from flashocc_kit import patching
from flashocc_kit.pins import load_projects
from flashocc_kit.pypi import download_sdist, unpack_sdist

pytestmark = pytest.mark.cell  # held on every cell of the support matrix (`kit.py test --short`)

pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")

WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    import torch.nn as nn
    from mmcv.parallel import DataContainer, MMDistributedDataParallel
    from mmcv.runner import get_dist_info, init_dist

    report = {"mmcv": __import__("mmcv").__file__}

    def step(name, fn):
        try:
            report[name] = fn()
        except Exception as exc:  # recorded, the test decides
            report[name] = {"error": type(exc).__name__, "message": str(exc)[:200]}

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1)

        def forward(self, img, return_loss=True):
            out = self.lin(img)
            return {"loss": out.pow(2).mean()} if return_loss else out.detach()

        def train_step(self, data, optimizer=None):
            return {"loss": self(**data)["loss"]}

        def val_step(self, data, optimizer=None):
            return {"loss": self(**data)["loss"].detach()}

    def batch(rank):
        return {"img": DataContainer(torch.full((2, 4), float(rank + 1)), stack=True)}

    step("init_dist", lambda: init_dist("pytorch", backend="gloo") or "ok")
    if not torch.distributed.is_initialized():  # let the other steps be judged on their own
        torch.distributed.init_process_group("gloo")
    rank, world = get_dist_info()
    torch.manual_seed(0)
    model = Toy()
    ddp = MMDistributedDataParallel(model, broadcast_buffers=False)

    def train():
        out = ddp.train_step(batch(rank), None)
        out["loss"].backward()
        return model.lin.weight.grad.flatten().tolist()

    def expected():
        grads = []
        for r in range(world):
            twin = Toy()
            twin.load_state_dict(model.state_dict())
            twin(img=torch.full((2, 4), float(r + 1)))["loss"].backward()
            grads.append(twin.lin.weight.grad)
        return (sum(grads) / world).flatten().tolist()

    step("train_step", train)
    step("expected_grad", expected)
    step("val_step", lambda: float(ddp.val_step(batch(rank), None)["loss"]))
    step("forward", lambda: ddp(img=batch(rank)["img"], return_loss=False).flatten().tolist())
    json.dump({**report, "rank": rank}, open(sys.argv[1] + f".{rank}", "w"))
""")



def run_two_ranks(tmp_path: Path, pythonpath: str | None) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "report"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    procs = [subprocess.Popen([sys.executable, str(script), str(out)], cwd=tmp_path, stderr=subprocess.PIPE,
                              text=True, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def mmcv_sdist(tmp_path_factory) -> Path:
    return download_sdist("mmcv-full==1.7.2")


def sdist_tree(archive: Path, where: Path, patched: bool) -> Path:
    tree = unpack_sdist(archive, where / "mmcv-full")
    if patched:
        patching.apply_patch("mmcv", tree, load_projects()["mmcv"].patch_file)
    return tree


def assert_ddp_works(reports: list[dict]) -> None:
    for report in reports:
        for step in ("init_dist", "train_step", "val_step", "forward"):
            assert not isinstance(report[step], dict), f"rank {report['rank']} {step}: {report[step]}"
        # gradients are averaged over both ranks, as DDP must do
        assert report["train_step"] == pytest.approx(report["expected_grad"], rel=1e-6)
    assert reports[0]["train_step"] == pytest.approx(reports[1]["train_step"], rel=1e-6)
    assert reports[0]["forward"] != reports[1]["forward"]  # each rank ran its own batch


def test_patched_mmcv_sdist_runs_ddp_on_cpu_over_gloo(tmp_path, mmcv_sdist):
    tree = sdist_tree(mmcv_sdist, tmp_path, patched=True)
    reports = run_two_ranks(tmp_path, str(tree))
    assert reports[0]["mmcv"].startswith(str(tree))
    assert_ddp_works(reports)


def test_unpatched_mmcv_fails_exactly_where_the_patch_fixes_it(tmp_path, mmcv_sdist):
    tree = sdist_tree(mmcv_sdist, tmp_path, patched=False)
    for report in run_two_ranks(tmp_path, str(tree)):
        assert report["init_dist"]["error"] == "ZeroDivisionError"  # rank % torch.cuda.device_count()
        assert isinstance(report["train_step"], dict)  # DataContainers reach the model unwrapped
        assert report["forward"]["error"] == "AttributeError"
        assert "_use_replicated_tensor_module" in report["forward"]["message"]


def test_installed_mmcv_runs_ddp_on_cpu_over_gloo(tmp_path):
    pytest.importorskip("mmcv.parallel", reason="mmcv is not installed here: run `python3 tools/kit.py setup`")
    import mmcv.parallel.distributed as installed

    patched_blob = next(c.new_blob for c in patching.read_patch(load_projects()["mmcv"].patch_file)
                        if c.path == "mmcv/parallel/distributed.py")
    actual = patching.gitutil.file_blob_id(Path(installed.__file__))
    assert actual.startswith(patched_blob), "the installed mmcv is not the patched one: re-run setup"
    assert_ddp_works(run_two_ranks(tmp_path, None))
