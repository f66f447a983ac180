"""`setup` on an Ascend host, driven here with a fake CANN directory and recording stand-ins for pip and the mmcv
build: torch-npu and mx-driving are installed (and import) before mmcv's NPU build needs them, at the stack's
versions; kept ones that do not fit the stack's torch, and a torch_npu that cannot import, are refused before any
build, each with its fix.

The host's chip comes from fake host reports: an `npu-smi` on PATH printing an Atlas A2 or A5 table, and a
libdrvdsmi_host.so compiled here with gcc on LD_LIBRARY_PATH (the driver library DrivingSDK asks at import). They
lead setup to mx-driving on A2 and mx-driving-a5 on A5, refuse torch2.1 on A5, refuse a kept build of the other
chip, give `--a5` to a source build, and lead doctor to name the chip, CANN's version and the build's fit."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import git, make_repo
from flashocc_kit import chip, health, installer
from flashocc_kit.errors import KitError
from flashocc_kit.stackenv import run_probe
from flashocc_kit.stacks import default_stack, load_stacks
from flashocc_kit.workspace import Workspace

IMPORTS = "pass\n"
NO_CANN = "raise OSError('libascendcl.so: cannot open shared object file: No such file or directory')\n"
RUN_CHECKS = health.run_checks  # doctor's checks, kept before the fixture stands in for them during setup
TORCH_OF = {"26.2.0.post1": "torch>=2.1.0,<2.6.0", "26.2.0.post2": "torch<2.9.0,>=2.6.0"}  # the wheels' Requires-Dist

# `npu-smi info` on an Atlas A2 (eight 910B3; the power column has a 95 in it, the name column does not)
NPU_SMI_A2 = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.6                   Version: 23.0.6                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 95.9        36                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3161 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | OK            | 93.1        35                0    / 0             |
| 0                         | 0000:C2:00.0  | 0           0    / 0          3161 / 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| No running processes found in NPU 0                                                            |
+===========================+===============+====================================================+
"""
# An Atlas A3 (its second line per NPU carries the chip's Phy-ID), as vllm-ascend's issues show it
NPU_SMI_A3 = """\
| npu-smi 25.2.1                   Version: 25.2.1                                               |
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     Ascend910           | OK            | 166.5       38                0    / 0             |
| 0     0                   | 0000:9D:00.0  | 0           0    / 0          3131 / 65536         |
"""
# An Atlas A5: the A2 layout with the name an Ascend 950 reports (`npu-smi info -m`: Ascend950PR); not seen on one
NPU_SMI_A5 = NPU_SMI_A2.replace("910B3", "Ascend950PR")
NPU_SMI_DOWN = "dcmi module initialize failed. ret is -8005\n"  # a host whose driver is not loaded

FAKE_DRIVER = r"""
#include <string.h>
struct dsmi_chip_info_stru { char chip_type[32]; char chip_name[32]; char chip_version[32]; };
int dsmi_get_chip_info(int device_id, struct dsmi_chip_info_stru *info) {
  memset(info, 0, sizeof(*info));
  if (device_id != 0 || STATUS != 0) return device_id != 0 ? -1 : STATUS;
  strcpy(info->chip_type, "Ascend");
  strcpy(info->chip_name, CHIP_NAME);
  strcpy(info->chip_version, "V1");
  return 0;
}
"""


def fake_npu_smi(bin_dir: Path, table: str) -> None:
    """An npu-smi that prints this table for `npu-smi info` (and fails, as a driverless host's does, without one)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    tool = bin_dir / "npu-smi"
    status = 1 if table == NPU_SMI_DOWN else 0
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{table}EOF\nexit {status}\n")
    tool.chmod(0o755)


def fake_driver(folder: Path, chip_name: str, status: int = 0) -> Path:
    """A libdrvdsmi_host.so whose dsmi_get_chip_info answers device 0 with this chip name (or fails with status)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc to compile the fake libdrvdsmi_host.so (the driver library DrivingSDK asks)")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "dsmi.c"
    source.write_text(FAKE_DRIVER)
    library = folder / chip.DRIVER_LIBRARY
    subprocess.run([gcc, "-shared", "-fPIC", f'-DCHIP_NAME="{chip_name}"', f"-DSTATUS={status}", "-o",
                    str(library), str(source)], check=True)
    return library


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def fake_install(venv: Path, name: str, version: str, module: str | None = None, code: str = IMPORTS,
                 requires: tuple[str, ...] = (), vendors: tuple[str, ...] = ()) -> None:
    """What pip leaves behind, as far as the kit's probes look: a dist-info and, optionally, an importable module
    (for DrivingSDK, with the kernel directories of its build in packages/vendors)."""
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
        shutil.rmtree(site / module / "packages", ignore_errors=True)
        for folder in vendors:
            (site / module / "packages" / "vendors" / folder).mkdir(parents=True)


