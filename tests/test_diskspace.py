"""Disk space: setup asks for room before it installs a stack, and a step that runs out says where and what to do."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flashocc_kit import diskspace, installer
from flashocc_kit.errors import KitError
from flashocc_kit.stacks import default_stack


def fake_venv(root: Path, name: str, payload_bytes: int) -> Path:
    """A directory that looks like a cell's environment (pyvenv.cfg) and holds `payload_bytes`."""
    venv = root / name
    (venv / "lib").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "lib" / "payload").write_bytes(b"\0" * payload_bytes)
    return venv


def test_room_is_looked_up_on_the_nearest_existing_folder(tmp_path):
    not_yet = tmp_path / "a" / "b" / "venv"
    assert diskspace.existing_parent(not_yet) == tmp_path
    assert diskspace.free_bytes(not_yet) == diskspace.free_bytes(tmp_path) > 0


def test_an_install_larger_than_the_free_disk_is_refused_naming_the_place_and_the_other_environments(tmp_path):
    venvs = tmp_path / ".venvs"
    fake_venv(venvs, "torch2.7-py3.10-x86_64", 3 * 1024 * 1024)
    target = venvs / "torch2.1-py3.11-x86_64"
    more_than_there_is = diskspace.free_bytes(tmp_path) / diskspace.GIB + 1
    with pytest.raises(KitError) as err:
        diskspace.require_room(target, more_than_there_is, "installing the lock")
    message = str(err.value)
    assert f"installing the lock needs about {more_than_there_is:g} GiB of free disk" in message
    assert f"the environment ({target})" in message and "GiB free" in message
    assert "Fix: free space" in message and "TMPDIR" in message
    assert f"{venvs / 'torch2.7-py3.10-x86_64'} 0.0 GiB" in message  # the sibling cell, to remove if unused
    assert not target.exists()


def test_an_install_that_fits_goes_ahead(tmp_path):
    diskspace.require_room(tmp_path / "venv", 0.001, "a small install")


def test_other_environments_are_listed_largest_first_without_the_target_or_plain_folders(tmp_path):
    small = fake_venv(tmp_path, "small", 1000)
    large = fake_venv(tmp_path, "large", 5000)
    target = fake_venv(tmp_path, "target", 9000)
    (tmp_path / "not-a-venv").mkdir()
    listed = diskspace.other_environments(target)
    assert [path for path, _ in listed] == [large, small]
    assert [size for _, size in listed][0] >= 5000


def test_a_disk_full_failure_is_named_and_any_other_failure_is_not(tmp_path):
    assert diskspace.explain_if_disk_full("ERROR: No matching distribution", tmp_path, "4 (pip-stack)") is None
    told = diskspace.explain_if_disk_full("ERROR: Could not install packages due to an OSError: [Errno 28] "
                                          "No space left on device", tmp_path / "venv", "4 (pip-stack)")
    assert told is not None
    assert told.startswith("setup step 4 (pip-stack) ran out of disk space")
    assert f"the environment ({tmp_path / 'venv'})" in told and "pip's temporary files" in told


def test_a_setup_step_that_runs_out_of_disk_says_so_with_its_log(tmp_path):
    runner = installer.Runner(tmp_path / "logs", venv=tmp_path / "venv")
    runner.begin("pip")
    script = "import sys; print('OSError: [Errno 28] No space left on device'); sys.exit(1)"
    with pytest.raises(KitError) as err:
        runner.run("pip-stack", [sys.executable, "-c", script])
    message = str(err.value)
    assert message.startswith("setup step 1 (pip-stack) ran out of disk space")
    assert f"log: {tmp_path / 'logs' / 'setup-01-pip-stack.log'}" in message


def test_setup_refuses_a_new_stack_install_without_room_before_pip_runs(tmp_path, monkeypatch):
    """With too little disk, step 4 stops before pip writes anything; the figure asked is the stack's in pins.ini."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\necho '{}'\n")  # an environment without torch yet: every probe finds nothing
    python.chmod(0o755)
    opts = installer.SetupOptions(workspace=tmp_path / "ws", venv=venv, from_dir=None,
                                  base_python=Path(sys.executable), torch_mode="install")
    steps = installer.Setup(opts)
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: diskspace.GIB)  # 1 GiB free everywhere
    pips = []
    monkeypatch.setattr(steps.runner, "run", lambda name, cmd, **kw: pips.append(cmd))
    with pytest.raises(KitError) as err:
        steps.python_stack()
    stack = steps.stack
    assert stack == default_stack()
    assert f"installing {stack.lock} into {venv} needs about {stack.disk_gib:g} GiB of free disk" in str(err.value)
    assert pips == []
    assert not list((tmp_path / "ws").glob(".kit/pip-stack-*"))


@pytest.mark.cell
def test_this_cells_environment_fits_in_the_room_its_stack_asks_for():
    """pins.ini's disk-gib covers the environment setup made here (plus pip's downloads, measured there)."""
    from flashocc_kit.stacks import choose_stack, this_python

    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix):
        pytest.skip(f"{sys.executable} is not a kit environment (no venv), so there is no environment to measure")
    import torch

    stack = choose_stack(this_python(), None, torch.__version__)
    size = diskspace.tree_bytes(venv)
    assert size < stack.disk_gib * diskspace.GIB, (
        f"{venv} takes {diskspace.gib(size)}, more than {stack.name}'s disk-gib = {stack.disk_gib:g} in "
        "tools/pins.ini: measure the install's peak again and raise the figure")
