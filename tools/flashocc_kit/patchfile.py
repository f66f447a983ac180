"""Reading a git-format patch: which files it touches, their pre/post blob ids, its hunks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

NULL_BLOB = re.compile(r"^0+$")
HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class FileChange:
    """One `diff --git` section of a patch."""

    old_path: str | None  # None for a new file
    new_path: str | None  # None for a deleted file
    old_blob: str | None = None  # None when the file does not exist before
    new_blob: str | None = None  # None when the file does not exist after
    hunks: list[str] = field(default_factory=list)  # "@@ -a,b +c,d @@" headers, in order

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or "?"

    def hunk_at(self, old_line: int) -> str | None:
        """The hunk header whose pre-image starts at old_line (git reports failures that way)."""
        for header in self.hunks:
            match = HUNK.match(header)
            if match and int(match.group(1)) == old_line:
                return header
        return None


def _strip_prefix(token: str, prefix: str) -> str | None:
    if token == "/dev/null":
        return None
    if not token.startswith(prefix):
        raise ValueError(f"unexpected path {token!r} (expected the {prefix!r} prefix)")
    return token[len(prefix):]


def parse_patch(text: str, source: str = "patch") -> list[FileChange]:
    """Parse `git diff --full-index`-style output. Raises ValueError on anything else."""
    changes: list[FileChange] = []
    current: FileChange | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("diff --git "):
            parts = line[len("diff --git "):].split(" ")
            if len(parts) != 2:
                raise ValueError(f"{source}:{number}: paths with spaces are not supported: {line}")
            current = FileChange(_strip_prefix(parts[0], "a/"), _strip_prefix(parts[1], "b/"))
            changes.append(current)
        elif current is None:
            continue  # preamble (the kit's header comment)
        elif line.startswith("new file mode"):
            current.old_path = None
        elif line.startswith("deleted file mode"):
            current.new_path = None
        elif line.startswith("index "):
            old, new = line.split()[1].split("..")
            current.old_blob = None if NULL_BLOB.match(old) else old
            current.new_blob = None if NULL_BLOB.match(new) else new
        elif line.startswith("@@ "):
            current.hunks.append(line.split(" @@")[0] + " @@")
        elif line.startswith(("rename from", "copy from")):
            raise ValueError(f"{source}:{number}: renames/copies are not supported; export with --no-renames")
    for change in changes:
        if change.old_path is not None and change.old_blob is None and change.new_blob is None:
            raise ValueError(f"{source}: {change.path} has no `index` line; export with --full-index")
    return changes


def read_patch(path: Path) -> list[FileChange]:
    if not path.is_file():
        from .errors import KitError
        raise KitError(f"{path} is missing: the kit checkout is incomplete (`git status` in the kit root)")
    return parse_patch(read_patch_text(path), source=path.name)


def read_patch_text(path: Path) -> str:
    """A patch's text; bytes that are not UTF-8 (upstream's GBK comments) survive as surrogates."""
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def _file_sections(text: str) -> list[tuple[str | None, list[str]]]:
    """(new path, lines) per `diff --git` section."""
    sections: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("diff --git "):
            new = line.split(" ")[3]
            sections.append((None if new == "/dev/null" else new[2:], []))
        elif sections:
            sections[-1][1].append(line)
    return sections


def added_lines(text: str) -> dict[str, set[int]]:
    """For each file a patch leaves behind, the post-image line numbers it adds or changes."""
    result: dict[str, set[int]] = {}
    for path, lines in _file_sections(text):
        if path is None:
            continue
        numbers: set[int] = set()
        new_line = 0
        in_hunk = False
        for line in lines:
            match = HUNK.match(line)
            if match:
                new_line, in_hunk = int(match.group(3)), True
            elif not in_hunk or line.startswith("\\"):
                continue
            elif line.startswith("+"):
                numbers.add(new_line)
                new_line += 1
            elif line.startswith(" "):
                new_line += 1
        if numbers:
            result[path] = numbers
    return result


def new_file_contents(text: str) -> dict[str, str]:
    """The full text of every file a patch creates, read from the patch itself."""
    contents: dict[str, str] = {}
    for path, lines in _file_sections(text):
        if path is None or not any(line.startswith("new file mode") for line in lines[:3]):
            continue
        body: list[str] = []
        for line in lines:
            if line.startswith("+") and not line.startswith("+++"):
                body.append(line[1:] + "\n")
            elif line.startswith("\\ No newline") and body:
                body[-1] = body[-1][:-1]
        contents[path] = "".join(body)
    return contents
