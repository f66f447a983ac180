"""A patch queue as git commits, as Debian's `gbp pq` keeps one: imported onto a branch, exported back.

`import_queue` commits each queued patch on the pin, in series order, on the branch patch-queue/kit
(message: the patch's DEP-3 header and gbp's `Gbp-Pq: Name` line; the port files it names are in its
commit) and checks it out; the maintainer edits with git. `export_project` writes the queue back from
the commits (`git format-patch`), the port files out of the commits that own them, and the root patch,
then puts the checkout back on the pin with the root patch applied. Without a branch it builds the same
commits from the queue in a throwaway object store: that is how `export --check` finds stale files.
The same queue gives the same commits and the same bytes, whatever the user's git configuration.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from . import gitutil, series
from .errors import KitError
from .patchfile import read_patch_text
from .patching import PatchState, apply_patch, patch_state, revert_patch
from .pins import KIT_ROOT, Project
from .series import DATE, QueuedPatch

QUEUE_BRANCH = "patch-queue/kit"
BRANCH_REF = f"refs/heads/{QUEUE_BRANCH}"
NAME_FIELD = "Gbp-Pq"  # gbp's own line, `Gbp-Pq: Name foo.patch`: the file a commit exports to
RECORD = "flashocc-kit-queue"  # in the checkout's git directory while its queue is imported
KIT_AUTHOR = "FlashOCC Ascend porting kit"
KIT_IDENTITY = {"GIT_AUTHOR_NAME": KIT_AUTHOR, "GIT_AUTHOR_EMAIL": "flashocc-kit@localhost",
                "GIT_COMMITTER_NAME": KIT_AUTHOR, "GIT_COMMITTER_EMAIL": "flashocc-kit@localhost"}
UNDATED = "2000-01-01"  # the commit date of a patch without a Last-Update
FORMAT_PATCH_OPTIONS = ("--stdout", "-k", "--no-stat", "--no-signature", "--no-attach", "--no-base", "--no-notes")


@dataclass(frozen=True)
class Imported:
    """What `series import` recorded in a checkout."""

    base: str  # the pin the queue sits on
    head: str  # HEAD before the import: a ref (refs/heads/...) or a commit id
    tip: str  # the branch as import made it (the queue as it was then)
    exporting: bool = False  # an export began writing: patches/ and port/ are the branch's, not the import's


@dataclass
class Built:
    """What a queue's commits export to."""

    patches: list[QueuedPatch]
    port: dict[str, tuple[str, bytes]]  # path -> (git mode, content) of the files the kit wrote
    root: str  # the root patch's text


def _git_dir(repo: Path) -> Path:
    return Path(gitutil.git(repo, "rev-parse", "--absolute-git-dir").stdout.strip())


def read_record(repo: Path) -> Imported | None:
    """The imported queue of a checkout, or None when it has none (no record, or no branch)."""
    if not gitutil.is_git_toplevel(repo):
        return None
    record = _git_dir(repo) / RECORD
    if not record.is_file() or gitutil.resolve_commit(repo, BRANCH_REF) is None:
        return None
    return Imported(**json.loads(record.read_text()))


def _record(repo: Path, record: Imported) -> None:
    (_git_dir(repo) / RECORD).write_text(json.dumps(asdict(record)) + "\n")


