"""The torchrun command lines of a run, and the environment its ranks start with."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import ascend
from ..hostinfo import usable_cpus
from ..settings import EMULATE_ENV
from ..stackenv import torchrun
from .run import Run

# How often torchrun's agent looks at its ranks. torch before 2.4 looks every 5 s, so each torchrun outlived its ranks
# by up to 5 s (twice a run: training, evaluation) and noticed a failed rank as late; torch 2.4 made 0.1 s the
# default (pytorch/pytorch#124692, which measured the polling at under 1 % of a core).
MONITOR_INTERVAL = "0.1"


def torchrun_prefix(run: Run, this_node_only: bool = False) -> list[str]:
    """Single- or multi-node, as the run's nodes are (or this node alone)."""
    nodes = run.cluster
    nnodes, node_rank = (1, 0) if this_node_only else (nodes.count, nodes.rank)
    return [*torchrun(), f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--nproc_per_node={run.devices}",
            f"--master_addr={nodes.master_addr}", f"--master_port={nodes.master_port}",
            f"--monitor_interval={MONITOR_INTERVAL}"]


def train_command(run: Run) -> list[str]:
    cmd = [*torchrun_prefix(run), "tools/train.py", run.config, "--launcher", "pytorch",
           "--work-dir", str(run.work_dir), "--seed", "0"]
    if run.resume_from is not None:
        cmd += ["--resume-from", str(run.resume_from)]
    return cmd + ["--cfg-options", *run.cfg_options()]


def test_command(run: Run, checkpoint: Path, results: Path) -> list[str]:
    opts = [o for o in run.cfg_options() if o.startswith(("data.", "model."))]
    # node 0 evaluates alone (its devices), after the nodes trained together
    return [*torchrun_prefix(run, this_node_only=True), "tools/test.py", run.config, str(checkpoint),
            "--launcher", "pytorch", "--eval", "mIoU", "--out", str(results),
            "--tmpdir", str(run.work_dir / ".eval_tmp"), "--cfg-options", *opts]


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PROFILE_ENV = "FLASHOCC_PROFILE"  # read by the port's tools/train.py: StepProfilerHook's settings


def rank_environment(run: Run) -> dict[str, str]:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(run.flashocc), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    if run.smoke or run.emulate_npu:  # the ranks compute on this CPU: share its cores, unless told how many threads
        cores = str(max(1, usable_cpus() // run.devices))  # (a thread count set by the caller, as CI sets one, stays)
        env.update({"CUDA_VISIBLE_DEVICES": "", **{var: os.environ.get(var) or cores for var in THREAD_VARS}})
    if run.emulate_npu:  # the NPU job as on the cluster, its Ascend run-time settings included
        env.update({EMULATE_ENV: "1", "FLASHOCC_DEVICE": "npu",
                    **{k: v for k, v in ascend.RUNTIME_ENV.items() if k not in os.environ}})
    elif run.smoke:
        env["FLASHOCC_DEVICE"] = "cpu"
    else:
        env.update(ascend.runtime_environment())
    if run.profile is not None:
        env[PROFILE_ENV] = json.dumps(run.profile)
    return env
