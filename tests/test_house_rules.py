"""The house rules a reviewer would otherwise check by hand: rooms stay small, every exit
code lives in errors.py, the package's imports form no cycle, the README stays short."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ecosight_daemon"
README = PACKAGE.parent / "README.md"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
MAX_README_BYTES = 12_000


def modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def test_no_module_over_400_lines_and_no_class_over_250() -> None:
    too_long = {path.name: n for path in PACKAGE.glob("*.py") if (n := len(path.read_text().splitlines()))
                > MAX_MODULE_LINES}
    assert too_long == {}
    big_classes = {f"{name}.{node.name}": node.end_lineno - node.lineno + 1  # type: ignore[operator]
                   for name, tree in modules().items() for node in ast.walk(tree)
                   if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES}  # type: ignore[operator]
    assert big_classes == {}


def test_every_exit_code_is_defined_in_errors_py() -> None:
    elsewhere = [f"{name}: {target.id}" for name, tree in modules().items() if name != "errors"
                 for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name) and target.id.startswith("EXIT_")]
    assert elsewhere == []


def test_the_package_imports_form_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for name, tree in modules().items():
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    graph[name].add(node.module.split(".")[0])
                else:
                    graph[name].update(alias.name for alias in node.names)
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "visiting"
        for neighbour in sorted(graph.get(name, ())):
            if state.get(neighbour) == "visiting":
                raise AssertionError("import cycle: " + " -> ".join([*path, name, neighbour]))
            if neighbour not in state:
                visit(neighbour, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_readme_stays_a_newcomers_page_and_its_links_resolve() -> None:
    assert len(README.read_bytes()) <= MAX_README_BYTES
    text = README.read_text()
    for target in re.findall(r"\]\(((?:docs/|\./)[^)#]+)", text):
        assert (README.parent / target).exists(), f"README links to {target}, which does not exist"
