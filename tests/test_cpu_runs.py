"""Real runs of the launch scripts on CPU: two ranks over gloo on the synthetic set.

The perf script really trains (a few iterations of the smoke configuration), its summary is
judged by the gate both ways, and a rank killed mid-run makes the script fail with the cause,
leaving the source tree as it was.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KIT_ROOT, free_port, git, sitecustomize_pythonpath

PERF_CASE = "FlashOCC_R50_cpusmoke_bs4_2p_perf"  # the smoke perf run's case name: 2 ranks x 2 samples


def run_env() -> dict[str, str]:
    env = {**os.environ, "MASTER_PORT": str(free_port())}
    for var in ("NNODES", "NODE_RANK", "MASTER_ADDR", "FLASHOCC_SMOKE", "FLASHOCC_TORCHRUN"):
        env.pop(var, None)
    return env


def tracked_changes(flashocc: Path) -> str:
    return git(flashocc, "status", "--porcelain", "--untracked-files=no")


def process_tree(root: int) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of root and its descendants, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            table[int(entry.name)] = (int(stat[stat.rfind(")") + 2:].split()[1]), command)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            tree.append((pid, table[pid][0], table[pid][1]))
            todo += [child for child, (parent, _) in table.items() if parent == pid]
    return tree


# Each rank counts the calls of yapf's FormatCode (what mmcv's Config.pretty_text runs), replaced before mmcv imports
# it, and says how many at exit.
FORMAT_COUNT_SITECUSTOMIZE = """
import atexit, os, sys
if any(a.endswith("train.py") for a in sys.argv):
    from yapf.yapflib import yapf_api
    original, calls = yapf_api.FormatCode, [0]
    def FormatCode(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)
    yapf_api.FormatCode = FormatCode
    atexit.register(lambda: print(f"[test] rank {os.environ.get('RANK')}: config formatted {calls[0]} times",
                                  file=sys.stderr, flush=True))
