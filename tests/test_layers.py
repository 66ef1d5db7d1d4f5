"""The package's imports point down a declared layer order, and none go round in a cycle.

The import graph of ``src/u2deploy`` is read from the source (the AST): ``import u2deploy…`` and
``from . import …`` at module level and inside functions alike, since a lazy import is the same
dependency, only paid later. Importing ``u2deploy.a.b`` also runs the package ``u2deploy.a``, so that
is an import too. What is not an import statement is not read: the format table names modules as
data (each backend's runner module, which :func:`u2deploy.engines.runner_class` imports by name, and
the function that says what a backend lacks here), which is how the table stays at the bottom.

A module may import its own layer or any layer below, never one above; a new module needs a line in
:data:`LAYERS` before it passes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module belongs to the layer of the longest name here that is it or a package above it.
LAYERS: tuple[tuple[str, ...], ...] = (
    # what everything may use: errors, files, counts and tables in text, the machine, the artifact contract,
    # the format table (its runner modules are named as data, not imported)
    ("u2deploy", "u2deploy.errors", "u2deploy.plural", "u2deploy.text", "u2deploy.sizes", "u2deploy.files",
     "u2deploy.hardware", "u2deploy.artifact", "u2deploy.formats"),
    ("u2deploy.model", "u2deploy.data"),  # the network and its weights; images, datasets, pre/postprocessing
    # an ONNX file and an ONNX Runtime session, and the runners over them
    ("u2deploy.onnx_file", "u2deploy.ort_session", "u2deploy.engines"),
    ("u2deploy.validate",),  # tolerances, the comparator, the verification every stage runs
    ("u2deploy.calibration",),  # INT8: calibration set, ranges, the quantizer, the Q/DQ checks
    # the export stages; the browser runner runs a site u2export web wrote, through that export's own
    # server and Chromium launcher, so it sits with the export, not with the other runners
    ("u2deploy.export", "u2deploy.engines.browser"),
    ("u2deploy.bench",),  # predict, parity, latency, the benchmark (which builds through the stages)
    ("u2deploy.distributed",),  # u2bench predict --ray: the folder job of bench.predict on Ray
    ("u2deploy.api",),  # u2deploy.remove / u2deploy.mask
    ("u2deploy.cli",),  # the Typer apps
)

# Imports allowed against the order, each with its reason. Keep it short.
EXCEPTIONS: Mapping[tuple[str, str], str] = {
    # PEP 562: u2deploy.remove / mask resolve on first attribute access, so that `import u2deploy`, which
    # importing any module of the package runs, stays light; the package's body imports none of it.
    ("u2deploy", "u2deploy.api"): "the one-call API, re-exported lazily by the package's __getattr__",
}


def module_files(src: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module and package under ``src``."""
    names = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(module: str, path: Path, tree: ast.AST, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in ``tree``, resolved to a module of ``known``."""
    root = module.split(".")[0]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import name`: the submodule pkg.name where there is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != root:
                continue
            while target not in known:  # `import u2deploy.x.name` of an attribute: its module
                target = target.rsplit(".", 1)[0]
            yield target, node.lineno
            # and every package on the way down that the importer is not itself inside
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in known and not (module == parent or module.startswith(parent + ".")):
                    yield parent, node.lineno


def import_graph(src: Path, package: str = "u2deploy") -> dict[str, dict[str, int]]:
    """Module → {imported module: first line}, for the modules of ``package`` under ``src``."""
    known = {name: path for name, path in module_files(src).items() if name.split(".")[0] == package}
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges: dict[str, int] = {}
        for target, line in _imported(module, path, ast.parse(path.read_text(), str(path)), known):
            if target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """Index of the layer that declares ``module`` or the nearest package above it; None if none does."""
    best: tuple[int, int] | None = None  # (length of the declared name, layer)
    for index, names in enumerate(layers):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return best[1] if best else None


def upward_imports(graph: Mapping[str, Mapping[str, int]], layers: tuple[tuple[str, ...], ...] = LAYERS,
                   exceptions: Mapping[tuple[str, str], str] = EXCEPTIONS) -> list[str]:
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            low, high = layer_of(module, layers), layer_of(target, layers)
            if low is not None and high is not None and high > low and (module, target) not in exceptions:
                found.append(f"{module}:{line} imports {target}, of layer {high}, above its own layer {low}")
    return found


def cycles(graph: Mapping[str, Mapping[str, int]],
           exceptions: Mapping[tuple[str, str], str] = EXCEPTIONS) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # the package has ~130 modules: recursion depth is no concern
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if (v, w) in exceptions:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph(SRC)


def test_every_module_has_a_layer(graph: dict[str, dict[str, int]]) -> None:
    assert [m for m in sorted(graph) if layer_of(m) is None] == []


def test_no_import_cycles_and_no_upward_imports(graph: dict[str, dict[str, int]]) -> None:
    found_cycles, upward = cycles(graph), upward_imports(graph)
    edges = sum(map(len, graph.values()))
    print(f"\n{len(graph)} modules, {edges} imports, {len(LAYERS)} layers, {len(EXCEPTIONS)} exception: "
          f"{len(found_cycles)} cycles, {len(upward)} upward imports")
    assert not found_cycles and not upward, "\n".join(
        [*(f"import cycle: {' ↔ '.join(c)}" for c in found_cycles), *(f"upward: {u}" for u in upward)])


def test_every_exception_is_still_needed(graph: dict[str, dict[str, int]]) -> None:
    """An exception whose import is gone, or no longer goes up, is stale: delete it."""
    for module, target in EXCEPTIONS:
        assert target in graph.get(module, {}), f"{module} no longer imports {target}"
        assert layer_of(target) > layer_of(module), f"{module} → {target} is no longer upward"  # type: ignore[operator]


def test_the_checker_sees_lazy_upward_imports_and_cycles(tmp_path: Path) -> None:
    """The same checks on a small package: an import inside a function that goes up (and so closes a cycle
    with the module above, which imports it back), and a two-module cycle in one layer."""
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from ..high import b\n")
    (pkg / "low" / "c.py").write_text("from . import d\n")
    (pkg / "low" / "d.py").write_text("import pkg.low.c\n")
    (pkg / "high.py").write_text("from pkg.low import a\n")
    graph = import_graph(tmp_path, "pkg")
    layers = (("pkg.low",), ("pkg.high",))
    assert graph["pkg.low.a"] == {"pkg.high": 2}
    assert upward_imports(graph, layers, {}) == ["pkg.low.a:2 imports pkg.high, of layer 1, above its own layer 0"]
    assert upward_imports(graph, layers, {("pkg.low.a", "pkg.high"): "allowed"}) == []
    assert sorted(cycles(graph, {})) == [["pkg.high", "pkg.low.a"], ["pkg.low.c", "pkg.low.d"]]
    assert cycles(graph, {("pkg.low.a", "pkg.high"): "allowed"}) == [["pkg.low.c", "pkg.low.d"]]
