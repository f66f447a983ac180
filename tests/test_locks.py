"""The locks: exact pins, markers a cell can evaluate, one line per package in every cell, a wheel for each
line in every cell (asked of PyPI's index), and a closure complete for the environment the suite runs in."""

from __future__ import annotations

from importlib import metadata

import pytest

from conftest import KIT_ROOT
from flashocc_kit import stacks
from flashocc_kit.errors import KitError

packaging = pytest.importorskip("packaging", reason="needs packaging: run the suite in the kit's environment")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

TEST_LOCK = KIT_ROOT / "tests" / "requirements.txt"
LOCKS = sorted({s.lock_file for s in stacks.load_stacks().values()}) + [TEST_LOCK]
# Declared by a locked package but not needed at run time (see the note atop requirements/common.txt):
# lyft_dataset_sdk lists its dev tools and plotly; nuscenes-devkit and lyft ask for opencv-python, whose cv2 the
# headless build provides.
KNOWN_UNNEEDED = {("lyft-dataset-sdk", name) for name in ("black", "flake8", "pytest", "plotly", "opencv-python")}
KNOWN_UNNEEDED |= {("nuscenes-devkit", "opencv-python")}
# Installed from the workspace checkouts, not from a lock file.
FROM_WORKSPACE = {"mmcv-full", "mmcv", "mmdet", "mmdet3d"}


def all_lines():
    return [line for lock in LOCKS for line in stacks.read_lock(lock)]


def test_every_lock_line_is_an_exact_pin_with_markers_a_cell_can_evaluate():
    from flashocc_kit.lockcheck import unsupported_markers

    lines = all_lines()
    assert len(lines) > 100
    for line in lines:
        req = Requirement(f"{line.name}=={line.version}" + (f" ; {line.marker}" if line.marker else ""))
        assert [s.operator for s in req.specifier] == ["=="], line
    assert unsupported_markers(lines) == []


def test_the_root_requirements_file_is_the_default_stacks_lock():
    assert stacks.read_lock(KIT_ROOT / "requirements.txt") == stacks.read_lock(stacks.default_stack().lock_file)


def test_a_lock_that_includes_itself_or_a_missing_file_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("-r b.txt\n")
    (tmp_path / "b.txt").write_text("x==1\n-r a.txt\n")
    with pytest.raises(KitError, match="includes itself"):
        stacks.read_lock(tmp_path / "a.txt")
    (tmp_path / "c.txt").write_text("torch>=2\n")
    with pytest.raises(KitError, match="c.txt:1: expected NAME==VERSION"):
        stacks.read_lock(tmp_path / "c.txt")


@pytest.mark.parametrize("cell", stacks.all_cells(), ids=lambda c: c.id)
def test_every_cell_has_a_wheel_for_each_of_its_pins(cell):
    from flashocc_kit.lockcheck import check_cell

    try:
        resolutions, problems = check_cell(cell, (TEST_LOCK,))
    except KitError as exc:
        pytest.skip(f"PyPI's index is unreachable and not cached here: {exc}")
    names = {r.line.name.lower() for r in resolutions}
    assert {"torch", "torchvision", "numpy", "pytest"} <= names
    assert problems == []


def test_the_wheel_check_sees_a_missing_wheel():
    """Guards the check above: a pin with no cp38 wheel (torch 2.7.1) is reported, not passed."""
    from flashocc_kit.lockcheck import check_cell

    torch27 = stacks.load_stacks()["torch2.7"]
    try:
        _, problems = check_cell(stacks.Cell(torch27, "3.8", "x86_64"))
    except KitError as exc:
        pytest.skip(f"PyPI's index is unreachable and not cached here: {exc}")
    assert any("torch==2.7.1 has no wheel for CPython 3.8" in p for p in problems)


@pytest.mark.parametrize("files, kind", [
    (["demo-1.0-cp310-cp310-manylinux_2_17_x86_64.whl"], "missing"),  # another Python's wheel
    (["demo-1.0-cp311-cp311-macosx_11_0_arm64.whl", "demo-1.0-cp311-cp311-win_amd64.whl"], "missing"),  # platforms
    (["demo-1.0-cp311-cp311-manylinux_2_17_aarch64.whl"], "missing"),  # another architecture
    (["demo-1.0-cp311-cp311-manylinux_2_34_x86_64.whl"], "missing"),  # a newer glibc than a cell may have
    (["demo-0.9-cp311-cp311-manylinux_2_17_x86_64.whl", "demo-1.0.tar.gz"], "sdist"),  # another version
    (["demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"], "wheel"),
    (["demo-1.0-py3-none-any.whl"], "wheel"),
])
def test_a_wheel_counts_only_if_this_cells_python_and_platform_install_it(monkeypatch, files, kind):
    from flashocc_kit import lockcheck

    monkeypatch.setattr(lockcheck, "index_files", lambda name: [{"filename": f} for f in files])
    cell = stacks.Cell(stacks.default_stack(), "3.11", "x86_64")
    line = stacks.LockLine("demo", "1.0", "", TEST_LOCK)
    assert lockcheck.resolve(line, cell, lockcheck.supported_tags(cell)).kind == kind


def test_the_lock_is_closed_under_the_installed_dependencies():
    """The locks are installed with --no-deps: a dependency missing from them installs nothing and then fails at
    import time on a fresh machine (pytest without pluggy did exactly that). Checked for this environment's cell
    against the metadata of what is installed here; the other cells are held by the PyPI check above."""
    from packaging.markers import Marker

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        pytest.skip("torch is not installed here: run `python3 tools/kit.py setup` first")
    stack = next((s for s in stacks.load_stacks().values() if s.takes_torch(torch_version)), None)
    assert stack is not None, f"torch {torch_version} is no stack's"
    cell_lines = stacks.read_lock(stack.lock_file) + stacks.read_lock(TEST_LOCK)

    here = [line for line in cell_lines if not line.marker or Marker(line.marker).evaluate()]
    pinned = {canonicalize_name(line.name) for line in here} | FROM_WORKSPACE
    missing = []
    for line in here:
        try:
            dist = metadata.distribution(line.name)
        except metadata.PackageNotFoundError:
            if canonicalize_name(line.name).startswith(("nvidia-", "triton", "torch")):
                continue  # the torch family of another stack, or kept from an Ascend image
            pytest.skip(f"{line.name} is not installed here: run `python3 tools/kit.py setup` first")
        for dep_line in dist.requires or []:
            dep = Requirement(dep_line)
            if dep.marker is not None and not dep.marker.evaluate({"extra": ""}):
                continue
            dep_name = canonicalize_name(dep.name)
            if dep_name not in pinned and (canonicalize_name(line.name), dep_name) not in KNOWN_UNNEEDED:
                missing.append(f"{line.name} needs {dep_name}")
    assert not missing, "add pins: " + "; ".join(missing)
