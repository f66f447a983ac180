"""The support matrix: which stack a setup gets, the refusals, what `kit.py stacks` prints, DrivingSDK checkouts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import KIT_ROOT, git, make_repo
from flashocc_kit import drivingsdk, stacks
from flashocc_kit.errors import KitError

# The head of DrivingSDK's docs/zh/version/versions.md (master, 2026): the table the checks read.
VERSION_TABLE = """\
| Gitcode分支 |  CPU架构 |  支持的Python版本 | 支持的PyTorch版本 | 支持的torch_npu版本 |
|-----------|-----------|-------------------|-------------------|---------------------|
| master    | x86&aarch64|Python3.9.x,Python3.10.x,Python3.11.x|2.7.1|v2.7.1|
|           |       |Python3.9.x,Python3.10.x,Python3.11.x|2.8.0|v2.8.0|
| branch_v7.2.RC1   | x86&aarch64|Python3.8.x,Python3.9.x,Python3.10.x,Python3.11.x|2.1.0|v2.1.0-7.2.0|
|           |       |Python3.9.x,Python3.10.x,Python3.11.x|2.7.1|v2.7.1-7.2.0|
| branch_v7.1.RC1   | x86&aarch64|Python3.8.x,Python3.9.x,Python3.10.x,Python3.11.x|2.1.0|v2.1.0-7.1.0|
"""


def test_the_matrix_is_what_pins_ini_and_the_locks_say():
    all_stacks = stacks.load_stacks()
    assert all_stacks["torch2.1"].torch == "2.1.0" and all_stacks["torch2.7"].torch == "2.7.1"
    assert all_stacks["torch2.8"].torch == "2.8.0" and all_stacks["torch2.8"].pinned("torchvision") == "0.23.0"
    assert all_stacks["torch2.1"].pinned("torchvision") == "0.16.0"
    assert stacks.default_stack().name == "torch2.1"
    cells = {c.id for c in stacks.all_cells()}
    assert len(cells) == 20 and "torch2.1-py3.8-aarch64" in cells and "torch2.7-py3.8-x86_64" not in cells
    assert "torch2.8-py3.11-aarch64" in cells and "torch2.8-py3.8-x86_64" not in cells


def test_only_the_stacks_of_torch_2_6_and_later_have_drivingsdk_for_atlas_a5():
    """mx-driving-a5's wheels require torch>=2.6.0,<2.9.0 (26.1.0.post2 and 26.2.0.post2 on PyPI, 2026-12)."""
    all_stacks = stacks.load_stacks()
    assert all_stacks["torch2.1"].drivingsdk("a5") is None
    assert all_stacks["torch2.1"].drivingsdk("a2") == "mx-driving==26.2.0.post1"
    for name in ("torch2.7", "torch2.8"):
        assert all_stacks[name].drivingsdk("a5") == "mx-driving-a5==26.2.0.post2", name
        assert all_stacks[name].drivingsdk("a2") == "mx-driving==26.2.0.post2", name
    assert all(tuple(int(x) for x in s.torch.split(".")[:2]) >= (2, 6) for s in all_stacks.values() if s.mx_driving_a5)


def test_the_stack_follows_the_torch_an_interpreter_has():
    assert stacks.choose_stack("3.8", None, None, "x86_64").name == "torch2.1"
    assert stacks.choose_stack("3.10", "torch2.7", None, "aarch64").name == "torch2.7"
    assert stacks.choose_stack("3.10", None, "2.7.1+cpu", "aarch64").name == "torch2.7"  # an Ascend image's
    assert stacks.choose_stack("3.11", None, "2.8.0+cpu", "x86_64").name == "torch2.8"
    assert stacks.choose_stack("3.9", None, "2.1.0a0+git", "x86_64").name == "torch2.1"


