"""The patch workflow (queue, import/export through git, apply, status, sources) on small git repositories made here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import GIT_ENV, KIT_ROOT, git, make_queue, make_repo, snapshot, write_files
from flashocc_kit import gitutil, patching, patchqueue, series, sources
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
    patch.write_text(patchqueue.build_from_queue(project, upstream, commit).root)
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
    first = patchqueue.build_from_queue(project, upstream, commit)
    config = tmp_path / "gitconfig"
    config.write_text("[diff]\n\tnoprefix = true\n\tmnemonicPrefix = true\n\talgorithm = histogram\n"
                      "\tsuppressBlankEmpty = true\n\tindentHeuristic = false\n\tinterHunkContext = 9\n"
                      "\tcontext = 7\n[core]\n\tautocrlf = true\n\tabbrev = 7\n"
                      "[format]\n\tattach = true\n\tuseAutoBase = true\n\tsignature = me\n\tnumbered = true\n"
                      "[i18n]\n\tcommitEncoding = ISO-8859-1\n\tlogOutputEncoding = ISO-8859-1\n"
                      "[commit]\n\tgpgSign = true\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    again = patchqueue.build_from_queue(project, upstream, commit)
    assert again.root == first.root and [p.text() for p in again.patches] == [p.text() for p in first.patches]
    assert patchqueue.stale_files(project, upstream, commit) == []  # the queue files are in that form too
    first = first.root
    assert first.startswith("# demo.patch: the kit's changes to demo")
    assert "#   core-fix   core-fix" in first  # the header lists the queue in order, with each summary
    assert first.index("core-fix") < first.index("core-more")


def test_queue_problems_are_named(pinned):
    project, upstream, _, commit = pinned
    assert series.check_queue(project) == []
    (project.port_dir / "pkg" / "stray.py").write_text("x = 1\n")
    (project.queue_dir / "unlisted.patch").write_text("Description: x\nOrigin: vendor\nForwarded: no\n---\n")
    core_more = project.queue_dir / "core-more.patch"
    core_more.write_text(core_more.read_text().replace("Origin: vendor\n", "").replace("2026-01-01", "1 Jan"))
    problems = "\n".join(series.check_queue(project))
    assert "pkg/stray.py is named by no patch's Kit-Files" in problems
    assert "unlisted.patch is not in series" in problems and "core-more.patch: no Origin field" in problems
    assert "core-more.patch: Last-Update is not YYYY-MM-DD" in problems
    with pytest.raises(KitError, match="inconsistent"):
        patchqueue.build_from_queue(project, upstream, commit)


def applied_checkout(pinned, tmp_path) -> Path:
    project, upstream, _, _ = pinned
    checkout = fresh_copy(upstream, tmp_path / "checkout")
    patching.apply_patch("demo", checkout, project.patch_file)
    return checkout


# --- the maintainer's workflow: the queue on a git branch, edited with git, exported (gbp pq) ----------------

def git_with(cwd: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def amend(checkout: Path, base: str, name: str, files: dict[str, str | None]) -> None:
    """What a maintainer does: `git rebase -i`, `edit` on the patch's commit, change files, amend, continue."""
    git_with(checkout, {"GIT_SEQUENCE_EDITOR": f"sed -i '/Name {name}.patch/s/^pick/edit/'"}, "rebase", "-i", base)
    write_files(checkout, files)
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "--amend", "--no-edit")
    git_with(checkout, {"GIT_EDITOR": "true"}, "rebase", "--continue")


def kit_files(project: Project) -> dict[str, bytes]:
    """Everything export may write: the queue, the port, the root patch."""
    paths = [*project.queue_dir.iterdir(), *project.port_dir.rglob("*"), project.patch_file]
    return {str(p): p.read_bytes() for p in sorted(paths) if p.is_file()}


