"""The workspace: where the four checkouts, the launch-script link and the environment live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import sources
from .errors import KitError
from .patching import PatchState, apply_patch, patch_state
from .pins import KIT_ROOT, PROJECT_ORDER, Project, load_projects
from .stackenv import venv_dir


@dataclass
class Workspace:
    root: Path
    projects: dict[str, Project]

    @classmethod
    def at(cls, root: Path | str) -> Workspace:
        return cls(Path(root).resolve(), load_projects())

    def dir(self, name: str) -> Path:
        return self.root / self.projects[name].path

    @property
    def flashocc(self) -> Path:
        return self.dir("flashocc")

    @property
    def default_venv(self) -> Path:
        return venv_dir(self.root)

    @property
    def kit_state(self) -> Path:
        """Logs and bookkeeping of kit commands run in this workspace."""
        return self.root / ".kit"

    def select(self, names: list[str] | None) -> list[Project]:
        if not names:
            return [self.projects[n] for n in PROJECT_ORDER]
        unknown = [n for n in names if n not in self.projects]
        if unknown:
            raise KitError(f"unknown project(s) {', '.join(unknown)}; choose from {', '.join(PROJECT_ORDER)}")
        return [self.projects[n] for n in PROJECT_ORDER if n in names]

    def link_launch_scripts(self) -> str:
        """The seed's `cp -r test/ FlashOCC/`, as a link so the scripts never go stale."""
        link = self.flashocc / "test"
        target = KIT_ROOT / "test"
        if link.is_symlink():
            if link.resolve() == target.resolve():
                return "present"
            link.unlink()
        elif link.exists():
            return f"left alone ({link} is a real directory, copied by hand?)"
        link.symlink_to(os.path.relpath(target, link.parent))
        sources.exclude_local_paths(self.flashocc, flashocc=True)
        return "linked"

    def apply_all(self, names: list[str] | None = None, log=print) -> None:
        for project in self.select(names):
            result = apply_patch(project.name, self.dir(project.name), project.patch_file)
            log(f"{result.outcome:16s} {project.patch} -> {project.path}")
        if not names or "flashocc" in names:
            log(f"{'launch scripts':16s} {self.link_launch_scripts()}: {self.flashocc / 'test'}")

    def states(self) -> dict[str, PatchState]:
        return {p.name: patch_state(self.dir(p.name), p.patch_file)[0] for p in self.select(None)}

    def status_rows(self) -> list[dict[str, str]]:
        """One row per checkout: where it is, its revision, whether that is the pin, the patch state."""
        rows = []
        for project in self.select(None):
            path = self.dir(project.name)
            pin = sources.check_pin(project, path)
            state, _ = patch_state(path, project.patch_file)
            rows.append({
                "project": project.name,
                "path": os.path.relpath(path, self.root) if _is_inside(path, self.root) else str(path),
                "revision": pin.revision,
                "pin ok": {True: "yes", False: "NO", None: "?"}[pin.ok],
                "patch": state.value,
            })
        return rows

    def healthy(self) -> bool:
        return all(r["pin ok"] != "NO" and r["patch"] == PatchState.APPLIED.value for r in self.status_rows())


def _is_inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False
