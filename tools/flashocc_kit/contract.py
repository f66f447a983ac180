"""Does flashocc.patch call DrivingSDK (mx_driving) and torch_npu the way their real packages allow?

Neither package imports without CANN, so their wheels are read instead: every `mx_driving.*`,
`torch.npu.*`, torch_npu module and name the patch uses is looked up in the wheel's Python
sources (following re-exports and aliases), and each call's arguments are checked against the
function's parameters.
"""

from __future__ import annotations

import ast
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .patchfile import added_lines, new_file_contents, read_patch_text
from .pypi import download_wheel

# Hyper-parameters AdamW configs pass; the fused NPU optimizer must take them too.
ADAMW_HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay")
CALL = re.compile(r"\b(mx_driving|torch\.npu)\.(\w+)\s*\(")
FROM_IMPORT = re.compile(r"from[ \t]+((?:mx_driving|torch_npu)[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)")
MODULE_IMPORT = re.compile(r"""(?:import_module\(\s*['"]|^\s*import\s+)((?:mx_driving|torch_npu)\.[\w.]+)""", re.M)
NPU_OPTIMIZER = re.compile(r"NPU_OPTIMIZERS\s*=\s*(\{[^}]*\})")
METHOD = re.compile(r"\s*\.\s*(\w+)\s*\(")


@dataclass(frozen=True)
class Use:
    """One way the patch touches an NPU package."""

    kind: str  # call | name | module | optimizer | chain (keywords: the methods called in turn)
    module: str  # dotted module the name lives in (torch.npu is torch_npu.npu)
    name: str = ""
    positional: int = 0
    keywords: tuple[str, ...] = ()
    where: str = ""

    def describe(self) -> str:
        target = f"{self.module}.{self.name}" if self.name else self.module
        return f"{self.kind} {target} ({self.where})"


def _balanced_call(text: str, start: int) -> str | None:
    """The call expression beginning at text[start:], up to its matching parenthesis."""
    depth = 0
    for i in range(text.index("(", start), len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    return None


def _method_chain(text: str, pos: int) -> tuple[str, ...]:
    """Names of the methods called one after the other from text[pos:]: `.a(...).b()` -> (a, b)."""
    methods = []
    while (match := METHOD.match(text, pos)) is not None:
        methods.append(match.group(1))
        call = _balanced_call(text, match.start(1))
        if call is None:
            break
        pos = match.start(1) + len(call)
    return tuple(methods)


def _added_text(patch_text: str) -> dict[str, str]:
    """What the patch adds, per file: new files whole, added lines of modified ones in blocks."""
    texts = dict(new_file_contents(patch_text))
    for path, numbers in added_lines(patch_text).items():
        if path in texts:
            continue
        post_image = _post_image_lines(patch_text, path)
        blocks, previous = [], None
        for number in sorted(numbers):
            line = post_image.get(number, "")
            if previous is not None and number == previous + 1:
                blocks[-1].append(line)
            else:
                blocks.append([line])
            previous = number
        texts[path] = "\n\n".join("\n".join(b) for b in blocks)
    return {p: t for p, t in texts.items() if p.endswith(".py")}


def _post_image_lines(patch_text: str, path: str) -> dict[int, str]:
    lines: dict[int, str] = {}
    inside, new_line = False, 0
    for line in patch_text.splitlines():
        if line.startswith("diff --git "):
            inside = line.endswith(f" b/{path}")
        elif inside and line.startswith("@@ "):
            new_line = int(line.split("+")[1].split(",")[0].split(" ")[0])
        elif inside and new_line and line[:1] in ("+", " ") and not line.startswith("+++"):
            lines[new_line] = line[1:]
            new_line += 1
    return lines


def uses_in_patch(patch_text: str) -> list[Use]:
    uses: set[Use] = set()
    for path, text in _added_text(patch_text).items():
        for match in CALL.finditer(text):
            call = _balanced_call(text, match.start())
            module = "mx_driving" if match.group(1) == "mx_driving" else "torch_npu.npu"
            try:
                node = ast.parse(call, mode="eval").body if call else None
            except SyntaxError:
                node = None
            if not isinstance(node, ast.Call):
                raise ValueError(f"{path}: cannot read the call {call or match.group(0)!r}")
            uses.add(Use("call", module, match.group(2), len(node.args),
                         tuple(sorted(k.arg for k in node.keywords if k.arg)), path))
        for match in FROM_IMPORT.finditer(text):
            for name in re.split(r"[\s,()]+", match.group(2).strip()):
                if name:
                    uses.add(Use("name", match.group(1), name, where=path))
        imported = {u.name: u.module for u in uses if u.kind == "name" and u.where == path}
        for name, module in imported.items():
            for match in re.finditer(rf"\b{name}\(\)", text):
                uses.add(Use("chain", module, name, keywords=_method_chain(text, match.end()), where=path))
        for match in MODULE_IMPORT.finditer(text):
            uses.add(Use("module", match.group(1), where=path))
        for match in NPU_OPTIMIZER.finditer(text):
            for name in ast.literal_eval(match.group(1)).values():
                uses.add(Use("optimizer", "torch_npu.optim", name, keywords=ADAMW_HYPERPARAMETERS, where=path))
    return sorted(uses, key=lambda u: (u.module, u.name, u.kind, u.where))


class ParsedModules(Mapping):  # (unsubscripted: Python 3.8 cannot subscript it at run time)
    """A wheel's Python modules by name, each parsed when first looked up: torch_npu's wheel has thousands, the
    patch reaches a few dozen, and parsing them all took most of a minute. A module that does not parse is absent."""

    def __init__(self, wheel: Path):
        self.wheel = wheel
        self.members: dict[str, str] = {}
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(".py") and ".dist-info/" not in name and "/packages/" not in name:
                    module = name[:-3].replace("/", ".")
                    if module.endswith(".__init__"):
                        module = module[: -len(".__init__")]
                    self.members[module] = name
        self.parsed: dict[str, ast.Module | None] = {}

    def __getitem__(self, module: str) -> ast.Module:
        if module not in self.parsed:
            if module not in self.members:
                raise KeyError(module)
            with zipfile.ZipFile(self.wheel) as archive:
                try:
                    self.parsed[module] = ast.parse(archive.read(self.members[module]))
                except SyntaxError:
                    self.parsed[module] = None
        tree = self.parsed[module]
        if tree is None:
            raise KeyError(module)
        return tree

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


@dataclass
class WheelSources:
    """The Python modules of a wheel, parsed, with name resolution across re-exports."""

    wheel: Path
    modules: Mapping[str, ast.Module]

    @classmethod
    def read(cls, wheel: Path) -> WheelSources:
        return cls(wheel, ParsedModules(wheel))

    def resolve(self, module: str, name: str, depth: int = 0) -> ast.AST | str | None:
        """The definition `module.name` refers to, a submodule's name, or None if there is none."""
        return self.locate(module, name, depth)[1]

    def locate(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST | str | None]:
        """(module where it is defined, definition) for `module.name`, following re-exports."""
        if f"{module}.{name}" in self.modules:
            return module, f"{module}.{name}"
        tree = self.modules.get(module)
        if tree is None or depth > 10:
            return module, None
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                return module, node
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                if isinstance(node.value, ast.Name):
                    return self.locate(module, node.value.id, depth + 1)
                return module, node
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        return self.locate(self._absolute(module, node), alias.name, depth + 1)
        return module, None

    def _absolute(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        is_package = any(m.startswith(module + ".") for m in self.modules)
        parts = module.split(".")
        base = ".".join(parts[: len(parts) - node.level + (1 if is_package else 0)])
        return ".".join(p for p in (base, node.module) if p)

    def check_chain(self, module: str, name: str, methods: tuple[str, ...]) -> str | None:
        """Follow `Name().m1(...).m2(...)` through the methods' return annotations."""
        where, cls = self.locate(module, name)
        for method in methods:
            if not isinstance(cls, ast.ClassDef):
                return f"cannot follow .{method}(): not a class"
            func = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method), None)
            if func is None:
                return f"{cls.name} has no method {method}"
            returns = func.returns
            target = returns.value if isinstance(returns, ast.Constant) else getattr(returns, "id", None)
            if method != methods[-1]:
                if not isinstance(target, str):
                    return f"{cls.name}.{method} has no return annotation to follow"
                where, cls = self.locate(where, target)
        return None


