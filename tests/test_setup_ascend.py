"""`setup` on an Ascend host, driven here with a fake CANN directory and recording stand-ins for pip and the mmcv
build: torch-npu and mx-driving are installed (and import) before mmcv's NPU build needs them, at the stack's
versions; kept ones that do not fit the stack's torch, and a torch_npu that cannot import, are refused before any
build, each with its fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from flashocc_kit import health, installer
from flashocc_kit.errors import KitError
from flashocc_kit.stackenv import run_probe
from flashocc_kit.stacks import default_stack

IMPORTS = "pass\n"
NO_CANN = "raise OSError('libascendcl.so: cannot open shared object file: No such file or directory')\n"


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def fake_install(venv: Path, name: str, version: str, module: str | None = None, code: str = IMPORTS,
                 requires: tuple[str, ...] = ()) -> None:
    """What pip leaves behind, as far as the kit's probes look: a dist-info and, optionally, an importable module."""
    import shutil

    site = site_packages(venv)
    for older in site.glob(f"{name.replace('-', '_')}-*.dist-info"):  # pip replaces an installed version
        shutil.rmtree(older)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
    if module:
        (site / module).mkdir(exist_ok=True)
        (site / module / "__init__.py").write_text(f"__version__ = {version!r}\n{code}")


class Recorder:
    """Stands in for Runner.run: records each command in order and leaves what pip or the build would."""

    def __init__(self, venv: Path, torch_npu_code: str = IMPORTS, preinstalled: tuple = ()):
        self.venv = venv
        self.calls: list[dict] = []
        self.torch_npu_code = torch_npu_code
        self.preinstalled = preinstalled  # what the image had: (name, version, module, requires)

    def __call__(self, name: str, cmd: list[str], cwd=None, env=None, hint: str = "") -> str:
        call = {"name": name, "cmd": cmd, "env": env or {}}
        self.calls.append(call)
        if name == "venv":
            import subprocess

            subprocess.run(cmd, check=True)
        elif name == "pip-stack":
            for line in Path(cmd[-1]).read_text().split():
                dist, version = line.split("==")
                fake_install(self.venv, dist, version, "torch" if dist == "torch" else None)
            for dist, version, module, requires in self.preinstalled:
                fake_install(self.venv, dist, version, module, requires=requires)
        elif name == "torch-npu":
            fake_install(self.venv, "torch-npu", cmd[-1].split("==")[1], "torch_npu", self.torch_npu_code)
        elif name == "mx-driving":
            fake_install(self.venv, "mx-driving", cmd[-1].split("==")[1], "mx_driving", "import torch_npu\n",
                         requires=("torch>=2.1.0,<2.6.0",))
        elif name == "mmcv-build":
            # what mmcv's setup.py needs for FORCE_NPU=1: torch_npu importable in this environment
            call["torch_npu_error"] = run_probe(Path(cmd[0]), "imports", "torch_npu").get("torch_npu", "absent")
            out = Path(cmd[cmd.index("-d") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "mmcv_full-1.7.2-cp311-cp311-linux_x86_64.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        elif name == "mmcv-install":
            fake_install(self.venv, "mmcv-full", "1.7.2")
        elif name in ("mmdet-install", "mmdet3d-install"):  # editable: the module stays in the checkout
            source, module = Path(cmd[-1]), name.split("-")[0]
            (source / module).mkdir(parents=True, exist_ok=True)
            (source / module / "__init__.py").write_text("")
            (site_packages(self.venv) / f"{module}-editable.pth").write_text(f"{source}\n")
        return ""

    @property
    def names(self) -> list[str]:
        return [call["name"] for call in self.calls]

    def call(self, name: str) -> dict:
        return next(call for call in self.calls if call["name"] == name)


@pytest.fixture
def ascend_host(tmp_path, monkeypatch):
    """A workspace whose sources and patches are taken as done, on a host with a (fake) CANN toolkit."""
    cann = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    cann.mkdir(parents=True)
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(cann))
    monkeypatch.setenv("FLASHOCC_KIT_CACHE", str(tmp_path / "cache"))
    workspace = tmp_path / "ws"
    (workspace / "mmcv").mkdir(parents=True)
    (workspace / "mmcv" / "setup.py").write_text("# the patched mmcv\n")
    monkeypatch.setattr(installer.Setup, "sources", lambda self: None)
    monkeypatch.setattr(installer.Setup, "patches", lambda self: None)
    monkeypatch.setattr(installer, "require_room", lambda *args: None)
    monkeypatch.setattr(installer, "check_runtime_requirements", lambda python, ws: [])
    monkeypatch.setattr(health, "run_checks", lambda ws, venv: [])
    monkeypatch.setattr(installer.rehearsal, "prepare", lambda venv, mx_driving: pytest.fail("no rehearsal on Ascend"))
    return {"workspace": workspace, "cann": cann, "venv": tmp_path / "venv"}


def run_setup(host: dict, monkeypatch, recorder_options: dict | None = None) -> tuple[Recorder, Exception | None]:
    opts = installer.SetupOptions(workspace=host["workspace"], venv=host["venv"], from_dir=None,
                                  base_python=Path(sys.executable), torch_mode="install")
    recorder = Recorder(host["venv"], **(recorder_options or {}))
    monkeypatch.setattr(installer.Runner, "run", lambda self, *args, **kwargs: recorder(*args, **kwargs))
    try:
        installer.setup(opts)
    except KitError as exc:
        return recorder, exc
    return recorder, None


def test_torch_npu_and_mx_driving_come_at_the_stacks_versions_before_the_mmcv_npu_build(ascend_host, monkeypatch):
    recorder, error = run_setup(ascend_host, monkeypatch)
    assert error is None, error
    assert recorder.names == ["venv", "pip-stack", "torch-npu", "mx-driving", "mmcv-build", "mmcv-install",
                              "mmdet-install", "mmdet3d-install"]
    stack = default_stack()
    assert recorder.call("torch-npu")["cmd"][-2:] == ["--no-deps", f"torch-npu=={stack.torch_npu}"]
    assert recorder.call("mx-driving")["cmd"][-2:] == ["--no-deps", f"mx-driving=={stack.mx_driving}"]
    build = recorder.call("mmcv-build")
    assert build["env"]["FORCE_NPU"] == "1" and build["torch_npu_error"] is None  # torch_npu imported by then
    state = json.loads((ascend_host["venv"] / "flashocc-kit-state.json").read_text())
    assert state["torch_npu_imports"] is True

    again, error = run_setup(ascend_host, monkeypatch)  # a second run verifies and installs nothing
    assert error is None and again.names == []


def test_a_kept_torch_npu_of_another_torch_is_refused_before_any_build(ascend_host, monkeypatch):
    image = (("torch-npu", "2.7.1.post11", "torch_npu", ()),)
    recorder, error = run_setup(ascend_host, monkeypatch, {"preinstalled": image})
    assert error is not None and "torch-npu 2.7.1.post11 is installed" in str(error)
    assert f"pip install --no-deps torch-npu=={default_stack().torch_npu}" in str(error)
    assert "torch-npu" not in recorder.names and "mmcv-build" not in recorder.names


def test_a_kept_mx_driving_built_for_another_torch_is_refused_before_any_build(ascend_host, monkeypatch):
    image = (("torch-npu", default_stack().torch_npu, "torch_npu", ()),
             ("mx-driving", "26.2.0.post2", "mx_driving", ("torch<2.9.0,>=2.6.0",)))
    recorder, error = run_setup(ascend_host, monkeypatch, {"preinstalled": image})
    assert error is not None and "mx-driving 26.2.0.post2 is installed" in str(error)
    assert "built for torch<2.9.0,>=2.6.0" in str(error) and f"mx-driving=={default_stack().mx_driving}" in str(error)
    assert "mmcv-build" not in recorder.names


def test_a_torch_npu_that_cannot_import_names_cann_not_a_build_failure(ascend_host, monkeypatch):
    recorder, error = run_setup(ascend_host, monkeypatch, {"torch_npu_code": NO_CANN})
    assert error is not None and "torch-npu is installed" in str(error) and "libascendcl.so" in str(error)
    assert f"source {ascend_host['cann']}/set_env.sh" in str(error)
    assert recorder.names == ["venv", "pip-stack", "torch-npu"]  # stopped before DrivingSDK and mmcv


def test_off_ascend_there_is_no_npu_build_and_no_ascend_package(ascend_host, monkeypatch):
    monkeypatch.delenv("ASCEND_TOOLKIT_HOME")
    monkeypatch.setattr(installer, "cann_home", lambda: None)
    prepared = []
    monkeypatch.setattr(installer.rehearsal, "prepare", lambda venv, mx_driving: prepared.append(mx_driving) or
                        SimpleNamespace(seconds={"extension": 0.1}))
    recorder, error = run_setup(ascend_host, monkeypatch)
    assert error is None, error
    assert prepared == [default_stack().mx_driving]  # the rehearsal instead, with the stack's DrivingSDK
    assert "torch-npu" not in recorder.names and "FORCE_NPU" not in recorder.call("mmcv-build")["env"]
