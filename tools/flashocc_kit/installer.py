"""`kit.py setup`: the seed README's steps 1-5, end to end, into a virtual environment.

Every step is idempotent and remembers what it did (in <venv>/flashocc-kit-state.json), so a
second run only verifies. The mmcv wheel, the slow part, is cached in the kit cache keyed by the
content of the patched mmcv source, the torch version, the Python and the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import gitutil, sources
from .ascend import cann_home
from .errors import KitError
from .pins import KIT_ROOT, cache_dir
from .stackenv import run_probe, venv_python
from .workspace import Workspace

REQUIREMENTS = KIT_ROOT / "requirements.txt"
# Lines of requirements.txt that belong to the torch build; skipped when the user keeps a torch.
TORCH_FAMILY = ("torch", "torchvision", "triton", "nvidia-")
# DrivingSDK publishes mx-driving wheels on PyPI for these torch releases only.
MX_DRIVING_TORCH = ((2, 6), (2, 7), (2, 8))
DRIVING_SDK_SOURCE = "https://gitee.com/ascend/DrivingSDK"
STATE_FILE = "flashocc-kit-state.json"


def build_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def requirement_name(line: str) -> str:
    for sep in ("==", ">=", "<=", "<", ">", "~=", "!=", ";", "[", " "):
        line = line.split(sep)[0]
    return line.strip().lower()


def marker_applies(line: str) -> bool:
    """Evaluate the only marker requirements.txt uses: platform_machine == "..."."""
    if ";" not in line:
        return True
    marker = line.split(";", 1)[1].strip()
    key, _, value = marker.partition("==")
    if key.strip() != "platform_machine" or not value:
        raise KitError(f"requirements.txt: unsupported marker {marker!r} (only platform_machine == ...)")
    return platform.machine() == value.strip().strip("\"'")


def stack_requirements(keep_torch: bool) -> list[str]:
    """The pinned lines of requirements.txt for this machine, minus the torch family when torch is kept."""
    lines = []
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if not line or not marker_applies(line):
            continue
        if keep_torch and requirement_name(line).startswith(TORCH_FAMILY):
            continue
        lines.append(line.split(";")[0].strip())
    return lines


@dataclass
class Runner:
    """Runs commands for one setup, each with its own log file, and fails with the evidence."""

    log_dir: Path
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

    def run(self, name: str, cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> str:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"setup-{self.step:02d}-{name}.log"
        with log.open("w") as fh:
            fh.write(f"$ {' '.join(cmd)}\n(cwd {cwd or os.getcwd()})\n\n")
            fh.flush()
            proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=fh,
                                  stderr=subprocess.STDOUT, text=True)
        output = log.read_text()
        if proc.returncode != 0:
            tail = "\n".join(output.splitlines()[-25:])
            raise KitError(f"setup step {self.step} ({name}) failed with exit {proc.returncode}.\n"
                           f"command: {' '.join(cmd)}\nlog: {log}\nlast lines:\n{tail}")
        return output


def installed_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    return run_probe(python, "versions", *names)


def unsatisfied(python: Path, pins: list[str]) -> list[str]:
    """Pinned `name==version` lines not installed at exactly that version."""
    exact = {}
    for line in pins:
        spec = line.split(";")[0].strip()
        if "==" in spec:
            name, version = spec.split("==", 1)
            exact[name.strip()] = version.strip()
    have = installed_versions(python, list(exact))
    return [f"{n}=={v} (have {have.get(n)})" for n, v in exact.items() if have.get(n) != v]


def mmcv_cache_key(mmcv_dir: Path, torch_version: str, force_npu: bool) -> str:
    """What the built mmcv depends on: its patched source, torch, Python, machine, NPU build."""
    parts = [gitutil.content_tree_id(mmcv_dir), torch_version, platform.python_version(),
             platform.machine(), f"npu={force_npu}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def editable_location(python: Path, module: str) -> str | None:
    return run_probe(python, "module_origin", module).get("origin")


@dataclass
class SetupOptions:
    workspace: Path
    venv: Path
    from_dir: Path | None
    base_python: Path
    torch_mode: str  # auto | keep | install


def decide_keep_torch(opts: SetupOptions) -> tuple[bool, str]:
    base = run_probe(opts.base_python, "torch_info")
    has_torch = bool(base.get("torch"))
    if opts.torch_mode == "keep" and not has_torch:
        raise KitError(f"--torch keep: {opts.base_python} has no torch to keep. "
                       "Fix: use --torch install, or --python pointing at the interpreter with torch.")
    keep = has_torch if opts.torch_mode == "auto" else opts.torch_mode == "keep"
    why = (f"keeping torch {base['torch']} of {opts.base_python}" + (" (with torch_npu)" if base.get("npu") else "")
           if keep else "installing torch from requirements.txt")
    return keep, why


class Setup:
    """The setup steps, each idempotent, sharing one runner and one state file."""

    def __init__(self, opts: SetupOptions, total_steps: int):
        self.opts = opts
        self.ws = Workspace.at(opts.workspace)
        self.runner = Runner(self.ws.kit_state / "logs", total=total_steps)
        self.python = venv_python(opts.venv)
        self.state_path = opts.venv / STATE_FILE
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def sources(self) -> None:
        t = self.runner.begin("sources: each upstream project at its pin")
        for project in self.ws.select(None):
            sources.obtain(project, self.ws.root, self.opts.from_dir, log=lambda m: print(f"      {m}"))
        self.runner.done(t, "sources ready")

    def patches(self) -> None:
        t = self.runner.begin("patches: apply, all or nothing per project")
        self.ws.apply_all(log=lambda m: print(f"      {m}"))
        self.runner.done(t, "patches applied")

    def venv(self) -> None:
        t = self.runner.begin(f"virtual environment {self.opts.venv}")
        if self.python.exists():
            kept = self.state.get("keep_torch", False)
            self.runner.done(t, f"reused ({'torch kept from the base interpreter' if kept else 'own torch'})")
            return
        keep_torch, why = decide_keep_torch(self.opts)
        cmd = [str(self.opts.base_python), "-m", "venv", str(self.opts.venv)]
        if keep_torch:
            cmd.insert(3, "--system-site-packages")
        self.runner.run("venv", cmd)
        self.state = {"keep_torch": keep_torch}
        self.save()
        self.runner.done(t, why)

    def pinned(self, title: str, pins: list[str], name: str) -> None:
        """pip install --no-deps the pins that are not installed at their version."""
        t = self.runner.begin(title)
        missing = unsatisfied(self.python, pins)
        if not missing:
            self.runner.done(t, f"all {len(pins)} pins already satisfied")
            return
        req = self.ws.kit_state / f"{name}-selected.txt"
        req.parent.mkdir(parents=True, exist_ok=True)
        req.write_text("\n".join(pins) + "\n")
        self.runner.run(name, [str(self.python), "-m", "pip", "install", "--no-deps", "-r", str(req)])
        missing = unsatisfied(self.python, pins)
        if missing:
            raise KitError("after pip install these pins are still not satisfied:\n  " + "\n  ".join(missing))
        self.runner.done(t, f"installed {len(pins)} pinned packages")

    def stack(self) -> None:
        self.pinned("Python stack from requirements.txt", stack_requirements(self.state.get("keep_torch", False)),
                    "pip-stack")

    def torch_version(self) -> str:
        version = run_probe(self.python, "torch_info").get("torch")
        if not version:
            raise KitError(f"torch does not import in {self.python}. Fix: remove {self.opts.venv} and run setup again.")
        return version

    def mmcv(self) -> None:
        t = self.runner.begin("mmcv (MMCV_WITH_OPS=1) from the patched source, wheel cached")
        force_npu = cann_home() is not None
        key = mmcv_cache_key(self.ws.dir("mmcv"), self.torch_version(), force_npu)
        if self.state.get("mmcv") == key and installed_versions(self.python, ["mmcv-full"]).get("mmcv-full"):
            self.runner.done(t, f"installed build {key} is current")
            return
        wheel_dir = cache_dir() / "wheels" / "mmcv" / key
        wheels = sorted(wheel_dir.glob("*.whl"))
        how = "from the wheel cache"
        if not wheels:
            env = {"MMCV_WITH_OPS": "1", "MAX_JOBS": str(build_jobs())}
            if force_npu:
                env["FORCE_NPU"] = "1"
            print(f"      building ({', '.join(f'{k}={v}' for k, v in env.items())}); "
                  "this takes a few minutes once, then it is cached", flush=True)
            build_out = self.ws.kit_state / "mmcv-dist"
            shutil.rmtree(build_out, ignore_errors=True)
            self.runner.run("mmcv-build", [str(self.python), "setup.py", "bdist_wheel", "-d", str(build_out)],
                            cwd=self.ws.dir("mmcv"), env=env)
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
                           + "\n  ".join(problems) + f"\nFix: align {REQUIREMENTS.name} with them.")
        self.runner.done(t, "satisfied by the pinned stack")

    def driving_sdk(self) -> None:
        t = self.runner.begin("DrivingSDK (mx_driving)")
        print(f"      {install_driving_sdk(self.runner, self.python, self.torch_version())}")
        self.runner.done(t, "done")


def setup(opts: SetupOptions) -> None:
    """The seed's steps 1-5: sources, patches, venv, stack, mmcv, mmdet, mmdet3d, FlashOCC, DrivingSDK."""
    steps = Setup(opts, total_steps=9)
    steps.sources()
    steps.patches()
    steps.venv()
    steps.stack()
    steps.mmcv()
    steps.editable("mmdet", "mmdet")
    steps.editable("mmdet3d", "mmdet3d")
    steps.runtime_requirements()
    steps.driving_sdk()

    from .health import run_checks

    report = run_checks(steps.ws, opts.venv)
    print()
    for check in report:
        print(check.line())
    if any(c.required and not c.ok for c in report):
        raise KitError("setup finished but the environment is not ready (see the lines marked FAIL above)")
    print(f"\nready: activate with `source {opts.venv}/bin/activate`; logs in {steps.runner.log_dir}")