class Recorder:
    """Stands in for Runner.run: records each command in order and leaves what pip or the build would."""

    def __init__(self, venv: Path, torch_npu_code: str = IMPORTS, preinstalled: tuple = ()):
        self.venv = venv
        self.calls: list[dict] = []
        self.torch_npu_code = torch_npu_code
        self.preinstalled = preinstalled  # what the image had: (name, version, module, requires[, vendors])
        self.built_for = chip.A2  # the chip of the last DrivingSDK source build

    def __call__(self, name: str, cmd: list[str], cwd=None, env=None, hint: str = "") -> str:
        call = {"name": name, "cmd": cmd, "env": env or {}}
        self.calls.append(call)
        if name == "venv":
            import subprocess

            # the real venv; its pip linked in, not installed: every pip install here is the recorder's, and
            # ensurepip would be most of the test's time
            subprocess.run([*cmd, "--without-pip"], check=True)
            import pip

            (site_packages(self.venv) / "pip").symlink_to(Path(pip.__file__).parent)
        elif name == "pip-stack":
            for line in Path(cmd[-1]).read_text().split():
                dist, version = line.split("==")
                fake_install(self.venv, dist, version, "torch" if dist == "torch" else None)
            for dist, version, module, requires, *vendors in self.preinstalled:
                fake_install(self.venv, dist, version, module, requires=requires, vendors=tuple(vendors))
        elif name == "torch-npu":
            fake_install(self.venv, "torch-npu", cmd[-1].split("==")[1], "torch_npu", self.torch_npu_code)
        elif name == "mx-driving" and cmd[-1].endswith(".whl"):  # a source build installs as mx-driving
            fake_install(self.venv, "mx-driving", Path(cmd[-1]).name.split("-")[1], "mx_driving",
                         "import torch_npu\n", vendors=(chip.VENDORS[self.built_for],))
        elif name == "mx-driving":
            dist, version = cmd[-1].split("==")
            built_for = chip.A5 if dist == chip.PACKAGES[chip.A5] else chip.A2
            fake_install(self.venv, dist, version, "mx_driving", "import torch_npu\n", requires=(TORCH_OF[version],),
                         vendors=(chip.VENDORS[built_for],))
        elif name == "mx-driving-a5-uninstall":
            for info in site_packages(self.venv).glob("mx_driving_a5-*.dist-info"):
                shutil.rmtree(info)
        elif name == "drivingsdk-build":  # ci/build.sh: a wheel in dist/, with the A5 kernels when given --a5
            self.built_for = chip.A5 if "--a5" in cmd else chip.A2
            wheel = Path(cwd) / "dist" / "mx_driving-1.0.0-cp311-cp311-linux_x86_64.whl"
            wheel.parent.mkdir(exist_ok=True)
            wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)
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
    """A workspace whose sources and patches are taken as done, on a host with a (fake) CANN toolkit whose chip
    nothing names until a test says: its npu-smi fails as a driverless host's does, no driver library is found."""
    cann = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    cann.mkdir(parents=True)
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(cann))
    fake_npu_smi(tmp_path / "bin", NPU_SMI_DOWN)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LD_LIBRARY_PATH", ":".join(
        folder for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":")
        if folder and not (Path(folder) / chip.DRIVER_LIBRARY).exists()))
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
    return {"workspace": workspace, "cann": cann, "venv": tmp_path / "venv", "bin": tmp_path / "bin",
            "driver": tmp_path / "driver"}


