"""The NPU rehearsal, for real: the launch scripts' NPU path run on the kit's emulated NPU (tools/npu_emulator), with
DrivingSDK's own wheel, over hccl, beside the CPU run of the same config, data and seed.

What a CPU run cannot show and these runs do: the port's NPU branches taken end to end (device npu, hccl,
NpuFusedAdamW, DrivingSDK's patcher), DrivingSDK's kernels really reached (counted by the emulated kernels, which
check their inputs as the real ones do: npu tensors, int32 ranks), and a tensor made on the wrong device failing as
it would on the cluster.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KIT_ROOT, SHORT_RUN, sitecustomize_pythonpath
from test_cpu_runs import run_env

pytestmark = pytest.mark.cell

EMULATE = "FLASHOCC_EMULATE_NPU"
SMOKE_SCRIPT = "train_smoke_flashocc_cpu.sh"
PERF_SCRIPT = "train_8p_flashocc_r50_perf.sh"
KERNELS = re.compile(r"\[npu emulator\] rank (\d+) \(pid \d+\): mx_driving\._C kernel calls: (.*) \(each checked")
# The losses of the CPU run and the rehearsal, step by step. The emulated NPU computes with the CPU's kernels on the
# same memory, so the only differences are the order DrivingSDK's bev_pool_v3 (emulated: index_add_) and the port's
# portable op (chunked) accumulate in, float32 rounding of a few 1e-7 relative, grown over a few steps; the logs
# round losses to 5 decimals. 1e-3 relative leaves room for other CPUs' kernels, and still catches a real
# difference (a wrong kernel, a patch computing something else, a missed step), which moves losses by percents.
LOSS_RTOL = 1e-3
ITERATIONS = SHORT_RUN["iterations"]  # of the shared short run and its rehearsal


@pytest.fixture(scope="module")
def rehearsal_ready(flashocc_root):
    """The rehearsal prepared in this environment (setup does it), or a skip saying how to get it."""
    probe = subprocess.run([sys.executable, "-c", "import torch, torch_npu, mx_driving; print(torch.ones(1).npu())"],
                           env={**os.environ, EMULATE: "1"}, capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        pytest.skip("the NPU rehearsal is not prepared in this environment: `python3 tools/kit.py setup` prepares it "
                    f"({probe.stderr.strip().splitlines()[-1:]})")
    return flashocc_root


def run_script(cwd: Path, script: str, work: Path, out: Path, *args: str, env: dict | None = None,
               timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", f"test/{script}", "--smoke", "--work-dir", str(work), "--output-dir", str(out),
                           *args], cwd=cwd, env={**run_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def losses(work: Path) -> list[tuple[int, float]]:
    from flashocc_kit.bench.rehearsal import train_losses

    return train_losses(work)


def kernel_calls(output: str) -> dict[int, dict[str, int]]:
    return {int(rank): {name: int(count) for name, count in (item.split("=") for item in calls.split())}
            for rank, calls in KERNELS.findall(output)}


# DrivingSDK's npu_add_relu sends only tensors of 2e6 elements and more to its kernel (the smoke model's are smaller:
# plain add and relu then); so the rehearsal's ranks also count the calls of the wheel's own Python function, the
# one its ResNet patch calls (observed, not changed), and say so at exit.
ADD_RELU_SITECUSTOMIZE = """
import atexit, os, sys, threading, time
if os.environ.get("FLASHOCC_EMULATE_NPU") == "1" and any(a.endswith("train.py") for a in sys.argv):
    calls = [0]
    def count_when_loaded():
        while not hasattr(sys.modules.get("mx_driving"), "npu_add_relu"):
            time.sleep(0.05)
        mx_driving = sys.modules["mx_driving"]
        original = mx_driving.npu_add_relu
        def npu_add_relu(x, y):
            calls[0] += 1
            return original(x, y)
        mx_driving.npu_add_relu = npu_add_relu
    threading.Thread(target=count_when_loaded, daemon=True).start()
    atexit.register(lambda: print(f"[test] rank {os.environ.get('RANK')}: mx_driving.npu_add_relu calls: {calls[0]}",
                                  file=sys.stderr, flush=True))
