"""Shared fixtures: the kit on sys.path, small git repositories, and the upstream sources (if any)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

KIT_ROOT = Path(__file__).resolve().parents[1]
# `kit.py test --require-sources` (what CI runs): a test that skips for want of the sources or the stack fails
REQUIRE_ENV = "FLASHOCC_KIT_REQUIRE_SOURCES"
REQUIRE = os.environ.get(REQUIRE_ENV) == "1"
# A skip whose reason starts so is about this platform (an aarch64 host without shellcheck, a root user where no
# directory is unwritable): not something setup provides, so it stays a skip under --require-sources.
NOT_APPLICABLE = "not applicable here:"
sys.path.insert(0, str(KIT_ROOT / "tools"))

from flashocc_kit import pins  # noqa: E402

# The launch scripts run `python3 tools/kit.py`: make that this interpreter (the cell under test, e.g.
# `kit.py test --stack torch2.7`), not whichever environment <workspace>/.venv links.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
}


def free_port() -> int:
    """A TCP port free on this machine now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def write_files(root: Path, files: dict[str, str | None]) -> None:
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def make_repo(path: Path, files: dict[str, str]) -> str:
    """A git repository with one commit holding files; returns the commit id."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write_files(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "upstream")
    return git(path, "rev-parse", "HEAD")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root except .git, for before/after comparisons."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}


@pytest.fixture
def upstream_files() -> dict[str, str]:
    body = "".join(f"line {i}\n" for i in range(1, 41))
    return {"pkg/__init__.py": "VERSION = '1.0'\n", "pkg/core.py": body, "pkg/gone.py": "old\n",
            "README.md": "upstream\n", ".gitignore": "build/\n"}


def make_queue(upstream: Path, commit: str, queue: Path, port: Path,
               steps: list[tuple[str, dict[str, str | None]]], port_files: dict[str, tuple[str, str]]) -> None:
    """A patch queue against upstream@commit: one patch per (name, files) step, written with the kit's diff
    options between consecutive states, plus port files {path: (content, owning patch)}."""
    from flashocc_kit.gitutil import DIFF_OPTIONS

    stage = queue.parent / f"{queue.name}.stages"
    shutil.copytree(upstream, stage, symlinks=True)
    queue.mkdir(parents=True)
    names = []
    for name, files in steps:
        write_files(stage, files)
        git(stage, "add", "-A")
        git(stage, "commit", "-q", "-m", name)
        owned = [path for path, (_, owner) in port_files.items() if owner == name]
        header = f"Description: {name}\n the {name} change\nOrigin: vendor\nAuthor: t\nForwarded: no\n"
        header += f"Kit-Files: {' '.join(owned)}\n" if owned else ""
        header += "Last-Update: 2026-01-01\n"
        diff = git_raw(stage, "diff", *DIFF_OPTIONS, "HEAD~1", "HEAD")
        (queue / f"{name}.patch").write_text(header + "---\n" + diff)
        names.append(f"{name}.patch")
    (queue / "series").write_text("\n".join(names) + "\n")
    write_files(port, {path: content for path, (content, _) in port_files.items()})
    shutil.rmtree(stage)


def git_raw(cwd: Path, *args: str) -> str:
    """git's stdout as is (a diff must keep its last newline)."""
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def upstream_sources_dir() -> Path | None:
    """The pristine upstream checkouts, or None (tests needing them skip, saying so)."""
    found = pins.default_sources_dir()
    if found and (found / "FlashOCC").is_dir():
        return found
    return None


NO_SOURCES = ("needs the pristine upstream sources: put FlashOCC, mmcv, mmdetection3d and mmdetection checkouts "
              "in a directory and set FLASHOCC_KIT_SOURCES to it (README, Air-gapped sites)")


@pytest.fixture
def sources_dir() -> Path:
    found = upstream_sources_dir()
    if found is None:
        pytest.skip(NO_SOURCES)
    return found


# The files the kit wrote for FlashOCC (port/flashocc/, at their upstream paths) import here as the namespace
# package `flashocc`: `flashocc.projects.device`, which cannot clash with a real FlashOCC checkout's `projects`.
PORT_DIR = KIT_ROOT / "port"
PORT_FLASHOCC = PORT_DIR / "flashocc"
sys.path.insert(0, str(PORT_DIR))


def _skip_without_patched_flashocc() -> Path:
    """The workspace's patched FlashOCC checkout, importable here; skips (saying why) if not."""
    from flashocc_kit.patching import PatchState
    from flashocc_kit.workspace import Workspace

    ws = Workspace.at(pins.default_workspace())
    if not ws.flashocc.is_dir():
        pytest.skip(f"no FlashOCC checkout at {ws.flashocc}: run `python3 tools/kit.py setup` "
                    "(needs GitHub or the upstream sources directory)")
    states = ws.states()
    if states["flashocc"] is not PatchState.APPLIED or states["mmdet3d"] is not PatchState.APPLIED:
        pytest.skip(f"patches not applied in {ws.root} ({states}): run `python3 tools/kit.py apply`")
    import importlib.util

    if importlib.util.find_spec("mmdet3d") is None:
        pytest.skip(f"the patched stack is not installed in {sys.executable}: run the tests with "
                    "`python3 tools/kit.py test`, which sets it up")
    import mmdet3d  # noqa: F401  (installed but broken: that is a failure, not a skip)

    return ws.flashocc


