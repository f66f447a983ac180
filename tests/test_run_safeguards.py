"""What keeps a long run alive or ends it clearly: sound resume points, the nodes' meeting, the stall watch,
the checks before any rank starts."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest

from conftest import free_port
from flashocc_kit.errors import KitError
from flashocc_kit.training import checkpoints, nodes, preflight
from flashocc_kit.training.watch import HEARTBEATS, StallWatch


def torch_like_checkpoint(path: Path, payload: bytes = b"x" * 4096) -> Path:
    """What torch.save writes: a zip archive holding <name>/data.pkl and the tensor data."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{path.stem}/data.pkl", b"pickle")
        archive.writestr(f"{path.stem}/data/0", payload)
    return path


def test_a_checkpoint_cut_off_mid_save_is_skipped_for_the_one_before(tmp_path):
    torch_like_checkpoint(tmp_path / "epoch_1.pth")
    second = torch_like_checkpoint(tmp_path / "epoch_2.pth")
    second.write_bytes(second.read_bytes()[: len(second.read_bytes()) // 2])  # the job died while writing it
    (tmp_path / "latest.pth").symlink_to("epoch_2.pth")
    torch_like_checkpoint(tmp_path / "epoch_2_ema.pth")  # EMA copies are not resume points
    found, skipped = checkpoints.resume_point(tmp_path)
    assert found == tmp_path / "epoch_1.pth"
    assert len(skipped) == 1 and "latest.pth -> epoch_2.pth" in skipped[0] and "cut off" in skipped[0]


def test_resume_auto_takes_the_newest_sound_checkpoint_of_its_kind(tmp_path):
    for name in ("epoch_1.pth", "epoch_3.pth", "epoch_2.pth", "epoch_3_ema.pth"):  # written out of order
        torch_like_checkpoint(tmp_path / name)
    assert checkpoints.resume_point(tmp_path) == (tmp_path / "epoch_3.pth", [])
    iters = tmp_path / "iters"
    iters.mkdir()
    for number in (200, 1000, 400):  # numbers, not names: iter_1000 after iter_400
        torch_like_checkpoint(iters / f"iter_{number}.pth")
    assert checkpoints.resume_point(iters)[0] == iters / "iter_1000.pth"


def test_a_damaged_or_missing_resume_path_is_refused_before_training(tmp_path):
    with pytest.raises(KitError, match="no such checkpoint"):
        checkpoints.check_resume_path(tmp_path / "nope.pth")
    bad = tmp_path / "epoch_3.pth"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(KitError, match="not a complete torch checkpoint"):
        checkpoints.check_resume_path(bad)
    assert checkpoints.resume_point(tmp_path / "empty")[0] is None


def test_legs_of_a_resumed_run_accumulate_a_killed_leg_counts_and_a_fresh_start_forgets_them(tmp_path):
    started = time.time() - 300
    checkpoints.start_leg(tmp_path, started, None)  # then killed outright: never finished
    heartbeat = tmp_path / HEARTBEATS / "20260101-000000-host-1" / "rank0.json"  # that launch's
    heartbeat.parent.mkdir(parents=True)
    heartbeat.write_text("{}")
    os.utime(heartbeat, (started + 120, started + 120))  # its last sign of life
    checkpoints.start_leg(tmp_path, time.time(), tmp_path / "epoch_1.pth")
    legs = checkpoints.finish_leg(tmp_path, 40.0, "ok")
    assert [leg["seconds"] for leg in legs] == [120.0, 40.0] and legs[1]["resumed_from"].endswith("epoch_1.pth")
    assert legs[0]["outcome"].startswith("interrupted") and legs[1]["outcome"] == "ok"
    assert len(legs[0]["stamp"]) == len("20261201_101500")
    checkpoints.start_leg(tmp_path, time.time(), None)
    assert len(checkpoints.finish_leg(tmp_path, 5.0, "ok")) == 1



def meet_both(failures: dict[int, str | None], timeout: float = 30.0) -> dict[int, object]:
    port = free_port() - 1  # the barrier listens on MASTER_PORT + 1
    results: dict[int, object] = {}

    def node(rank: int) -> None:
        try:
            nodes.meet(nodes.Nodes(2, rank, "127.0.0.1", port), failures.get(rank), timeout)
            results[rank] = "go"
        except KitError as exc:
            results[rank] = str(exc)

    threads = [threading.Thread(target=node, args=(rank,)) for rank in (1, 0)]  # node 1 may come first
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return results


def test_nodes_that_are_ready_start_together():
    assert meet_both({}) == {0: "go", 1: "go"}


@pytest.mark.parametrize("failing", [0, 1])
def test_a_node_that_fails_before_torchrun_stops_every_node_promptly_with_its_cause(failing):
    started = time.time()
    results = meet_both({failing: "--resume /x.pth: no such checkpoint"})
    assert time.time() - started < 10
    for rank in (0, 1):
        assert "no such checkpoint" in results[rank]
    assert f"node {failing}: --resume /x.pth" in results[0]


def test_a_node_that_never_comes_is_named_after_the_timeout():
    started = time.time()
    port = free_port() - 1
    with pytest.raises(KitError, match=r"node\(s\) 1 did not report"):
        nodes.meet(nodes.Nodes(2, 0, "127.0.0.1", port), None, timeout=1.0)
    with pytest.raises(KitError, match="could not meet node 0"):
        nodes.meet(nodes.Nodes(2, 1, "127.0.0.1", port), None, timeout=1.0)
    assert time.time() - started < 15  # the timeout given, not the 600 s default


def beat(directory: Path, rank: int, iteration: int, when: float, phase: str = "train") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "epoch": 1, "iter": iteration, "phase": phase, "time": when, "pid": None}))


