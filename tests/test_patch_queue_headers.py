"""Every patch of the four queues carries the same DEP-3 header: what and why, where from, who, whether upstream has
it, when it last changed, and (the kit's own field) the port files it owns.

Read from the files with this test's own parsing, not the kit's, so a header the kit would accept by mistake fails.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest

from conftest import KIT_ROOT

QUEUES = sorted(p for p in (KIT_ROOT / "patches").iterdir() if (p / "series").is_file())
PATCHES = [queue / name for queue in QUEUES for name in (queue / "series").read_text().split()]
ORDER = ["Description", "Origin", "Author", "Forwarded", "Kit-Files", "Last-Update"]
# DEP-3: Origin is "<upstream|backport|vendor|other>, <URL or commit id>", or the kit's own work alone: "vendor"
ORIGIN = re.compile(r"^(vendor|(upstream|backport|vendor|other), (https?://\S+|[0-9a-f]{7,40})( .*)?)$")
FORWARDED = re.compile(r"^(no|not-needed|yes|https?://\S+)$")


def header(path: Path) -> list[tuple[str, list[str]]]:
    """(field, lines) in file order, up to the `---` line."""
    fields: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").split("\n"):
        if line == "---":
            return fields
        if line.startswith(" "):
            assert fields, f"{path.name}: a continuation line before any field"
            fields[-1][1].append(line[1:])
        else:
            key, sep, value = line.partition(": ")
            assert sep and re.fullmatch(r"[A-Z][A-Za-z-]*", key), f"{path.name}: not a DEP-3 field line: {line!r}"
            fields.append((key, [value]))
    raise AssertionError(f"{path.name}: no `---` line ends the header")


def test_there_are_four_queues_and_each_series_names_existing_files():
    assert [q.name for q in QUEUES] == ["flashocc", "mmcv", "mmdet", "mmdet3d"]
    assert all(p.is_file() for p in PATCHES) and len(PATCHES) >= 28


@pytest.mark.parametrize("path", PATCHES, ids=[f"{p.parent.name}/{p.stem}" for p in PATCHES])
def test_dep3_header(path):
    fields = header(path)
    keys = [key for key, _ in fields]
    values = {key: lines for key, lines in fields}
    assert len(set(keys)) == len(keys), f"a field twice: {keys}"
    assert keys == [k for k in ORDER if k in keys] and set(keys) <= set(ORDER), keys
    assert set(ORDER) - {"Kit-Files"} <= set(keys), f"missing: {set(ORDER) - {'Kit-Files'} - set(keys)}"
    summary, *body = values["Description"]
    assert len(summary) >= 10 and body and all(line.strip() for line in body[:1]), "a summary line, then a body"
    assert all(len(v) == 1 for k, v in values.items() if k not in ("Description", "Kit-Files")), "one-line fields"
    assert ORIGIN.match(values["Origin"][0]), values["Origin"]
    assert values["Author"][0].strip(), "who wrote it"
    assert FORWARDED.match(values["Forwarded"][0]), values["Forwarded"]
    day = values["Last-Update"][0]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) and datetime.date.fromisoformat(day) <= datetime.date.today()
    if values["Origin"][0].startswith("other, https://gitee.com/ascend/DrivingSDK"):
        assert "Ascend DrivingSDK" in values["Author"][0], "a patch following the reference port names it"


@pytest.mark.parametrize("queue", QUEUES, ids=[q.name for q in QUEUES])
def test_kit_files_name_exactly_the_port_files(queue):
    """Kit-Files where a patch owns files of port/, and each port file owned by one patch."""
    port = KIT_ROOT / "port" / queue.name
    on_disk = sorted(str(p.relative_to(port)) for p in port.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts) if port.is_dir() else []
    named = [rel for path in PATCHES if path.parent == queue
             for key, lines in header(path) if key == "Kit-Files" for line in lines for rel in line.split()]
    assert sorted(named) == on_disk
