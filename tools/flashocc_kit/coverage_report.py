"""Which lines the patches add are executed by the test suite (`kit.py coverage`).

pytest runs under coverage.py, subprocesses included (the torchrun workers of the smoke runs, the
stand-in scenarios, the gloo ranks): a .pth hook starts coverage in every Python process of the
kit's environment for the duration of the run. A measured file counts for a patched file only if
its content is the patch's post-image (same git blob id), wherever it was executed from: the
workspace checkout, the installed mmcv, or a copy the tests extracted.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .gitutil import file_blob_id
from .patchfile import added_lines, read_patch, read_patch_text
from .pins import KIT_ROOT, load_projects

STARTUP_PTH = "flashocc_kit_coverage.pth"
TARGET = 95.0  # percent of added executable lines (the port issue's aim)


@dataclass
class FileReport:
    patch: str
    path: str
    added: list[int]  # added executable lines coverage.py can see run
    executed: set[int]
    source: list[str]
    untraceable: int = 0  # added lines no Python tracer can see run (WHY_CONFIG, WHY_NUMBA)
    why_untraceable: str = ""

    @property
    def missed(self) -> list[int]:
        return [n for n in self.added if n not in self.executed]


def rcfile_text(data_file: Path, patterns: list[str]) -> str:
    include = "\n    ".join(patterns)
    # multiprocessing: worker processes (the data check's pool, data loaders) are traced too
    return (f"[run]\nparallel = True\nconcurrency =\n    thread\n    multiprocessing\n"
            f"data_file = {data_file}\ninclude =\n    {include}\n")


CONFIG_DIR = "projects/configs/"
WHY_CONFIG = "config: mmcv's Config runs a temporary copy; tests/test_configs_build.py builds every config"
WHY_NUMBA = "numba-compiled: runs as machine code; the exactness tests compare its output with upstream's"


def jit_compiled_lines(source: str) -> set[int]:
    """Body lines of functions decorated with a numba jit (their `def` line does run in Python)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        decorators = [ast.get_source_segment(source, d) or "" for d in getattr(node, "decorator_list", [])]
        if isinstance(node, ast.FunctionDef) and any("jit" in d for d in decorators):
            lines.update(range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def patched_python_files() -> dict[str, tuple[str, str]]:
    """relative path -> (patch name, post-image blob id), for every .py file a patch leaves behind."""
    files = {}
    for project in load_projects().values():
        for change in read_patch(project.patch_file):
            if change.new_path and change.new_path.endswith(".py") and change.new_blob:
                files[change.new_path] = (project.patch, change.new_blob)
    return files


def run_suite(pytest_args: list[str], work: Path) -> Path:
    """pytest under coverage, every subprocess too; returns the combined data file."""
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob(".coverage*"):
        old.unlink()
    data_file = work / ".coverage"
    rcfile = work / "coveragerc"
    rcfile.write_text(rcfile_text(data_file, [f"*/{p}" for p in patched_python_files()]))
    pth = Path(sysconfig.get_paths()["purelib"]) / STARTUP_PTH
    pth.write_text("import coverage; coverage.process_startup()\n")
    try:
        env = {**os.environ, "COVERAGE_PROCESS_START": str(rcfile)}
        subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=KIT_ROOT, env=env)
    finally:
        pth.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "coverage", "combine", f"--rcfile={rcfile}", "-q"], cwd=work,
                   check=True)
    record_measured_blobs(data_file)
    return data_file


def blobs_file(data_file: Path) -> Path:
    return data_file.with_name("measured-blobs.json")


def record_measured_blobs(data_file: Path) -> None:
    """The content id of every measured file now, before pytest's temporary copies are cleaned up."""
    import coverage

    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    blobs = {m: file_blob_id(Path(m)) for m in data.measured_files() if Path(m).is_file()}
    blobs_file(data_file).write_text(json.dumps(blobs, indent=1, sort_keys=True))


