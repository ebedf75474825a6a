"""The analyst notebooks: the committed .ipynb equal to its paired .py and carrying its outputs; the catalog notebook
executed in a real kernel on the curated demo, its tables and plots read back from the outputs; the .py run as a
script. (The evaluation notebook runs on an evaluation in tests/test_evaluate.py.)"""

from __future__ import annotations

import runpy
from pathlib import Path

import duckdb
import jupytext
import nbformat
import pytest
from notebook_outputs import NOTEBOOKS, PNG_MAGIC, REFRESH, errors, executed, images, table_with

NAMES = ("catalog_overview", "eval_overview")


def cells(nb: nbformat.NotebookNode) -> list[tuple]:
    """What pairing must keep equal: each cell's type, source and tags (ids, outputs and layout may differ)."""
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("name", NAMES)
def test_each_ipynb_equals_its_py_and_keeps_its_outputs(name: str) -> None:
    ipynb_path = NOTEBOOKS / f"{name}.ipynb"
    py, ipynb = jupytext.read(NOTEBOOKS / f"{name}.py"), nbformat.read(ipynb_path, as_version=4)
    assert cells(ipynb) == cells(py), f"{name}.ipynb and {name}.py differ: edit the .py, then run notebooks/refresh.py"
    assert ipynb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert any("parameters" in c.metadata.get("tags", []) for c in py.cells)
    code = [c for c in ipynb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "saved without running every cell: run notebooks/refresh.py"
    assert errors(ipynb) == []
    assert len(images(ipynb)) >= 2 and all(png.startswith(PNG_MAGIC) for png in images(ipynb))
    assert ipynb_path.stat().st_size < 1_500_000  # browsable: small plots, no stray data


def test_saving_drops_the_injected_parameters_and_gives_content_ids() -> None:
    nb = jupytext.read(NOTEBOOKS / "catalog_overview.py")
    injected = REFRESH["with_parameters"](nb, {"OUT": "/data/corpus", "FIGURES": None})
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert injected.cells[at + 1].source == "OUT = '/data/corpus'\nFIGURES = None"
    saved = REFRESH["for_saving"](injected)
    assert cells(saved) == cells(nb)
    ids = [c.id for c in saved.cells]
    assert len(set(ids)) == len(ids) and ids == [c.id for c in REFRESH["for_saving"](nb).cells]
    nb.cells[at].source = "OUT = 'elsewhere'"
    assert [c.id for c in REFRESH["for_saving"](nb).cells] != ids  # an edited cell gets a new id, the rest keep theirs
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        REFRESH["with_parameters"](nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), {"OUT": "a"})


def test_catalog_notebook_executes_on_the_demo(demo_ray: Path, tmp_path: Path) -> None:
    nb = executed("catalog_overview", {"OUT": str(demo_ray), "FIGURES": str(tmp_path)})
    assert errors(nb) == []
    con = duckdb.connect(str(demo_ray / "catalog.duckdb"), read_only=True)
    try:
        want = con.execute("SELECT status, tracks FROM funnel").fetchall()
        inputs = con.execute("SELECT count(*) FROM tracks").fetchone()[0]
    finally:
        con.close()
    shown = table_with(nb, "status", "stage", "reason_code", "tracks")
    assert [(r["status"], int(r["tracks"])) for r in shown] == want
    assert sum(int(r["tracks"]) for r in shown) == inputs == 11  # every input counted once
    assert {r["split"] for r in table_with(nb, "split", "samples", "songs")} == {"train", "valid", "test"}
    assert {r["stems_method"] for r in table_with(nb, "stems_method", "f0_method")} <= {"source", "repet-sim"}
    assert {r["score"] for r in table_with(nb, "score", "p05", "p95")} >= {"duration_s", "snr_db"}
    assert len(images(nb)) == 2 and all(png.startswith(PNG_MAGIC) for png in images(nb))
    assert {p.name for p in tmp_path.iterdir()} == {"funnel.png", "scores.png"}  # FIGURES: written too


def test_catalog_overview_runs_as_a_script(demo_ray: Path, tmp_path: Path) -> None:
    main = runpy.run_path(str(NOTEBOOKS / "catalog_overview.py"))["main"]
    report = main([str(demo_ray), "--figures", str(tmp_path)])
    assert sum(r[3] for r in report["funnel"]) == 11  # every input counted once
    assert {r[0] for r in report["splits"]} == {"train", "valid", "test"}  # the demo manifest holds songs out
    assert all(r[0] in ("source", "repet-sim") for r in report["methods"])
    for png in ("funnel.png", "scores.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_a_folder_without_a_catalog_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    main = runpy.run_path(str(NOTEBOOKS / "catalog_overview.py"))["main"]
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--figures", str(tmp_path / "figures")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no catalog.duckdb in {tmp_path}" in err
    assert not (tmp_path / "figures").exists()