def test_the_stall_watch_names_the_ranks_that_stopped_and_where(tmp_path):
    now = 1000.0
    watch = StallWatch(tmp_path, [0, 1], timeout=30, started=now - 100, last_output=now)
    beat(tmp_path, 0, 12, now - 2)
    beat(tmp_path, 1, 7, now - 45)
    reason = watch.check(now)
    assert reason.startswith("stalled: rank(s) 1 stopped logging iterations (limit 30 s)")
    assert "rank 1: train, epoch 1, iteration 7 (45 s ago)" in reason
    beat(tmp_path, 1, 12, now - 1)
    assert watch.check(now) is None
    watch.last_output = now - 40  # silent, but iterating: a log interval longer than the limit, not a stall
    assert watch.check(now) is None
    beat(tmp_path, 0, 12, now - 35)  # one rank stopped while the other's heartbeat is fresh: named alone
    assert watch.check(now).startswith("stalled: rank(s) 0 stopped logging iterations and no output for 40 s")
    # silence counts when no rank is training (a validation, a checkpoint: no heartbeats then)
    beat(tmp_path, 0, 12, now - 40, phase="after epoch")
    beat(tmp_path, 1, 12, now - 40, phase="after epoch")
    assert "no output for 40 s" in watch.check(now)


def test_the_default_limit_follows_the_slowest_step_and_allows_a_slow_start(tmp_path):
    watch = StallWatch(tmp_path, [0], started=0.0, last_output=0.0)
    assert watch.check(600.0) is None  # no heartbeat yet: the start-up allowance (15 minutes)
    assert "never logged an iteration" in watch.check(1000.0)
    watch = StallWatch(tmp_path, [0], started=0.0, last_output=2000.0)
    beat(tmp_path, 0, 10, 1000.0)
    watch.check(1000.0)
    beat(tmp_path, 0, 11, 1400.0)  # one step of 400 s
    assert watch.check(1400.0) is None and watch.limit({0: None}) == 400.0 + 180.0


