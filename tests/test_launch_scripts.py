"""test/*.sh with a stand-in torchrun (FLASHOCC_TORCHRUN): arguments, defaults, multi-node, exit status,
summary files, and a source tree left as it was."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import KIT_ROOT, free_port, git, make_repo
from flashocc_kit.training.nodes import Nodes, meet
from flashocc_kit.training.run import OUTPUT_DIR

RECORDED = KIT_ROOT / "tests" / "data" / "recorded" / "cpu_2rank"

STANDIN = r'''#!{python}
"""Stand-in torchrun: records how it was called, then plays back a recorded run (or fails)."""
import json, os, shutil, sys, time
from pathlib import Path

argv = sys.argv[1:]
with open(os.environ["STANDIN_RECORD"], "a") as fh:
    fh.write(json.dumps({{"argv": argv, "cwd": os.getcwd(), "env": {{k: os.environ.get(k) for k in
        ("FLASHOCC_DEVICE", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH",
         "TASK_QUEUE_ENABLE", "COMBINED_ENABLE", "HCCL_IF_IP", "FLASHOCC_PROFILE", "FLASHOCC_EMULATE_NPU")}}}}) + "\n")
script = next(a for a in argv if a.endswith(".py"))
fail = os.environ.get("STANDIN_FAIL", "")
if fail and script.endswith(fail.split(":")[0]):
    print("Traceback (most recent call last):\nRuntimeError: stand-in failure on purpose", flush=True)
    print("torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
          "Root Cause (first observed failure):\n[0]:\n  time      : 2026-01-01_00:00:00\n"
          "  host      : standin\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 4242)\n"
          "  error_file: <N/A>\n  traceback : Signal 9 (SIGKILL) received by PID 4242", flush=True)
    sys.exit(int(fail.split(":")[1]))
if os.environ.get("STANDIN_STALL") and script.endswith("train.py"):
    # a rank that stops iterating: its heartbeat (this launch's) is old; a second heartbeat names a stranger's PID
    import socket, subprocess, time
    marker = os.environ["STANDIN_STALL"]
    rank = subprocess.Popen([sys.executable, "-c", "import pathlib, signal, sys, time; signal.signal("
                             "signal.SIGUSR1, lambda *a: pathlib.Path(sys.argv[1]).write_text('stack asked')); "
                             "time.sleep(120)", marker])
    beats = Path(os.environ["FLASHOCC_HEARTBEAT_DIR"])
    beats.mkdir(parents=True, exist_ok=True)
    for number, pid in ((0, rank.pid), (1, int(os.environ["STANDIN_STRANGER"]))):
        (beats / f"rank{{number}}.json").write_text(json.dumps({{
            "rank": number, "epoch": 1, "iter": 3, "phase": "train", "time": time.time() - 600, "pid": pid,
            "host": socket.gethostname(), "launch": os.environ["FLASHOCC_LAUNCH_ID"]}}))
    time.sleep(120)
recorded = Path(os.environ["STANDIN_RECORDED"])
console = (recorded / "console.log").read_text()
if script.endswith("train.py"):
    work_dir = Path(argv[argv.index("--work-dir") + 1])
    work_dir.mkdir(parents=True, exist_ok=True)
    for log in (recorded / "work_dir").iterdir():
        shutil.copy(log, work_dir / log.name)
    options = argv[argv.index("--cfg-options") + 1:]
    epochs = [o.split("=")[1] for o in options if o.startswith("runner.max_epochs=")]
    if epochs and epochs[0] != "None":
        (work_dir / f"epoch_{{epochs[0]}}_ema.pth").write_bytes(b"")
    print("\n".join(l for l in console.splitlines() if "===>" not in l), flush=True)
    time.sleep(float(os.environ.get("STANDIN_SECONDS", "0")))  # a run long enough for the stall watch to look
else:
    print("\n".join(l for l in console.splitlines() if "===>" in l))
'''


# What the launcher reads of a config (the config owns these defaults), as in the real ones.
STANDIN_CONFIG = """data_root = '{root}'
data = dict(samples_per_gpu={batch}, workers_per_gpu={workers})
optimizer = dict(type='AdamW', lr={lr}, weight_decay=1e-2)
runner = dict(type='EpochBasedRunner', max_epochs={epochs})
"""


@pytest.fixture
def flashocc_tree(tmp_path):
    """A stand-in FlashOCC root (git checkout) with the kit's test/ linked in, as setup leaves it."""
    if importlib.util.find_spec("mmcv") is None:  # a fresh machine without the upstream sources has no mmcv
        pytest.skip("needs mmcv: the launcher reads each config's defaults with mmcv's Config; run the suite in "
                    "the kit's environment (`python3 tools/kit.py setup`, which needs the upstream sources)")
    root = tmp_path / "FlashOCC"
    make_repo(root, {"tools/train.py": "# upstream\n", "tools/test.py": "# upstream\n",
                     "projects/configs/flashocc/flashocc-r50.py": STANDIN_CONFIG.format(
                         root="data/nuscenes/", batch=4, workers=4, lr=1e-4, epochs=24),
                     "projects/configs/flashocc/flashocc-r50-smoke.py": STANDIN_CONFIG.format(
                         root="data/nuscenes-synthetic/", batch=2, workers=1, lr=2e-3, epochs=10),
                     ".gitignore": "work_dirs/*\n/test\n"})
    (root / "test").mkdir()  # the launch scripts linked one by one: outputs stay in this tree
    for script in (KIT_ROOT / "test").glob("*.sh"):
        (root / "test" / script.name).symlink_to(script)
    return root


