"""Module boundaries: no import cycle inside gitune, and the framework-free layers stay free of Ray and MLflow.

Reads the sources with `ast` (nothing is imported), so it is fast and sees function-level imports too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "gitune"
FRAMEWORK_FREE = ("gitune.data", "gitune.models", "gitune.metrics")
FRAMEWORKS = ("ray", "mlflow")


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module under gitune/ (a package is its __init__.py)."""
    modules = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node at any depth (module level and inside functions), except those under
    `if TYPE_CHECKING:`, which never run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, path: Path, modules: dict[str, Path]):
    """Yield (imported module name, line) for each import in `module`: every name as written, plus
    `pkg.y` for `from pkg import y` when y is itself a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        else:
            source = _absolute(module, is_package, node)
            submodules = [f"{source}.{alias.name}" for alias in node.names
                          if f"{source}.{alias.name}" in modules]
            yield from ((name, node.lineno) for name in submodules)
            if len(submodules) < len(node.names):
                yield source, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """gitune module -> {gitune module it imports: first line of that import}."""
    modules = _module_files()
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for module, path in modules.items():
        for target, line in _targets(module, path, modules):
            # `import gitune.a.b` names gitune.a.b; keep the longest prefix that is a gitune module
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module][target] = min(line, graph[module].get(target, line))
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one concrete cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(component)) for component in components]


def _one_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (breadth-first)."""
    start = min(component)
    parents = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return list(reversed(path)) + [start]
                if nxt in component and nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return sorted(component)


def _describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_graph_sees_function_level_and_submodule_imports():
    graph = import_graph()
    assert "gitune.data.sources" in graph and "gitune.trainables.generator" in graph
    # sanity: the parser resolves `from gitune.x import y` and finds something for the trainables
    assert any(target.startswith("gitune.training") for target in graph["gitune.trainables.classifier"])


def test_find_cycles_reports_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycle():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in gitune:\n" + "\n".join(_describe(graph, c) for c in cycles)


def test_data_models_metrics_do_not_import_ray_or_mlflow():
    modules = _module_files()
    offenders = []
    for module, path in modules.items():
        if not module.startswith(FRAMEWORK_FREE):
            continue
        for target, line in _targets(module, path, modules):
            if target.split(".")[0] in FRAMEWORKS:
                offenders.append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{line} imports {target}")
    assert not offenders, "Ray / MLflow imported in a framework-free layer:\n" + "\n".join(offenders)
