"""The layout's own rules, measured on the package's import graph and sources (see README, "How the code is
laid out"): a newcomer can walk the house floor by floor, no file or function outgrows one reading, and the
book's classes stay as short as the book's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xbackprop"

#: The book's own line counts (code lines: no blank, comment or docstring lines), from
#: oreilly-japan/deep-learning-from-scratch: common/layers.py and ch05/two_layer_net.py.
BOOK_LINES = {("layers.py", "Relu"): 12, ("layers.py", "Affine"): 20, ("layers.py", "SoftmaxWithLoss"): 19,
              ("two_layer_net.py", "TwoLayerNet"): 45}
MAX_FLOORS, MAX_MODULE_LINES, MAX_FUNCTION_LINES = 8, 450, 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(folder: Path) -> dict[str, Path]:
    return {module_name(path): path for path in sorted(folder.rglob("*.py"))}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in it (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
            # ``from . import hooks`` needs the submodule; a name defined in ``module`` needs the module itself
            candidates = submodules + ([module] if len(submodules) < len(node.names) else [])
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not name.startswith(candidate + "."):  # a package above it
                found.add(candidate)
    return found


def floors(known: dict[str, Path]) -> tuple[dict[str, int], list[list[str]]]:
    """Each module's floor (one above the highest it imports) and the import circles met on the way."""
    graph = {name: imports(name, path, known) for name, path in known.items()}
    floor: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> int:
        if name in path:
            circles.append(path[path.index(name):] + [name])
            return 0
        if name not in floor:
            floor[name] = 1 + max((visit(imported, [*path, name]) for imported in graph[name]), default=0)
        return floor[name]

    for name in graph:
        visit(name, [])
    return floor, circles


def test_the_package_has_at_most_eight_floors_and_no_import_circle():
    floor, circles = floors(modules(PACKAGE))
    assert not circles
    assert max(floor.values()) <= MAX_FLOORS, sorted(floor.items(), key=lambda item: -item[1])[:5]


@pytest.mark.parametrize("folder", ["xbackprop", "benchmarks"])
def test_no_module_or_function_outgrows_one_reading(folder):
    too_long = []
    for name, path in modules(ROOT / folder).items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long


def code_lines(path: Path, class_name: str) -> int:
    """A class's lines that are code: no blank, comment or docstring line."""
    source = path.read_text()
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    docstrings = set()
    for inner in ast.walk(node):
        body = getattr(inner, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = source.splitlines()[node.lineno - 1 : node.end_lineno]
    return sum(1 for number, line in enumerate(lines, start=node.lineno)
               if line.strip() and not line.strip().startswith("#") and number not in docstrings)


@pytest.mark.parametrize(("file", "class_name"), list(BOOK_LINES))
def test_the_books_classes_are_as_short_as_the_books(file, class_name):
    assert code_lines(PACKAGE / file, class_name) <= 1.5 * BOOK_LINES[file, class_name]


def test_the_readmes_map_names_every_module_and_no_other():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## How the code is laid out"):]
    block = section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]
    mapped = set(re.findall(r"^(xbackprop/\S+\.py)", block, flags=re.MULTILINE))
    present = {str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")}
    assert mapped == present, (sorted(present - mapped), sorted(mapped - present))
