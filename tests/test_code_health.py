"""The package's shape holds: short functions, no import cycle, and imports that only go down the layers
(data → models → callbacks/tracking → entry points)."""

from __future__ import annotations

import ast

from tests.import_graph import PACKAGE, SRC, direct_imports

MAX_FUNCTION_LINES = 60

# The layer of each module, by its name's prefix (the longest prefix wins). A module may import its
# own layer and the ones below; callbacks and tracking are siblings and do not import each other.
LAYERS = {
    "pipeline": 0,
    "pipeline.errors": 0,
    "pipeline.atomic": 0,
    "pipeline.allocator": 0,
    "pipeline.gpu_probe": 0,
    "pipeline.process_settings": 0,
    "pipeline.redact": 0,
    "pipeline.studies": 0,
    "pipeline.data": 1,
    "pipeline.models": 2,
    "pipeline.callbacks": 3,
    "pipeline.tracking": 3,
    "pipeline.cli": 4,
    "pipeline.config_schema": 4,
    "pipeline.train": 4,
    "pipeline.evaluate": 4,
    "pipeline.fetch": 4,
    "pipeline.preprocess": 4,
    "pipeline.compose": 4,
    "pipeline.gan_floor": 4,
    "pipeline.search": 4,
    "pipeline.predict": 4,
}


def modules() -> list[str]:
    names = []
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def layer(module: str) -> tuple[int, str]:
    """(layer, the prefix that placed it): ``pipeline.data.spec`` is in ``pipeline.data``'s layer."""
    prefix = max((p for p in LAYERS if module == p or module.startswith(f"{p}.")), key=len)
    return LAYERS[prefix], prefix


def test_every_module_has_a_layer():
    unplaced = [m for m in modules() if layer(m)[1] == "pipeline" and m != "pipeline"]
    assert not unplaced, f"add these modules to LAYERS: {unplaced}"


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def import_graph() -> dict[str, set[str]]:
    names = set(modules())
    return {m: {i for i in direct_imports(m) if i in names} for m in names}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a higher layer, or between the sibling layers callbacks and tracking."""
    upward = []
    for module, imported in sorted(graph.items()):
        own, own_prefix = layer(module)
        for other in sorted(imported):
            theirs, their_prefix = layer(other)
            if theirs > own or (theirs == own == 3 and their_prefix != own_prefix):
                upward.append(f"{module} ({own_prefix}) imports {other} ({their_prefix})")
    return upward


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first search meets (each as the path that closes it)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == 1:
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_imports_only_go_down_the_layers():
    assert not upward_imports(import_graph())


def test_the_package_has_no_import_cycle():
    assert not find_cycles(import_graph())


def test_the_checks_find_what_they_look_for():
    """Planted faults are found, so a pass means something."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert upward_imports(
        {
            "pipeline.data.spec": {"pipeline.models.base"},
            "pipeline.tracking.run": {"pipeline.callbacks.figures"},
            "pipeline.train": {"pipeline.data.spec"},
        }
    ) == [
        "pipeline.data.spec (pipeline.data) imports pipeline.models.base (pipeline.models)",
        "pipeline.tracking.run (pipeline.tracking) imports pipeline.callbacks.figures (pipeline.callbacks)",
    ]
    assert "pipeline.data.spec" in import_graph()["pipeline.data.datamodule"]
