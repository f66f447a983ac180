"""Upstream's pristine FlashOCC pipeline, importable next to the patched one.

The pristine files come from the pinned commit in the workspace checkout (`git show`: the kit keeps
its patch uncommitted, so the pin's blobs are there), else from the pristine sources directory.
Their classes are loaded under private module names with registration suppressed: executing
`@PIPELINES.register_module()` again would clash with, or silently replace, the patched classes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

from ..errors import KitError
from ..pins import load_projects

PIPELINE_FILES = {
    "loading": "projects/mmdet3d_plugin/datasets/pipelines/loading.py",
    "formating": "projects/mmdet3d_plugin/datasets/pipelines/formating.py",
}
PACKAGE = "flashocc_kit_upstream"


def pristine_text(flashocc: Path, rel: str, sources_dir: Path | None = None) -> str:
    """rel as it is at the pinned commit."""
    commit = load_projects()["flashocc"].commit
    proc = subprocess.run(["git", "-C", str(flashocc), "show", f"{commit}:{rel}"], capture_output=True, text=True)
    if proc.returncode == 0:
        return proc.stdout
    if sources_dir is not None and (sources_dir / "FlashOCC" / rel).is_file():
        return (sources_dir / "FlashOCC" / rel).read_text()
    raise KitError(f"cannot read upstream's {rel} at {commit[:12]}: not in {flashocc}'s git objects "
                   f"({proc.stderr.strip() or 'no git'}) and no pristine sources directory has it. "
                   "Fix: `python3 tools/kit.py sources` (or set FLASHOCC_KIT_SOURCES)")


@contextlib.contextmanager
def registration_suppressed():
    """Make PIPELINES.register_module a no-op decorator while upstream's modules execute."""
    from mmdet3d.datasets.builder import PIPELINES

    def register_module(name=None, force=False, module=None):
        return module if module is not None else (lambda cls: cls)

    PIPELINES.register_module = register_module  # instance attribute shadows the method
    try:
        yield
    finally:
        del PIPELINES.register_module


def load_module(name: str, text: str, filename: str) -> types.ModuleType:
    qualified = f"{PACKAGE}.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    sys.modules.setdefault(PACKAGE, types.ModuleType(PACKAGE))
    spec = importlib.util.spec_from_loader(qualified, loader=None, origin=filename)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = filename
    with registration_suppressed():
        exec(compile(text, filename, "exec"), module.__dict__)
    sys.modules[qualified] = module
    return module


def pipeline_modules(flashocc: Path, sources_dir: Path | None = None) -> list[types.ModuleType]:
    """Upstream's loading.py and formating.py, executed under private names."""
    return [load_module(name, pristine_text(flashocc, rel, sources_dir), f"<upstream {rel}>")
            for name, rel in PIPELINE_FILES.items()]


def config_namespace(flashocc: Path, config: str, sources_dir: Path | None = None) -> dict:
    """Upstream's config file executed as plain Python (its `_base_` list is not merged): enough for
    `train_pipeline`, which FlashOCC's configs spell out in full."""
    namespace: dict = {}
    exec(compile(pristine_text(flashocc, config, sources_dir), f"<upstream {config}>", "exec"), namespace)
    if "train_pipeline" not in namespace:
        raise KitError(f"upstream {config} defines no train_pipeline")
    return namespace


def build_steps(step_cfgs: list[dict], modules: list[types.ModuleType]) -> list:
    """Instantiate each step from upstream's modules, else from the registry (mmdet3d's own steps,
    such as LoadPointsFromFile, which the port does not change)."""
    from mmdet3d.datasets.builder import PIPELINES

    steps = []
    for cfg in step_cfgs:
        cfg = dict(cfg)
        kind = cfg.pop("type")
        cls = next((getattr(m, kind) for m in modules if isinstance(getattr(m, kind, None), type)), None)
        if cls is None:
            cls = PIPELINES.get(kind)
        if cls is None:
            raise KitError(f"pipeline step {kind}: neither upstream's pipeline modules nor the registry have it")
        steps.append(cls(**cfg))
    return steps


def train_steps(flashocc: Path, config: str, sources_dir: Path | None = None) -> list:
    """Upstream's train pipeline of `config` (relative to the FlashOCC root), as step objects."""
    modules = pipeline_modules(flashocc, sources_dir)
    return build_steps(config_namespace(flashocc, config, sources_dir)["train_pipeline"], modules)
