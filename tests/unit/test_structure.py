"""The shape of the code, checked by walking src/ with ast: packages with one job each and arrows one way.

Layers, lowest first: the shared ground (errors, platforms, inventory, target, ssh, runner, state, results, fanout,
client, export), then buildx/, then host/, then fleet/ and build/ (which never import each other), then cli/. A
module imports only from its own layer or lower ones, never another module's private names, stays under
MAX_MODULE_LINES and keeps every function under MAX_FUNCTION_LINES. Package __init__ files import nothing heavy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "nodefleet"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LAYERS = {"ground": 0, "buildx": 1, "host": 2, "fleet": 3, "build": 3, "cli": 4}


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    if module == "nodefleet.__main__":
        return "cli"  # `python -m nodefleet` is the command line
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else "ground"


def _imports(tree: ast.AST, module: str) -> list[tuple[str, list[str], int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = module.rsplit(".", node.level)[0]
            found.append((f"{base}.{node.module}" if node.module else base, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
    return [item for item in found if item[0] == "nodefleet" or item[0].startswith("nodefleet.")]


def _target(imported: str, names: list[str]) -> list[str]:
    """The modules an import reaches (`from nodefleet.fleet import up` reaches nodefleet.fleet.up)."""
    if imported == "nodefleet":
        return [f"nodefleet.{name}" for name in names if name != "__version__"] or ["nodefleet"]
    return [imported]


def test_the_layout_has_every_package() -> None:
    for package in ("host", "buildx", "fleet", "build", "cli"):
        assert (SRC / package / "__init__.py").is_file(), package
    assert sorted(p.name for p in (SRC / "host" / "scripts").glob("*.sh")), "remote scripts are .sh files"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_arrows_go_one_way(path: Path) -> None:
    module = _name(path)
    mine = _package(module)
    problems = []
    for imported, names, line in _imports(ast.parse(path.read_text()), module):
        for target in _target(imported, names):
            theirs = _package(target) if target != "nodefleet" else "ground"
            if {mine, theirs} == {"fleet", "build"}:
                problems.append(f"{path.name}:{line}: {mine}/ imports {target}: fleet/ and build/ never meet")
            elif LAYERS[theirs] > LAYERS[mine]:
                problems.append(
                    f"{path.name}:{line}: {mine} (layer {LAYERS[mine]}) imports {target} (layer {LAYERS[theirs]})"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_private_names(path: Path) -> None:
    module = _name(path)
    tree = ast.parse(path.read_text())
    problems = [
        f"{path.name}:{line}: from {imported} import {name}"
        for imported, names, line in _imports(tree, module)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    aliases = {
        alias.asname or alias.name.rsplit(".", 1)[-1]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nodefleet")
        for alias in node.names
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            problems.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: " + ", ".join(long)


@pytest.mark.parametrize("package", ["host", "buildx", "fleet", "build"])
def test_package_init_files_import_nothing(package: str) -> None:
    tree = ast.parse((SRC / package / "__init__.py").read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert not imports, f"{package}/__init__.py imports {[ast.unparse(node) for node in imports]}"


def test_the_cli_package_imports_only_click_and_its_own_modules_up_front() -> None:
    for path in sorted((SRC / "cli").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: commands import the library when they run
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                allowed = name in {
                    "__future__",
                    "click",
                    "contextlib",
                    "functools",
                    "os",
                    "sys",
                    "typing",
                    "collections.abc",
                }
                allowed = (
                    allowed
                    or name in {"nodefleet", "nodefleet.errors", "nodefleet.results"}
                    or name.startswith("nodefleet.cli")
                )
                assert allowed, f"{path.name} imports {name} at module level"