def on_queue_branch(repo: Path) -> bool:
    return gitutil.git(repo, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip() == BRANCH_REF


@contextmanager
def scratch(repo: Path, objects: bool) -> Iterator[dict[str, str]]:
    """A throwaway index and, with objects, a throwaway object store that reads through to the repo's."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if objects:
            store = Path(tmp) / "objects"
            (store / "info").mkdir(parents=True)
            (store / "info" / "alternates").write_text(f"{_git_dir(repo) / 'objects'}\n")
            env["GIT_OBJECT_DIRECTORY"] = str(store)
        yield env


def commit_message(patch: QueuedPatch) -> str:
    return series.format_fields(patch.fields) + f"{NAME_FIELD}: Name {patch.name}.patch\n"


def commit_queue(project: Project, repo: Path, base: str, env: dict[str, str]) -> str:
    """Commit each queued patch (its diff and its port files) on base, in series order; the last commit."""
    problems = series.check_queue(project)
    if problems:
        raise KitError(f"{project.name}: the patch queue is inconsistent:\n  " + "\n  ".join(problems)
                       + "\nFix: correct patches/ or port/ as each line says")
    gitutil.git(repo, "read-tree", base, env=env)
    parent = base
    for patch in series.read_queue(project):
        if patch.diff.strip():
            proc = gitutil.git(repo, "apply", "--cached", "-", env=env, input_text=patch.diff, check=False)
            if proc.returncode != 0:
                raise KitError(f"{patch.path} does not apply after the patches before it in the series:\n"
                               f"{proc.stderr.strip()}\nFix: restore it (`git checkout -- {shown(patch.path)}`) or "
                               "make the change through the queue branch (`kit.py series import`)")
        if patch.kit_files:
            files = [project.port_dir / rel for rel in patch.kit_files]
            blobs = gitutil.git(repo, "hash-object", "-w", "--no-filters", "--", *map(str, files),
                                env=env).stdout.split()
            info = "".join(f"{'100755' if os.access(f, os.X_OK) else '100644'} {blob}\t{rel}\n"
                           for f, blob, rel in zip(files, blobs, patch.kit_files))
            gitutil.git(repo, "update-index", "--add", "--index-info", env=env, input_text=info)
        tree = gitutil.git(repo, "write-tree", "--missing-ok", env=env).stdout.strip()
        day = patch.fields.get("Last-Update", "")
        stamp = f"{day if DATE.match(day) else UNDATED}T00:00:00Z"
        parent = gitutil.git(repo, "commit-tree", "--no-gpg-sign", tree, "-p", parent, "-F", "-",
                             env={**env, **KIT_IDENTITY, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
                             input_text=commit_message(patch)).stdout.strip()
    return parent


def _fields_of(message: str, author: str, source: str) -> tuple[dict[str, str], str]:
    """A commit message's DEP-3 fields and the patch name it asks for ("" if none)."""
    lines = message.strip("\n").split("\n")
    if any(line.startswith("diff --git") for line in lines):
        raise KitError(f"commit {source}: a line of its message starts with `diff --git`, which is where "
                       "format-patch's readers take the diff to begin. Fix: indent that line (`git commit --amend`)")
    if lines[0].startswith("Description:"):
        fields = series.parse_fields(lines, f"commit {source}")
    else:  # a plain git message: its subject and body are the Description
        body = lines[2:] if len(lines) > 1 and not lines[1].strip() else lines[1:]
        fields = {"Description": "\n".join(line.rstrip() for line in [lines[0], *body])}
    name = fields.pop(NAME_FIELD, "")
    name = name[len("Name "):] if name.startswith("Name ") else ""
    fields.setdefault("Origin", "vendor")
    fields.setdefault("Author", author)
    fields.setdefault("Forwarded", "no")
    return fields, name[: -len(".patch")] if name.endswith(".patch") else name


def _slug(summary: str, taken: set) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", summary.lower()).split()
    stem = "-".join(words)[:48].rstrip("-") or "patch"
    name, number = stem, 2
    while name in taken:
        name, number = f"{stem}-{number}", number + 1
    return name


def _diff_part(format_patch_output: str) -> str:
    """The diff of `git format-patch` output (after the mail header and the message)."""
    start = format_patch_output.find("\ndiff --git ")
    return format_patch_output[start + 1:] if start >= 0 else ""


def build_from_commits(project: Project, repo: Path, base: str, tip: str, env: dict[str, str]) -> Built:
    """The queue, the port files and the root patch that the commits base..tip export to."""
    if gitutil.git(repo, "merge-base", "--is-ancestor", base, tip, env=env, check=False).returncode != 0:
        raise KitError(f"{project.name}: {QUEUE_BRANCH} does not start at the pin {base[:12]}. "
                       f"Fix: rebase it onto the pin (`git rebase --onto {base[:12]} <its old base>`)")
    merges = gitutil.git(repo, "rev-list", "--min-parents=2", f"{base}..{tip}", env=env).stdout.split()
    if merges:
        raise KitError(f"{project.name}: {QUEUE_BRANCH} has merge commits ({', '.join(m[:12] for m in merges)}), "
                       "and a queue is a line of patches. Fix: `git rebase` the branch onto the pin")
    commits = gitutil.git(repo, "rev-list", "--reverse", f"{base}..{tip}", env=env).stdout.split()
    in_base = set(gitutil.git(repo, "ls-tree", "-r", "-z", "--name-only", base, env=env).stdout.split("\0"))
    previous = {p.name: p for p in series.read_queue(project)} if (project.queue_dir / "series").is_file() else {}
    literal = {**env, "GIT_LITERAL_PATHSPECS": "1"}
    owners: dict[str, str] = {}
    patches: list[QueuedPatch] = []
    port: dict[str, tuple[str, bytes]] = {}
    for commit in commits:
        message, author, day = gitutil.git(repo, "log", "-1", "--format=%B%x00%an%x00%cs", commit,
                                           env=env).stdout.split("\0")
        fields, name = _fields_of(message, author, commit[:12])
        name = name or _slug(fields["Description"].split("\n")[0], {p.name for p in patches})
        if name in {p.name for p in patches} or "/" in name or name.startswith("."):
            raise KitError(f"commit {commit[:12]}: `{NAME_FIELD}: Name {name}.patch` is not a file name of its own "
                           f"in the queue. Fix: give it another name (`git commit --amend`)")
        changed = gitutil.git(repo, "diff-tree", "--no-commit-id", "--no-renames", "-r", "-z", "--name-only",
                              f"{commit}^", commit, env=env).stdout.split("\0")[:-1]
        upstream = [rel for rel in changed if rel in in_base]
        wrote = [rel for rel in changed if rel not in in_base]
        for rel in wrote:
            if rel in owners:
                raise KitError(f"{rel}, a file the kit wrote, is changed by the commits of both {owners[rel]} and "
                               f"{name}: it belongs to one patch. Fix: fold the change into {owners[rel]}'s commit "
                               "(`git commit --fixup=<its commit>`, then `git rebase -i --autosquash`)")
            owners[rel] = name
            mode, _, blob = gitutil.git(repo, "ls-tree", commit, "--", rel, env=literal).stdout.split("\t")[0].split()
            port[rel] = (mode, gitutil.git_bytes(repo, "cat-file", "blob", blob, env=env))
        diff = _diff_part(gitutil.git(repo, "format-patch", *FORMAT_PATCH_OPTIONS, *gitutil.DIFF_OPTIONS,
                                      f"{commit}^..{commit}", "--", *upstream, env=literal).stdout) if upstream else ""
        named = fields.get("Kit-Files", "").split()
        kit_files = [rel for rel in named if rel in wrote] + sorted(set(wrote) - set(named))
        fields.pop("Kit-Files", None)
        if kit_files:
            fields["Kit-Files"] = "\n".join(kit_files)
        old = previous.get(name)
        changed_content = old is None or old.diff != diff or old.kit_files != kit_files or any(
            not (project.port_dir / rel).is_file() or (project.port_dir / rel).read_bytes() != port[rel][1]
            for rel in kit_files)
        if changed_content and (old is None or fields.get("Last-Update") == old.fields.get("Last-Update")):
            fields["Last-Update"] = day.strip()
        fields.setdefault("Last-Update", day.strip())
        patches.append(QueuedPatch(name, project.queue_dir / f"{name}.patch", fields, diff))
    whole = gitutil.git(repo, "diff", *gitutil.DIFF_OPTIONS, base, tip, env=env).stdout
    root = series.root_header(project, patches, sorted(port)) + whole if whole else ""
    return Built(patches, port, root)


def _targets(project: Project, built: Built) -> dict[Path, bytes | None]:
    """Every file an export writes (None: removes) and its bytes."""
    files: dict[Path, bytes | None] = {}
    for old in series.series_names(project) if (project.queue_dir / "series").is_file() else []:
        files[project.queue_dir / old] = None
    for patch in built.patches:
        files[patch.path] = patch.text().encode("utf-8", "surrogateescape")
    files[project.queue_dir / series.SERIES_FILE] = "".join(f"{p.name}.patch\n" for p in built.patches).encode()
    for rel in series.port_files(project):
        files[project.port_dir / rel] = None
    for rel, (_, data) in built.port.items():
        files[project.port_dir / rel] = data
    files[project.patch_file] = built.root.encode("utf-8", "surrogateescape")
    return files


def _current(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _write(project: Project, built: Built) -> list[Path]:
    """Write the export; the branch stays until the end, so an interrupted export is finished by running it again."""
    changed = {path: data for path, data in _targets(project, built).items() if _current(path) != data}
    for path, data in changed.items():
        if data is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for rel, (mode, _) in built.port.items():
        path = project.port_dir / rel
        if os.access(path, os.X_OK) != (mode == "100755"):
            path.chmod(path.stat().st_mode ^ 0o111)
    return sorted(changed)


def build_from_queue(project: Project, repo: Path, base: str) -> Built:
    """What the committed queue and port export to (commits made in a throwaway object store)."""
    with scratch(repo, objects=True) as env:
        return build_from_commits(project, repo, base, commit_queue(project, repo, base, env), env)


def queue_tip(project: Project, repo: Path, base: str) -> str:
    """The commit `import` makes of the committed queue (the same queue, the same commit id), made aside."""
    with scratch(repo, objects=True) as env:
        return commit_queue(project, repo, base, env)


def stale_files(project: Project, repo: Path, base: str) -> list[Path]:
    """The committed files an export of the queue would rewrite: hand-edited patches, a stale root patch."""
    return sorted(path for path, data in _targets(project, build_from_queue(project, repo, base)).items()
                  if _current(path) != data)


def shown(path: Path) -> str:
    """A path as the user reads it: relative to the kit root when inside it."""
    return str(path.relative_to(KIT_ROOT)) if KIT_ROOT in path.parents else str(path)


def _refit_checkout(project: Project, checkout: Path, old_root: str) -> str:
    """Give a checkout that held the previous root patch the new one (port/ -> checkout, never back)."""
    with tempfile.NamedTemporaryFile("w", suffix=".patch", delete=False, encoding="utf-8",
                                     errors="surrogateescape") as fh:
        fh.write(old_root)
    old = Path(fh.name)
    try:
        state, checks = patch_state(checkout, old)
        if state is PatchState.MISSING or state is PatchState.PRISTINE:
            return f"{checkout}: {state.value}, left as it was"
        if state is PatchState.CONFLICT:
            edited = ", ".join(c.change.path for c in checks if not c.is_post)
            return (f"{checkout} not updated: it does not hold the previous {project.patch} ({edited} differ). "
                    f"Fix: make those edits in port/ or through `kit.py series import {project.name}`, restore the "
                    f"files (`git -C {checkout} checkout -- <file>`), then `kit.py apply {project.name}`")
        revert_patch(project.name, checkout, old)
        try:
            apply_patch(project.name, checkout, project.patch_file)
        except KitError:
            apply_patch(project.name, checkout, old)
            raise
        return f"{checkout}: the new {project.patch} applied"
    finally:
        old.unlink()


@dataclass
class ExportResult:
    written: list[Path]
    checkout: str  # what became of the checkout


def export_project(project: Project, checkout: Path, base: str) -> ExportResult:
    """Write the queue, the port and the root patch from the queue branch, or else rebuild them from the queue."""
    record = read_record(checkout)
    old_root = read_patch_text(project.patch_file) if project.patch_file.is_file() else ""
    if record is None:
        built = build_from_queue(project, checkout, base)
        written = _write(project, built)
        if built.root == old_root or not old_root:
            return ExportResult(written, "")
        return ExportResult(written, _refit_checkout(project, checkout, old_root))
    if not on_queue_branch(checkout):
        raise KitError(f"{project.name}: {checkout} is not on {QUEUE_BRANCH} (a rebase still running?). "
                       f"Fix: finish the rebase (`git -C {checkout} rebase --continue`) or `git -C {checkout} switch "
                       f"{QUEUE_BRANCH}`, then export again")
    dirty = gitutil.changed_paths(checkout)
    if dirty:
        raise KitError(f"{project.name}: {checkout} has changes not committed to {QUEUE_BRANCH}: "
                       f"{', '.join(dirty[:10])}. Fix: commit them (`git commit --amend` into the patch's commit, or a "
                       "new commit for a new patch), or `git stash -u` them, then export again")
    if not record.exporting and queue_tip(project, checkout, record.base) != record.tip:
        queue, port = shown(project.queue_dir), shown(project.port_dir)
        raise KitError(f"{project.name}: {queue} or {port} changed since `series import`, and the export would "
                       f"overwrite that change. Fix: make it on {QUEUE_BRANCH} too, restore the files (`git checkout "
                       f"-- {queue} {port}`), then export; or `kit.py series drop {project.name}` and import again")
    tip = gitutil.git(checkout, "rev-parse", BRANCH_REF).stdout.strip()
    built = build_from_commits(project, checkout, record.base, tip, {})
    _record(checkout, Imported(record.base, record.head, record.tip, exporting=True))
    written = _write(project, built)
    _leave_branch(checkout, record)
    return ExportResult(written, f"{checkout}: back on the pin, {project.patch} applied")


def _leave_branch(checkout: Path, record: Imported) -> None:
    """HEAD back where import found it, the index at the pin, the work tree (the branch's files) untouched."""
    if record.head.startswith("refs/"):
        gitutil.git(checkout, "symbolic-ref", "HEAD", record.head)
    else:
        gitutil.git(checkout, "update-ref", "--no-deref", "HEAD", record.head)
    gitutil.git(checkout, "reset", "-q")
    gitutil.git(checkout, "branch", "-q", "-D", QUEUE_BRANCH)
    (_git_dir(checkout) / RECORD).unlink()


def import_queue(project: Project, checkout: Path, base: str) -> int:
    """Put the queue on patch-queue/kit, one commit per patch, and check it out; the number of commits."""
    if gitutil.resolve_commit(checkout, BRANCH_REF):
        where = "HEAD is on it" if on_queue_branch(checkout) else "not exported"
        raise KitError(f"{project.name}: {checkout} has a {QUEUE_BRANCH} branch already ({where}). Fix: edit it and "
                       f"`kit.py series export {project.name}`, or `kit.py series drop {project.name}` to discard it")
    state, checks = patch_state(checkout, project.patch_file)
    touched = {c.change.path for c in checks}
    foreign = [rel for rel in gitutil.changed_paths(checkout) if rel not in touched]
    if state is PatchState.CONFLICT or foreign:
        edited = [c.change.path for c in checks if not c.is_post] if state is PatchState.CONFLICT else foreign
        raise KitError(f"{project.name}: {checkout} holds changes that are not {project.patch}: "
                       f"{', '.join(edited[:10])}. "
                       f"Fix: make them in port/ or, after the import, on {QUEUE_BRANCH}; restore the files "
                       f"(`git -C {checkout} checkout -- <file>`, `kit.py apply {project.name}`), then import")
    if state is PatchState.APPLIED and build_from_queue(project, checkout, base).root != \
            read_patch_text(project.patch_file):
        raise KitError(f"{project.name}: {project.patch} is not what the queue builds, so the checkout is not the "
                       f"queue's tip. Fix: `python3 tools/kit.py export {project.name}`, then import")
    with scratch(checkout, objects=False) as env:
        tip = commit_queue(project, checkout, base, env)
    head = gitutil.git(checkout, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip() or \
        gitutil.git(checkout, "rev-parse", "HEAD").stdout.strip()
    gitutil.git(checkout, "update-ref", BRANCH_REF, tip, "0" * 40)
    if state is PatchState.APPLIED:  # the work tree holds the tip's files already
        gitutil.git(checkout, "symbolic-ref", "HEAD", BRANCH_REF)
        gitutil.git(checkout, "reset", "-q")
    else:
        gitutil.git(checkout, "checkout", "-q", QUEUE_BRANCH)
    _record(checkout, Imported(base, head, tip))
    return len(gitutil.git(checkout, "rev-list", f"{base}..{tip}").stdout.split())


def drop_queue(project: Project, checkout: Path) -> None:
    """Discard the queue branch and its changes (not new untracked files); back on the pin, the root patch applied."""
    record = read_record(checkout)
    if record is None:
        raise KitError(f"{project.name}: {checkout} has no imported queue to drop. Fix: nothing to do "
                       f"(`kit.py series import {project.name}` makes one)")
    gitutil.git(checkout, "reset", "-q", "--hard", record.tip)  # the work tree: the root patch applied
    _leave_branch(checkout, record)

