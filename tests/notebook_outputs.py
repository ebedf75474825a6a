"""Helpers for the notebook tests: run a notebook's .py in a real kernel (notebooks/refresh.py's executor) and read
what its cells showed: error outputs, PNG images, and the HTML tables pandas rendered, as rows of strings."""

from __future__ import annotations

import base64
import runpy
from html.parser import HTMLParser
from pathlib import Path

import jupytext
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
REFRESH = runpy.run_path(str(NOTEBOOKS / "refresh.py"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def executed(name: str, parameters: dict) -> nbformat.NotebookNode:
    """notebooks/NAME.py run top to bottom in a fresh ipykernel with ``parameters`` injected."""
    return REFRESH["execute"](jupytext.read(NOTEBOOKS / f"{name}.py"), parameters, timeout=240)


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def errors(nb: nbformat.NotebookNode) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for o in outputs(nb) if o["output_type"] == "error"]


def images(nb: nbformat.NotebookNode) -> list[bytes]:
    """Every PNG a cell showed, decoded."""
    return [base64.b64decode(o["data"]["image/png"]) for o in outputs(nb) if "image/png" in o.get("data", {})]


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_data(self, data) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th") and self.cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None


def tables(nb: nbformat.NotebookNode) -> list[list[dict]]:
    """Every DataFrame a cell showed, as a list of {column: text} rows (pandas' HTML: one header row, then rows
    that open with the index)."""
    found = []
    for o in outputs(nb):
        html = o.get("data", {}).get("text/html")
        if not html:
            continue
        parser = _Tables()
        parser.feed(html)
        for header, *rows in (t for t in parser.tables if t):
            found.append([dict(zip(header[1:], row[1:], strict=True)) for row in rows])
    return found


def table_with(nb: nbformat.NotebookNode, *columns: str, exact: bool = False) -> list[dict]:
    """The one table shown with all of ``columns`` (``exact``: with those columns and no other)."""
    hits = [t for t in tables(nb) if t and (set(columns) == set(t[0]) if exact else set(columns) <= set(t[0]))]
    assert len(hits) == 1, f"{len(hits)} tables with columns {columns}"
    return hits[0]
