"""Upstream's own tests of the files our patches change, run on the patched stack in the kit's environment.

Each project's chosen test files (mmcv, mmdet, mmdet3d) run as one pytest subprocess from the workspace
checkout, whose tests/ no patch changes. A run passes when nothing fails, at least the stated number pass,
and every skip is upstream's own for a missing GPU or network; every file a queue changes is mapped to the
upstream tests that exercise it, or to why none can.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import NOT_APPLICABLE
from flashocc_kit import pins, series

# No `cell` marker: these run in the full suite (`kit.py test`), not in every cell's short set.
PROJECTS = pins.load_projects()

# Upstream's skips we accept: its tests that need a GPU, or the network.
ALLOWED_SKIPS = re.compile(r"\bGPU\b|CUDA|cuda|network|internet|connection", re.IGNORECASE)
# mmdet3d skips some GPU-only tests with a bare `pytest.skip()` under `if not torch.cuda.is_available():`.
BARE_SKIP = "Skipped"
CUDA_GUARD = "cuda.is_available()"


def torch_at_least(major: int, minor: int) -> bool:
    import torch

    found = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return found is not None and (int(found[1]), int(found[2])) >= (major, minor)


@dataclass(frozen=True)
class Deselect:
    """An upstream test left out where it cannot hold, and why."""

    node: str
    when: Callable[[], bool]
    reason: str


@dataclass(frozen=True)
class Suite:
    """One project's upstream tests of the files its queue changes."""

    project: str
    package: str
    # every file the queue changes -> the upstream tests that exercise it, or why there are none
    covers: dict[str, tuple[str, ...] | str]
    # passes on a CPU-only host with torch 2.1 (upstream's CUDA tests also pass where a GPU is)
    floor: int
    # mmdet and mmdet3d open tests/data/... relative to their root (both installed editable from it); mmcv runs
    # elsewhere, since `python -m pytest` puts the working directory first on sys.path and the checkout's mmcv/
    # (without its compiled ops) would shadow the installed build
    cwd_is_checkout: bool
    also: tuple[str, ...] = ()  # further upstream tests run with these
    naming: tuple[str, ...] = ()  # also run every upstream test file whose text names one of these
    deselect: tuple[Deselect, ...] = ()
    tests_missing_hint: str = ""  # why a checkout may have no tests/, and where they are

    def nodes(self, tests: Path) -> list[str]:
        named = [node for value in self.covers.values() if isinstance(value, tuple) for node in value]
        if self.naming:
            named += sorted(path.relative_to(tests.parent).as_posix() for path in tests.rglob("test_*.py")
                            if any(word in path.read_text(encoding="utf-8", errors="replace") for word in self.naming))
        return list(dict.fromkeys([*named, *self.also]))


MMCV = Suite(
    project="mmcv",
    package="mmcv",
    covers={
        "mmcv/parallel/distributed.py": ("tests/test_parallel.py",),
        "mmcv/runner/dist_utils.py": ("tests/test_runner/test_dist_utils.py",),
        "mmcv/runner/checkpoint.py": (
            "tests/test_runner/test_checkpoint.py",
            "tests/test_load_model_zoo.py",
            # a runner resuming (EMAHook's resume_from) and loading with revise_keys: load_from_local
            "tests/test_runner/test_hooks.py::test_ema_hook",
            "tests/test_runner/test_hooks.py::test_runner_with_revise_keys",
        ),
    },
    floor=21,
    cwd_is_checkout=False,
    deselect=(
        Deselect("tests/test_load_model_zoo.py::test_load_external_url", lambda: torch_at_least(2, 6),
                 "its stand-in torch.load(filepath, map_location) has no weights_only, which mmcv must pass on "
                 "torch >= 2.6 (patches/mmcv/checkpoint-weights-only.patch)"),
    ),
)

MMDET = Suite(
    project="mmdet",
    package="mmdet",
    covers={
        "mmdet/__init__.py": "every mmdet test imports it",
        "mmdet/core/utils/dist_utils.py": "the test files that name its callers (naming, below)",
    },
    naming=("sync_random_seed", "build_dataloader", "DistributedSampler", "GroupSampler", "InfiniteBatchSampler",
            "InfiniteGroupBatchSampler", "ClassAwareSampler"),
    floor=1,  # never measured: no mmdet tests reach the machine this was written on (tests_missing_hint)
    cwd_is_checkout=True,
    tests_missing_hint="it is the PyPI sdist of mmdet 2.25.0 (what `kit.py sources` unpacks when GitHub is "
                       "unreachable, and what a sources directory holds), which ships no tests/; a clone of "
                       "v2.25.0 has them (`python3 tools/kit.py setup` with GitHub and no sources directory)",
)