def run_setup(host: dict, monkeypatch, recorder_options: dict | None = None,
              **options: object) -> tuple[Recorder, Exception | None]:
    opts = installer.SetupOptions(workspace=host["workspace"], venv=host["venv"], from_dir=None,
                                  base_python=Path(sys.executable), torch_mode="install", **options)
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
                              "mmdet-install", "mmdet3d-install", "bytecode"]
    stack = default_stack()
    assert recorder.call("torch-npu")["cmd"][-2:] == ["--no-deps", f"torch-npu=={stack.torch_npu}"]
    assert recorder.call("mx-driving")["cmd"][-2:] == ["--no-deps", f"mx-driving=={stack.mx_driving}"]
    build = recorder.call("mmcv-build")
    assert build["env"]["FORCE_NPU"] == "1" and build["torch_npu_error"] is None  # torch_npu imported by then
    state = json.loads((ascend_host["venv"] / "flashocc-kit-state.json").read_text())
    assert state["torch_npu_imports"] is True

    again, error = run_setup(ascend_host, monkeypatch)  # a second run verifies and installs nothing
    assert error is None and again.names == ["bytecode"]  # compileall, which skips what is up to date


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


# ---- the chip decides DrivingSDK's package -------------------------------------------------------------------


def test_npu_smi_names_the_chip_of_each_npu_in_its_name_column():
    """Only the name cell counts: NPU_SMI_A2's power column reads 95.9, which DrivingSDK's rule would take for A5."""
    assert chip.npu_smi_names(NPU_SMI_A2) == ["910B3", "910B3"]
    assert chip.npu_smi_names(NPU_SMI_A3) == ["Ascend910"]  # the Phy-ID line is no NPU
    assert chip.npu_smi_names(NPU_SMI_A5) == ["Ascend950PR", "Ascend950PR"]
    assert chip.npu_smi_names(NPU_SMI_DOWN) == []
    assert [chip.is_a5(name) for name in ("910B3", "Ascend910", "Ascend950PR", "950DT")] == [False, False, True, True]


@pytest.mark.parametrize("table, stack, wheel", [
    (NPU_SMI_A2, "torch2.7", "mx-driving==26.2.0.post2"),
    (NPU_SMI_A5, "torch2.7", "mx-driving-a5==26.2.0.post2"),
    (NPU_SMI_A5, "torch2.8", "mx-driving-a5==26.2.0.post2"),
    (NPU_SMI_A3, "torch2.1", "mx-driving==26.2.0.post1"),
], ids=["A2-torch2.7", "A5-torch2.7", "A5-torch2.8", "A3-torch2.1"])
def test_npu_smi_leads_setup_to_the_drivingsdk_package_of_the_chip(ascend_host, monkeypatch, table, stack, wheel):
    fake_npu_smi(ascend_host["bin"], table)
    recorder, error = run_setup(ascend_host, monkeypatch, stack=stack)
    assert error is None, error
    assert recorder.call("mx-driving")["cmd"][-2:] == ["--no-deps", wheel]
    assert wheel == load_stacks()[stack].drivingsdk(chip.A5 if "a5" in wheel else chip.A2)  # pins.ini's
    again, error = run_setup(ascend_host, monkeypatch, stack=stack)  # the kept build fits: verified, not replaced
    assert error is None and again.names == ["bytecode"]  # compileall, which skips what is up to date


def test_the_drivers_answer_comes_before_npu_smis(ascend_host, monkeypatch):
    """The kit asks what DrivingSDK asks at import, the driver through libdrvdsmi_host.so on LD_LIBRARY_PATH."""
    fake_npu_smi(ascend_host["bin"], NPU_SMI_A2)
    library = fake_driver(ascend_host["driver"], "950PR")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(library.parent))
    found = chip.detect()
    assert (found.kind, found.name, found.source, found.evidence) == (chip.A5, "950PR", "driver", str(library))
    recorder, error = run_setup(ascend_host, monkeypatch, stack="torch2.7")
    assert error is None, error
    assert recorder.call("mx-driving")["cmd"][-1] == "mx-driving-a5==26.2.0.post2"