@pytest.fixture
def launch(tmp_path, flashocc_tree):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    standin = bin_dir / "torchrun"
    standin.write_text(STANDIN.format(python=sys.executable))
    standin.chmod(0o755)
    record = tmp_path / "calls.jsonl"

    def run(script: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, list]:
        record.unlink(missing_ok=True)
        full_env = {**os.environ, "FLASHOCC_TORCHRUN": str(standin),
                    "STANDIN_RECORD": str(record), "STANDIN_RECORDED": str(RECORDED), "FLASHOCC_DEVICE": "cpu",
                    **(env or {})}
        for var in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "FLASHOCC_SMOKE", "ASCEND_TOOLKIT_HOME",
                    "ASCEND_HOME_PATH", "HCCL_IF_IP", "COMBINED_ENABLE", "TASK_QUEUE_ENABLE"):
            if var not in (env or {}):
                full_env.pop(var, None)
        # stand-in trees have no data: the quick data check is tested with real data (test_check_data.py)
        args = (*args, "--no-data-check")
        proc = subprocess.run(["bash", f"test/{script}", *args], cwd=flashocc_tree, env=full_env,
                              capture_output=True, text=True, timeout=300)
        calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
        return proc, calls

    return run


def torchrun_options(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a and not a.startswith("--cfg"))


def cfg_options(argv: list[str]) -> list[str]:
    return argv[argv.index("--cfg-options") + 1:]


def test_perf_script_defaults(launch, flashocc_tree):
    proc, calls = launch("train_8p_flashocc_r50_perf.sh")
    assert proc.returncode == 0, proc.stderr
    (call,) = calls
    assert torchrun_options(call["argv"]) == {"nnodes": "1", "node_rank": "0", "nproc_per_node": "8",
                                              "master_addr": "127.0.0.1", "master_port": "29500",
                                              "monitor_interval": "0.1"}
    argv = call["argv"]
    assert argv[argv.index("tools/train.py") + 1] == "projects/configs/flashocc/flashocc-r50.py"
    assert argv[argv.index("--launcher"):argv.index("--launcher") + 2] == ["--launcher", "pytorch"]
    opts = cfg_options(argv)
    assert "data.samples_per_gpu=4" in opts  # the seed's global batch 32 on 8 devices
    assert {"runner.type=IterBasedRunner", "runner.max_iters=200", "runner.max_epochs=None"} <= set(opts)
    assert Path(call["cwd"]) == flashocc_tree
    assert call["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(flashocc_tree)


def test_options_reach_torchrun_and_the_config(launch, tmp_path):
    import zipfile

    (tmp_path / "wd").mkdir()
    with zipfile.ZipFile(tmp_path / "wd" / "iter_40.pth", "w") as archive:  # a sound checkpoint to resume from
        archive.writestr("iter_40/data.pkl", b"x")
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--num-npu", "4", "--batch-size", "6", "--max-iters", "50",
                         "--data-root", "/data/nuscenes", "--work-dir", str(tmp_path / "wd"),
                         "--resume", "auto")
    assert proc.returncode == 0, proc.stderr
    argv = calls[0]["argv"]
    assert torchrun_options(argv)["nproc_per_node"] == "4"
    opts = cfg_options(argv)
    assert {"data.samples_per_gpu=6", "runner.max_iters=50", "data.train.data_root=/data/nuscenes/",
            "data.train.ann_file=/data/nuscenes/bevdetv2-nuscenes_infos_train.pkl",
            "data.test.ann_file=/data/nuscenes/bevdetv2-nuscenes_infos_val.pkl"} <= set(opts)
    assert argv[argv.index("--work-dir") + 1] == str(tmp_path / "wd")
    assert argv[argv.index("--resume-from") + 1] == str(tmp_path / "wd" / "iter_40.pth")