MMDET3D = Suite(
    project="mmdet3d",
    package="mmdet3d",
    covers={
        # the mmcv version gate: every test imports mmdet3d
        "mmdet3d/__init__.py": ("tests/test_runtime/test_apis.py",),
        "mmdet3d/apis/train.py": "no upstream test trains; test_apis imports the module, and the kit's "
                                 "test_device_wrapping.py and test_pin_memory.py call what the patches add",
        "mmdet3d/core/visualizer/show_result.py": (
            "tests/test_runtime/test_apis.py",  # test_show_result_meshlab
            "tests/test_data/test_datasets",  # each dataset's show(); build_dataset and mmdet's dataloader
        ),
        "requirements/mminstall.txt": "pip metadata, not code: tests/test_locks.py holds the locks",
        "requirements/runtime.txt": "pip metadata, not code: tests/test_locks.py holds the locks",
    },
    # the backbones build through mmdet's and mmcv's registries (mmdet's patched __init__)
    also=("tests/test_models/test_backbones.py",),
    floor=34,
    cwd_is_checkout=True,
)

SUITES = {suite.project: suite for suite in (MMCV, MMDET, MMDET3D)}


@dataclass
class Outcome:
    """What one pytest run of upstream tests did, read from its JUnit XML."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (test, reason, "file:line")
    seconds: float = 0.0
    output: str = ""

    def summary(self) -> str:
        return f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped " \
               f"in {self.seconds:.0f} s"


def run_pytest(cwd: Path, rootdir: Path, nodes: list[str], deselect: list[str], work: Path) -> Outcome:
    """Run upstream test nodes (paths relative to rootdir) in a pytest subprocess of this interpreter."""
    ini = work / "pytest.ini"
    ini.write_text("[pytest]\n")  # upstream's settings only: not the kit's pyproject.toml above the checkouts
    junit = work / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(rootdir), "-p", "no:cacheprovider",
               "-q", "-rfEs", "--disable-warnings", f"--junitxml={junit}", *[str(rootdir / node) for node in nodes]]
    for node in deselect:  # a node id, relative to rootdir: pytest matches --deselect against those, not paths
        command += ["--deselect", node]
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the checkouts
    start = time.monotonic()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    outcome = Outcome(seconds=time.monotonic() - start, output=proc.stdout[-6000:] + proc.stderr[-3000:])
    if not junit.is_file():
        outcome.failed.append(f"pytest wrote no report (exit {proc.returncode})")
        return outcome
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome.failed.append(name)
        elif (skip := case.find("skipped")) is not None:
            where = (skip.text or "").split(": ", 1)[0]
            outcome.skipped.append((name, skip.get("message", ""), where))
        else:
            outcome.passed.append(name)
    if proc.returncode not in (0, 1):  # 1: tests failed (counted above); others: usage, collection, internal
        outcome.failed.append(f"pytest exit status {proc.returncode}")
    return outcome


def junit_name(node: str) -> str:
    """tests/test_x.py::test_y as the junit report names it: tests.test_x::test_y."""
    path, _, test = node.partition("::")
    module = path[:-3] if path.endswith(".py") else path  # str.removesuffix: Python >= 3.9, and cells run 3.8
    return f"{module.replace('/', '.')}::{test}"


def skip_allowed(reason: str, where: str) -> bool:
    """Upstream's skip for a missing GPU or network; a bare skip counts when a CUDA check guards it."""
    if ALLOWED_SKIPS.search(reason):
        return True
    path, _, line = where.rpartition(":")
    if reason.strip() != BARE_SKIP or not line.isdigit() or not Path(path).is_file():
        return False
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    number = int(line)  # 1-based line of the pytest.skip() call
    return any(CUDA_GUARD in text for text in lines[max(0, number - 3):number - 1])


def problems(outcome: Outcome, floor: int) -> list[str]:
    found = [f"failed: {name}" for name in outcome.failed]
    if len(outcome.passed) < floor:
        found.append(f"{len(outcome.passed)} passed, fewer than the floor of {floor}")
    found += [f"skipped for a reason not allowed: {name} ({reason!r} at {where})"
              for name, reason, where in outcome.skipped if not skip_allowed(reason, where)]
    return found