def test_a_driver_that_cannot_answer_leaves_it_to_npu_smi_and_else_an_a2_said_to_be_assumed(ascend_host, monkeypatch):
    fake_npu_smi(ascend_host["bin"], NPU_SMI_A5)
    library = fake_driver(ascend_host["driver"], "", status=-8005)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(library.parent))
    found = chip.detect()
    assert (found.kind, found.name, found.source) == (chip.A5, "Ascend950PR", "npu-smi")
    fake_npu_smi(ascend_host["bin"], NPU_SMI_DOWN)
    found = chip.detect()
    assert (found.kind, found.source) == (chip.A2, "assumed")
    assert "returned -8005" in found.evidence and "npu-smi info` exited 1" in found.evidence
    assert "`--chip a5`" in found.describe()
    assert chip.detect(env={"LD_LIBRARY_PATH": ""}).evidence.startswith(
        "neither the driver nor npu-smi named the chip (libdrvdsmi_host.so is not on LD_LIBRARY_PATH")


def test_an_a5_host_refuses_torch21_naming_the_stacks_that_serve_it(ascend_host, monkeypatch):
    fake_npu_smi(ascend_host["bin"], NPU_SMI_A5)
    recorder, error = run_setup(ascend_host, monkeypatch)  # the default stack, torch2.1
    assert isinstance(error, KitError) and "Traceback" not in str(error)
    message = str(error)
    assert "this host's NPU is an Atlas A5 (Ascend950PR, from `npu-smi info`)" in message
    assert "mx-driving-a5" in message and "torch2.1 is torch 2.1.0" in message
    assert "Fix: set up a stack that serves it, torch2.7 or torch2.8: `setup --stack torch2.8`" in message
    assert recorder.names == []  # refused before the environment was made


@pytest.mark.parametrize("table, given, stack, wheel, said", [
    (NPU_SMI_A5, "a2", "torch2.1", "mx-driving==26.2.0.post1",
     "Atlas A2 (--chip a2; but the host reports Atlas A5 (Ascend950PR, from `npu-smi info`))"),
    (NPU_SMI_A2, "a5", "torch2.7", "mx-driving-a5==26.2.0.post2",
     "Atlas A5 (--chip a5; but the host reports Atlas A2 (910B3, from `npu-smi info`))"),
    (NPU_SMI_DOWN, "a5", "torch2.7", "mx-driving-a5==26.2.0.post2",
     "Atlas A5 (--chip a5; the host does not name its chip)"),
], ids=["A5-host-given-a2", "A2-host-given-a5", "silent-host-given-a5"])
def test_chip_on_the_command_line_overrides_what_the_host_reports(ascend_host, monkeypatch, capsys, table, given,
                                                                    stack, wheel, said):
    fake_npu_smi(ascend_host["bin"], table)
    recorder, error = run_setup(ascend_host, monkeypatch, stack=stack, chip=given)
    assert error is None, error
    assert recorder.call("mx-driving")["cmd"][-1] == wheel
    assert f"NPU: {said}; DrivingSDK: {wheel}" in capsys.readouterr().out
    if table == NPU_SMI_DOWN:  # doctor takes setup's --chip where the host names none
        lines = doctor(ascend_host)
        assert "Atlas A5 (--chip a5; given to setup; the host does not name its chip)" in lines["NPU chip"]
        assert lines["NPU chip"].startswith("note NPU chip")  # here mx_driving cannot ask the driver either
        assert lines["DrivingSDK build"].startswith("ok   DrivingSDK build")


@pytest.mark.parametrize("table, kept, vendors, wheel", [
    (NPU_SMI_A5, "mx-driving", chip.VENDORS[chip.A2], "mx-driving-a5==26.2.0.post2"),
    (NPU_SMI_A2, "mx-driving-a5", chip.VENDORS[chip.A5], "mx-driving==26.2.0.post2"),
], ids=["mx-driving-on-A5", "mx-driving-a5-on-A2"])
def test_a_kept_drivingsdk_built_for_the_other_chip_is_refused_with_the_fix(ascend_host, monkeypatch, table, kept,
                                                                             vendors, wheel):
    fake_npu_smi(ascend_host["bin"], table)
    image = (("torch-npu", load_stacks()["torch2.7"].torch_npu, "torch_npu", ()),
             (kept, "26.2.0.post2", "mx_driving", (TORCH_OF["26.2.0.post2"],), vendors))
    recorder, error = run_setup(ascend_host, monkeypatch, {"preinstalled": image}, stack="torch2.7")
    assert isinstance(error, KitError), error
    assert f"{kept} 26.2.0.post2 is installed" in str(error) and f"packages/vendors/{vendors}" in str(error)
    assert f"pip uninstall -y {kept} && " in str(error) and f"pip install --no-deps {wheel}`" in str(error)
    assert "mx-driving" not in recorder.names and "mmcv-build" not in recorder.names