def report(data_file: Path, workspace: Path) -> list[FileReport]:
    import coverage

    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    cov = coverage.Coverage(data_file=str(data_file))
    cov.load()
    wanted = patched_python_files()
    recorded = json.loads(blobs_file(data_file).read_text()) if blobs_file(data_file).exists() else {}
    executed: dict[str, set[int]] = {rel: set() for rel in wanted}
    readable: dict[str, Path] = {}  # a file with the post-image's content, to find its statements
    for measured in data.measured_files():
        rel = next((r for r in wanted if measured.endswith("/" + r)), None)
        path = Path(measured)
        blob = recorded.get(measured) or (file_blob_id(path) if path.is_file() else None)
        if rel is None or blob != wanted[rel][1]:
            continue  # another version of the file (the unpatched sdist, a stale install)
        executed[rel] |= set(data.lines(measured) or ())
        if path.is_file() and file_blob_id(path) == blob:
            readable.setdefault(rel, path)
    for rel in executed:  # copies gone since the run: the workspace checkout has the same content
        checkout = workspace_copy(workspace, rel, wanted[rel][1]) if executed[rel] and rel not in readable else None
        if checkout is not None:
            readable[rel] = checkout
    statements = {rel: set(cov.analysis2(str(path))[1]) for rel, path in readable.items()}
    sources = {rel: path.read_text(errors="replace").splitlines() for rel, path in readable.items()}
    reports = []
    for project in load_projects().values():
        for rel, numbers in added_lines(read_patch_text(project.patch_file)).items():
            if rel not in wanted:
                continue
            if rel.startswith(CONFIG_DIR):
                reports.append(FileReport(project.patch, rel, [], set(), [], len(numbers), WHY_CONFIG))
                continue
            if rel not in statements:  # never imported anywhere
                reports.append(FileReport(project.patch, rel, sorted(numbers), set(), []))
                continue
            compiled = jit_compiled_lines("\n".join(sources[rel]))
            added = numbers & statements[rel]
            reports.append(FileReport(project.patch, rel, sorted(added - compiled), executed[rel], sources[rel],
                                      len(added & compiled), WHY_NUMBA if added & compiled else ""))
    return reports


def workspace_copy(workspace: Path, rel: str, blob: str) -> Path | None:
    """The patched checkout's file at rel, if its content is that blob."""
    for project in load_projects().values():
        path = workspace / project.path / rel
        if path.is_file() and file_blob_id(path) == blob:
            return path
    return None


def print_report(reports: list[FileReport]) -> float:
    total_added = sum(len(r.added) for r in reports)
    total_run = sum(len(r.added) - len(r.missed) for r in reports)
    by_patch: dict[str, list[FileReport]] = {}
    for r in reports:
        by_patch.setdefault(r.patch, []).append(r)
    print(f"{'patch / file':70s} {'added':>6s} {'run':>5s} {'cover':>6s}")
    for patch, files in by_patch.items():
        added = sum(len(f.added) for f in files)
        run = sum(len(f.added) - len(f.missed) for f in files)
        print(f"{patch:70s} {added:6d} {run:5d} {100 * run / max(1, added):5.1f}%")
        for f in files:
            if f.added:
                print(f"  {f.path:68s} {len(f.added):6d} {len(f.added) - len(f.missed):5d} "
                      f"{100 * (len(f.added) - len(f.missed)) / len(f.added):5.1f}%")
    percent = 100 * total_run / max(1, total_added)
    print(f"{'all patches':70s} {total_added:6d} {total_run:5d} {percent:5.1f}%  (aim: {TARGET:.0f}%)")
    apart = [f for f in reports if f.untraceable]
    if apart:
        print("\nadded lines counted apart (no Python tracer sees them run):")
        for f in apart:
            print(f"  {f.path:68s} {f.untraceable:6d}  {f.why_untraceable}")
    missed = [(f, n) for f in reports for n in f.missed]
    if missed:
        print("\nadded lines no test executed:")
        for f, n in missed:
            text = f.source[n - 1].strip() if f.source and n <= len(f.source) else "(file never imported)"
            print(f"  {f.path}:{n}: {text}")
    return percent