def test_only_this_launchs_heartbeats_from_this_host_count(tmp_path):
    """A file of another launch, or of this launch id written on another host (a shared work dir), is not ours."""
    import socket

    from flashocc_kit.training.watch import read_heartbeats

    now = 1000.0
    for rank, launch, host in ((0, "L1", socket.gethostname()), (1, "L1", "another-node"), (2, "L0", None)):
        (tmp_path / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "epoch": 1, "iter": 3, "phase": "train",
                                                               "time": now - 500, "pid": 1, "host": host,
                                                               "launch": launch}))
    assert set(read_heartbeats(tmp_path, "L1")) == {0}
    assert set(read_heartbeats(tmp_path)) == {0, 1, 2}  # the directory as it is, for tools that want every file
    watch = StallWatch(tmp_path, [0], timeout=600, launch="L1", started=now - 700, last_output=now)
    assert watch.check(now) is None  # rank 1's and rank 2's old files do not stall this run


def test_the_default_limit_never_drops_below_five_minutes(tmp_path):
    watch = StallWatch(tmp_path, [0], started=0.0, last_output=2000.0)
    beat(tmp_path, 0, 10, 1000.0)
    watch.check(1000.0)
    beat(tmp_path, 0, 11, 1010.0)  # steps of 10 s: 10 + 180 would be the limit without the floor
    assert watch.check(1010.0 + 299) is None and watch.limit({0: None}) == 300.0
    assert "rank(s) 0 stopped logging iterations (limit 300 s)" in watch.check(1010.0 + 301)


def test_a_heartbeat_exactly_as_old_as_the_limit_is_not_yet_a_stall(tmp_path):
    now = 1000.0
    watch = StallWatch(tmp_path, [0], timeout=30, started=now - 100, last_output=now)
    beat(tmp_path, 0, 5, now - 30)
    assert watch.check(now) is None
    assert watch.check(now + 0.5).startswith("stalled: rank(s) 0 stopped logging iterations")


def test_a_short_stall_timeout_keeps_the_start_up_allowance(tmp_path):
    """Building the model is not a step: with --stall-timeout 20 and no heartbeat yet, 15 minutes, as by default."""
    watch = StallWatch(tmp_path, [0, 1], timeout=20, started=0.0, last_output=0.0)
    assert watch.check(600.0) is None
    assert "never logged an iteration" in watch.check(901.0)


def test_checks_before_any_rank_starts(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(KitError, match="cannot be written"):
        preflight.check_work_dir(blocker / "work", smoke=False)
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 50 * 1024**2))
    with pytest.raises(KitError, match="only 50 MiB free"):
        preflight.check_work_dir(tmp_path / "work", smoke=False)
    # a GiB is room for the smoke run's small checkpoints, not for a real run's (~0.3 GB each, and logs)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 1024**3))
    preflight.check_work_dir(tmp_path / "work", smoke=True)
    with pytest.raises(KitError, match="only 1024 MiB free, and checkpoints need at least 2048 MiB"):
        preflight.check_work_dir(tmp_path / "work", smoke=False)