def _accepts(func: ast.FunctionDef, positional: int, keywords: tuple[str, ...], is_method: bool) -> str | None:
    args = [a.arg for a in func.args.posonlyargs + func.args.args]
    if is_method and args and args[0] in ("self", "cls"):
        args = args[1:]
    kwonly = [a.arg for a in func.args.kwonlyargs]
    required = args[: len(args) - len(func.args.defaults)]
    if positional > len(args) and func.args.vararg is None:
        return f"takes at most {len(args)} positional arguments, the patch passes {positional}"
    unknown = [k for k in keywords if k not in args + kwonly and func.args.kwarg is None]
    if unknown:
        return f"has no parameter(s) {', '.join(unknown)} (it takes {', '.join(args + kwonly)})"
    missing = [a for a in required[positional:] if a not in keywords]
    if missing:
        return f"needs {', '.join(missing)}, which the patch does not pass"
    return None


def check(uses: list[Use], package: WheelSources) -> list[str]:
    """Problems with the uses that belong to this wheel's top-level package."""
    top = next(iter(package.modules)).split(".")[0]
    problems = []
    for use in (u for u in uses if u.module.split(".")[0] == top):
        label = f"{package.wheel.name}: {use.describe()}"
        if use.kind == "module":
            if use.module not in package.modules:
                problems.append(f"{label}: no such module")
            continue
        found = package.resolve(use.module, use.name)
        if found is None:
            problems.append(f"{label}: not defined")
        elif use.kind == "call" and isinstance(found, ast.FunctionDef):
            why = _accepts(found, use.positional, use.keywords, is_method=False)
            if why:
                problems.append(f"{label}: {use.name} {why}")
        elif use.kind == "chain":
            why = package.check_chain(use.module, use.name, use.keywords)
            if why:
                problems.append(f"{label}: {use.name}(){''.join(f'.{m}()' for m in use.keywords)}: {why}")
        elif use.kind == "optimizer":
            init = next((n for n in getattr(found, "body", []) if isinstance(n, ast.FunctionDef)
                         and n.name == "__init__"), None)
            why = "is not a class with __init__" if init is None else _accepts(init, 1, use.keywords, True)
            if why:
                problems.append(f"{label}: {use.name} {why}")
    return problems


def check_patches(patches: list[Path], requirements: list[str]) -> tuple[list[Use], dict[str, list[str]]]:
    uses = sorted({u for patch in patches for u in uses_in_patch(read_patch_text(patch))},
                  key=lambda u: (u.module, u.name, u.kind, u.where))
    return uses, {req: check(uses, WheelSources.read(download_wheel(req))) for req in requirements}
