"""`kit.py setup`: the seed README's steps 1-5, end to end, into a virtual environment for one cell.

The cell is the interpreter setup runs under (its Python and machine) and a stack: the one of the
torch that interpreter already has (Ascend images ship torch with torch_npu, which is kept), else
--stack, else the default. Each cell gets its own environment, <workspace>/.venvs/<cell>, and
<workspace>/.venv links the one set up last. Every step is idempotent and remembers what it did (in
<venv>/flashocc-kit-state.json), so a second run only verifies. The mmcv wheel, the slow part, is
cached in the kit cache keyed by the patched mmcv source, the torch, the Python and the machine.
On a host with CANN the NPU's chip generation (flashocc_kit.chip) decides DrivingSDK's package: mx-driving
on Atlas A2, mx-driving-a5 on Atlas A5, which only the torch >= 2.6 stacks have.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager

from . import drivingsdk, gitutil, rehearsal, sources
from .ascend import cann_home
from .chip import A5, LABELS, PACKAGES, VENDORS, Chip, build_chip, detect
from .diskspace import explain_if_disk_full, require_room
from .errors import KitError
from .hostinfo import usable_cpus
from .locking import exclusively
from .pins import KIT_ROOT, cache_dir
from .stackenv import STATE_FILE, run_probe, venv_dir, venv_python
from .stacks import Cell, LockLine, Stack, choose_stack, load_stacks, read_lock, record
from .workspace import Workspace

VENVS_DIR = ".venvs"  # <workspace>/.venvs/<cell>: one environment per cell; .venv links the one in use


@dataclass
class Runner:
    """Runs commands for one setup, each with its own log file, and fails with the evidence."""

    log_dir: Path
    venv: Path | None = None  # where the environment is written: named when a step runs out of disk
    step: int = 0
    total: int = 0
    state: dict = field(default_factory=dict)

    def begin(self, title: str) -> float:
        self.step += 1
        print(f"[{self.step}/{self.total}] {title}", flush=True)
        return time.monotonic()

    @staticmethod
    def done(started: float, what: str) -> None:
        print(f"      {what} ({time.monotonic() - started:.0f} s)", flush=True)

    def run(self, name: str, cmd: list[str], cwd: Path | None = None, env: dict | None = None,
            hint: str = "") -> str:
        """Run one command of the step; on failure raise with its log, its last lines and `hint` (a likely cause)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"setup-{self.step:02d}-{name}.log"
        with log.open("w") as fh:
            fh.write(f"$ {' '.join(cmd)}\n(cwd {cwd or os.getcwd()})\n\n")
            fh.flush()
            proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=fh,
                                  stderr=subprocess.STDOUT, text=True)
        output = log.read_text()
        if proc.returncode != 0:
            disk_full = self.venv and explain_if_disk_full(output, self.venv, f"{self.step} ({name})")
            if disk_full:
                raise KitError(f"{disk_full}\ncommand: {' '.join(cmd)}\nlog: {log}")
            tail = "\n".join(output.splitlines()[-25:])
            raise KitError(f"setup step {self.step} ({name}) failed with exit {proc.returncode}.\n"
                           f"command: {' '.join(cmd)}\nlog: {log}\nlast lines:\n{tail}" + (f"\n{hint}" if hint else ""))
        return output


def installed_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    return run_probe(python, "versions", *names)


def applicable_pins(python: Path, lines: list[LockLine]) -> list[str]:
    """`name==version` of the lock lines whose markers hold in that interpreter."""
    found = run_probe(python, "applicable", *[f"{line.name}=={line.version}"
                                              + (f" ; {line.marker}" if line.marker else "") for line in lines])
    if isinstance(found, dict):
        raise KitError(f"cannot evaluate the lock's markers in {python}: {found['error']}")
    return found


def unsatisfied(python: Path, pins: list[str]) -> list[str]:
    """Pinned `name==version` lines not installed at exactly that version."""
    exact = dict(line.split("==", 1) for line in pins)
    have = installed_versions(python, list(exact))
    return [f"{n}=={v} (have {have.get(n)})" for n, v in exact.items() if have.get(n) != v]


