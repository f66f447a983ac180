"""The NPU rehearsal's cost: the smoke perf run on the CPU and on the emulated NPU, side by side, same config and seed.

Each run is the launch script a user runs (`test/train_8p_flashocc_r50_perf.sh --smoke`, then the same with
`--emulate-npu`), on the synthetic smoke set, with the same iterations and ranks; its steady-state step time is
read from its summary. The target: the rehearsal's step time within 2x the CPU run's. The losses of the two runs
are compared step by step too (the emulated kernels compute on the CPU, so they should agree closely).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path

from ..errors import KitError
from ..training.run import NETWORK
from .common import machine, ratio

TARGET_RATIO = 2.0  # the rehearsal's step time at most this times the CPU run's
SCRIPT = "test/train_8p_flashocc_r50_perf.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_losses(work_dir: Path) -> list[tuple[int, float]]:
    """(iteration, loss) of every logged training record of mmcv's JSON log."""
    records = []
    for log in sorted(Path(work_dir).glob("*.log.json")):
        for line in log.read_text().splitlines()[1:]:
            record = json.loads(line)
            if record.get("mode") == "train" and "loss" in record:
                records.append((int(record["iter"]), float(record["loss"])))
    return records


def run_case(flashocc: Path, out: Path, emulate: bool, iters: int, devices: int) -> dict:
    """One perf run of the smoke config; its summary, with the JSON log's losses."""
    work, output = out / "work", out / "output"
    args = ["bash", SCRIPT, "--smoke", "--max-iters", str(iters), "--num-npu", str(devices), "--work-dir", str(work),
            "--output-dir", str(output), "--no-data-check", *(["--emulate-npu"] if emulate else [])]
    env = {k: v for k, v in os.environ.items() if k not in ("NNODES", "NODE_RANK", "MASTER_ADDR", "FLASHOCC_SMOKE",
                                                              "FLASHOCC_EMULATE_NPU", "FLASHOCC_DEVICE")}
    env["MASTER_PORT"] = str(free_port())
    proc = subprocess.run(args, cwd=flashocc, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KitError(f"the {'rehearsal' if emulate else 'CPU'} run failed (exit {proc.returncode}):\n"
                       + (proc.stdout + proc.stderr)[-3000:])
    summaries = list(output.glob(f"{NETWORK}*_summary.json"))
    if len(summaries) != 1:
        raise KitError(f"expected one summary in {output}, found {len(summaries)}")
    summary = json.loads(summaries[0].read_text())
    summary["losses"] = train_losses(work)
    return summary


def run(flashocc: Path, iters: int, devices: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="flashocc-bench-rehearsal-") as tmp:
        cpu = run_case(flashocc, Path(tmp) / "cpu", False, iters, devices)
        npu = run_case(flashocc, Path(tmp) / "rehearsal", True, iters, devices)
    cpu_step, npu_step = cpu["step_time_s"]["mean"], npu["step_time_s"]["mean"]
    pairs = [(a, b) for (i, a), (j, b) in zip(cpu["losses"], npu["losses"]) if i == j]
    deviation = max((abs(a - b) / max(abs(a), 1e-12) for a, b in pairs), default=float("nan"))
    slowdown = ratio(npu_step, cpu_step)
    return {"machine": machine(), "iters": iters, "devices": devices,
            "cpu": {"case": cpu["case_name"], "step_time_s": cpu["step_time_s"], "data_time_s": cpu["data_time_s_mean"],
                    "emulated": cpu.get("emulated")},
            "rehearsal": {"case": npu["case_name"], "step_time_s": npu["step_time_s"],
                          "data_time_s": npu["data_time_s_mean"], "emulated": npu.get("emulated")},
            "slowdown": slowdown, "losses_compared": len(pairs), "loss_max_relative_difference": deviation,
            "target": {"ratio": TARGET_RATIO, "met": slowdown <= TARGET_RATIO}}


def report(document: dict) -> str:
    cpu, npu = document["cpu"], document["rehearsal"]
    rows = [f"{'run':28s} {'s/step (mean)':>14s} {'p50':>8s} {'data s':>8s}"]
    for label, case in (("CPU (gloo)", cpu), ("emulated NPU (hccl)", npu)):
        step = case["step_time_s"]
        rows.append(f"{label:28s} {step['mean']:14.3f} {step['p50']:8.3f} {case['data_time_s']:8.3f}")
    rows.append(f"rehearsal / CPU: {document['slowdown']:.2f}x (target <= {document['target']['ratio']:g}x: "
                f"{'met' if document['target']['met'] else 'NOT met'}); losses of {document['losses_compared']} "
                f"logged steps differ by at most {document['loss_max_relative_difference']:.2e} (relative)")
    return "\n".join(rows)