def test_more_devices_than_the_node_has_is_refused(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(preflight, "device_count", lambda run: ("npu", 4))
    with pytest.raises(KitError, match="--num-npu 8, but this node has 4 NPU device"):
        preflight.check_devices(SimpleNamespace(devices=8))
    preflight.check_devices(SimpleNamespace(devices=4))


TORCHRUN_SUMMARY = """tools/train.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-01_11:00:00
  host      : node-a
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4243)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4243
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-01_11:00:00
  host      : node-a
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 4242)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def test_a_killed_rank_is_named_as_the_cause_even_when_torchrun_saw_its_peer_fail_first():
    from flashocc_kit.training.stream import failure_cause

    log = "RuntimeError: Connection closed by peer [127.0.0.1]:29500\n" + TORCHRUN_SUMMARY
    cause = failure_cause(log)
    assert cause.startswith("rank 1 failed (killed by signal 9): Signal 9 (SIGKILL)"), cause
    assert "then rank 0 (exit code 1)" in cause and "last error: RuntimeError: Connection closed by peer" in cause


def test_without_a_killed_rank_the_root_cause_is_the_cause():
    from flashocc_kit.training.stream import failure_cause

    alone = TORCHRUN_SUMMARY.replace("exitcode  : -9", "exitcode  : 2")
    cause = failure_cause(alone)
    assert cause.startswith("rank 0 failed (exit code 1)") and "then rank 1 (exit code 2)" in cause, cause
    assert failure_cause("nothing useful") == "no cause found in the output (see the log tail above)"


def test_an_older_generators_smoke_set_is_made_anew_once_and_then_reused(tmp_path, monkeypatch):
    pytest.importorskip("cv2", reason="needs the generator's stack: run the suite in the kit's environment")
    from flashocc_kit.synth.generate import FORMAT_VERSION
    from flashocc_kit.synth.target import MARKER
    from flashocc_kit.training import execute

    small = {"width": 192, "height": 108, "train_scenes": 1, "val_scenes": 1, "samples_per_scene": 2, "workers": 1}
    monkeypatch.setattr(execute, "SMOKE_DATA", small)
    monkeypatch.setenv("FLASHOCC_KIT_CACHE", str(tmp_path / "cache"))  # not the user's
    root = tmp_path / "nuscenes-synthetic"
    execute.ensure_smoke_data(root, str(root))
    marker = json.loads((root / MARKER).read_text())
    marker["format_version"] = FORMAT_VERSION - 1  # as an earlier kit left it
    (root / MARKER).write_text(json.dumps(marker))
    execute.ensure_smoke_data(root, str(root))
    assert json.loads((root / MARKER).read_text())["format_version"] == FORMAT_VERSION
    written = (root / MARKER).stat().st_mtime_ns
    execute.ensure_smoke_data(root, str(root))  # current: kept as it is
    assert (root / MARKER).stat().st_mtime_ns == written


def test_a_second_workspace_copies_the_smoke_set_from_the_kits_cache_instead_of_rendering_it(tmp_path, monkeypatch):
    pytest.importorskip("cv2", reason="needs the generator's stack: run the suite in the kit's environment")
    from conftest import snapshot
    from flashocc_kit.synth import cache
    from flashocc_kit.synth import generate as generator
    from flashocc_kit.synth.options import SynthOptions
    from flashocc_kit.training import execute

    monkeypatch.setenv("FLASHOCC_KIT_CACHE", str(tmp_path / "cache"))
    small = {"width": 192, "height": 108, "train_scenes": 1, "val_scenes": 1, "samples_per_scene": 2, "workers": 1}
    monkeypatch.setattr(execute, "SMOKE_DATA", small)
    first, second = (tmp_path / ws / "nuscenes-synthetic" for ws in ("clone-1", "clone-2"))
    execute.ensure_smoke_data(first, "data/nuscenes-synthetic")
    monkeypatch.setattr(generator, "generate", lambda *args, **kwargs: pytest.fail("rendered again"))
    execute.ensure_smoke_data(second, "data/nuscenes-synthetic")
    assert snapshot(second) == snapshot(first)
    assert not list(second.parent.glob(".*synth-*"))  # no staging debris
    # what the bytes depend on is in the key: the options, the prefix the infos carry, the generator's sources
    opts = SynthOptions(**small)
    keys = {cache.cache_key(opts, "data/nuscenes-synthetic"), cache.cache_key(opts, "data/other"),
            cache.cache_key(SynthOptions(**{**small, "seed": 1}), "data/nuscenes-synthetic")}
    sources = tmp_path / "synth-sources"
    shutil.copytree(cache.SYNTH_SOURCES, sources, ignore=shutil.ignore_patterns("__pycache__"))
    (sources / "render.py").write_text((sources / "render.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(cache, "SYNTH_SOURCES", sources)
    keys.add(cache.cache_key(opts, "data/nuscenes-synthetic"))
    assert len(keys) == 4