@pytest.fixture(scope="module")
def workspace(flashocc_root: Path):
    """The workspace with every patch applied and the patched stack installed here (skips, saying why, if not)."""
    from flashocc_kit.patching import PatchState
    from flashocc_kit.workspace import Workspace

    ws = Workspace.at(pins.default_workspace())
    states = ws.states()
    unapplied = [name for name in SUITES if states[name] is not PatchState.APPLIED]
    if unapplied:
        pytest.skip(f"patches not applied to {', '.join(unapplied)} in {ws.root}: run `python3 tools/kit.py setup`")
    return ws


def test_every_patched_file_is_mapped_and_no_patch_touches_upstream_tests():
    """A file a queue starts changing needs its upstream tests named here (or why there are none)."""
    for name, suite in SUITES.items():
        touched = sorted({path for patch in series.read_queue(PROJECTS[name]) for path in patch.touched})
        assert sorted(suite.covers) == touched, f"{name}: map each patched file to its upstream tests"
        assert not [path for path in touched if path.startswith("tests/")], f"{name}: upstream's tests stay pristine"


def test_a_failure_and_an_unexplained_skip_are_reported(tmp_path):
    """The verdict can fail: a failing test, a skip without a GPU reason, too few passes."""
    tests = tmp_path / "up" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_sample.py").write_text(
        "import pytest\n\n"
        "def test_ok():\n    pass\n\n"
        "def test_broken():\n    assert False\n\n"
        "def test_gpu():\n    pytest.skip('test requires GPU and torch+cuda')\n\n"
        "def test_bare_cuda():\n    if True:  # upstream: not torch.cuda.is_available()\n        pytest.skip()\n\n"
        "def test_bare():\n    pytest.skip()\n\n"
        "def test_lazy():\n    pytest.skip('flaky')\n")
    work = tmp_path / "work"
    work.mkdir()
    outcome = run_pytest(tmp_path / "up", tmp_path / "up", ["tests/test_sample.py"], [], work)
    assert len(outcome.passed) == 1 and len(outcome.skipped) == 4, outcome.output
    found = problems(outcome, floor=2)
    assert found[0].startswith("failed: ") and found[0].endswith("test_broken")
    assert found[1] == "1 passed, fewer than the floor of 2"
    assert [line.split(":")[0] for line in found[2:]] == ["skipped for a reason not allowed"] * 2
    assert "test_bare " in found[2] and "test_lazy " in found[3]


def installed_differs(package: str, checkout: Path, touched: list[str]) -> list[str]:
    """Patched Python files whose installed copy is not the checkout's (a stale build)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed here"
    installed = Path(next(iter(spec.submodule_search_locations))).parent
    return [rel for rel in touched if rel.endswith(".py") and rel.startswith(f"{package}/")
            and (installed / rel).read_bytes() != (checkout / rel).read_bytes()]


@pytest.mark.parametrize("name", list(SUITES))
def test_upstream_tests_pass_on_the_patched_stack(name, workspace, tmp_path):
    suite = SUITES[name]
    checkout = workspace.dir(name)
    if not (checkout / "tests").is_dir():
        # not something setup can provide where GitHub is unreachable: a skip even under --require-sources
        pytest.skip(f"{NOT_APPLICABLE} {name}: no upstream tests in {checkout}: {suite.tests_missing_hint}")
    touched = list(suite.covers)
    stale = installed_differs(suite.package, checkout, touched)
    assert not stale, (f"the installed {suite.package} is not the patched checkout ({', '.join(stale)} differ). "
                       "Fix: python3 tools/kit.py setup")
    nodes = suite.nodes(checkout / "tests")
    assert nodes, f"{name}: no upstream test file exercises the patched files"
    deselected = [item for item in suite.deselect if item.when()]
    deselect = [item.node for item in deselected]
    outcome = run_pytest(checkout if suite.cwd_is_checkout else tmp_path, checkout, nodes, deselect, tmp_path)
    print(f"{name} upstream tests: {outcome.summary()}"
          + "".join(f"\n  deselected {item.node}: {item.reason}" for item in deselected))
    ran = {*outcome.passed, *outcome.failed, *(case for case, _, _ in outcome.skipped)}
    assert not [node for node in deselect if junit_name(node) in ran], f"--deselect did not take: {deselect}"
    found = problems(outcome, suite.floor - len(deselect))
    assert not found, "\n".join(found) + "\n--- pytest output (tail) ---\n" + outcome.output