def test_multi_node_variables(launch):
    # node 1's launcher meets node 0 before torchrun: a node 0 meets it here, on a free local port
    port = free_port()
    node_0 = threading.Thread(target=meet, args=(Nodes(2, 0, "127.0.0.1", port), None, 120.0), daemon=True)
    node_0.start()
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", env={"NNODES": "2", "NODE_RANK": "1",
                                                               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    node_0.join(timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert torchrun_options(calls[0]["argv"]) == {"nnodes": "2", "node_rank": "1", "nproc_per_node": "8",
                                                  "master_addr": "127.0.0.1", "master_port": str(port),
                                                  "monitor_interval": "0.1"}
    assert "_bs64_16p_" in proc.stdout  # the case name records the global batch and all ranks


def test_seed_interface_epochs_is_a_performance_run(launch, flashocc_tree):
    proc, calls = launch("train_8p_flashocc_r50.sh", "--epochs=1")
    assert proc.returncode == 0, proc.stderr
    (call,) = calls  # no evaluation
    opts = cfg_options(call["argv"])
    assert "runner.max_epochs=1" in opts and not any(o.startswith("runner.type") for o in opts)
    out = flashocc_tree / OUTPUT_DIR / "FlashOCC_R50_bs32_8p_perf"
    assert (out / "FlashOCC_R50_bs32_8p_perf.log").exists()


def test_seed_interface_without_arguments_trains_24_epochs_then_evaluates(launch, flashocc_tree):
    proc, calls = launch("train_8p_flashocc_r50.sh")
    assert proc.returncode == 0, proc.stderr
    train, test = calls
    assert "runner.max_epochs=24" in cfg_options(train["argv"])
    argv = test["argv"]
    assert argv[argv.index("tools/test.py") + 2].endswith("work_dirs/FlashOCC_R50_bs32_8p_acc/epoch_24_ema.pth")
    assert argv[argv.index("--eval") + 1] == "mIoU"
    log = (flashocc_tree / OUTPUT_DIR / "FlashOCC_R50_bs32_8p_acc/FlashOCC_R50_bs32_8p_acc.log").read_text()
    fields = dict(line.split(" = ", 1) for line in log.splitlines() if " = " in line)
    assert {"Network", "DeviceType", "RankSize", "BatchSize", "CaseName", "E2ETrainingTime", "TrainingTime",
            "ActualFPS", "ActualLoss", "mIoU"} <= set(fields)
    assert fields["RankSize"] == "8" and fields["CaseName"] == "FlashOCC_R50_bs32_8p_acc"
    summary = json.loads((flashocc_tree / OUTPUT_DIR / "FlashOCC_R50_bs32_8p_acc/"
                          "FlashOCC_R50_bs32_8p_acc_summary.json").read_text())
    assert summary["environment"]["device"] == "cpu" and summary["environment"]["device_count"] == 8
    assert (flashocc_tree / OUTPUT_DIR / "FlashOCC_R50_bs32_8p_acc/FlashOCC_R50_bs32_8p_acc_curves.png").stat().st_size


def test_fp16_scripts_switch_the_backbone_to_half_precision(launch):
    for script in ("train_8p_flashocc_r50_fp16_perf.sh", "train_8p_flashocc_r50_fp16_full.sh"):
        proc, calls = launch(script)
        assert proc.returncode == 0, proc.stderr
        assert all("model.img_backbone_fp16=True" in cfg_options(c["argv"]) for c in calls)
        assert "_fp16backbone" in proc.stdout


# In the launcher's own process, at its exit: which of torch and mmcv it imported
IMPORTS_AT_EXIT = """
import atexit, sys
if sys.argv[0].endswith("kit.py"):
    atexit.register(lambda: print("[test] launcher imported: " + " ".join(
        name for name in ("torch", "mmcv") if sys.modules.get(name) is not None), file=sys.stderr))
"""


def test_the_launcher_reads_the_config_without_importing_torch(launch, tmp_path):
    """torch's import is most of a launcher's start-up, and the launcher reads configs but trains nothing."""
    from conftest import sitecustomize_pythonpath

    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--num-npu", "2", "--batch-size", "3",
                         env={"PYTHONPATH": sitecustomize_pythonpath(tmp_path / "site", IMPORTS_AT_EXIT)})
    assert proc.returncode == 0, proc.stderr
    assert "data.samples_per_gpu=3" in cfg_options(calls[0]["argv"])
    (imported,) = [line for line in proc.stderr.splitlines() if line.startswith("[test] launcher imported:")]
    assert imported.split(":")[1].split() == []  # neither: the config's mmcv is forgotten after the read