def changed_files(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    return sorted(Path(p).name for p in set(before) | set(after) if before.get(p) != after.get(p))


def assert_applied_at_the_pin(project: Project, checkout: Path, upstream: Path, tmp_path: Path) -> None:
    """Back where import found it: HEAD as before, no queue branch, the root patch applied and reproducing it."""
    assert git(checkout, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert not git(checkout, "branch", "--list", patchqueue.QUEUE_BRANCH)
    assert git(checkout, "diff", "--cached", "--name-only") == ""  # the index at the pin, the patch unstaged
    assert patching.patch_state(checkout, project.patch_file)[0] is patching.PatchState.APPLIED
    fresh = fresh_copy(upstream, tmp_path / "fresh")
    patching.apply_patch("demo", fresh, project.patch_file)
    assert gitutil.content_tree_id(fresh) == gitutil.content_tree_id(checkout)


def test_import_puts_one_commit_per_patch_with_its_header_and_port_files(pinned, tmp_path):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    assert patchqueue.import_queue(project, checkout, commit) == 3
    assert git(checkout, "symbolic-ref", "HEAD") == f"refs/heads/{patchqueue.QUEUE_BRANCH}"
    assert git(checkout, "status", "--porcelain") == ""  # the work tree was the queue's tip already
    messages = git(checkout, "log", "--reverse", "--format=%B%x00", f"{commit}..").split("\0")
    assert messages[1].strip() == ("Description: core-fix\n the core-fix change\nOrigin: vendor\nAuthor: t\n"
                                   "Forwarded: no\nLast-Update: 2026-01-01\nGbp-Pq: Name core-fix.patch")
    first = git(checkout, "rev-list", "--reverse", f"{commit}..").split()[0]
    assert git(checkout, "show", "--format=", "--name-only", first).split() == ["pkg/__init__.py", "pkg/new_module.py"]
    assert sources.check_pin(project, checkout).ok  # status: still the pin, the patch applied
    assert patching.patch_state(checkout, project.patch_file)[0] is patching.PatchState.APPLIED


def test_round_trip_amending_a_middle_patch_changes_only_it_and_the_root_patch(pinned, tmp_path):
    """The issue's "done when": import, amend a middle patch with git, export."""
    project, upstream, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    before = kit_files(project)
    patchqueue.import_queue(project, checkout, commit)
    amend(checkout, commit, "core-fix", {"README.md": "upstream, fixed\n"})  # a file no later patch changes
    result = patchqueue.export_project(project, checkout, commit)
    after = kit_files(project)
    assert changed_files(before, after) == ["core-fix.patch", "demo.patch"]
    assert [Path(p).name for p in result.written] == ["demo.patch", "core-fix.patch"]
    fix = (project.queue_dir / "core-fix.patch").read_text()
    assert "+upstream, fixed" in fix
    assert fix.startswith("Description: core-fix\n the core-fix change\nOrigin: vendor\nAuthor: t\n")
    assert_applied_at_the_pin(project, checkout, upstream, tmp_path)
    assert patchqueue.stale_files(project, checkout, commit) == []


def test_amending_a_file_a_later_patch_changes_moves_only_that_patch_s_index_line(pinned, tmp_path):
    project, upstream, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    before = kit_files(project)
    patchqueue.import_queue(project, checkout, commit)
    core = (checkout / "pkg/core.py").read_text()
    amend(checkout, commit, "core-fix", {"pkg/core.py": core.replace("line 21\n", "line 21 fixed too\n")
                                 .replace("line 35 more\n", "line 35\n")})
    patchqueue.export_project(project, checkout, commit)
    after = kit_files(project)
    assert changed_files(before, after) == ["core-fix.patch", "core-more.patch", "demo.patch"]
    old, new = (x[str(project.queue_dir / "core-more.patch")].decode().splitlines() for x in (before, after))
    # git's full blob ids name core-fix's new post-image; a changed patch gets the commit's date
    assert [a.split()[0] for a, b in zip(old, new) if a != b] == ["Last-Update:", "index"]
    assert "+line 21 fixed too" in (project.queue_dir / "core-fix.patch").read_text()
    assert_applied_at_the_pin(project, checkout, upstream, tmp_path)


def test_a_new_commit_is_a_new_patch_with_a_dep3_header_and_its_new_files_in_port(pinned, tmp_path):
    project, upstream, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    patchqueue.import_queue(project, checkout, commit)
    write_files(checkout, {"pkg/extra.py": "EXTRA = 1\n", "README.md": "upstream and more\n"})
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "Extra: a module of our own\n\nIt is needed because of reasons.")
    patchqueue.export_project(project, checkout, commit)
    assert series.series_names(project)[-1] == "extra-a-module-of-our-own.patch"
    added = series.read_queue(project)[-1]
    today = git(upstream, "log", "-1", "--format=%cs")
    assert added.fields == {"Description": "Extra: a module of our own\nIt is needed because of reasons.",
                            "Origin": "vendor", "Author": "t", "Forwarded": "no", "Kit-Files": "pkg/extra.py",
                            "Last-Update": today}
    assert added.touched == ["README.md"] and (project.port_dir / "pkg/extra.py").read_text() == "EXTRA = 1\n"
    assert series.check_queue(project) == []
    assert_applied_at_the_pin(project, checkout, upstream, tmp_path)


def test_a_port_file_amended_in_its_patch_s_commit_reaches_port(pinned, tmp_path):
    project, upstream, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    before = kit_files(project)
    patchqueue.import_queue(project, checkout, commit)
    amend(checkout, commit, "version", {"pkg/new_module.py": "NEW = 'amended'\n"})
    patchqueue.export_project(project, checkout, commit)
    assert changed_files(before, kit_files(project)) == ["demo.patch", "new_module.py", "version.patch"]
    assert (project.port_dir / "pkg/new_module.py").read_text() == "NEW = 'amended'\n"
    version = (project.queue_dir / "version.patch").read_text()
    assert version.replace(series.read_queue(project)[0].fields["Last-Update"], "2026-01-01") == \
        before[str(project.queue_dir / "version.patch")].decode()  # only its Last-Update moved
    assert_applied_at_the_pin(project, checkout, upstream, tmp_path)


def test_a_dropped_commit_leaves_the_series_with_its_file_and_port_files(pinned, tmp_path):
    project, upstream, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    patchqueue.import_queue(project, checkout, commit)
    git_with(checkout, {"GIT_SEQUENCE_EDITOR": "sed -i '/Name version.patch/s/^pick/drop/'"}, "rebase", "-i", commit)
    patchqueue.export_project(project, checkout, commit)
    assert series.series_names(project) == ["core-fix.patch", "core-more.patch"]
    assert not (project.queue_dir / "version.patch").exists() and not (project.port_dir / "pkg/new_module.py").exists()
    assert "VERSION" not in project.patch_file.read_text()
    assert_applied_at_the_pin(project, checkout, upstream, tmp_path)


def test_a_port_file_changed_by_two_commits_is_refused_and_nothing_is_written(pinned, tmp_path):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    before = kit_files(project)
    patchqueue.import_queue(project, checkout, commit)
    write_files(checkout, {"pkg/new_module.py": "NEW = 'later'\n"})
    git(checkout, "commit", "-qam", "later change")
    with pytest.raises(KitError, match="pkg/new_module.py, a file the kit wrote, is changed by the commits of both "
                                       "version and later-change.*--fixup"):
        patchqueue.export_project(project, checkout, commit)
    assert kit_files(project) == before


def test_export_refuses_uncommitted_changes_and_a_queue_changed_since_import(pinned, tmp_path):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    patchqueue.import_queue(project, checkout, commit)
    write_files(checkout, {"pkg/scratch.py": "x = 1\n"})
    with pytest.raises(KitError, match="not committed to patch-queue/kit: pkg/scratch.py"):
        patchqueue.export_project(project, checkout, commit)
    (checkout / "pkg/scratch.py").unlink()
    (project.port_dir / "pkg/new_module.py").write_text("NEW = 'edited in port/ meanwhile'\n")
    before = kit_files(project)
    with pytest.raises(KitError, match="changed since `series import`"):
        patchqueue.export_project(project, checkout, commit)
    assert kit_files(project) == before
    assert git(checkout, "symbolic-ref", "HEAD") == f"refs/heads/{patchqueue.QUEUE_BRANCH}"


def test_an_export_interrupted_while_writing_is_finished_by_running_it_again(pinned, tmp_path, monkeypatch):
    project, upstream, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    patchqueue.import_queue(project, checkout, commit)
    amend(checkout, commit, "core-fix", {"README.md": "upstream, fixed\n"})
    calls = []
    real_write = Path.write_bytes

    def interrupted(self, data):
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        patchqueue.export_project(project, checkout, commit)
    monkeypatch.undo()
    assert git(checkout, "symbolic-ref", "HEAD") == f"refs/heads/{patchqueue.QUEUE_BRANCH}"  # not lost
    patchqueue.export_project(project, checkout, commit)
    assert "+upstream, fixed" in (project.queue_dir / "core-fix.patch").read_text()
    assert_applied_at_the_pin(project, checkout, upstream, tmp_path)


def test_import_refuses_edits_that_are_not_the_root_patch_and_a_second_import(pinned, tmp_path):
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    patched = (checkout / "pkg/core.py").read_text()
    (checkout / "pkg/core.py").write_text("my edit\n")
    with pytest.raises(KitError, match="holds changes that are not .*demo.patch: pkg/core.py"):
        patchqueue.import_queue(project, checkout, commit)
    (checkout / "pkg/core.py").write_text(patched)
    (checkout / "notes.txt").write_text("mine\n")
    with pytest.raises(KitError, match="holds changes that are not .*demo.patch: notes.txt"):
        patchqueue.import_queue(project, checkout, commit)
    assert not git(checkout, "branch", "--list", patchqueue.QUEUE_BRANCH)
    (checkout / "notes.txt").unlink()
    patchqueue.import_queue(project, checkout, commit)
    with pytest.raises(KitError, match="has a patch-queue/kit branch already"):
        patchqueue.import_queue(project, checkout, commit)


def test_import_of_a_pristine_checkout_checks_the_branch_out_and_drop_brings_the_root_patch(pinned, tmp_path):
    project, upstream, _, commit = pinned
    checkout = fresh_copy(upstream, tmp_path / "checkout")
    patchqueue.import_queue(project, checkout, commit)
    tip = git(checkout, "rev-parse", "HEAD")
    assert (checkout / "pkg/new_module.py").read_text() == "NEW = True\n"
    assert git(checkout, "status", "--porcelain") == ""
    write_files(checkout, {"pkg/core.py": "abandoned\n"})
    patchqueue.drop_queue(project, checkout)
    assert_applied_at_the_pin(project, checkout, upstream, tmp_path)
    patchqueue.import_queue(project, checkout, commit)
    assert git(checkout, "rev-parse", "HEAD") == tip  # the same queue, the same commits


def test_export_without_a_branch_brings_a_port_edit_into_the_checkout(pinned, tmp_path):
    """port/ is the source: an edit there reaches the checkout by export (the root patch swapped), never back."""
    project, _, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    (project.port_dir / "pkg/new_module.py").write_text("NEW = 'from port'\n")
    result = patchqueue.export_project(project, checkout, commit)
    assert [Path(p).name for p in result.written] == ["demo.patch"] and "applied" in result.checkout
    assert (checkout / "pkg/new_module.py").read_text() == "NEW = 'from port'\n"
    assert patching.patch_state(checkout, project.patch_file)[0] is patching.PatchState.APPLIED
    (checkout / "pkg/new_module.py").write_text("NEW = 'edited in the checkout'\n")
    (project.port_dir / "pkg/new_module.py").write_text("NEW = 'from port, again'\n")
    result = patchqueue.export_project(project, checkout, commit)
    assert "not updated" in result.checkout and "pkg/new_module.py" in result.checkout
    assert (project.port_dir / "pkg/new_module.py").read_text() == "NEW = 'from port, again'\n"


def test_export_check_finds_a_stale_root_patch_and_a_hand_edited_queue_patch(pinned):
    project, upstream, _, commit = pinned
    assert patchqueue.stale_files(project, upstream, commit) == []
    fix, more = project.queue_dir / "core-fix.patch", project.queue_dir / "core-more.patch"
    fix.write_text(fix.read_text().replace("+line 20 patched", "+line 20 patched by hand"))
    # core-fix's post-image blob id and core-more's pre-image one name the old content; the root patch too
    assert set(patchqueue.stale_files(project, upstream, commit)) == {fix, more, project.patch_file}
    patchqueue.export_project(project, upstream, commit)  # no branch: the queue normalised, the root rebuilt
    assert patchqueue.stale_files(project, upstream, commit) == []
    assert "+line 20 patched by hand" in project.patch_file.read_text()


def test_import_and_export_leave_out_ignored_files_and_kit_links(pinned, tmp_path):
    project, upstream, _, commit = pinned
    checkout = applied_checkout(pinned, tmp_path)
    (checkout / "build").mkdir()
    (checkout / "build" / "ext.so").write_text("binary")
    sources.exclude_local_paths(checkout, flashocc=True)
    (checkout / "test").symlink_to("..")
    before = kit_files(project)
    patchqueue.import_queue(project, checkout, commit)
    assert "build/ext.so" not in git(checkout, "ls-files") and "test" not in git(checkout, "ls-files").split()
    patchqueue.export_project(project, checkout, commit)
    assert kit_files(project) == before and (checkout / "build" / "ext.so").exists()
    (checkout / "test").unlink()  # the comparison's throwaway repository does not read .git/info/exclude
    assert_applied_at_the_pin(project, checkout, upstream, tmp_path)


def test_round_trip_on_the_real_flashocc_queue(tmp_path):
    """The same round trip on a copy of the workspace's FlashOCC checkout and its queue."""
    from flashocc_kit.pins import load_projects

    real = load_projects()["flashocc"]
    source = KIT_ROOT / real.path
    if not gitutil.is_git_toplevel(source):
        pytest.skip(f"no FlashOCC checkout at {source}: run `python3 tools/kit.py setup`")
    skip = {"data", "mmdetection3d", "test", "work_dirs", "ckpts"}
    checkout = tmp_path / "FlashOCC"
    shutil.copytree(source, checkout, symlinks=True, ignore=lambda d, names: [
        n for n in names if (Path(d) == source and n in skip) or n == "__pycache__"])
    shutil.copytree(real.queue_dir, tmp_path / "queue")
    shutil.copytree(real.port_dir, tmp_path / "port", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(real.patch_file, tmp_path / "flashocc.patch")
    project = Project(name="flashocc", path="FlashOCC", patch=str(tmp_path / "flashocc.patch"), repo=real.repo,
                      ref=real.ref, commit=real.commit, queue=str(tmp_path / "queue"), port=str(tmp_path / "port"))
    base = sources.base_commit_for_export(project, checkout)
    patchqueue.export_project(project, checkout, base)  # the copy's root patch names the copy's queue
    head = git(checkout, "rev-parse", "HEAD")
    before = kit_files(project)
    assert patchqueue.import_queue(project, checkout, base) == len(series.series_names(project))
    git_with(checkout, {"GIT_SEQUENCE_EDITOR": "sed -i '/Name runtime-requirements.patch/s/^pick/edit/'"},
             "rebase", "-i", base)
    with (checkout / "requirements/runtime.txt").open("a") as fh:
        fh.write("# the maintainer's amendment\n")
    git(checkout, "commit", "-qa", "--amend", "--no-edit")
    git_with(checkout, {"GIT_EDITOR": "true"}, "rebase", "--continue")
    patchqueue.export_project(project, checkout, base)
    assert changed_files(before, kit_files(project)) == ["flashocc.patch", "runtime-requirements.patch"]
    assert "+# the maintainer's amendment" in (tmp_path / "queue/runtime-requirements.patch").read_text()
    assert git(checkout, "rev-parse", "HEAD") == head and not git(checkout, "branch", "--list", "patch-queue/*")
    assert patching.patch_state(checkout, project.patch_file)[0] is patching.PatchState.APPLIED
    assert patchqueue.stale_files(project, checkout, base) == []


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


def test_cli_series_import_and_export_leave_the_checkout_applied(pinned, tmp_path, monkeypatch, capsys):
    from flashocc_kit import cli

    project, upstream, _, commit = pinned
    pins = tmp_path / "pins.ini"
    pins.write_text("\n".join(f"[project:{name}]\npath = {name}\npatch = {project.patch_file}\nrepo = {project.repo}\n"
                              f"ref = main\ncommit = {commit}\nqueue = {project.queue}\nport = {project.port}\n"
                              for name in ("flashocc", "mmcv", "mmdet", "mmdet3d")))
    monkeypatch.setenv("FLASHOCC_KIT_PINS", str(pins))
    workspace = tmp_path / "ws"
    fresh_copy(upstream, workspace / "mmcv")
    kit = ["--workspace", str(workspace)]
    assert cli.main([*kit, "export", "mmcv"]) == 0 and cli.main([*kit, "apply", "mmcv"]) == 0
    assert cli.main([*kit, "series", "import", "mmcv"]) == 0
    assert Workspace.at(workspace).status_rows()[1]["revision"] == f"{commit[:12]} + patch-queue/kit"
    amend(workspace / "mmcv", commit, "core-fix", {"README.md": "edited\n"})
    assert cli.main([*kit, "series", "export", "--check", "mmcv"]) == 0  # the committed files are still consistent
    assert "has patch-queue/kit" in capsys.readouterr().out
    assert cli.main([*kit, "series", "export", "mmcv"]) == 0
    assert "core-fix.patch" in capsys.readouterr().out
    rows = Workspace.at(workspace).status_rows()
    assert (rows[1]["revision"], rows[1]["pin ok"], rows[1]["patch"]) == (commit[:12], "yes", "applied")
    capsys.readouterr()
    assert cli.main([*kit, "export", "mmcv", "--into", "x"]) == 2
    assert "--into x: export no longer takes a checkout's edits. Fix: `kit.py series import" in capsys.readouterr().err