@pytest.fixture(scope="session")
def flashocc_root() -> Path:
    root = _skip_without_patched_flashocc()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    os.environ.setdefault("FLASHOCC_DEVICE", "cpu")
    import projects.mmdet3d_plugin  # noqa: F401  (registers the FlashOCC modules)

    return root


# Upstream's pristine plugin imports its CUDA extensions at import time (and ray_metrics JIT-builds dvr): on a CPU
# these stand-ins let it import; they are never called. Prepend to a worker script that imports the plugin.
PRISTINE_IMPORT_STUBS = """
import sys, types
import torch.utils.cpp_extension
torch.utils.cpp_extension.load = lambda *args, **kwargs: types.SimpleNamespace()  # ray_metrics' dvr
for op in ("bev_pool.bev_pool_ext", "bev_pool_v2.bev_pool_v2_ext", "nearest_assign.nearest_assign_ext"):
    sys.modules["projects.mmdet3d_plugin.ops." + op] = types.ModuleType(op)
"""


def pristine_flashocc_tree(sources: Path, out: Path) -> Path:
    """Upstream's tree as a user has it: FlashOCC's projects/ with mmdetection3d beside it (its configs' _base_)."""
    pristine = out / "FlashOCC"
    shutil.copytree(sources / "FlashOCC" / "projects", pristine / "projects")
    (pristine / "mmdetection3d").symlink_to(sources / "mmdetection3d")
    return pristine


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _strict(report) -> None:
    """Under --require-sources, a skip for anything but the platform is a failure, with the skip's reason."""
    if REQUIRE and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not reason.split("Skipped: ", 1)[-1].startswith(NOT_APPLICABLE):
            report.outcome = "failed"
            report.longrepr = f"skipped, which --require-sources ({REQUIRE_ENV}=1) counts as a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _strict(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _strict(outcome.get_result())  # a module-level importorskip


def pytest_terminal_summary(terminalreporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if not hasattr(r, "wasxfail")]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) could not run here, each skip saying why (`pytest -rs` lists them); "
            f"`kit.py test --require-sources`, which CI runs, counts such skips as failures.", yellow=True)


def small_infos(flashocc_root: Path, tmp_path: Path, split: str, samples: int) -> Path:
    """The smoke set's first samples of a split ("train", "val") as an info file of their own."""
    import pickle

    from flashocc_kit.occ3d import info_file
    from flashocc_kit.training.execute import ensure_smoke_data
    from flashocc_kit.training.run import SMOKE_CONFIG, read_config

    data_root = read_config(flashocc_root, SMOKE_CONFIG).data_root
    root = flashocc_root / data_root
    ensure_smoke_data(root, data_root)  # as the smoke run does: under its lock (the background smoke run may be at it)
    with (root / info_file(split)).open("rb") as fh:
        infos = pickle.load(fh)
    infos["infos"] = infos["infos"][:samples]
    path = tmp_path / f"{split}{samples}.pkl"
    with path.open("wb") as fh:
        pickle.dump(infos, fh)
    return path


def sitecustomize_pythonpath(directory: Path, code: str) -> str:
    """A PYTHONPATH under which every Python process of a launch runs `code` first (written to directory as its
    sitecustomize.py), ahead of this environment's own PYTHONPATH."""
    import textwrap

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(textwrap.dedent(code))
    return os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))


