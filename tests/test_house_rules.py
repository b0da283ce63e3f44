"""The house rules a reviewer would otherwise check by hand: every module of every room stays
small, imports go one way between rooms, every exit code lives in errors.py, the package's
imports form no cycle, the docs list every module, the README stays short."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from testkit.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "ecosight_daemon"
README = REPO_ROOT / "README.md"
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
MAX_README_BYTES = 12_000

# The rooms, lowest first: a room may import itself and the rooms before it, never those after.
# "base" is the package root's shared modules; "cli" is the root's composer, which nothing imports.
ROOM_ORDER = ("base", "util", "store", "embedding", "ingest", "artifacts", "training", "versions", "detection",
              "review", "daemon", "http", "cli")
COMPOSER_MODULES = {"ecosight_daemon.cli", "ecosight_daemon.cli_output", "ecosight_daemon.__main__"}
# Pairs forbidden although the order allows them.
NEVER = {
    ("embedding", "cache"): "the model does not know where its output is kept",
    ("training", "ingest"): "the training process never reads audio folders",
    ("artifacts", "store"): "a shipped model does not know where embeddings are kept",
}
# The rooms that run a model read it from artifacts/, never from training/. The one way in:
# the daemon's handle on the training process (it starts the process and reads its progress).
RUN_TIME_ROOMS = ("artifacts", "detection", "review", "daemon", "http")
TRAINING_HANDLE = {"ecosight_daemon.training.process_handle", "ecosight_daemon.training.protocol"}
# TensorFlow (and what is built on it) only where a model is trained, converted or run on it.
TENSORFLOW_PACKAGES = {"tensorflow", "keras", "tensorflow_hub", "tf2onnx", "tf_keras"}
TENSORFLOW_ALLOWED = ("ecosight_daemon.training.", "ecosight_daemon.embedding.tensorflow_runtime",
                      "ecosight_daemon.embedding.onnx_conversion", "ecosight_daemon.artifacts.keras_model",
                      "ecosight_daemon.artifacts.priority_rule")  # the rule's TensorFlow twin, imported lazily


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    path = modules()[name]
    return ast.parse(path.read_text(), str(path))


def room_of(name: str) -> str:
    parts = name.split(".")
    if name in COMPOSER_MODULES:
        return "cli"
    if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir():
        return parts[1]
    return "base"


def _package_of(name: str) -> str:
    return name if modules()[name].name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(name: str) -> set[str]:
    """Every package module `name` imports: top level, lazy or under TYPE_CHECKING, relative or
    absolute, `from package import module` resolved to the module."""
    found: set[str] = set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("ecosight_daemon"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name)
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("ecosight_daemon"):
                target = node.module
            else:
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules() else target)
    unknown = found - modules().keys()
    assert not unknown, f"{name} imports modules that do not exist: {sorted(unknown)}"
    return found - {name}


def third_party_imports(name: str) -> set[str]:
    found = set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def wrong_way_imports() -> list[str]:
    wrong = []
    for name in modules():
        source = room_of(name)
        for target in sorted(imported_modules(name)):
            destination = room_of(target)
            if destination == source:
                continue
            if ROOM_ORDER.index(destination) > ROOM_ORDER.index(source):
                wrong.append(f"{name} ({source}) imports {target} ({destination}), a room above it")
            elif (source, destination) in NEVER:
                wrong.append(f"{name} imports {target}: {source} never imports {destination} "
                             f"({NEVER[(source, destination)]})")
    return wrong


def test_every_room_has_a_place_in_the_order_and_a_one_line_job() -> None:
    rooms = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file())
    assert rooms, "no subpackage found; the checks below would check nothing"
    assert [room for room in rooms if room not in ROOM_ORDER] == []
    for room in rooms:
        assert ast.get_docstring(tree(f"ecosight_daemon.{room}")), f"{room}/__init__.py says nothing of its job"


def test_the_import_walk_sees_every_kind_of_import() -> None:
    """The checker itself: lazy, TYPE_CHECKING and `from package import module` imports count."""
    daemon_loop = imported_modules("ecosight_daemon.daemon.loop")
    assert "ecosight_daemon.util.pause" in daemon_loop  # `from ecosight_daemon.util import pause`
    child = imported_modules("ecosight_daemon.training.child_main")
    assert "ecosight_daemon.training.keras_head" in child  # imported inside a function
    assert len(modules()) > 60 and sum(len(imported_modules(name)) for name in modules()) > 200


def test_imports_go_one_way_between_rooms() -> None:
    assert wrong_way_imports() == []


def test_run_time_rooms_never_import_training_but_for_the_daemons_handle_on_it() -> None:
    reaching = {name: sorted(t for t in imported_modules(name) if room_of(t) == "training" and t not in TRAINING_HANDLE)
                for name in modules() if room_of(name) in RUN_TIME_ROOMS}
    assert {name: targets for name, targets in reaching.items() if targets} == {}
    handle = {t for name in modules() if room_of(name) in RUN_TIME_ROOMS for t in imported_modules(name)
              if room_of(t) == "training"}
    assert handle == TRAINING_HANDLE  # the checker sees the handle: the rule is not empty


def test_tensorflow_only_where_models_are_trained_converted_or_run_on_it() -> None:
    elsewhere = {name: sorted(third_party_imports(name) & TENSORFLOW_PACKAGES) for name in modules()
                 if third_party_imports(name) & TENSORFLOW_PACKAGES and not name.startswith(TENSORFLOW_ALLOWED)}
    assert elsewhere == {}


def test_no_module_over_400_lines_and_no_class_over_250() -> None:
    too_long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines()))
                > MAX_MODULE_LINES}
    assert too_long == {}
    big_classes = {f"{name}.{node.name}": node.end_lineno - node.lineno + 1  # type: ignore[operator]
                   for name in modules() for node in ast.walk(tree(name))
                   if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES}  # type: ignore[operator]
    assert big_classes == {}


def test_every_exit_code_is_defined_in_errors_py_with_one_meaning() -> None:
    elsewhere = [f"{name}: {target.id}" for name in modules() if name != "ecosight_daemon.errors"
                 for node in ast.walk(tree(name)) if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name) and target.id.startswith("EXIT_")]
    assert elsewhere == []
    codes = [node.value.value for node in tree("ecosight_daemon.errors").body
             if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
             and any(isinstance(t, ast.Name) and t.id.startswith("EXIT_") for t in node.targets)]
    assert codes and len(codes) == len(set(codes)), f"an exit code has two names: {sorted(codes)}"


def test_the_package_imports_form_no_cycle() -> None:
    graph = {name: imported_modules(name) for name in modules()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "visiting"
        for neighbour in sorted(graph.get(name, ())):
            # a package's __init__ is imported on the way to its modules; it imports nothing of ours
            if state.get(neighbour) == "visiting":
                raise AssertionError("import cycle: " + " -> ".join([*path, name, neighbour]))
            if neighbour not in state:
                visit(neighbour, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_architecture_page_lists_every_module_and_room() -> None:
    first_cells = [line.split("|")[1] for line in ARCHITECTURE.read_text().splitlines() if line.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`([a-z_]+(?:/[a-z_]+)*\.py)`", cell)}
    missing = [str(path.relative_to(PACKAGE)) for path in modules().values()
               if path.name != "__init__.py" and str(path.relative_to(PACKAGE)) not in listed]
    assert missing == [], f"docs/architecture.md does not list {missing}"
    stale = [entry for entry in listed if not (PACKAGE / entry).is_file()]
    assert stale == [], f"docs/architecture.md lists modules that do not exist: {stale}"


def test_the_readme_stays_a_newcomers_page_and_its_links_resolve() -> None:
    assert len(README.read_bytes()) <= MAX_README_BYTES
    text = README.read_text()
    for target in re.findall(r"\]\(((?:docs/|\./)[^)#]+)", text):
        assert (README.parent / target).exists(), f"README links to {target}, which does not exist"
