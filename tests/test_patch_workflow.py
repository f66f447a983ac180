"""The patch workflow (queue, export, apply, status, sources) on small git repositories made here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import git, make_queue, make_repo, snapshot, write_files
from flashocc_kit import exporting, gitutil, patching, series, sources
from flashocc_kit.errors import KitError
from flashocc_kit.patchfile import parse_patch
from flashocc_kit.pins import Project
from flashocc_kit.workspace import Workspace

# The demo project's queue: two patches change pkg/core.py (far apart), one owns the port file.
QUEUE_STEPS = [
    ("version", {"pkg/__init__.py": "VERSION = '1.0+kit'\n"}),
    ("core-fix", {"pkg/core.py": "".join(f"line {i}\n" if i != 20 else "line 20 patched\n" for i in range(1, 41)),
                  "pkg/gone.py": None}),
    ("core-more", {"pkg/core.py": "".join("line 20 patched\n" if i == 20 else "line 35 more\n" if i == 35 else
                                          f"line {i}\n" for i in range(1, 41))}),
]
PORT_FILES = {"pkg/new_module.py": ("NEW = True\n", "version")}


@pytest.fixture
def pinned(tmp_path, upstream_files):
    """An upstream repo at a pin, its patch queue and port, the root patch built from them, and a copy of the
    upstream with the root patch applied by hand (what the queue must reproduce)."""
    upstream = tmp_path / "upstream"
    commit = make_repo(upstream, upstream_files)
    make_queue(upstream, commit, tmp_path / "queue", tmp_path / "port", QUEUE_STEPS, PORT_FILES)
    patch = tmp_path / "demo.patch"
    project = Project(name="demo", path="demo", patch=str(patch), repo=f"file://{upstream}", ref="main",
                      commit=commit, queue=str(tmp_path / "queue"), port=str(tmp_path / "port"))
    patch.write_text(series.build_root_patch(project, upstream, commit))
    edited = tmp_path / "edited"
    shutil.copytree(upstream, edited, symlinks=True)
    for _, files in QUEUE_STEPS:
        write_files(edited, files)
    write_files(edited, {path: content for path, (content, _) in PORT_FILES.items()})
    return project, upstream, edited, commit


def fresh_copy(upstream: Path, dest: Path) -> Path:
    shutil.copytree(upstream, dest, symlinks=True)
    return dest


def test_root_patch_lists_modified_new_and_deleted_files_with_full_blob_ids(pinned):
    project, upstream, _, _ = pinned
    changes = {c.path: c for c in parse_patch(project.patch_file.read_text())}
    assert set(changes) == {"pkg/core.py", "pkg/new_module.py", "pkg/gone.py", "pkg/__init__.py"}
    assert changes["pkg/new_module.py"].old_blob is None
    assert changes["pkg/gone.py"].new_blob is None
    assert changes["pkg/core.py"].old_blob == gitutil.file_blob_id(upstream / "pkg/core.py")
    assert len(changes["pkg/core.py"].old_blob) == 40


def test_apply_reproduces_the_edited_tree_exactly(pinned, tmp_path):
    project, upstream, edited, _ = pinned
    target = fresh_copy(upstream, tmp_path / "target")
    assert patching.apply_patch("demo", target, project.patch_file).outcome == "applied"
    assert gitutil.content_tree_id(target) == gitutil.content_tree_id(edited)
    assert not list(target.rglob("*.rej")) and not list(target.rglob("*.orig"))


def test_apply_twice_is_a_reported_no_op(pinned, tmp_path):
    project, upstream, _, _ = pinned
    target = fresh_copy(upstream, tmp_path / "target")
    patching.apply_patch("demo", target, project.patch_file)
    before = snapshot(target)
    assert patching.apply_patch("demo", target, project.patch_file).outcome == "already applied"
    assert snapshot(target) == before


def test_locally_edited_file_is_named_and_nothing_is_written(pinned, tmp_path):
    project, upstream, _, _ = pinned
    target = fresh_copy(upstream, tmp_path / "target")
    (target / "pkg/core.py").write_text("somebody else's version\n")
    before = snapshot(target)
    with pytest.raises(KitError) as err:
        patching.apply_patch("demo", target, project.patch_file)
    assert "pkg/core.py" in str(err.value) and "nothing was changed" in str(err.value)
    assert "pkg/__init__.py" not in str(err.value)  # only the file that does not fit is named
    assert snapshot(target) == before
    assert patching.patch_state(target, project.patch_file)[0] is patching.PatchState.CONFLICT


def test_local_edit_outside_every_hunk_is_refused_before_anything_is_written(pinned, tmp_path):
    """`git apply --check` would take this edit (it is outside every hunk's context); the blob check must not."""
    project, upstream, _, _ = pinned
    target = fresh_copy(upstream, tmp_path / "target")
    (target / "pkg/core.py").write_text((target / "pkg/core.py").read_text().replace("line 2\n", "line 2 mine\n"))
    assert patching._git_apply(target, project.patch_file, "--check")[0]  # git alone would apply it
    found = gitutil.file_blob_id(target / "pkg/core.py")
    before = snapshot(target)
    with pytest.raises(KitError) as err:
        patching.apply_patch("demo", target, project.patch_file)
    assert f"pkg/core.py: found {found[:12]}" in str(err.value) and "nothing was changed" in str(err.value)
    assert snapshot(target) == before


def test_half_applied_tree_is_a_conflict_not_a_partial_apply(pinned, tmp_path):
    project, upstream, edited, _ = pinned
    target = fresh_copy(upstream, tmp_path / "target")
    write_files(target, {"pkg/core.py": (edited / "pkg/core.py").read_text()})  # one file patched, the rest not
    before = snapshot(target)
    with pytest.raises(KitError, match="pkg/core.py"):
        patching.apply_patch("demo", target, project.patch_file)
    assert snapshot(target) == before


def test_hunk_that_does_not_fit_is_named_by_its_header(pinned, tmp_path):
    project, upstream, _, _ = pinned
    target = fresh_copy(upstream, tmp_path / "target")
    (target / "pkg/core.py").write_text("".join(f"other {i}\n" for i in range(1, 41)))
    ok, stderr = patching._git_apply(target, project.patch_file, "--check")
    assert not ok
    explained = patching.explain_apply_failure(stderr, parse_patch(project.patch_file.read_text()))
    assert "pkg/core.py: hunk @@ -17,7 +17,7 @@ does not fit" in explained


def test_plain_directory_inside_another_repo_is_patched_by_blob_ids(pinned, tmp_path):
    """An sdist unpacked inside some git work tree: git must not treat it as part of that repo."""
    project, upstream, edited, _ = pinned
    outer = tmp_path / "outer"
    make_repo(outer, {"unrelated.txt": "x\n"})
    target = outer / "vendored" / "demo"
    shutil.copytree(upstream, target, ignore=shutil.ignore_patterns(".git"))
    assert patching.patch_state(target, project.patch_file)[0] is patching.PatchState.PRISTINE
    assert patching.apply_patch("demo", target, project.patch_file).outcome == "applied"
    assert (target / "pkg/new_module.py").read_text() == "NEW = True\n"
    assert not (target / "pkg/gone.py").exists()
    assert git(outer, "status", "--porcelain") == "?? vendored/"  # the outer repo was not touched


def test_revert_restores_the_pin(pinned, tmp_path):
    project, upstream, _, _ = pinned
    target = fresh_copy(upstream, tmp_path / "target")
    patching.apply_patch("demo", target, project.patch_file)
    assert patching.revert_patch("demo", target, project.patch_file) == "reverted"
    assert gitutil.content_tree_id(target) == gitutil.content_tree_id(upstream)


def test_root_patch_is_deterministic_and_ignores_user_git_config(pinned, tmp_path, monkeypatch):
    project, upstream, _, commit = pinned
    first = series.build_root_patch(project, upstream, commit)
    config = tmp_path / "gitconfig"
    config.write_text("[diff]\n\tnoprefix = true\n\tmnemonicPrefix = true\n\talgorithm = histogram\n"
                      "[core]\n\tautocrlf = true\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    assert series.build_root_patch(project, upstream, commit) == first
    assert first.startswith("# demo.patch: the kit's changes to demo")
    assert "#   core-fix   core-fix" in first  # the header lists the queue in order, with each summary
    assert first.index("core-fix") < first.index("core-more")


def test_queue_problems_are_named(pinned):
    project, upstream, _, commit = pinned
    assert series.check_queue(project) == []
    (project.port_dir / "pkg" / "stray.py").write_text("x = 1\n")
    (project.queue_dir / "unlisted.patch").write_text("Description: x\nOrigin: vendor\nForwarded: no\n---\n")
    core_more = project.queue_dir / "core-more.patch"
    core_more.write_text(core_more.read_text().replace("Origin: vendor\n", ""))
    problems = "\n".join(series.check_queue(project))
    assert "pkg/stray.py is named by no patch's Kit-Files" in problems
    assert "unlisted.patch is not in series" in problems and "core-more.patch: no Origin field" in problems
    with pytest.raises(KitError, match="inconsistent"):
        series.build_root_patch(project, upstream, commit)


def applied_checkout(pinned, tmp_path) -> Path:
    project, upstream, _, _ = pinned
    checkout = fresh_copy(upstream, tmp_path / "checkout")
    patching.apply_patch("demo", checkout, project.patch_file)
    return checkout


def test_export_puts_each_edit_where_it_belongs(pinned, tmp_path):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    write_files(checkout, {"pkg/new_module.py": "NEW = 'edited'\n",
                           "pkg/core.py": (checkout / "pkg/core.py").read_text().replace("line 36\n", "line 36 too\n")})
    result = exporting.export_project(project, checkout, commit)
    assert result.pulled == {"pkg/new_module.py": "port/demo/pkg/new_module.py", "pkg/core.py": "core-more.patch"}
    assert (project.port_dir / "pkg/new_module.py").read_text() == "NEW = 'edited'\n"
    assert "+line 36 too" in (project.queue_dir / "core-more.patch").read_text()
    assert "line 36" not in (project.queue_dir / "core-fix.patch").read_text()
    assert exporting.stale_files(project, checkout, commit) == []
    fresh = fresh_copy(pinned[1], tmp_path / "fresh")  # the rebuilt root patch reproduces the checkout
    patching.apply_patch("demo", fresh, project.patch_file)
    assert gitutil.content_tree_id(fresh) == gitutil.content_tree_id(checkout)


def test_export_into_an_earlier_patch_keeps_the_later_ones(pinned, tmp_path):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    core = (checkout / "pkg/core.py").read_text().replace("line 21\n", "line 21 fixed too\n")
    write_files(checkout, {"pkg/core.py": core})
    later_before = (project.queue_dir / "core-more.patch").read_text()
    result = exporting.export_project(project, checkout, commit, into="core-fix")
    assert result.pulled == {"pkg/core.py": "core-fix.patch"}
    fix = (project.queue_dir / "core-fix.patch").read_text()
    assert "+line 21 fixed too" in fix and "+line 35 more" not in fix
    later = (project.queue_dir / "core-more.patch").read_text()
    assert "+line 35 more" in later and later != later_before  # its pre-image blob id follows the earlier patch
    assert exporting.stale_files(project, checkout, commit) == []


def test_export_of_a_new_file_needs_into_and_nothing_is_written_without(pinned, tmp_path):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    write_files(checkout, {"pkg/extra.py": "EXTRA = 1\n"})
    before = {p: p.read_bytes() for p in [*project.queue_dir.iterdir(), project.patch_file]}
    with pytest.raises(KitError, match="--into"):
        exporting.export_project(project, checkout, commit)
    assert {p: p.read_bytes() for p in before} == before and not (project.port_dir / "pkg/extra.py").exists()
    exporting.export_project(project, checkout, commit, into="core-more")
    assert (project.port_dir / "pkg/extra.py").read_text() == "EXTRA = 1\n"
    assert series.read_queue(project)[2].kit_files == ["pkg/extra.py"]


def test_export_writes_port_edits_into_the_checkout(pinned, tmp_path):
    """An edit made in port/ (not in the checkout) reaches the checkout, which still held the old version."""
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    (project.port_dir / "pkg/new_module.py").write_text("NEW = 'from port'\n")
    result = exporting.export_project(project, checkout, commit)
    assert result.pushed == ["pkg/new_module.py"] and result.pulled == {}
    assert (checkout / "pkg/new_module.py").read_text() == "NEW = 'from port'\n"
    assert patching.patch_state(checkout, project.patch_file)[0] is patching.PatchState.APPLIED


def test_export_refuses_a_checkout_holding_another_root_patch(pinned, tmp_path):
    """After the kit moves on (git pull), the checkout's differences are not edits: they must not be pulled."""
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    project.patch_file.write_text(project.patch_file.read_text().replace("NEW = True", "NEW = False"))
    with pytest.raises(KitError, match="not the current demo.patch"):
        exporting.export_project(project, checkout, commit)


def test_export_check_finds_a_stale_root_patch_and_a_hand_edited_queue_patch(pinned, tmp_path):
    project, upstream, _, commit = pinned
    assert exporting.stale_files(project, upstream, commit) == []
    fix, more = project.queue_dir / "core-fix.patch", project.queue_dir / "core-more.patch"
    fix.write_text(fix.read_text().replace("+line 20 patched", "+line 20 patched by hand"))
    # core-fix's post-image blob id and core-more's pre-image one name the old content; the root patch too
    assert exporting.stale_files(project, upstream, commit) == [fix, more, project.patch_file]
    exporting.export_project(project, upstream, commit)  # a pristine tree: nothing to pull, rebuild only
    assert exporting.stale_files(project, upstream, commit) == []
    assert "+line 20 patched by hand" in project.patch_file.read_text()


def test_export_leaves_out_ignored_files_kit_links_and_the_real_index(pinned, tmp_path):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    (checkout / "build").mkdir()
    (checkout / "build" / "ext.so").write_text("binary")
    sources.exclude_local_paths(checkout, flashocc=True)
    (checkout / "test").symlink_to("..")
    index_before = (checkout / ".git" / "index").read_bytes()
    result = exporting.export_project(project, checkout, commit)
    assert result.pulled == {} and "build/ext.so" not in project.patch_file.read_text()
    assert (checkout / ".git" / "index").read_bytes() == index_before


# --- sources: recognising and refusing checkouts -------------------------------------------------

def test_sources_copies_from_a_sources_dir_and_reuses_it_next_time(pinned, tmp_path):
    project, upstream, _, commit = pinned
    sources_dir = tmp_path / "pristine"
    shutil.copytree(upstream, sources_dir / "demo", symlinks=True)
    workspace = tmp_path / "ws"
    pin = sources.obtain(project, workspace, sources_dir, log=lambda m: None)
    assert pin.ok and gitutil.head_commit(workspace / "demo") == commit
    messages: list[str] = []
    sources.obtain(project, workspace, sources_dir, log=messages.append)
    assert "reused" in messages[0]


def test_sources_reuses_a_checkout_with_exactly_the_kit_patch_applied(pinned, tmp_path):
    project, upstream, _, _ = pinned
    workspace = tmp_path / "ws"
    fresh_copy(upstream, workspace / "demo")
    patching.apply_patch("demo", workspace / "demo", project.patch_file)
    assert sources.obtain(project, workspace, None, log=lambda m: None).ok


def test_sources_refuses_a_dirty_checkout_and_says_how_to_fix_it(pinned, tmp_path):
    project, upstream, _, _ = pinned
    workspace = tmp_path / "ws"
    target = fresh_copy(upstream, workspace / "demo")
    (target / "README.md").write_text("my notes\n")
    (target / "scratch.py").write_text("x = 1\n")
    with pytest.raises(KitError) as err:
        sources.obtain(project, workspace, None, log=lambda m: None)
    message = str(err.value)
    assert "README.md" in message and "scratch.py" in message and "stash" in message
    assert (target / "scratch.py").exists()  # the kit never deletes work


def test_sources_refuses_a_checkout_at_another_revision(pinned, tmp_path):
    project, upstream, _, commit = pinned
    workspace = tmp_path / "ws"
    target = fresh_copy(upstream, workspace / "demo")
    write_files(target, {"later.py": "x\n"})
    git(target, "add", "-A")
    git(target, "commit", "-q", "-m", "later")
    with pytest.raises(KitError) as err:
        sources.obtain(project, workspace, None, log=lambda m: None)
    assert "not the pin" in str(err.value) and commit[:12] in str(err.value)


def test_sources_clones_only_the_pinned_revision(pinned, tmp_path):
    project, upstream, _, commit = pinned
    write_files(upstream, {"after_pin.py": "x\n"})
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "after the pin")
    git(upstream, "config", "uploadpack.allowAnySHA1InWant", "true")
    workspace = tmp_path / "ws"
    sources.obtain(project, workspace, None, log=lambda m: None)
    clone = workspace / "demo"
    assert gitutil.head_commit(clone) == commit
    assert git(clone, "rev-list", "--count", "HEAD") == "1"  # shallow: one commit of history
    assert not (clone / "after_pin.py").exists()


def test_sources_clones_a_tag_pin(tmp_path, upstream_files):
    upstream = tmp_path / "upstream"
    commit = make_repo(upstream, upstream_files)
    git(upstream, "tag", "v1.0")
    patch = tmp_path / "empty.patch"
    patch.write_text("")
    project = Project(name="tagged", path="tagged", patch=str(patch), repo=f"file://{upstream}", ref="v1.0")
    sources.obtain(project, tmp_path / "ws", None, log=lambda m: None)
    assert gitutil.head_commit(tmp_path / "ws" / "tagged") == commit


def test_failed_clone_leaves_nothing_behind(tmp_path):
    patch = tmp_path / "empty.patch"
    patch.write_text("")
    project = Project(name="nowhere", path="nowhere", patch=str(patch), repo=f"file://{tmp_path}/missing",
                      ref="main", commit="0" * 40)
    with pytest.raises(KitError, match="cannot fetch"):
        sources.obtain(project, tmp_path / "ws", None, log=lambda m: None)
    assert not (tmp_path / "ws" / "nowhere").exists()
    assert not list((tmp_path / "ws").glob("*kit-partial*"))


def test_plain_sdist_copy_becomes_a_recognisable_one_commit_repo(tmp_path, upstream_files):
    plain = tmp_path / "sdist"
    write_files(plain, upstream_files)
    tree = gitutil.content_tree_id(plain)
    patch = tmp_path / "empty.patch"
    patch.write_text("")
    project = Project(name="pkg", path="pkg", patch=str(patch), repo=f"file://{tmp_path}/unreachable",
                      ref="v1", sdist="pkg==1", sdist_tree=tree)
    sources_dir = tmp_path / "pristine"
    shutil.copytree(plain, sources_dir / "pkg")
    workspace = tmp_path / "ws"
    pin = sources.obtain(project, workspace, sources_dir, log=lambda m: None)
    assert pin.ok and pin.base_commit
    assert gitutil.is_git_toplevel(workspace / "pkg")
    assert sources.check_pin(project, plain).ok  # the plain directory itself is recognised by content
    write_files(plain, {"pkg/core.py": "changed\n"})
    assert not sources.check_pin(project, plain).ok


def test_cli_status_prints_one_table_and_fails_until_everything_is_applied(pinned, tmp_path, monkeypatch):
    from flashocc_kit import cli

    project, upstream, _, commit = pinned
    pins = tmp_path / "pins.ini"
    blocks = []
    for name, path in (("flashocc", "FlashOCC"), ("mmcv", "mmcv"), ("mmdet", "mmdetection"),
                       ("mmdet3d", "FlashOCC/mmdetection3d")):
        blocks.append(f"[project:{name}]\npath = {path}\npatch = {project.patch_file}\n"
                      f"repo = {project.repo}\nref = main\ncommit = {commit}\n")
    pins.write_text("\n".join(blocks))
    monkeypatch.setenv("FLASHOCC_KIT_PINS", str(pins))
    workspace = tmp_path / "ws"
    for path in ("FlashOCC", "mmcv", "mmdetection", "FlashOCC/mmdetection3d"):
        fresh_copy(upstream, workspace / path)
    assert cli.main(["--workspace", str(workspace), "status"]) == 1  # nothing applied yet
    assert cli.main(["--workspace", str(workspace), "apply", "mmcv", "mmdet"]) == 0
    rows = Workspace.at(workspace).status_rows()
    assert [r["patch"] for r in rows] == ["pristine", "applied", "applied", "pristine"]
    assert cli.main(["--workspace", str(workspace), "apply"]) == 0
    assert cli.main(["--workspace", str(workspace), "status"]) == 0
    git(workspace / "mmcv", "commit", "-qam", "local commit")  # now off the pin
    assert cli.main(["--workspace", str(workspace), "status"]) == 1
    assert [r["pin ok"] for r in Workspace.at(workspace).status_rows()] == ["yes", "NO", "yes", "yes"]


def test_cli_export_check_exits_1_on_a_stale_queue_and_0_once_exported(pinned, tmp_path, monkeypatch, capsys):
    """What the suite and CI rely on: `export --check` fails (not only prints) when a committed file is stale."""
    from flashocc_kit import cli

    project, upstream, _, commit = pinned
    pins = tmp_path / "pins.ini"
    blocks = []
    for name, path in (("flashocc", "FlashOCC"), ("mmcv", "mmcv"), ("mmdet", "mmdetection"),
                       ("mmdet3d", "FlashOCC/mmdetection3d")):
        blocks.append(f"[project:{name}]\npath = {path}\npatch = {project.patch_file}\nrepo = {project.repo}\n"
                      f"ref = main\ncommit = {commit}\nqueue = {project.queue}\nport = {project.port}\n")
    pins.write_text("\n".join(blocks))
    monkeypatch.setenv("FLASHOCC_KIT_PINS", str(pins))
    workspace = tmp_path / "ws"
    fresh_copy(upstream, workspace / "mmcv")
    check = ["--workspace", str(workspace), "export", "--check", "mmcv"]
    assert cli.main(["--workspace", str(workspace), "export", "mmcv"]) == 0  # the root patch as this project's
    assert cli.main(check) == 0
    fix = project.queue_dir / "core-fix.patch"
    fix.write_text(fix.read_text().replace("+line 20 patched", "+line 20 patched by hand"))
    capsys.readouterr()
    assert cli.main(check) == 1
    assert "STALE" in capsys.readouterr().out
    assert cli.main(["--workspace", str(workspace), "export", "mmcv"]) == 0
    assert cli.main(check) == 0


def test_an_export_that_fails_at_the_end_leaves_queue_port_and_root_patch_as_they_were(pinned, tmp_path,
                                                                                        monkeypatch):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    write_files(checkout, {"pkg/new_module.py": "NEW = 'edited'\n", "pkg/extra.py": "EXTRA = 1\n"})
    files = [*project.queue_dir.iterdir(), project.patch_file, *project.port_dir.rglob("*.py")]
    before = {p: p.read_bytes() for p in files}

    def fails(*args, **kwargs):
        raise KitError("the build failed")

    monkeypatch.setattr(series, "build_root_patch", fails)
    with pytest.raises(KitError, match="the build failed"):
        exporting.export_project(project, checkout, commit, into="core-more")
    assert {p: p.read_bytes() for p in files} == before
    assert not (project.port_dir / "pkg/extra.py").exists()