@pytest.mark.parametrize("python, requested, torch, arch, message", [
    ("3.12", None, None, "x86_64", "Python 3.12 can host none of the kit's stacks"),
    ("3.8", "torch2.7", None, "x86_64", "torch2.7 needs Python 3.9-3.11 and this is Python 3.8: use --stack torch2.1"),
    ("3.10", None, "2.4.0", "x86_64", "the torch 2.4.0 this interpreter has is no stack's"),
    ("3.10", "torch2.7", "2.1.0", "x86_64", "belongs to torch2.1"),
    ("3.10", "torch9", None, "x86_64", "--stack torch9: choose from torch2.1, torch2.7, torch2.8"),
    ("3.10", None, None, "riscv64", "this machine is riscv64"),
])
def test_a_cell_that_cannot_work_is_refused_in_one_sentence(python, requested, torch, arch, message):
    with pytest.raises(KitError) as err:
        stacks.choose_stack(python, requested, torch, arch)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("found, names", [
    ([], "install one of Python 3.8, 3.9, 3.10 or 3.11 and run the kit with it, e.g. `python3.11 tools/kit.py setup`"),
    (["python3.10"], "run the kit with python3.10 (found here), e.g. `python3.10 tools/kit.py setup`"),
    (["python3.8", "python3.11"], "run the kit with python3.8 or python3.11 (found here), e.g. `python3.11 tools"),
])
def test_a_python_no_stack_serves_is_told_which_interpreters_work(monkeypatch, found, names):
    """The refusal names the interpreters on this machine that can host a stack, else the versions to install."""
    monkeypatch.setattr(stacks, "interpreters_for", lambda versions: [f for f in found if f[6:] in versions])
    with pytest.raises(KitError) as err:
        stacks.choose_stack("3.12", None, None, "x86_64")
    assert names in str(err.value)


def test_setup_under_a_python_no_stack_serves_stops_before_writing_anything(tmp_path):
    """The CLI starts on any Python >= 3.8 with the standard library; setup then refuses in one sentence."""
    from flashocc_kit.installer import Setup, SetupOptions

    python312 = tmp_path / "python3.12"  # answers the interpreter probe as a Python 3.12 would
    python312.write_text('#!/bin/sh\necho \'{"python": "3.12", "python_full": "3.12.1", "machine": "x86_64", '
                         '"executable": "python3.12", "prefix": "/", "torch": null, "torch_npu": false}\'\n')
    python312.chmod(0o755)
    workspace = tmp_path / "ws"
    opts = SetupOptions(workspace=workspace, venv=None, from_dir=None, base_python=python312, torch_mode="auto")
    with pytest.raises(KitError) as err:
        Setup(opts)
    assert "Python 3.12 can host none of the kit's stacks" in str(err.value)
    assert not workspace.exists()


def test_stacks_prints_the_matrix_and_what_was_done_here(tmp_path):
    stacks.record(tmp_path, "torch2.1-py3.8-x86_64", "setup", ok=True)
    stacks.record(tmp_path, "torch2.1-py3.8-x86_64", "test", ok=True, result="12 passed")
    kit = [sys.executable, str(KIT_ROOT / "tools" / "kit.py"), "--workspace", str(tmp_path), "stacks"]
    text = subprocess.run(kit, capture_output=True, text=True, check=True).stdout
    row = next(line for line in text.splitlines() if "3.8" in line and "x86_64" in line)
    assert "torch2.1 (default)" in row and "requirements/torch2.1.txt" in row and "ok" in row and "12 passed" in row
    rows = json.loads(subprocess.run([*kit, "--json"], capture_output=True, text=True, check=True).stdout)
    assert len(rows) == 20 and sum(r["set up here"] != "-" for r in rows) == 1


# ---- DrivingSDK from a checkout ----------------------------------------------------------------------------


@pytest.fixture
def drivingsdk_checkout(tmp_path):
    root = tmp_path / "DrivingSDK"
    make_repo(root, {"docs/zh/version/versions.md": VERSION_TABLE, "ci/build.sh": "#!/bin/bash\nexit 0\n"})
    return root


