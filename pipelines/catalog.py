"""Catalog sink: Parquet tables (tracks, windows, shards, fields) plus ``catalog.duckdb`` with a funnel view.

Parquet files are the durable, engine-neutral record; the DuckDB file is built from them in a
temporary file and renamed, so an analyst never opens a half-written catalog. For a corpus on an object
store both are built in the local staging folder and uploaded at publication (``pipelines/storage.py``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from songcorpus.schemas.catalog import FIELDS_SCHEMA, FUNNEL_SQL, SHARDS_SCHEMA, TRACKS_SCHEMA, WINDOWS_SCHEMA
from songcorpus.transforms.artefacts import commit_file

TABLES = {"tracks": TRACKS_SCHEMA, "windows": WINDOWS_SCHEMA, "shards": SHARDS_SCHEMA, "fields": FIELDS_SCHEMA}


def write_parquet(path: Path, rows: Sequence[dict[str, Any]], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(list(rows), schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", write_statistics=True)
    commit_file(tmp, path)


def write_catalog(out: Path, tables: dict[str, Sequence[dict[str, Any]]]) -> None:
    import duckdb

    cat_dir = out / "catalog"
    cat_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in TABLES.items():
        write_parquet(cat_dir / f"{name}.parquet", tables[name], schema)
    db_path = out / "catalog.duckdb"
    tmp = out / "catalog.duckdb.tmp"
    for stale in (tmp, Path(str(tmp) + ".wal")):
        stale.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        for name in TABLES:
            parquet = (cat_dir / f"{name}.parquet").as_posix().replace("'", "''")
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{parquet}')")
        con.execute(FUNNEL_SQL)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, db_path)


@contextmanager
def local_catalog(out: Path | str) -> Iterator[Path]:
    """``catalog.duckdb`` of the corpus at ``out`` as a local file: the file itself, or for an object-store URL
    a download checked against the publication marker (DuckDB opens local files only), removed afterwards."""
    from songcorpus.pipelines import storage

    if not storage.is_url(out):
        yield Path(out) / "catalog.duckdb"
        return
    with tempfile.TemporaryDirectory(prefix="songcorpus-catalog-") as tmp:
        yield storage.fetch_published(out, ["catalog.duckdb"], Path(tmp))["catalog.duckdb"]


def read_funnel(out: Path | str) -> list[tuple[Any, ...]]:
    import duckdb

    with local_catalog(out) as db:
        con = duckdb.connect(str(db), read_only=True)
        try:
            return con.execute("SELECT status, stage, reason_code, tracks, hours FROM funnel").fetchall()
        finally:
            con.close()