"""
ADD_RELU_CALLS = re.compile(r"\[test\] rank (\d+): mx_driving\.npu_add_relu calls: (\d+)")


@pytest.fixture(scope="module")
def pair(rehearsal_ready, two_epoch_smoke_run, tmp_path_factory):
    """The smoke config trained 2 epochs on a few samples and evaluated on a val scene (conftest's SHORT_RUN): on the
    CPU over gloo (the run the resume test shares), and rehearsed on two emulated NPUs over hccl, profiled (3 warm-up
    steps, 5 recorded)."""
    root = rehearsal_ready
    tmp = tmp_path_factory.mktemp("rehearsal")
    cpu = two_epoch_smoke_run
    pythonpath = sitecustomize_pythonpath(tmp / "site", ADD_RELU_SITECUSTOMIZE)
    npu = run_script(root, SMOKE_SCRIPT, tmp / "npu-work", tmp / "npu-out", "--emulate-npu", "--profile-warmup", "3",
                     *cpu["args"][1:], env={"PYTHONPATH": pythonpath})
    return {"cpu": (cpu["proc"], cpu["work"], cpu["out"]), "npu": (npu, tmp / "npu-work", tmp / "npu-out")}


def summary_of(out: Path) -> dict:
    (path,) = out.glob("*_summary.json")
    return json.loads(path.read_text())


def test_the_smoke_run_rehearses_on_two_emulated_npus_over_hccl_with_drivingsdk(pair):
    proc, work, out = pair["npu"]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "NPU EMULATED on this CPU" in proc.stdout
    for line in ("device npu, dist backend hccl", "optimizer AdamW -> torch_npu NpuFusedAdamW",
                 "DrivingSDK patches (Patcher API, fp32): applied batch_matmul, resnet_add_relu",
                 "data loader pin_memory: True"):
        assert line in output, line
    calls = kernel_calls((out / "train_console.log").read_text())
    assert sorted(calls) == [0, 1], output[-3000:]  # each rank reports the kernels it reached, at exit
    for rank, counted in calls.items():
        # the view transformer pools with the wheel's bev_pool_v3 (int32 ranks, or the emulated kernel would have
        # refused them), forward and backward, once an iteration
        assert counted.get("npu_bev_pool_v3") == ITERATIONS and counted.get("npu_bev_pool_v3_backward") == ITERATIONS, \
            (rank, counted)
    # mmdet's ResNet blocks end in DrivingSDK's npu_add_relu (the patcher's forward): at least the image backbone's
    # 8 (ResNet-18) an iteration, on both ranks alike
    add_relu = {int(rank): int(n) for rank, n in ADD_RELU_CALLS.findall((out / "train_console.log").read_text())}
    assert sorted(add_relu) == [0, 1] and add_relu[0] == add_relu[1] >= 8 * ITERATIONS, add_relu
    evaluation = kernel_calls((out / "eval_console.log").read_text())  # tools/test.py on the emulated NPUs
    assert sum(counted["npu_bev_pool_v3"] for counted in evaluation.values()) == SHORT_RUN["val_samples"]  # one each
    summary = summary_of(out)
    assert summary["emulated"] is True and summary["device"] == "npu" and summary["environment"]["emulated"] is True
    assert summary["case_name"].endswith("_npurehearsal") and summary["accuracy"]["samples"] == SHORT_RUN["val_samples"]
    assert math.isfinite(summary["accuracy"]["miou"])


def test_the_rehearsals_losses_are_the_cpu_runs(pair):
    cpu, npu = pair["cpu"], pair["npu"]
    assert cpu[0].returncode == 0 and npu[0].returncode == 0
    expected, got = losses(cpu[1]), losses(npu[1])
    assert len(expected) == ITERATIONS and [i for i, _ in got] == [i for i, _ in expected]
    for (step, a), (_, b) in zip(expected, got):
        assert b == pytest.approx(a, rel=LOSS_RTOL), f"iteration {step}: CPU {a}, rehearsal {b}"


def test_the_rehearsal_profiles_through_the_npu_profiler(pair):
    proc, _, out = pair["npu"]
    assert proc.returncode == 0
    profile = summary_of(out)["profile"]
    assert profile["profiler"] == "torch_npu.profiler" and profile["device"] == "npu"  # the NPU's code path
    assert profile["recorded_steps"] == 5 and profile["wait"] == 3
    assert profile["opens_in"].startswith("MindStudio Insight")
    assert any(op["name"].startswith("aten::") for op in profile["top_operators"])


def test_the_gate_refuses_a_rehearsals_summary_against_the_npu_baselines(pair):
    from flashocc_kit.errors import KitError
    from flashocc_kit.results.gate import DEFAULT_BASELINES, run_gate

    _, _, out = pair["npu"]
    (path,) = out.glob("*_summary.json")
    with pytest.raises(KitError, match="emulated NPU .* not comparable"):
        run_gate(path, DEFAULT_BASELINES, overrides={"global_batch": 32})


def test_the_fp16_backbone_rehearses_under_autocast_on_the_npu(rehearsal_ready, tmp_path):
    proc = run_script(rehearsal_ready, PERF_SCRIPT, tmp_path / "work", tmp_path / "out", "--emulate-npu",
                      "--precision", "fp16-backbone", "--num-npu", "1", "--max-iters", "4",
                      "--no-data-check")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "DrivingSDK patches (Patcher API, fp16-backbone): applied batch_matmul" in output
    counted = kernel_calls(output)[0]
    assert "npu_add_relu" not in counted and counted["npu_bev_pool_v3"] == 4  # no add+relu fusion under fp16
    assert all(math.isfinite(loss) for _, loss in losses(tmp_path / "work"))


PLANTED = ("batch_idx = torch.arange(B, device=device).repeat_interleave(num_points // B)",
           "batch_idx = torch.arange(B).repeat_interleave(num_points // B)")  # made on the CPU, not the device


def test_a_tensor_made_on_the_cpu_passes_the_cpu_run_and_fails_the_rehearsal(rehearsal_ready, tmp_path):
    """The commonest porting bug, planted in a copy of the patched tree: invisible on the CPU, fatal on an NPU."""
    tree = tmp_path / "FlashOCC"
    shutil.copytree(rehearsal_ready, tree, symlinks=True,
                    ignore=shutil.ignore_patterns("work_dirs", "test", ".git", "data", "mmdetection3d"))
    for name in ("data", "mmdetection3d"):
        (tree / name).symlink_to(rehearsal_ready / name)
    (tree / "test").symlink_to(KIT_ROOT / "test")
    transformer = tree / "projects/mmdet3d_plugin/models/necks/view_transformer.py"
    source = transformer.read_text()
    assert PLANTED[0] in source
    transformer.write_text(source.replace(*PLANTED))
    args = ("--num-npu", "1", "--max-iters", "4", "--no-data-check")  # 4: the fewest a performance summary takes
    cpu = run_script(tree, PERF_SCRIPT, tmp_path / "cpu-work", tmp_path / "cpu-out", *args)
    assert cpu.returncode == 0, (cpu.stdout + cpu.stderr)[-3000:]
    npu = run_script(tree, PERF_SCRIPT, tmp_path / "npu-work", tmp_path / "npu-out", "--emulate-npu", *args)
    assert npu.returncode != 0
    assert "Expected all tensors to be on the same device" in npu.stdout + npu.stderr
    assert "view_transformer.py" in npu.stdout + npu.stderr  # the traceback names the line


def test_the_rehearsal_command_of_the_issue_prints_the_npu(rehearsal_ready):
    """README's check after setup: torch_npu and mx_driving import, the tensor lands on npu:0, mx_driving is the
    wheel's own code (installed from PyPI, not the kit's)."""
    proc = subprocess.run([sys.executable, "-c", "import torch, torch_npu, mx_driving; "
                           "print(torch.ones(2).npu().device); print(mx_driving.__file__)"],
                          env={**os.environ, EMULATE: "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    device, location = proc.stdout.split()[-2:]
    assert device == "npu:0" and KIT_ROOT not in Path(location).parents and "mx-driving" in location
