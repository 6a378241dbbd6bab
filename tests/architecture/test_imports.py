"""The framework's modules import each other without a cycle, and none imports
another inside a function (a way to hide one). Read from the source with `ast`."""

import ast
from pathlib import Path

import zkynet.framework

FRAMEWORK = Path(zkynet.framework.__file__).parent
ROOT = FRAMEWORK.parent.parent


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node, importer, known, is_package):
    """The modules among `known` that an import statement in module `importer` names.
    `from package import name` names the submodule package.name when there is one."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names} & known
    base = node.module
    if node.level:  # relative: from the importer's package, one level up per extra dot
        package = importer.split(".")[: None if is_package else -1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    return {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names} & known


def import_graph(root=FRAMEWORK):
    """{module: modules it imports} and the imports found inside functions, for every
    module under `root` (the implicit import of a module's parent package aside)."""
    paths = {module_name(p): p for p in root.rglob("*.py")}
    known = set(paths)
    package = {name: path.name == "__init__.py" for name, path in paths.items()}
    edges, in_functions = {}, []
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        statements = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        edges[name] = set().union(*[imported(n, name, known, package[name]) for n in statements]) - {name}
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_functions += [
                    f"{name}.{function.name}"
                    for n in ast.walk(function)
                    if isinstance(n, (ast.Import, ast.ImportFrom)) and imported(n, name, known, package[name])
                ]
    return edges, in_functions


def find_cycle(edges):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}  # module -> "open" while on the current path, "done" after

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_the_checker_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    known = {"p", "p.a", "p.b"}
    statement = ast.parse("from .b import x").body[0]
    assert imported(statement, "p.a", known, is_package=False) == {"p.b"}
    assert imported(statement, "p", known, is_package=True) == {"p.b"}


def test_the_import_graph_sees_the_framework():
    edges, _ = import_graph()
    assert "zkynet.framework.graph" in edges["zkynet.framework.module"]
    assert "zkynet.framework.ops.base" in edges["zkynet.framework.ops.elementwise"]
    assert "zkynet.framework.computation_graph" in edges["zkynet.framework"]


def test_no_import_cycle_among_framework_modules():
    edges, in_functions = import_graph()
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
    assert in_functions == [], f"imports inside functions: {in_functions}"
