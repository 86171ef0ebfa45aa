"""The layout is the architecture: rooms import only rooms before them, and no module-level import cycle.

Every import counts for the room rule, the lazy ones inside functions too (a lazy import that points
back up is still an arrow the wrong way). Cycles are checked on module-level imports, the ones that
execute when a module loads.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The order data flows in; a room may import itself and any room before it. hw.driver is the board-side
# package: it may import nothing of onebit (it is copied onto the board alone).
ROOMS = ["onebit", "quant_models", "export", "hw.driver", "hw.boards", "hw.rtl", "hw.finn", "hw.check",
         "hw.report", "hw.deploy", "hw.options", "hw.pipeline", "hw", "onebit.sweep", "onebit.cli",
         "export.to_finn"]
# export/to_finn.py is a command like onebit/cli/ (`python export/to_finn.py` = `onebit export`): a thin
# script over hw.pipeline that lives in export/ because that is where users look for it.
STANDALONE = {"hw.driver"}
# The package's public facade: onebit/__init__.py re-exports the build API (`from onebit import build,
# BuildOptions`) lazily, inside its PEP 562 __getattr__; never at import time (that would be a real arrow up).
FACADE = {"onebit": {"hw.options", "hw.pipeline"}}
PACKAGES = ("onebit", "quant_models", "export", "hw")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _room(module: str) -> str | None:
    """The most specific room a module belongs to."""
    best = None
    for room in ROOMS:
        if module == room or module.startswith(room + "."):
            if best is None or len(room) > len(best):
                best = room
    return best


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import of the project's packages in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.append((name, id(node) in top_level))
    return found


def _project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            modules[_module_name(path)] = path
    return modules


MODULES = _project_modules()


def _resolve(name: str) -> str | None:
    """`from hw.finn.build import X` names hw.finn.build.X: the module is the longest existing prefix."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        candidate = ".".join(parts[:cut])
        if candidate in MODULES:
            return candidate
    return None


def test_every_project_module_is_in_a_room():
    assert [m for m in MODULES if _room(m) is None] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_flow(module):
    room = _room(module)
    wrong = []
    for name, top in _imports(MODULES[module], module):
        target = _resolve(name)
        if target is None or target == module:
            continue
        if not top and target in FACADE.get(module, ()):
            continue
        target_room = _room(target)
        if room in STANDALONE and target_room != room:
            wrong.append(f"{target} (the board-side package imports nothing of onebit)")
        elif ROOMS.index(target_room) > ROOMS.index(room) and not target_room.startswith(room + "."):
            wrong.append(f"{target} (room {target_room} comes after {room})")
    assert wrong == [], f"{module} imports later stages: {wrong}"


def test_no_module_level_import_cycle():
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, top in _imports(path, module):
            target = _resolve(name)
            if top and target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_rule_catches_an_arrow_back_up(tmp_path):
    """The checker itself: a ground module importing a stage is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from hw.pipeline import main\n")
    names = [_resolve(n) for n, _ in _imports(bad, "onebit.bad")]
    assert "hw.pipeline" in names and ROOMS.index(_room("hw.pipeline")) > ROOMS.index(_room("onebit.bad"))


def test_hw_files_stay_readable():
    """No file in hw/ above ~500 lines without a reason written in its docstring."""
    long = []
    for path in (REPO / "hw").rglob("*.py"):
        lines = path.read_text().splitlines()
        head = "\n".join(lines[:60]).lower()
        if len(lines) > 520 and "why one file" not in head:
            long.append(f"{path.relative_to(REPO)} ({len(lines)} lines)")
    assert long == []


def test_old_flat_hw_paths_still_import():
    import warnings

    import hw
    import importlib

    for old, new in hw.MOVED.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert any(new in str(w.message) for w in caught) or old in __import__("sys").modules
        if old != "hw.build":
            assert module is importlib.import_module(new)
    from hw.build import build_accelerator, run_pipeline  # noqa: F401 (both halves of the old module)