"""
FORMAT_CALLS = re.compile(r"\[test\] rank (\d+): config formatted (\d+) times")


PERF_ITERS = 10  # the default profile window's 5 warm-up and 5 recorded steps, no more


@pytest.fixture(scope="module")
def perf_run(flashocc_root, tmp_path_factory):
    """The perf script's smoke run, profiled too (steps 6-10): one real run serves the perf, gate, profile,
    process-tree and config-formatting tests. While its ranks train, the processes under the script are recorded."""
    out = tmp_path_factory.mktemp("perf")
    before = tracked_changes(flashocc_root)
    env = {**run_env(), "PYTHONPATH": sitecustomize_pythonpath(out / "site", FORMAT_COUNT_SITECUSTOMIZE)}
    proc = subprocess.Popen(["bash", "test/train_8p_flashocc_r50_perf.sh", "--smoke", "--max-iters", str(PERF_ITERS),
                             "--profile", "--work-dir", str(out / "work"), "--output-dir", str(out / "output")],
                            cwd=flashocc_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree: list = []

    def watch() -> None:  # the ranks are training once a heartbeat says so
        deadline = time.time() + 1200
        while time.time() < deadline and proc.poll() is None:
            beats = [json.loads(p.read_text()) for p in (out / "work").glob(".heartbeat/*/rank*.json")
                     if p.stat().st_size]
            if len(beats) == 2 and all(b["phase"] == "train" and b["iter"] >= 3 for b in beats):
                tree.extend(process_tree(proc.pid))
                return
            time.sleep(0.5)

    import threading

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate(timeout=1800)
    watcher.join(5)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out, before, (proc.pid, tree)


def test_perf_script_trains_on_cpu_with_two_ranks(perf_run, flashocc_root):
    from mmcv import Config

    from flashocc_kit.training.run import SMOKE_CONFIG

    proc, out, before, _ = perf_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "output" / f"{PERF_CASE}_summary.json").read_text())
    assert summary["rank_size"] == 2 and summary["environment"]["device"] == "cpu"
    assert summary["global_batch"] == 4 and summary["step_time_s"]["mean"] > 0
    fields = dict(line.split(" = ", 1) for line in (out / "output" / f"{PERF_CASE}.log").read_text().splitlines())
    assert fields["RankSize"] == "2" and float(fields["ActualFPS"]) > 0 and float(fields["ActualLoss"]) > 0
    assert f"iter_{PERF_ITERS}.pth" in os.listdir(out / "work")
    assert tracked_changes(flashocc_root) == before  # no source or config file edited
    # tools/train.py decides pinned host memory by device: none on the CPU (there is no device copy to speed up)
    assert "data loader pin_memory: False" in proc.stdout
    assert Config.fromfile(str(out / "work" / Path(SMOKE_CONFIG).name)).data.pin_memory is False


def test_only_rank_0_formats_the_config(perf_run):
    """yapf's formatting of the whole config, about 0.6 s of a core a call, asked for four times by upstream's
    tools/train.py on every rank: the port's formats on rank 0 alone, which writes the dump, the log and the
    checkpoints, and no more than three times; the checkpoint still carries the config text."""
    import torch

    from flashocc_kit.training.run import SMOKE_CONFIG

    proc, out, _, _ = perf_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert dict(FORMAT_CALLS.findall(proc.stdout + proc.stderr)) == {"0": "3", "1": "0"}, proc.stderr[-2000:]
    meta = torch.load(out / "work" / f"iter_{PERF_ITERS}.pth", map_location="cpu", weights_only=False)["meta"]
    assert meta["config"] == (out / "work" / Path(SMOKE_CONFIG).name).read_text()  # what rank 0 dumped, as before
    assert "data_root = " in meta["config"]


def test_the_run_logs_its_learning_rate_rule_and_trains_with_that_lr(perf_run, flashocc_root):
    """The launcher's rule (here: the config's lr at the config's global batch) in its log and the summary, and
    the lr in the config the ranks dumped into their work directory."""
    from mmcv import Config

    from flashocc_kit.training.run import SMOKE_CONFIG, read_config

    proc, out, _, _ = perf_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config_lr = read_config(flashocc_root, SMOKE_CONFIG).lr
    summary = json.loads((out / "output" / f"{PERF_CASE}_summary.json").read_text())
    assert summary["lr"] == config_lr and summary["global_batch"] == 4
    assert summary["lr_rule"].startswith(f"the config's {config_lr:g} (global batch 4")
    assert f"lr {config_lr:.2e}: {summary['lr_rule']}" in proc.stdout
    assert Config.fromfile(str(out / "work" / Path(SMOKE_CONFIG).name)).optimizer.lr == config_lr


@pytest.mark.parametrize("factor, code", [(2.0, 0), (0.5, 1)])
def test_gate_passes_and_fails_where_it_should(perf_run, tmp_path, factor, code):
    proc, out, _, _ = perf_run
    assert proc.returncode == 0
    summary_path = out / "output" / f"{PERF_CASE}_summary.json"
    measured = json.loads(summary_path.read_text())["step_time_s"]["mean"]
    baselines = tmp_path / "baselines.json"
    baselines.write_text(json.dumps({"schema": 1, "sources": {"test": "this test"}, "baselines": [
        {"name": "cpu-smoke", "device": "cpu", "precision": "fp32", "global_batch": 4, "rank_size": 2,
         "step_time_s": measured * factor, "source": "test"}]}))
    gate = subprocess.run([sys.executable, str(KIT_ROOT / "tools" / "kit.py"), "gate", "--summary", str(summary_path),
                           "--baselines", str(baselines)], capture_output=True, text=True)
    assert gate.returncode == code, gate.stdout + gate.stderr
    assert "step" in gate.stdout.lower()


def rank_pids(marker: str) -> dict[int, int]:
    """local rank -> pid of the training processes whose command line mentions marker.

    Data-loader workers are forks of their rank (same command line, same LOCAL_RANK): a rank is
    the matching process whose parent is not itself a match.
    """
    matches: dict[int, tuple[int, int]] = {}  # pid -> (local rank, parent pid)
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc_dir / "environ").read_bytes().split(b"\0")
            parent = int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        local = [e for e in environ if e.startswith(b"LOCAL_RANK=")]
        if "tools/train.py" in cmdline and marker in cmdline and local:
            matches[int(proc_dir.name)] = (int(local[0].split(b"=")[1]), parent)
    return {rank: pid for pid, (rank, parent) in matches.items() if parent not in matches}


def test_a_rank_killed_mid_run_fails_the_script_with_the_cause(flashocc_root, tmp_path):
    before = tracked_changes(flashocc_root)
    work = tmp_path / "killed-work"
    console = tmp_path / "out" / "train_console.log"
    # The script's output goes to files, not pipes: an unread pipe fills and stalls the run.
    stdout_path, stderr_path = tmp_path / "script.stdout", tmp_path / "script.stderr"
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        proc = subprocess.Popen(["bash", "test/train_8p_flashocc_r50_perf.sh", "--smoke", "--max-iters", "500",
                                 "--work-dir", str(work), "--output-dir", str(tmp_path / "out")],
                                cwd=flashocc_root, env=run_env(), stdout=stdout, stderr=stderr, text=True)
        deadline = time.time() + 900
        while time.time() < deadline and proc.poll() is None:
            if console.exists() and "Iter [2/500]" in console.read_text(errors="replace"):
                break
            time.sleep(2)
        ranks = rank_pids(str(work))
        assert proc.poll() is None and set(ranks) == {0, 1}, "the run did not reach its second iteration"
        os.kill(ranks[1], signal.SIGKILL)
        proc.wait(timeout=300)
    stderr = stderr_path.read_text()
    assert proc.returncode != 0
    assert "rank 1 failed (killed by signal 9)" in stderr, stderr[-3000:]
    assert "last lines of" in stderr
    assert not list((tmp_path / "out").glob("*_summary.json"))
    assert tracked_changes(flashocc_root) == before


def test_a_profiled_run_writes_its_trace_the_step_split_and_the_top_operators(perf_run):
    proc, out, _, _ = perf_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    profile = json.loads((out / "output" / f"{PERF_CASE}_summary.json").read_text())["profile"]
    assert profile["profiler"] == "torch.profiler" and profile["device"] == "cpu" and profile["rank"] == 0
    assert profile["recorded_steps"] == 5 and profile["wait"] == 5
    phases = {row["phase"]: row for row in profile["split"]}
    assert list(phases)[:4] == ["data", "forward", "backward", "optimizer"]
    assert all(phases[p]["ms_per_step"] > 0 for p in ("forward", "backward", "optimizer"))
    assert 0.9 < sum(row["share"] for row in profile["split"]) < 1.1  # the split accounts for the step
    assert phases["backward"]["ms_per_step"] > phases["optimizer"]["ms_per_step"]
    ops = profile["top_operators"]
    assert len(ops) >= 5 and all(op["name"].startswith("aten::") for op in ops[:5])
    assert ops == sorted(ops, key=lambda op: -op["self_ms_per_step"])
    traces = list(Path(profile["trace_dir"]).glob("*.pt.trace.json"))  # TensorBoard's and Perfetto's format
    assert len(traces) == 1 and json.loads(traces[0].read_text())["traceEvents"]
    assert Path(profile["table_png"]).stat().st_size > 10_000
    assert "profile: rank 0, torch.profiler on cpu, 5 steps after 5 warm-up steps" in proc.stdout
    assert "aten::" in proc.stdout.split("profile: rank 0", 1)[1]


def test_the_script_is_the_launcher_which_runs_torchrun_which_runs_the_ranks(perf_run):
    """Three levels and nothing else of the kit's while ranks train: the script's process is the launcher (exec,
    no re-execution left behind), its one child torchrun, torchrun's children the two ranks."""
    proc, _, _, (pid, tree) = perf_run
    assert proc.returncode == 0 and tree, "no process tree recorded while the ranks trained"
    (launcher,) = [t for t in tree if t[0] == pid]  # the script exec'ed into it: the same process
    assert "kit.py launch perf" in launcher[2], launcher
    children = [t for t in tree if t[1] == launcher[0]]
    assert len(children) == 1 and "torch.distributed.run" in children[0][2], children
    ranks = [t for t in tree if t[1] == children[0][0]]
    assert len(ranks) == 2 and all("tools/train.py" in r[2] for r in ranks), ranks
    below_ranks = [t for t in tree if t[1] in {r[0] for r in ranks}]
    # beneath the ranks only their data-loader workers (the same interpreter, forked)
    assert all(t[2] == next(r[2] for r in ranks if r[0] == t[1]) for t in below_ranks), below_ranks
    assert len(tree) == 1 + 1 + 2 + len(below_ranks)
    # the exact torchrun command, printed at the start of the run
    assert any(line.startswith("$ ") and "torch.distributed.run" in line for line in proc.stdout.splitlines())