def single_node_env() -> dict[str, str]:
    """This environment for a launch script run on this machine alone, on a port of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("NNODES", "NODE_RANK", "MASTER_ADDR", "FLASHOCC_SMOKE",
                                                              "FLASHOCC_TORCHRUN", "FLASHOCC_EMULATE_NPU")}
    env["MASTER_PORT"] = str(free_port())
    return env


# The shared short run (and the runs compared with it): 16 training samples, 4 iterations an epoch on 2 ranks x 2, the
# fewest that still leave a resume test room to kill a run mid-epoch and a profiler its 3 warm-up and 5 recorded steps
# over two epochs; evaluated on one val scene (8 samples). Each sample fewer is CI time saved in every cell.
SHORT_RUN = {"train_samples": 16, "val_samples": 8, "epochs": 2}
SHORT_RUN["iters_per_epoch"] = SHORT_RUN["train_samples"] // (2 * 2)  # 2 ranks x 2 samples
SHORT_RUN["iterations"] = SHORT_RUN["iters_per_epoch"] * SHORT_RUN["epochs"]


@pytest.fixture(scope="session")
def two_epoch_smoke_run(flashocc_root, tmp_path_factory) -> dict:
    """The smoke config trained 2 epochs on its first training samples and evaluated on a val scene (SHORT_RUN), on the
    CPU, whole: one run with two uses, the resume test's uninterrupted run and the NPU rehearsal's CPU twin."""
    tmp = tmp_path_factory.mktemp("two-epoch-smoke")
    train = small_infos(flashocc_root, tmp, "train", SHORT_RUN["train_samples"])
    val = small_infos(flashocc_root, tmp, "val", SHORT_RUN["val_samples"])
    args = ("--smoke", "--epochs", str(SHORT_RUN["epochs"]), "--log-interval", "1", "--cfg-options",
            f"data.train.ann_file={train}", f"data.val.ann_file={val}", f"data.test.ann_file={val}")
    env = single_node_env()
    proc = subprocess.run(["bash", "test/train_smoke_flashocc_cpu.sh", "--work-dir", str(tmp / "work"),
                           "--output-dir", str(tmp / "out"), *args], cwd=flashocc_root, env=env, capture_output=True,
                          text=True, timeout=1800)
    return {"proc": proc, "work": tmp / "work", "out": tmp / "out", "args": args}


# The suite's longest run, the smoke accuracy training (10 epochs, two CPU ranks), starts with the session in the
# background, at the lowest priority there is (SCHED_IDLE): it takes only the cores the other tests leave idle, and
# both of them at the end, where its tests run (moved last) and collect it. Starved for minutes while the other tests
# keep both cores busy, it gets a stall limit to match (its steps take 2 s when it runs).
SMOKE_RUN_KEY = pytest.StashKey["SmokeRun"]()
SMOKE_ACCURACY = "test_smoke_accuracy.py"
SMOKE_STALL_TIMEOUT = "1800"


def _background() -> None:
    """Run in the child before exec, inherited by all it starts: a process group of its own (stop() ends it whole),
    in this session (a session of its own would be a scheduling group of its own under Linux's autogroup, weighed as
    much as the whole suite), scheduled only when a core would otherwise idle."""
    os.setpgrp()
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class SmokeRun:
    """bash test/train_smoke_flashocc_cpu.sh in its own process group at the lowest priority, its output in files (a
    pipe nobody reads would fill and stall it)."""

    def __init__(self, flashocc: Path, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        env = single_node_env()
        env.setdefault("FLASHOCC_DEVICE", "cpu")
        self.args = ["bash", "test/train_smoke_flashocc_cpu.sh", "--work-dir", str(out / "work"),
                     "--output-dir", str(out / "output"), "--stall-timeout", SMOKE_STALL_TIMEOUT]
        with (out / "stdout").open("w") as stdout, (out / "stderr").open("w") as stderr:
            self.proc = subprocess.Popen(self.args, cwd=flashocc, env=env, stdout=stdout, stderr=stderr, text=True,
                                         preexec_fn=_background)

    def result(self, timeout: float = 3600) -> subprocess.CompletedProcess:
        code = self.proc.wait(timeout)
        return subprocess.CompletedProcess(self.args, code, (self.out / "stdout").read_text(errors="replace"),
                                           (self.out / "stderr").read_text(errors="replace"))

    def stop(self) -> None:
        """Ends the run's process group (its own) if it still runs: the session ended before its test."""
        if self.proc.poll() is None:
            import signal

            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _in_smoke_accuracy(item) -> bool:
    return item.nodeid.split("::")[0].endswith(SMOKE_ACCURACY)


def _reads_the_smoke_run(item) -> bool:
    return _in_smoke_accuracy(item) and "smoke_accuracy_run" in item.fixturenames


def pytest_collection_modifyitems(items: list) -> None:
    """The tests that read the smoke accuracy training last: the other tests do not wait for it, and it then has
    every core. (Its file's other tests run in their place, not in the tail where one core may be all that works.)"""
    items.sort(key=_reads_the_smoke_run)  # stable: the rest keep their order


def pytest_collection_finish(session) -> None:
    wanted = any(_reads_the_smoke_run(item) for item in session.items)
    if not wanted or session.config.option.collectonly:
        return
    try:
        flashocc = _skip_without_patched_flashocc()
    except pytest.skip.Exception:
        return  # the tests skip with the reason when they run
    # tmp_path_factory's own directory (the fixture is not reachable from a hook)
    out = session.config._tmp_path_factory.mktemp("smoke")
    session.config.stash[SMOKE_RUN_KEY] = SmokeRun(flashocc, out)


def pytest_sessionfinish(session) -> None:
    run = session.config.stash.get(SMOKE_RUN_KEY, None)
    if run is not None:
        run.stop()


@pytest.fixture(scope="session")
def smoke_accuracy_run(flashocc_root, request, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The smoke run as users launch it (10 epochs, trained and evaluated), started with the session: its result
    and its summary."""
    run = request.config.stash.get(SMOKE_RUN_KEY, None)
    if run is None:  # not started by the collection (a test selected otherwise): now
        run = SmokeRun(flashocc_root, tmp_path_factory.mktemp("smoke"))
    return run.result(), run.out / "output" / "FlashOCC_R50_cpusmoke_bs4_2p_acc_summary.json"