def check_runtime_requirements(python: Path, ws: Workspace) -> list[str]:
    files = [ws.flashocc / "requirements" / "runtime.txt", ws.dir("mmdet3d") / "requirements" / "runtime.txt"]
    problems = run_probe(python, "runtime_requirements", *map(str, files))
    if isinstance(problems, dict):
        raise KitError(f"could not check runtime requirements: {problems['error']}")
    return problems


def install_driving_sdk(runner: Runner, python: Path, torch_version: str) -> str:
    installed = installed_versions(python, ["mx-driving"]).get("mx-driving")
    if installed:
        return f"mx-driving {installed} already installed"
    major_minor = tuple(int(x) for x in torch_version.split("+")[0].split(".")[:2])
    if cann_home() is None:
        return "skipped: no CANN toolkit on this host (the port runs its portable kernels on CPU/CUDA)"
    if major_minor not in MX_DRIVING_TORCH:
        return (f"skipped: PyPI has mx-driving wheels only for torch 2.6-2.8, this is torch {torch_version}. "
                f"Build DrivingSDK from source for your torch: {DRIVING_SDK_SOURCE} "
                "(its README, 'build from source'), then `pip install dist/mx_driving-*.whl`.")
    runner.run("mx-driving", [str(python), "-m", "pip", "install", "mx-driving"])
    return "installed mx-driving from PyPI"