def mmcv_cache_key(mmcv_dir: Path, torch_version: str, python: str, force_npu: bool) -> str:
    """What the built mmcv depends on: its patched source, torch, Python, machine, NPU build."""
    parts = [gitutil.content_tree_id(mmcv_dir), torch_version, python, platform.machine(), f"npu={force_npu}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def editable_location(python: Path, module: str) -> str | None:
    return run_probe(python, "module_origin", module).get("origin")


@dataclass
class SetupOptions:
    workspace: Path
    venv: Path | None  # None: <workspace>/.venvs/<cell>, linked as <workspace>/.venv
    from_dir: Path | None
    base_python: Path
    torch_mode: str  # auto | keep | install
    stack: str | None = None  # --stack; None: the kept torch's, else the default
    drivingsdk: Path | None = None  # a DrivingSDK checkout to build mx_driving from, instead of PyPI
    chip: str | None = None  # --chip a2|a5; None: as the host reports it (flashocc_kit.chip)


@dataclass
class Plan:
    """What one setup installs: the cell, whether the base interpreter's torch is kept, where the venv goes."""

    cell: Cell
    keep_torch: bool
    venv: Path
    base: dict
    chip: Chip | None = None  # the NPU's generation, on a host with CANN

    def describe(self) -> str:
        torch = (f"keeping torch {self.base['torch']} of {self.base['executable']}"
                 + (" (with torch_npu)" if self.base.get("torch_npu") else "") if self.keep_torch
                 else f"torch {self.cell.stack.torch} from {self.cell.stack.lock}")
        return f"cell {self.cell.id}: {torch}"


def plan(opts: SetupOptions) -> Plan:
    """Decide the cell for the interpreter setup runs under, refusing what cannot work before anything is done."""
    base = run_probe(opts.base_python, "interpreter", *(["--without-torch"] if opts.torch_mode == "install" else []))
    if "error" in base:
        raise KitError(f"cannot run {opts.base_python}: {base['error']}")
    has_torch = base.get("torch") is not None
    if opts.torch_mode == "keep" and not has_torch:
        raise KitError(f"--torch keep: {opts.base_python} has no torch to keep. "
                       "Fix: use --torch install, or run setup with the interpreter that has torch.")
    keep = has_torch if opts.torch_mode == "auto" else opts.torch_mode == "keep"
    stack = choose_stack(base["python"], opts.stack, base["torch"] if keep else None, base["machine"])
    cell = Cell(stack, base["python"], base["machine"])
    venv = opts.venv or Path(opts.workspace) / VENVS_DIR / cell.id
    chip = detect(opts.chip) if cann_home() is not None else None
    if chip is not None and stack.drivingsdk(chip.kind) is None:
        raise no_drivingsdk_for(chip, stack, keep, base["python"])
    return Plan(cell, keep, venv, base, chip)


def no_drivingsdk_for(chip: Chip, stack: Stack, keep_torch: bool, python: str) -> KitError:
    """The refusal of a stack that has no DrivingSDK build for the host's chip (torch2.1 on an Atlas A5)."""
    serving = [s for s in load_stacks().values() if s.drivingsdk(chip.kind)]
    if not serving:
        return KitError(f"this host's NPU is an {chip.describe()}, and no stack in tools/pins.ini has DrivingSDK "
                        f"for it. Fix: add {PACKAGES[chip.kind]} to a stack of torch >= 2.6 there.")
    names = " or ".join(s.name for s in serving)
    pythons = "" if any(s.serves(python) for s in serving) else f" (on Python {serving[-1].python_range})"
    fix = (f"`setup --torch install --stack {serving[-1].name}` for an environment with its own torch, or run the "
           f"kit with an interpreter whose torch is {' or '.join(s.torch for s in serving)}" if keep_torch
           else f"`setup --stack {serving[-1].name}`")
    return KitError(f"this host's NPU is an {chip.describe()}; DrivingSDK builds its kernels for it "
                    f"({PACKAGES[chip.kind]}, or `ci/build.sh --a5`) for torch >= 2.6 only, and {stack.name} is "
                    f"torch {stack.torch}. Fix: set up a stack that serves it, {names}{pythons}: {fix}.")


class Setup:
    """The setup steps, each idempotent, sharing one runner and one state file."""

    def __init__(self, opts: SetupOptions):
        self.opts = opts
        self.ws = Workspace.at(opts.workspace)
        self.plan = plan(opts)
        self.runner = Runner(self.ws.kit_state / "logs" / self.plan.cell.id)  # a cell's own: cells set up at once
        self.venv_dir = self.plan.venv
        self.runner.venv = self.venv_dir
        self.python = venv_python(self.venv_dir)
        self.state_path = self.venv_dir / STATE_FILE
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    @property
    def stack(self) -> Stack:
        return self.plan.cell.stack

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def sources(self) -> None:
        t = self.runner.begin("sources: each upstream project at its pin")
        with self.checkouts_locked():
            for project in self.ws.select(None):
                sources.obtain(project, self.ws.root, self.opts.from_dir, log=lambda m: print(f"      {m}"))
        self.runner.done(t, "sources ready")

    def patches(self) -> None:
        t = self.runner.begin("patches: apply, all or nothing per project")
        with self.checkouts_locked():
            self.ws.apply_all(log=lambda m: print(f"      {m}"))
        self.runner.done(t, "patches applied")

    def checkouts_locked(self) -> ContextManager[None]:
        """The checkouts are the workspace's, shared by its cells: two setups at once (CI tests two cells side by
        side) take turns, and the second finds them ready."""
        return exclusively(self.ws.kit_state / "checkouts.lock")

    def venv(self) -> None:
        t = self.runner.begin(f"virtual environment for {self.plan.describe()}")
        if self.python.exists():
            if self.state.get("cell") != self.plan.cell.id or self.state.get("keep_torch") != self.plan.keep_torch:
                raise KitError(f"{self.venv_dir} was set up for {self.state.get('cell', 'an earlier kit')}"
                               f"{' keeping the base torch' if self.state.get('keep_torch') else ''}, not for "
                               f"{self.plan.describe()}. Fix: move it away (`mv {self.venv_dir} "
                               f"{self.venv_dir}.old`) and run setup again.")
            how = "reused"
        else:
            cmd = [str(self.opts.base_python), "-m", "venv", str(self.venv_dir)]
            if self.plan.keep_torch:
                cmd.insert(3, "--system-site-packages")
            self.runner.run("venv", cmd)
            self.state = {"cell": self.plan.cell.id, "keep_torch": self.plan.keep_torch}
            self.save()
            how = "created"
        if self.opts.venv is None:
            how += f", linked as {self.link_default_venv()}"
        self.runner.done(t, f"{self.venv_dir}: {how}")

    def link_default_venv(self) -> Path:
        """<workspace>/.venv names the environment in use: the one just set up."""
        link = venv_dir(self.ws.root)
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise KitError(f"{link} is a directory an earlier kit created, not a link to a cell's environment. "
                           f"Fix: move it away (`mv {link} {link}.old`) and run setup again.")
        link.symlink_to(os.path.relpath(self.venv_dir, link.parent))
        return link

    def lock_lines(self) -> list[LockLine]:
        """The lock for this cell: the whole stack's, or only the shared part when the base torch is kept."""
        lines = read_lock(self.stack.lock_file)
        if self.plan.keep_torch:
            own = {(line.name, line.version) for line in self.stack.own_lock_lines}
            lines = [line for line in lines if (line.name, line.version) not in own]
        return lines

    def pinned(self, title: str, pins: list[str], name: str) -> None:
        """pip install --no-deps the pins that are not installed at their version."""
        t = self.runner.begin(title)
        missing = unsatisfied(self.python, pins)
        if not missing:
            self.runner.done(t, f"all {len(pins)} pins already satisfied")
            return
        req = self.ws.kit_state / f"{name}-{self.plan.cell.id}.txt"
        req.parent.mkdir(parents=True, exist_ok=True)
        req.write_text("\n".join(pins) + "\n")
        self.runner.run(name, [str(self.python), "-m", "pip", "install", "--no-deps", "-r", str(req)])
        still = unsatisfied(self.python, pins)
        if still:
            raise KitError("after pip install these pins are still not satisfied:\n  " + "\n  ".join(still))
        self.runner.done(t, f"installed {len(missing)} of {len(pins)} pinned packages")

    def python_stack(self) -> None:
        if not self.plan.keep_torch and installed_versions(self.python, ["torch"]).get("torch") != self.stack.torch:
            # a new environment: torch and its CUDA libraries, with pip's downloads beside them until the end
            require_room(self.venv_dir, self.stack.disk_gib, f"installing {self.stack.lock} into {self.venv_dir}")
        self.pinned(f"Python stack from {self.stack.lock}"
                    + (" (its shared part: the torch is kept)" if self.plan.keep_torch else ""),
                    applicable_pins(self.python, self.lock_lines()), "pip-stack")
        if self.plan.keep_torch and not self.stack.takes_torch(self.torch_version()):
            raise KitError(f"{self.python} has torch {self.torch_version()}, not {self.stack.name}'s "
                           f"{self.stack.torch}")

    def torch_version(self) -> str:
        version = run_probe(self.python, "interpreter").get("torch")
        if not version:
            raise KitError(f"torch does not import in {self.python}. Fix: remove {self.venv_dir} and run setup again.")
        return version

    def mmcv(self) -> None:
        t = self.runner.begin("mmcv (MMCV_WITH_OPS=1) from the patched source, wheel cached")
        # mmcv's setup.py imports torch_npu for an NPU build: the Ascend step has installed it and seen it import
        force_npu = cann_home() is not None and self.state.get("torch_npu_imports") is True
        key = mmcv_cache_key(self.ws.dir("mmcv"), self.torch_version(), self.plan.cell.python, force_npu)
        if self.state.get("mmcv") == key and installed_versions(self.python, ["mmcv-full"]).get("mmcv-full"):
            self.runner.done(t, f"installed build {key} is current")
            return
        wheel_dir = cache_dir() / "wheels" / "mmcv" / key
        wheels = sorted(wheel_dir.glob("*.whl"))
        how = "from the wheel cache"
        if not wheels:
            env = {"MMCV_WITH_OPS": "1", "MAX_JOBS": str(usable_cpus())}
            if force_npu:
                env["FORCE_NPU"] = "1"
            print(f"      building ({', '.join(f'{k}={v}' for k, v in env.items())}); "
                  "this takes a few minutes once, then it is cached", flush=True)
            build_out = self.ws.kit_state / "mmcv-dist"
            shutil.rmtree(build_out, ignore_errors=True)
            self.runner.run("mmcv-build", [str(self.python), "setup.py", "bdist_wheel", "-d", str(build_out)],
                            cwd=self.ws.dir("mmcv"), env=env,
                            hint=f"The NPU build (FORCE_NPU=1) compiles against CANN: is `source {cann_home()}/"
                                 "set_env.sh` done in this shell?" if force_npu else "")
            shutil.rmtree(self.ws.dir("mmcv") / "build", ignore_errors=True)  # the next cell builds afresh
            wheel_dir.mkdir(parents=True, exist_ok=True)
            for wheel in build_out.glob("*.whl"):
                shutil.copy2(wheel, wheel_dir / wheel.name)
            wheels = sorted(wheel_dir.glob("*.whl"))
            how = f"built and cached in {wheel_dir}"
        self.runner.run("mmcv-install", [str(self.python), "-m", "pip", "install", "--no-deps", "--force-reinstall",
                                         str(wheels[-1])])
        self.state["mmcv"] = key
        self.save()
        self.runner.done(t, how)

    def editable(self, module: str, project: str) -> None:
        t = self.runner.begin(f"{module} editable from {self.ws.projects[project].path}")
        src = self.ws.dir(project)
        origin = editable_location(self.python, module)
        if origin and src.resolve() in Path(origin).resolve().parents:
            self.runner.done(t, "already installed from the patched checkout")
            return
        self.runner.run(f"{module}-install", [str(self.python), "-m", "pip", "install", "--no-deps",
                                              "--no-build-isolation", "-e", str(src)])
        self.runner.done(t, "installed")

    def runtime_requirements(self) -> None:
        t = self.runner.begin("FlashOCC runtime requirements")
        problems = check_runtime_requirements(self.python, self.ws)
        if problems:
            raise KitError("the pinned stack does not satisfy FlashOCC's runtime requirements:\n  "
                           + "\n  ".join(problems) + f"\nFix: align {self.stack.lock} with them.")
        self.runner.done(t, "satisfied by the pinned stack")

    def ascend(self) -> None:
        """torch-npu and DrivingSDK at the stack's versions, DrivingSDK's build for the host's chip (or kept ones
        that fit), before mmcv's NPU build needs torch_npu; each is imported here, so that a host without CANN's
        libraries is named now, not in a build."""
        t = self.runner.begin("Ascend: torch-npu and DrivingSDK (mx_driving), before the mmcv NPU build needs them")
        cann = cann_home()
        if cann is None and self.opts.drivingsdk is None:
            self.state.pop("torch_npu_imports", None)
            self.save()
            self.runner.done(t, "skipped: no CANN toolkit on this host (the port runs its portable kernels "
                                "on CPU and CUDA)")
            return
        if cann is None:
            raise KitError(f"--drivingsdk {self.opts.drivingsdk}: building DrivingSDK needs the CANN toolkit "
                           "(`source <cann>/set_env.sh` first)")
        assert self.plan.chip is not None  # plan() asks for it wherever CANN is
        if self.plan.chip.source == "--chip":  # doctor takes it when the host names no chip
            self.state["chip"] = self.plan.chip.kind
        else:
            self.state.pop("chip", None)
        torch = self.torch_version()
        have = installed_versions(self.python, ["torch-npu"])
        done = [self.torch_npu(have["torch-npu"], torch, cann)]
        if self.opts.drivingsdk is not None:
            done.append(self.drivingsdk_from_source(self.opts.drivingsdk, self.plan.chip))
        else:
            done.append(self.mx_driving(torch, self.plan.chip))
        self.require_imports(["mx_driving"], cann, "mx-driving")
        self.runner.done(t, "; ".join(done))

    def torch_npu(self, kept: str | None, torch: str, cann: Path) -> str:
        """The Ascend adapter of this torch: a kept one must be of the same release, a new one is the stack's."""
        if kept is not None and not self.stack.takes_torch(kept):
            raise KitError(f"torch-npu {kept} is installed in {self.venv_dir}, but its torch is {torch} "
                           f"({self.stack.name}): torch-npu must be the torch's release. Fix: `{self.python} -m pip "
                           f"install --no-deps torch-npu=={self.stack.torch_npu}`, then run setup again.")
        how = f"torch-npu {kept} kept"
        if kept is None:
            # --no-deps: the x86_64 wheels ask for torch==X+cpu, which is not on PyPI; the lock pins torch
            self.runner.run("torch-npu", [str(self.python), "-m", "pip", "install", "--no-deps",
                                          f"torch-npu=={self.stack.torch_npu}"])
            how = f"torch-npu {self.stack.torch_npu} from PyPI"
        self.require_imports(["torch_npu"], cann, "torch-npu")
        self.state["torch_npu_imports"] = True
        self.save()
        return how

    def mx_driving(self, torch: str, chip: Chip) -> str:
        """DrivingSDK's wheel for this torch and this chip: a kept one must be built for both."""
        wheel = self.stack.drivingsdk(chip.kind)
        assert wheel is not None  # plan() refused a stack without one
        kept = self.kept_drivingsdk(chip, wheel)
        if kept is None:
            self.runner.run("mx-driving", [str(self.python), "-m", "pip", "install", "--no-deps", wheel])
            return f"{wheel.replace('==', ' ')} from PyPI, for the {chip.label}"
        wants = run_probe(self.python, "requires", kept[0], "torch")
        if wants.get("satisfied") is False:
            raise KitError(f"{kept[0]} {kept[1]} is installed in {self.venv_dir}, built for {wants['spec']}, but "
                           f"the torch there is {torch}. Fix: `{self.python} -m pip install --no-deps "
                           f"--force-reinstall {wheel}` (the {self.stack.name} build), or build it for "
                           "this torch with `setup --drivingsdk DIR`; then run setup again.")
        return (f"{kept[0]} {kept[1]} kept" + (f" ({wants['spec']})" if wants.get("spec") else "")
                + f", for the {chip.label}")

    def kept_drivingsdk(self, chip: Chip, wheel: str) -> tuple[str, str] | None:
        """The DrivingSDK distribution and version the environment has, if any; refused if built for another chip."""
        build = run_probe(self.python, "drivingsdk_build")
        if "error" in build:
            raise KitError(f"cannot read the DrivingSDK build in {self.venv_dir}: {build['error']}")
        installed = [(name, version) for name, version in build["distributions"].items() if version]
        if not installed:
            return None
        name, version = installed[-1]
        built_for = build_chip(build["vendors"])
        if built_for is not None and built_for != chip.kind:
            remove = " ".join(n for n, _ in installed)
            raise KitError(f"{name} {version} is installed in {self.venv_dir} with DrivingSDK's kernels for "
                           f"{LABELS[built_for]} ({build['origin']}/packages/vendors/{VENDORS[built_for]}), but this "
                           f"host's NPU is an {chip.describe()}: mx_driving would import and find no kernels for "
                           f"it. Fix: `{self.python} -m pip uninstall -y {remove} && {self.python} -m pip install "
                           f"--no-deps {wheel}` (or `setup --drivingsdk DIR`, which builds for the chip); then run "
                           "setup again.")
        return name, version

    def require_imports(self, modules: list[str], cann: Path, what: str) -> None:
        """Each module imports in the environment, or a KitError naming CANN when that is the likely cause."""
        errors = run_probe(self.python, "imports", *modules)
        failed = {name: why for name, why in errors.items() if why} if "error" not in errors else errors
        if failed:
            why = "; ".join(f"{name}: {error}" for name, error in failed.items())
            raise KitError(f"{what} is installed in {self.venv_dir} but does not import ({why}). It needs CANN's "
                           f"libraries, which `source {cann}/set_env.sh` puts on the library path. Fix: source it "
                           "in this shell (CANN 8.x for these wheels), then run setup again.")

    def drivingsdk_from_source(self, checkout: Path, chip: Chip) -> str:
        """mx_driving built by the checkout's ci/build.sh for this torch, Python and chip (`--a5` on an Atlas A5)."""
        branch = drivingsdk.check_checkout(checkout, self.stack, self.plan.cell.python, chip.kind)
        key = drivingsdk.wheel_cache_key(checkout, self.plan.cell.python, self.torch_version(), chip.kind)
        wheel = drivingsdk.cached_wheel(key)
        how = "from the wheel cache"
        if wheel is None:
            command = drivingsdk.build_command(self.plan.cell.python, chip.kind)
            print(f"      building DrivingSDK {branch} with {' '.join(command[1:])}", flush=True)
            self.runner.run("drivingsdk-build", command, cwd=checkout,
                            env=drivingsdk.build_environment(self.python.parent, dict(os.environ)))
            wheel = drivingsdk.keep_wheel(key, checkout / "dist")
            how = "built and cached"
        if installed_versions(self.python, [PACKAGES[A5]])[PACKAGES[A5]]:
            # a build installs as mx-driving, whichever the chip; both packages hold mx_driving, so one goes first
            self.runner.run("mx-driving-a5-uninstall", [str(self.python), "-m", "pip", "uninstall", "-y",
                                                        PACKAGES[A5]])
        self.runner.run("mx-driving", [str(self.python), "-m", "pip", "install", "--no-deps", "--force-reinstall",
                                       str(wheel)])
        return f"mx-driving from {checkout} ({branch}), {how}: {wheel.name}, for the {chip.label}"


    def bytecode(self) -> None:
        """pip compiles what it installs, but not an editable checkout: without this, where PYTHONDONTWRITEBYTECODE
        is set (CI images often set it), every process compiles FlashOCC, mmdet3d, mmdet and the kit anew, about
        1.5 s of a rank's 12 s start on a 2-core machine. Each cell's Python writes its own files beside them."""
        t = self.runner.begin("bytecode of the checkouts and the kit (pip compiles only what it installs)")
        flashocc = self.ws.flashocc
        trees = [flashocc / "projects", flashocc / "tools", self.ws.dir("mmdet3d") / "mmdet3d",
                 self.ws.dir("mmdet") / "mmdet", KIT_ROOT / "tools"]
        self.runner.run("bytecode", [str(self.python), "-m", "compileall", "-q", "-j", "0",
                                     *(str(tree) for tree in trees if tree.is_dir())])
        self.runner.done(t, "compiled")

    def rehearsal(self) -> None:
        """The emulated NPU (--emulate-npu) with the stack's DrivingSDK wheel, where no real NPU is."""
        t = self.runner.begin(f"NPU rehearsal: the emulated NPU and DrivingSDK {self.stack.mx_driving}'s Python layer")
        if cann_home() is not None:
            self.runner.done(t, "skipped: this host has CANN, and its NPUs")
            return
        prepared = rehearsal.prepare(self.venv_dir, self.stack.mx_driving)
        took = ", ".join(f"{part} {seconds:g} s" for part, seconds in prepared.seconds.items())
        self.runner.done(t, f"ready ({took}): `--emulate-npu` on the launch scripts, or FLASHOCC_EMULATE_NPU=1")

    def all_steps(self) -> list[Callable[[], None]]:
        """Every step of a setup, in order; the Ascend packages come before mmcv, whose NPU build imports them."""
        return [self.sources, self.patches, self.venv, self.python_stack, self.ascend, self.mmcv,
                lambda: self.editable("mmdet", "mmdet"), lambda: self.editable("mmdet3d", "mmdet3d"),
                self.runtime_requirements, self.bytecode, self.rehearsal]

    def stack_steps(self) -> list[Callable[[], None]]:
        """The steps that need no upstream sources: the environment and the Python stack."""
        return [self.venv, self.python_stack]


def setup(opts: SetupOptions) -> Setup:
    """The seed's steps, in the order that works on an Ascend host: sources, patches, venv, stack, Ascend packages,
    mmcv, mmdet, mmdet3d, FlashOCC's requirements."""
    started = time.monotonic()
    steps = Setup(opts)
    todo = steps.all_steps()
    steps.runner.total = len(todo)
    print(f"setting up {steps.plan.describe()}", flush=True)
    if steps.plan.chip is not None:
        print(f"NPU: {steps.plan.chip.describe()}; DrivingSDK: {steps.stack.drivingsdk(steps.plan.chip.kind)}"
              + (f" or built from {opts.drivingsdk}" if opts.drivingsdk else ""), flush=True)
    try:
        for step in todo:
            step()

        from .health import run_checks

        report = run_checks(steps.ws, steps.venv_dir)
        print()
        for check in report:
            print(check.line())
        if any(c.required and not c.ok for c in report):
            raise KitError("setup finished but the environment is not ready (see the lines marked FAIL above)")
    except KitError:
        record(steps.ws.root, steps.plan.cell.id, "setup", ok=False, venv=str(steps.venv_dir))
        raise
    record(steps.ws.root, steps.plan.cell.id, "setup", ok=True, venv=str(steps.venv_dir),
           seconds=round(time.monotonic() - started))
    print(f"\nready: {steps.plan.cell.id}; activate with `source {steps.venv_dir}/bin/activate`; "
          f"logs in {steps.runner.log_dir}")
    return steps


def check_runtime_requirements(python: Path, ws: Workspace) -> list[str]:
    files = [ws.flashocc / "requirements" / "runtime.txt", ws.dir("mmdet3d") / "requirements" / "runtime.txt"]
    problems = run_probe(python, "runtime_requirements", *map(str, files))
    if isinstance(problems, dict):
        raise KitError(f"could not check runtime requirements: {problems['error']}")
    return problems
