"""The torchrun command lines of a run, and the environment its ranks start with."""

from __future__ import annotations

import os
from pathlib import Path

from .. import ascend
from ..stackenv import torchrun
from .run import Run


def torchrun_prefix(devices: int, this_node_only: bool = False) -> list[str]:
    """Single- or multi-node, from NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT (or this node alone)."""
    nnodes, node_rank = ("1", "0") if this_node_only else (os.environ.get("NNODES", "1"),
                                                           os.environ.get("NODE_RANK", "0"))
    return [*torchrun(), f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--nproc_per_node={devices}",
            f"--master_addr={os.environ.get('MASTER_ADDR', '127.0.0.1')}",
            f"--master_port={os.environ.get('MASTER_PORT', '29500')}"]


def train_command(run: Run) -> list[str]:
    cmd = [*torchrun_prefix(run.devices), "tools/train.py", run.config, "--launcher", "pytorch",
           "--work-dir", str(run.work_dir), "--seed", "0"]
    if run.resume_from is not None:
        cmd += ["--resume-from", str(run.resume_from)]
    return cmd + ["--cfg-options", *run.cfg_options()]


def test_command(run: Run, checkpoint: Path, results: Path) -> list[str]:
    opts = [o for o in run.cfg_options() if o.startswith(("data.", "model."))]
    # node 0 evaluates alone (its devices), after the nodes trained together
    return [*torchrun_prefix(run.devices, this_node_only=True), "tools/test.py", run.config, str(checkpoint),
            "--launcher", "pytorch", "--eval", "mIoU", "--out", str(results),
            "--tmpdir", str(run.work_dir / ".eval_tmp"), "--cfg-options", *opts]


def cpus_available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def rank_environment(run: Run) -> dict[str, str]:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(run.flashocc), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    if run.smoke:
        cores = str(max(1, cpus_available() // run.devices))
        env.update({"FLASHOCC_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": cores,
                    "MKL_NUM_THREADS": cores})
    else:
        env.update(ascend.runtime_environment())
    return env