def test_a_process_that_read_a_config_still_imports_the_whole_of_mmcv(flashocc_tree):
    code = ("import sys; from pathlib import Path; from flashocc_kit.training.run import SMOKE_CONFIG, read_config; "
            "print(read_config(Path(sys.argv[1]), SMOKE_CONFIG).data_root); "
            "from mmcv.runner import EpochBasedRunner; from mmcv.utils import Registry; import torch; print('whole')")
    proc = subprocess.run([sys.executable, "-c", code, str(flashocc_tree)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(KIT_ROOT / "tools")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["data/nuscenes-synthetic/", "whole"]


@pytest.mark.parametrize("failing, code", [("train.py:3", 3), ("test.py:1", 1)])
def test_a_failed_run_exits_non_zero_with_its_cause_and_the_log_tail(launch, flashocc_tree, failing, code):
    before = git(flashocc_tree, "status", "--porcelain", "--ignored")
    proc, _ = launch("train_8p_flashocc_r50_full.sh", "--epochs", "2", env={"STANDIN_FAIL": failing})
    assert proc.returncode == code
    assert "rank 1 failed (killed by signal 9)" in proc.stderr
    assert "last lines of" in proc.stderr and "stand-in failure on purpose" in proc.stderr
    out = flashocc_tree / OUTPUT_DIR / "FlashOCC_R50_bs32_8p_acc"
    assert not (out / "FlashOCC_R50_bs32_8p_acc.log").exists()  # no summary of a failed run
    after = git(flashocc_tree, "status", "--porcelain", "--ignored")
    assert [line for line in after.splitlines() if "work_dirs" not in line] == \
        [line for line in before.splitlines() if "work_dirs" not in line]


def mark_smoke_set_generated(flashocc_tree: Path) -> None:
    """The stand-in tree's smoke set as if generated before: a smoke launch reuses it instead of making one."""
    from flashocc_kit.synth.generate import FORMAT_VERSION
    from flashocc_kit.synth.options import SynthOptions
    from flashocc_kit.synth.target import MARKER
    from flashocc_kit.training.run import SMOKE_CONFIG, SMOKE_DATA, read_config

    data = flashocc_tree / read_config(flashocc_tree, SMOKE_CONFIG).data_root
    data.mkdir(parents=True)
    (data / MARKER).write_text(json.dumps({"parameters": SynthOptions(**SMOKE_DATA).parameters(),
                                           "format_version": FORMAT_VERSION}))


def test_smoke_flag_selects_the_cpu_smoke_configuration(launch, flashocc_tree):
    mark_smoke_set_generated(flashocc_tree)
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--max-iters", "5", env={"FLASHOCC_SMOKE": "1"})
    assert proc.returncode == 0, proc.stderr
    call = calls[0]
    assert "projects/configs/flashocc/flashocc-r50-smoke.py" in call["argv"]
    assert torchrun_options(call["argv"])["nproc_per_node"] == "2"
    assert call["env"]["FLASHOCC_DEVICE"] == "cpu" and call["env"]["CUDA_VISIBLE_DEVICES"] == ""


def test_cpu_ranks_share_the_cores_unless_the_caller_set_a_thread_count(launch, flashocc_tree):
    from flashocc_kit.hostinfo import usable_cpus

    mark_smoke_set_generated(flashocc_tree)
    args = ("train_8p_flashocc_r50_perf.sh", "--smoke", "--num-npu", "1", "--max-iters", "5")
    proc, calls = launch(*args, env={"OMP_NUM_THREADS": "", "MKL_NUM_THREADS": ""})  # empty: as if unset
    assert proc.returncode == 0, proc.stderr
    assert (calls[0]["env"]["OMP_NUM_THREADS"], calls[0]["env"]["MKL_NUM_THREADS"]) == (str(usable_cpus()),) * 2
    proc, calls = launch(*args, env={"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"})  # as CI sets one
    assert proc.returncode == 0, proc.stderr
    assert calls[0]["env"]["OMP_NUM_THREADS"] == "3"


def test_bad_options_are_refused_before_anything_runs(launch):
    proc, calls = launch("train_8p_flashocc_r50_full.sh", "--max-iters", "10")
    assert proc.returncode == 2 and "--max-iters is for performance runs" in proc.stderr
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--num-npu", "0")
    assert proc.returncode == 2 and "at least 1" in proc.stderr
    assert calls == []


def test_scripts_work_when_test_is_copied_by_hand(launch, flashocc_tree, tmp_path):
    """The seed's `cp -r test/ FlashOCC/`, with the kit as FlashOCC's parent directory."""
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "tools").symlink_to(KIT_ROOT / "tools")
    moved = kit / "FlashOCC"
    shutil.move(str(flashocc_tree), moved)
    shutil.rmtree(moved / "test")
    shutil.copytree(KIT_ROOT / "test", moved / "test", ignore=shutil.ignore_patterns("output"))
    proc = subprocess.run(["bash", "test/train_8p_flashocc_r50_perf.sh", "--dry-run"], cwd=moved, text=True,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert "tools/train.py projects/configs/flashocc/flashocc-r50.py" in proc.stdout


def test_the_learning_rate_follows_the_global_batch(launch):
    """lr = the config's x sqrt(global batch / the config's), 3 digits: the reference port's 2.45e-4 at 8 x 24."""
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--batch-size", "24", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "global batch 192" in proc.stdout and "lr 2.45e-04: the config's 0.0001 at global batch 32 x " \
        "sqrt(192 / 32)" in proc.stdout and "optimizer.lr=0.000245" in proc.stdout
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--max-iters", "5")
    assert "optimizer.lr=0.0001" in cfg_options(calls[0]["argv"])
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--batch-size", "24", "--lr", "3e-4", "--max-iters", "5")
    assert "optimizer.lr=0.0003" in cfg_options(calls[0]["argv"]) and "lr 3.00e-04: --lr 0.0003" in proc.stdout


def test_the_2025_08_preset_is_the_reference_recipe_and_the_summary_records_the_lr(launch, flashocc_tree):
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--preset", "drivingsdk-2025-08", "--max-iters", "5")
    assert proc.returncode == 0, proc.stderr
    opts = cfg_options(calls[0]["argv"])
    assert {"data.samples_per_gpu=24", "data.workers_per_gpu=24", "optimizer.lr=0.000245"} <= set(opts)
    summary = json.loads((flashocc_tree / OUTPUT_DIR / "FlashOCC_R50_bs192_8p_perf" /
                          "FlashOCC_R50_bs192_8p_perf_summary.json").read_text())
    assert summary["lr"] == 2.45e-4 and summary["global_batch"] == 192 and "--lr" in summary["lr_rule"]
    console = (flashocc_tree / OUTPUT_DIR / "FlashOCC_R50_bs192_8p_perf" / "train_console.log").read_text()
    assert console.startswith("FlashOCC_R50_bs192_8p_perf:") and "lr 2.45e-04" in console


def test_on_an_ascend_host_the_reference_environment_is_set_where_unset(launch, tmp_path):
    cann = tmp_path / "cann"
    cann.mkdir()
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--max-iters", "5", env={"ASCEND_TOOLKIT_HOME": str(cann)})
    assert proc.returncode == 0, proc.stderr
    env = calls[0]["env"]
    first = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    assert env["TASK_QUEUE_ENABLE"] == "2" and env["COMBINED_ENABLE"] == "1"
    assert env["HCCL_IF_IP"] == (first[0] if first else None)
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--max-iters", "5",
                         env={"ASCEND_TOOLKIT_HOME": str(cann), "HCCL_IF_IP": "10.0.0.7", "COMBINED_ENABLE": "0"})
    assert calls[0]["env"]["HCCL_IF_IP"] == "10.0.0.7" and calls[0]["env"]["COMBINED_ENABLE"] == "0"
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--max-iters", "5")  # not Ascend: none of it
    assert calls[0]["env"]["COMBINED_ENABLE"] is None and calls[0]["env"]["TASK_QUEUE_ENABLE"] is None


def aged_heartbeat(path: Path, pid: int, launch: str | None) -> None:
    """A heartbeat ten minutes old, of a rank in training, naming pid: what a dead run leaves behind."""
    import socket
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rank": 0, "epoch": 2, "iter": 7, "phase": "train", "time": time.time() - 600,
                                "pid": pid, "host": socket.gethostname(), "launch": launch}))


