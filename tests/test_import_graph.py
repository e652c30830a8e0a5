"""The package's structure: no import circle between its modules, and no module importing another's private names.

Both are read from the source (AST), not from what an import happens to run, so an import inside a function
counts as much as one at the top: either way one module needs the other. Imports under ``if TYPE_CHECKING:``
are annotations only and are left out.
"""

import ast
import os

import slidetiles

PACKAGE_DIR = os.path.dirname(slidetiles.__file__)


def _module_files() -> dict[str, str]:
    """``{'slidetiles.io.framing': '/.../io/framing.py', 'slidetiles.io': '/.../io/__init__.py', ...}``"""
    found = {}
    root = os.path.dirname(PACKAGE_DIR)
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


MODULES = _module_files()


def _imports(path: str) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import of a slidetiles module in ``path``, outside TYPE_CHECKING."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names if alias.name.startswith("slidetiles")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("slidetiles"):
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def _packages_above(module: str) -> list[str]:
    """``'slidetiles.io.framing'`` -> ``['slidetiles.io']``: the packages whose ``__init__`` runs first (the top
    package left out: every module imports it)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _edges() -> dict[str, set[str]]:
    """Module -> the slidetiles modules that importing it runs.

    ``from a.b import c`` runs ``a.b`` (its ``__init__``), or ``a.b.c`` when ``c`` is a submodule, and the
    ``__init__`` of every package above them, except the importer's own packages, which are already running.
    """
    edges = {}
    for module, path in MODULES.items():
        targets = set()
        for _, imported, names in _imports(path):
            submodules = [f"{imported}.{name}" for name in names if f"{imported}.{name}" in MODULES]
            targets.update(submodules)
            if len(submodules) < len(names) or not names:
                targets.add(imported)
        own = set(_packages_above(module)) | ({module} if path.endswith("__init__.py") else set())
        for target in list(targets):
            targets.update(p for p in _packages_above(target) + [target] if p not in own)
        edges[module] = {t for t in targets if t in MODULES and t != module}
    return edges


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, circles = {}, {}, set(), [], []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return circles


def test_the_module_list_is_the_package():
    assert "slidetiles.dataset.dataset" in MODULES and "slidetiles.io" in MODULES
    assert len(MODULES) > 50


def test_the_circle_finder_finds_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(edges) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_modules():
    circles = _circles(_edges())
    described = []
    for circle in circles:
        edges = _edges()
        described.append(", ".join(f"{a} -> {b}" for a in circle for b in sorted(edges[a]) if b in circle))
    assert circles == [], "import circles: " + "; ".join(described)


def test_no_module_imports_another_modules_private_names():
    private = []
    for module, path in MODULES.items():
        for line, imported, names in _imports(path):
            for name in names:
                # A compiled extension's own underscore name (slidetiles.io._fastscan) is a module, not a field.
                if name.startswith("_") and f"{imported}.{name}" not in MODULES and not name.startswith("__"):
                    private.append(f"{path}:{line}: {name} from {imported}")
    assert private == [], "\n".join(private)