def test_the_version_table_is_read_as_drivingsdk_writes_it():
    rows = drivingsdk.read_version_table(VERSION_TABLE)
    assert [(r.branch, r.torch) for r in rows][:3] == [("master", "2.7.1"), ("master", "2.8.0"),
                                                      ("branch_v7.2.RC1", "2.1.0")]
    assert drivingsdk.branches_for(rows, "2.1.0", "3.8") == ["branch_v7.2.RC1", "branch_v7.1.RC1"]


def test_a_checkout_on_a_branch_without_the_stacks_torch_is_refused_naming_one_with_it(drivingsdk_checkout):
    torch21, torch27 = stacks.load_stacks()["torch2.1"], stacks.load_stacks()["torch2.7"]
    git(drivingsdk_checkout, "branch", "-m", "master")
    assert drivingsdk.check_checkout(drivingsdk_checkout, torch27, "3.10") == "master"
    assert drivingsdk.check_checkout(drivingsdk_checkout, stacks.load_stacks()["torch2.8"], "3.11") == "master"
    with pytest.raises(KitError) as err:
        drivingsdk.check_checkout(drivingsdk_checkout, torch21, "3.8")
    assert "on master, which builds DrivingSDK for torch 2.7.1, 2.8.0" in str(err.value)
    assert "branch_v7.2.RC1" in str(err.value) and "checkout branch_v7.2.RC1" in str(err.value)
    git(drivingsdk_checkout, "checkout", "-q", "-b", "branch_v7.2.RC1")
    assert drivingsdk.check_checkout(drivingsdk_checkout, torch21, "3.8") == "branch_v7.2.RC1"
    git(drivingsdk_checkout, "checkout", "-q", "--detach")
    with pytest.raises(KitError, match="not on a branch"):
        drivingsdk.check_checkout(drivingsdk_checkout, torch21, "3.8")


def test_not_a_drivingsdk_checkout_is_named(tmp_path):
    with pytest.raises(KitError, match="no ci/build.sh"):
        drivingsdk.check_checkout(tmp_path, stacks.default_stack(), "3.8")


RECORDING = """
import sys, time
sys.path.insert(0, sys.argv[1])
from flashocc_kit import stacks
time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # both start together
for i in range(200):
    stacks.record(sys.argv[2], sys.argv[3], "test", ok=True, result=str(i))
"""


def test_two_cells_recording_at_once_keep_both_records(tmp_path):
    """CI tests two cells side by side: each `record` reads, updates and rewrites the file, and neither may lose
    the other's entry."""
    start = str(time.time() + 2)
    procs = [subprocess.Popen([sys.executable, "-c", RECORDING, str(KIT_ROOT / "tools"), str(tmp_path), cell, start])
             for cell in ("torch2.1-py3.11-x86_64", "torch2.7-py3.10-x86_64")]
    assert [p.wait(120) for p in procs] == [0, 0]
    records = stacks.read_records(tmp_path)
    assert {cell: entry["test"]["result"] for cell, entry in records.items()} == {
        "torch2.1-py3.11-x86_64": "199", "torch2.7-py3.10-x86_64": "199"}


def test_a_second_setup_waits_for_the_checkouts_while_another_prepares_them(tmp_path, monkeypatch):
    """Two setups in one workspace (CI's two cells side by side) take turns at the shared checkouts: the second
    fetches nothing while the first holds them, then finds them ready."""
    from flashocc_kit import installer
    from flashocc_kit.locking import exclusively

    opts = installer.SetupOptions(workspace=tmp_path / "ws", venv=tmp_path / "venv", from_dir=None,
                                  base_python=Path(sys.executable), torch_mode="install")
    steps = installer.Setup(opts)
    obtained: list[str] = []
    monkeypatch.setattr(installer.sources, "obtain", lambda project, *a, **kw: obtained.append(project.name))
    with exclusively(steps.ws.kit_state / "checkouts.lock"):  # the first setup, at its sources step
        second = threading.Thread(target=steps.sources)
        second.start()
        second.join(3)
        assert second.is_alive() and obtained == []
    second.join(30)
    assert not second.is_alive() and obtained == ["flashocc", "mmcv", "mmdet", "mmdet3d"]