def test_a_resumed_run_ignores_a_dead_launchs_heartbeats_and_never_signals_their_pids(launch, tmp_path):
    """A crashed run's heartbeats (the old flat layout and a per-launch one) name a PID a stranger holds now."""
    import zipfile

    stranger = subprocess.Popen(["sleep", "300"])
    try:
        work = tmp_path / "wd"
        work.mkdir()
        with zipfile.ZipFile(work / "iter_40.pth", "w") as archive:
            archive.writestr("iter_40/data.pkl", b"x")
        old_files = [work / ".heartbeat" / "rank0.json", work / ".heartbeat" / "20260101-000000-host-1" / "rank0.json"]
        aged_heartbeat(old_files[0], stranger.pid, None)
        aged_heartbeat(old_files[1], stranger.pid, "20260101-000000-host-1")
        proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--work-dir", str(work), "--resume", "auto",
                             env={"STANDIN_SECONDS": "5"})
        assert proc.returncode == 0, proc.stderr
        assert "stalled" not in proc.stderr and len(calls) == 1
        assert stranger.poll() is None, f"the unrelated process died (status {stranger.returncode})"
        assert all(path.is_file() for path in old_files)  # not this launch's to delete
        # and this launch removed its own heartbeat directory when it ended
        assert sorted(p.name for p in (work / ".heartbeat").iterdir()) == sorted([old_files[1].parent.name,
                                                                                  "rank0.json"])
    finally:
        stranger.kill()
        stranger.wait()