def drivingsdk_checkout(root: Path, build_script: str) -> Path:
    """A DrivingSDK checkout on master whose version table lists torch 2.7.1 (DrivingSDK's own layout)."""
    make_repo(root, {"ci/build.sh": build_script, "docs/zh/version/versions.md":
                     "| 分支 | CPU架构 | Python | PyTorch | torch_npu |\n|---|---|---|---|---|\n"
                     "| master | x86&aarch64 | Python3.9.x,Python3.10.x,Python3.11.x | 2.7.1 | v2.7.1 |\n"})
    git(root, "branch", "-m", "master")
    return root


@pytest.mark.parametrize("table, flag", [(NPU_SMI_A5, ["--a5"]), (NPU_SMI_A2, [])], ids=["A5", "A2"])
def test_a_source_build_is_for_the_hosts_chip(ascend_host, monkeypatch, tmp_path, table, flag):
    fake_npu_smi(ascend_host["bin"], table)
    checkout = drivingsdk_checkout(tmp_path / "DrivingSDK", "case $1 in --a5|--A5) ;; esac  # DrivingSDK's\n")
    image = (("mx-driving-a5", "26.2.0.post2", "mx_driving", (), chip.VENDORS[chip.A5]),) if flag else ()
    recorder, error = run_setup(ascend_host, monkeypatch, {"preinstalled": image}, stack="torch2.7",
                                drivingsdk=checkout)
    assert error is None, error
    python = f"--python={sys.version_info[0]}.{sys.version_info[1]}"
    assert recorder.call("drivingsdk-build")["cmd"] == ["bash", "ci/build.sh", python, *flag]
    assert recorder.call("mx-driving")["cmd"][-1].endswith(".whl")
    if flag:  # the build installs as mx-driving: the A5 package holding the same module goes first
        assert recorder.names.index("mx-driving-a5-uninstall") < recorder.names.index("mx-driving")
    build = run_probe(ascend_host["venv"] / "bin" / "python", "drivingsdk_build")
    assert build["vendors"] == [chip.VENDORS[chip.A5 if flag else chip.A2]]
    assert build["distributions"] == {"mx-driving": "1.0.0", "mx-driving-a5": None}


def test_a_checkout_that_cannot_build_for_an_a5_is_refused(ascend_host, monkeypatch, tmp_path):
    fake_npu_smi(ascend_host["bin"], NPU_SMI_A5)
    checkout = drivingsdk_checkout(tmp_path / "DrivingSDK", "# an older branch: --python and --single_op only\n")
    recorder, error = run_setup(ascend_host, monkeypatch, stack="torch2.7", drivingsdk=checkout)
    assert isinstance(error, KitError) and "ci/build.sh has no --a5" in str(error)
    assert f"git -C {checkout} checkout master" in str(error) and "drivingsdk-build" not in recorder.names


def doctor(host: dict) -> dict[str, str]:
    """doctor's lines for the host's environment, by check name."""
    return {check.name: check.line() for check in RUN_CHECKS(Workspace.at(host["workspace"]), host["venv"])}


