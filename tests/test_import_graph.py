"""Imports go one way: contracts (schemas), then the storage floor (songcorpus.io), then stages and models
(transforms), then the curation job and the trainer (pipelines, train), then the command line. No module imports
one on a higher floor, and no two modules import each other, directly or round a longer loop; function-local
imports count the same as top-level ones (only third-party imports may be deferred for their cost).

The graph is read from the source with ``ast`` (nothing is imported). ``KNOWN_UPWARD`` lists the upward imports
still left to remove; the test fails on any other, and on any listed one that is gone (so the list only shrinks).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"songcorpus.schemas": "schemas", "songcorpus.transforms": "transforms",
                "songcorpus.pipelines": "pipelines", "songcorpus.train": "train", "songcorpus": "songcorpus"}
# Inside a floor, its rooms stand in order too: in transforms, signal helpers and model adapters under the stage
# contract (base), stages on it, then the registry that composes them and the driver-side corpus decisions; in
# pipelines, the job's own files, sources and sinks under the corpus decisions, then the engines, then the builder
# and the job that drive them; in train, the trainer, its models and a loaded run under the evaluator's metric
# functions, those under the evaluator itself, and the research probes on top (the evaluator never runs them);
# in the command line, the error-to-exit-code mapping under the command families and the parser that gathers
# them, all above the test infrastructure (which never imports the command line).
FLOORS = {"songcorpus": 0, "songcorpus.schemas": 0, "songcorpus.io": 1,
          "songcorpus.transforms": 2.2, "songcorpus.transforms.dsp": 2.0, "songcorpus.transforms.models": 2.1,
          "songcorpus.transforms.base": 2.2, "songcorpus.transforms.stages": 2.3,
          "songcorpus.transforms.registry": 2.4, "songcorpus.transforms.corpus": 2.4,
          "songcorpus.pipelines": 3.0, "songcorpus.pipelines.job": 3.0, "songcorpus.pipelines.sources": 3.0,
          "songcorpus.pipelines.readers": 3.0, "songcorpus.pipelines.sinks": 3.1, "songcorpus.pipelines.corpus": 3.2,
          "songcorpus.pipelines.engines": 3.3, "songcorpus.pipelines.build_corpus": 3.4,
          "songcorpus.pipelines.curate": 3.5, "songcorpus.train": 3, "songcorpus.train.eval.metrics": 3.1,
          "songcorpus.train.eval": 3.2, "songcorpus.train.eval.probes": 3.3, "songcorpus.testing": 4,
          "songcorpus.view": 4.1, "songcorpus.cli.exit_codes": 4.1, "songcorpus.cli": 4.2}

# (importer, imported) upward edges that later steps of the layout work remove
KNOWN_UPWARD: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts]) if parts else package
            if package == "songcorpus" and parts and f"songcorpus.{parts[0]}" in PACKAGE_DIRS:
                continue
            found.setdefault(name, path)
    return found


def resolve(target: str, known: dict[str, Path]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_edges(known: dict[str, Path]) -> set[tuple[str, str]]:
    edges = set()
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                # "from songcorpus.io import storage" imports the module songcorpus.io.storage
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t.startswith("songcorpus"):
                    hit = resolve(t, known)
                    if hit and hit != name and not (name.startswith(hit + ".") and known[hit].name == "__init__.py"):
                        edges.add((name, hit))
    return edges


def floor(module: str) -> float:
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[best]


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_round_a_loop():
    assert cycles(import_edges(modules())) == []


def package_of(module: str, known: dict[str, Path]) -> str:
    """The package a module belongs to: itself for a package's ``__init__``, else its parent."""
    return module if known[module].name == "__init__.py" else module.rpartition(".")[0]


def test_no_package_imports_round_a_loop():
    """Between packages too (pipelines and train, train and train.eval...): a package is read on its own."""
    known = modules()
    between = {(package_of(a, known), package_of(b, known)) for a, b in import_edges(known)}
    assert cycles({(a, b) for a, b in between if a != b}) == []


def test_no_module_imports_a_higher_floor():
    upward = {(a, b) for a, b in import_edges(modules()) if floor(b) > floor(a)}
    assert sorted(upward - KNOWN_UPWARD) == [], "new upward imports"
    assert sorted(KNOWN_UPWARD - upward) == [], "gone: remove them from KNOWN_UPWARD"


def test_the_graph_reader_sees_what_it_must():
    """Known answers, so the two tests above cannot pass by reading nothing."""
    known = modules()
    edges = import_edges(known)
    assert "songcorpus.io.storage" in known and "songcorpus.transforms.stages.stems" in known
    assert ("songcorpus.io.artefacts", "songcorpus.io.storage") in edges  # from songcorpus.io import storage
    assert ("songcorpus.transforms.base", "songcorpus.schemas.row") in edges
    assert floor("songcorpus.cli") > floor("songcorpus.pipelines.curate") > floor("songcorpus.io.storage")
    assert ("songcorpus.cli", "songcorpus.cli.training") in edges  # from songcorpus.cli import ..., training
    assert floor("songcorpus.cli.exit_codes") > floor("songcorpus.testing.ray_cluster")
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]


def test_the_job_and_the_trainer_never_import_test_infrastructure():
    users = {a for a, b in import_edges(modules()) if b.startswith("songcorpus.testing")}
    assert {u for u in users if not u.startswith("songcorpus.testing")} == set()