def test_a_stall_asks_only_this_launchs_ranks_for_their_stacks(launch, tmp_path):
    """Both heartbeats are this launch's, one names a rank, the other a PID a stranger holds: only the rank is asked."""
    stranger = subprocess.Popen(["sleep", "300"])
    marker = tmp_path / "rank-was-signalled"
    try:
        proc, _ = launch("train_8p_flashocc_r50_perf.sh", "--stall-timeout", "30",
                         env={"STANDIN_STALL": str(marker), "STANDIN_STRANGER": str(stranger.pid)})
        assert proc.returncode == 124, proc.stderr
        assert "rank(s) 0, 1 stopped logging iterations" in proc.stderr
        assert marker.read_text() == "stack asked"  # the launcher's descendant got SIGUSR1
        assert stranger.poll() is None, f"the unrelated process died (status {stranger.returncode})"
    finally:
        stranger.kill()
        stranger.wait()


def test_profile_options_reach_the_ranks_and_a_window_longer_than_the_run_is_refused(launch, flashocc_tree):
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--max-iters", "20", "--profile-steps", "3",
                         "--profile-ranks", "0,7", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--max-iters", "8", "--profile")
    assert proc.returncode == 2 and "--profile records 5 steps after 5 warm-up steps, but the run has 8" in proc.stderr
    assert calls == []
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--profile-ranks", "9")
    assert proc.returncode == 2 and "rank(s) 9 are not in this run (ranks 0 to 7)" in proc.stderr
    proc, calls = launch("train_8p_flashocc_r50_perf.sh", "--max-iters", "20", "--profile-warmup", "2",
                         "--profile-ranks", "all")
    assert proc.returncode != 0  # the stand-in writes no profile record: named, not a crash
    assert "no profile record in" in proc.stderr and "Traceback" not in proc.stderr
    settings = json.loads(calls[0]["env"]["FLASHOCC_PROFILE"])
    assert settings == {"directory": settings["directory"], "wait": 2, "active": 5, "ranks": "all"}
    assert settings["directory"].endswith("/profile")
