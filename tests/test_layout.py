"""The kit's structure: no import cycles, the command layer on top, one module per command."""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import KIT_ROOT

PACKAGE = KIT_ROOT / "tools" / "flashocc_kit"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The kit modules a module imports, anywhere in it (inside functions too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}
    # importing a.b.c runs a/__init__ and a/b/__init__ first: not an edge that can close a cycle by itself
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_kit_imports_one_that_imports_it_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_only_the_command_layer_and_the_entry_point_import_the_commands():
    for module, deps in import_graph().items():
        if module.startswith("flashocc_kit.commands") or module == "flashocc_kit.cli":
            continue
        assert not [d for d in deps if d.startswith("flashocc_kit.commands")], module


def test_each_command_lives_in_the_module_named_after_it():
    from flashocc_kit import cli

    commands = cli.build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        module = name.replace("-", "_")
        assert (PACKAGE / "commands" / f"{module}.py").is_file(), name
        nested = [a.choices.values() for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        funcs = [parser.get_default("func")] if not nested else [p.get_default("func") for p in nested[0]]
        assert {f.__module__ for f in funcs} == {f"flashocc_kit.commands.{module}"}, name


def test_ci_runs_exactly_the_test_commands_the_readme_gives():
    readme = (KIT_ROOT / "README.md").read_text()
    section = readme.split("\n## Testing\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
    ci = [line.strip() for line in (KIT_ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands and all(command in ci for command in commands), (commands, ci)


FAKE_PYTHON = """#!/bin/sh
# stands in for {name}: records its arguments, takes a second, exits as the test says
echo "{name} $*" >> "$CALLS"
nice > "$CALLS.{name}.niceness"
echo "$OMP_NUM_THREADS $MKL_NUM_THREADS" > "$CALLS.{name}.threads"
sleep "$CELL_SECONDS"
echo "{name} ran"
exit "${{{status}:-0}}"
"""


def run_ci(tmp_path: Path, first: int, second: int) -> tuple[subprocess.CompletedProcess, float, list[str]]:
    """.ci/run in a copy of the repository's layout, its two cells' Pythons stood in for (no pyenv on PATH)."""
    root = tmp_path / "repo"
    (root / ".ci").mkdir(parents=True)
    shutil.copy(KIT_ROOT / ".ci" / "run", root / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, status in (("python3", "FIRST_STATUS"), ("python3.10", "SECOND_STATUS")):
        (bin_dir / name).write_text(FAKE_PYTHON.format(name=name, status=status))
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "CELL_SECONDS": "2",
           "FIRST_STATUS": str(first), "SECOND_STATUS": str(second), "HOME": os.environ.get("HOME", "/")}
    started = time.monotonic()
    proc = subprocess.run(["bash", str(root / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    return proc, time.monotonic() - started, calls.read_text().splitlines()


@pytest.mark.parametrize("first, second, code", [(0, 0, 0), (1, 0, 1), (0, 1, 1), (0, 5, 1)])
def test_ci_runs_both_cells_side_by_side_and_fails_if_either_fails(tmp_path, first, second, code):
    proc, seconds, calls = run_ci(tmp_path, first, second)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert sorted(calls) == ["python3 tools/kit.py test --require-sources",
                             "python3.10 tools/kit.py test --stack torch2.7 --short --require-sources"]
    assert seconds < 3.5, "the two cells ran one after the other"  # each takes 2 s
    assert "python3.10 ran" in proc.stdout  # the second cell's output, shown after the first's
    assert f"default cell exit {first}; torch 2.7 cell set exit {second}" in proc.stdout
    # the default cell (the longest chain) keeps this script's priority; the second yields to it (nice 5)
    niceness = {name: int((tmp_path / f"calls.{name}.niceness").read_text()) for name in ("python3", "python3.10")}
    assert niceness == {"python3": os.nice(0), "python3.10": min(19, os.nice(0) + 5)}
    # one thread per process in both cells: the cores are shared
    threads = {name: (tmp_path / f"calls.{name}.threads").read_text().split() for name in ("python3", "python3.10")}
    assert threads == {"python3": ["1", "1"], "python3.10": ["1", "1"]}
