"""The folders are the architecture (docs/architecture.md §1), and stay so: imports go one way
between layers, no module imports itself in a circle, the coordinator reaches no TensorFlow module
for the consortium overview, and the layer table in the architecture document is generated from
the packages' own docstrings. `python -m tests.test_architecture` prints the table."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOPS = ("shared_model", "client", "server", "simulations")
#: the layers, lowest first: a module may import its own layer's and lower layers' modules only
#: (client and server share a rank and never import each other)
LAYERS = (
    ("shared_model.settings",),
    ("shared_model.data",),
    ("shared_model.tensors",),
    ("shared_model.model",),
    ("shared_model.contract",),
    ("shared_model.evaluation",),
    ("shared_model.training",),
    ("shared_model.runtime",),
    ("client", "server"),
    ("simulations",),
)


def modules() -> dict[str, Path]:
    found = {}
    for top in TOPS:
        for path in sorted((REPO / top).rglob("*.py")):
            found[".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> Iterator[str]:
    """The project modules `path` imports when it runs (anywhere in it; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "shared_model" and len(parts) > 1 else parts[0]


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imports(path) if m in known and m != name} for name, path in known.items()}


def test_imports_go_one_way_between_layers() -> None:
    rank = {layer: i for i, group in enumerate(LAYERS) for layer in group}
    wrong = []
    for module, targets in import_graph().items():
        if module in TOPS:  # a top package's __init__: a docstring only
            continue
        source = layer_of(module)
        assert source in rank, f"{module}: its package is not a layer of LAYERS (and of docs/architecture.md §1)"
        for target in targets:
            lower = rank[layer_of(target)] < rank[source] or layer_of(target) == source
            if not lower:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_module_imports_itself_in_a_circle() -> None:
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                circles.append([node, *component])

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    assert circles == []


def test_the_coordinator_reaches_no_tensorflow_for_the_consortium_overview() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, server.overview; print(sorted({'tensorflow', 'keras', 'sklearn'} & set(sys.modules)))",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    assert loaded.stdout.strip() == "[]"


def first_sentence(path: Path) -> str:
    doc = " ".join((ast.get_docstring(ast.parse(path.read_text())) or "").split())
    return re.split(r"(?<=\.)\s", doc, maxsplit=1)[0]


def layer_table() -> str:
    """The table of shared_model's layers, lowest first, from their docstrings' first sentences."""
    rows = ["| layer | what it holds | modules |", "|---|---|---|"]
    for (layer,) in LAYERS[: [group[0] for group in LAYERS].index("client")]:
        path = REPO / layer.replace(".", "/")
        if not path.is_dir():
            rows.append(f"| `{path.relative_to(REPO)}.py` | {first_sentence(path.with_suffix('.py'))} | |")
            continue
        names = sorted(
            p.stem + ("/" if p.is_dir() else "")
            for p in path.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()
        )
        listed = ", ".join(f"`{n}`" for n in names)
        rows.append(f"| `{path.relative_to(REPO)}/` | {first_sentence(path / '__init__.py')} | {listed} |")
    return "\n".join(rows) + "\n"


def test_every_package_of_shared_model_is_a_layer() -> None:
    packages = {f"shared_model.{p.name}" for p in (REPO / "shared_model").iterdir() if (p / "__init__.py").exists()}
    assert packages | {"shared_model.settings"} == {
        layer for group in LAYERS for layer in group if layer.startswith("shared_model")
    }


def test_the_architecture_document_s_layer_table_is_generated_from_the_packages() -> None:
    document = (REPO / "docs" / "architecture.md").read_text()
    found = re.search(r"<!-- layer-table: begin -->\n(.*?)<!-- layer-table: end -->", document, re.S)
    assert found, "docs/architecture.md has no generated layer table"
    assert found.group(1) == layer_table(), "the layer table is stale: paste `python -m tests.test_architecture`"


if __name__ == "__main__":
    print(layer_table(), end="")