def test_doctor_names_the_chip_and_its_source_cannns_version_and_whether_the_build_fits(ascend_host, monkeypatch):
    info = ascend_host["cann"] / f"{platform.machine()}-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text("package_name=Ascend-cann-toolkit\nversion=8.1.RC1\ninnerversion=V100R001C21SPC001B238\n")
    library = fake_driver(ascend_host["driver"], "950PR")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(library.parent))
    _, error = run_setup(ascend_host, monkeypatch, stack="torch2.7")
    assert error is None, error
    lines = doctor(ascend_host)
    assert lines["NPU chip"].startswith("ok   NPU chip")
    assert f"Atlas A5 (950PR, from the driver: dsmi_get_chip_info through {library})" in lines["NPU chip"]
    assert f"8.1.RC1 at {ascend_host['cann']} ({platform.machine()}-linux/ascend_toolkit_install.info)" in lines["CANN"]
    assert lines["DrivingSDK build"].startswith("ok   DrivingSDK build")
    assert ("mx-driving-a5 26.2.0.post2: kernels for Atlas A5 (vendors/customize_arch35), built for "
            "torch<2.9.0,>=2.6.0; this host: Atlas A5, torch 2.7.1") in lines["DrivingSDK build"]

    monkeypatch.setenv("LD_LIBRARY_PATH", "")  # npu-smi still says A5, but mx_driving cannot ask the driver
    fake_npu_smi(ascend_host["bin"], NPU_SMI_A5)
    lines = doctor(ascend_host)
    assert lines["NPU chip"].startswith("FAIL NPU chip") and "from `npu-smi info`" in lines["NPU chip"]
    assert "libdrvdsmi_host.so is not on LD_LIBRARY_PATH" in lines["NPU chip"]

    fake_npu_smi(ascend_host["bin"], NPU_SMI_A2)  # the same environment on an Atlas A2
    lines = doctor(ascend_host)
    assert "Atlas A2 (910B3, from `npu-smi info`)" in lines["NPU chip"]
    assert lines["DrivingSDK build"].startswith("FAIL DrivingSDK build")
    assert "its kernels are for Atlas A5" in lines["DrivingSDK build"]
    assert "pip uninstall -y mx-driving-a5 && " in lines["DrivingSDK build"]
    assert "pip install --no-deps mx-driving==26.2.0.post2" in lines["DrivingSDK build"]

    fake_npu_smi(ascend_host["bin"], NPU_SMI_DOWN)  # nothing names the chip: the A5 build cannot be judged wrong
    lines = doctor(ascend_host)
    assert lines["NPU chip"].startswith("note NPU chip") and "Atlas A2, assumed" in lines["NPU chip"]
    assert "nothing here names the chip: mx_driving, unable to ask the driver either" in lines["DrivingSDK build"]
    assert f"on an Atlas A5, put the folder holding {chip.DRIVER_LIBRARY}" in lines["DrivingSDK build"]

    info.unlink()
    assert "version unknown (no <arch>-linux/ascend_toolkit_install.info" in doctor(ascend_host)["CANN"]


def test_the_command_line_hands_chip_to_setup(tmp_path, monkeypatch):
    """`kit.py setup --chip a5` reaches setup's options (a value outside a2|a5 is bad input: test_bad_input.py)."""
    from flashocc_kit import cli
    from flashocc_kit.commands import setup as setup_command

    given = []
    monkeypatch.setattr(setup_command, "setup", given.append)
    assert cli.main(["--workspace", str(tmp_path), "setup", "--chip", "a5"]) == 0
    assert [opts.chip for opts in given] == ["a5"]


def test_a_setup_that_installs_torch_does_not_import_the_base_interpreters(tmp_path, monkeypatch):
    """--torch install (the cells of `kit.py test --stack`, these tests) asks the base interpreter for its Python
    and machine only: importing its torch would take seconds and decide nothing."""
    pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")
    import torch

    assert run_probe(Path(sys.executable), "interpreter")["torch"] == torch.__version__
    probed = []
    opts = installer.SetupOptions(workspace=tmp_path, venv=tmp_path / "venv", from_dir=None,
                                  base_python=Path(sys.executable), torch_mode="install")
    real_probe = installer.run_probe

    def recording_probe(python, probe, *args, **kwargs):
        probed.append((probe, args))
        return real_probe(python, probe, *args, **kwargs)

    monkeypatch.setattr(installer, "run_probe", recording_probe)
    chosen = installer.plan(opts)
    assert probed[0] == ("interpreter", ("--without-torch",)) and chosen.base["torch"] is None
    assert not chosen.keep_torch and chosen.cell.stack.torch == default_stack().torch
