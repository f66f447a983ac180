"""The kit's patches against the real upstream files: PyPI sdists (always) and pinned checkouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import KIT_ROOT
from flashocc_kit import gitutil, patching, sources
from flashocc_kit.patchfile import read_patch
from flashocc_kit.pins import load_projects
from flashocc_kit.pypi import download_sdist, unpack_sdist

PROJECTS = load_projects()


@pytest.fixture(scope="module")
def sdist_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sdists")


def unpacked(requirement: str, where: Path) -> Path:
    dest = where / requirement.replace("==", "-")
    if not dest.exists():
        where.mkdir(parents=True, exist_ok=True)
        unpack_sdist(download_sdist(requirement), dest)
    return dest


@pytest.mark.parametrize("project, requirement", [("mmcv", "mmcv-full==1.7.2"), ("mmdet", "mmdet==2.25.0")])
def test_patch_applies_to_the_pypi_sdist(project, requirement, sdist_dir):
    tree = unpacked(requirement, sdist_dir)
    patch = PROJECTS[project].patch_file
    assert patching.patch_state(tree, patch)[0] is patching.PatchState.PRISTINE
    assert patching.apply_patch(project, tree, patch).outcome == "applied"
    for change in read_patch(patch):
        assert gitutil.file_blob_id(tree / change.path).startswith(change.new_blob)


def test_mmdet_sdist_is_the_pinned_content(sdist_dir):
    """The sdist is recognised as the pin by its tree id, and carries the v2.25.0 blobs."""
    tree = unpacked("mmdet==2.25.0", sdist_dir / "pristine")
    assert gitutil.content_tree_id(tree) == PROJECTS["mmdet"].sdist_tree
    assert sources.check_pin(PROJECTS["mmdet"], tree).ok
    assert gitutil.file_blob_id(tree / "mmdet/__init__.py").startswith("1f8ee169")
    assert gitutil.file_blob_id(tree / "mmdet/datasets/builder.py").startswith("1936296a")


def test_mmcv_patch_touches_files_identical_in_fork_upstream_and_sdist(sources_dir, sdist_dir):
    """mmcv.patch must keep applying to momo609 rc41.x, open-mmlab 1.x and mmcv-full 1.7.2."""
    trees = {"momo609/mmcv rc41.x": sources_dir / "mmcv", "mmcv-full 1.7.2 sdist": unpacked("mmcv-full==1.7.2",
                                                                                          sdist_dir / "pristine")}
    if (sources_dir / "mmcv-openmmlab").is_dir():
        trees["open-mmlab/mmcv 1.x"] = sources_dir / "mmcv-openmmlab"
    else:
        print("open-mmlab/mmcv 1.x not in the sources directory: compared fork and sdist only")
    patch = PROJECTS["mmcv"].patch_file
    for change in read_patch(patch):
        blobs = {name: gitutil.file_blob_id(tree / change.path) for name, tree in trees.items()}
        assert set(blobs.values()) == {gitutil.file_blob_id(trees["momo609/mmcv rc41.x"] / change.path)}, blobs
        assert all(b.startswith(change.old_blob) for b in blobs.values()), blobs
    for name, tree in trees.items():
        ok, err = patching._git_apply(tree, patch, "--check")
        assert ok, f"{name}: {err}"


@pytest.mark.parametrize("project", ["flashocc", "mmcv", "mmdet3d"])
def test_patch_applies_to_the_pristine_pinned_checkout(project, sources_dir, tmp_path):
    src = sources_dir / Path(PROJECTS[project].path).name
    if not src.is_dir():
        pytest.skip(f"{src} not in the sources directory")
    target = tmp_path / project
    shutil.copytree(src, target, symlinks=True)
    assert sources.check_pin(PROJECTS[project], target).ok
    assert patching.apply_patch(project, target, PROJECTS[project].patch_file).outcome == "applied"
    assert not list(target.rglob("*.rej")) and not list(target.rglob("*.orig"))


@pytest.mark.parametrize("name", list(PROJECTS))
def test_committed_patches_are_what_the_queue_and_port_build(name):
    """The root patch and every queued patch are byte for byte what `kit.py export` writes: nobody edited a
    .patch by hand, and nobody forgot to export (`kit.py export --check`)."""
    from flashocc_kit.patchqueue import stale_files
    from flashocc_kit.workspace import Workspace

    project = PROJECTS[name]
    checkout = Workspace.at(KIT_ROOT).dir(name)
    if not gitutil.is_git_toplevel(checkout):
        pytest.skip(f"no {name} checkout at {checkout} to build the patches in: run `python3 tools/kit.py setup`")
    base = sources.base_commit_for_export(project, checkout)
    assert stale_files(project, checkout, base) == [], "run `python3 tools/kit.py export` and commit the result"


def test_every_queue_is_consistent():
    from flashocc_kit.series import check_queue

    for project in PROJECTS.values():
        assert check_queue(project) == [], project.name


def test_patch_files_carry_full_blob_ids_and_the_generated_header():
    for project in PROJECTS.values():
        text = project.patch_file.read_text()
        assert text.startswith(f"# {project.patch}: "), project.patch
        assert f"built by `python3 tools/kit.py export {project.name}` from patches/{project.name}/series" in text
        for change in read_patch(project.patch_file):
            for blob in (change.old_blob, change.new_blob):
                assert blob is None or len(blob) == 40, (project.patch, change.path)


def test_git_apply_check_reports_nothing_half_done(sdist_dir, tmp_path):
    """A sdist with one patched file edited: apply refuses, names the file, writes nothing."""
    tree = tmp_path / "mmcv"
    shutil.copytree(unpacked("mmcv-full==1.7.2", sdist_dir / "pristine2"), tree)
    victim = tree / "mmcv/runner/dist_utils.py"
    victim.write_text(victim.read_text().replace("def init_dist(", "def init_dist_renamed("))
    other = tree / "mmcv/parallel/distributed.py"
    before = other.read_bytes()
    with pytest.raises(Exception) as err:
        patching.apply_patch("mmcv", tree, PROJECTS["mmcv"].patch_file)
    assert "mmcv/runner/dist_utils.py" in str(err.value)
    assert other.read_bytes() == before
