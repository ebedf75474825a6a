"""Catalog sink: Parquet tables (tracks, windows, shards, fields) plus ``catalog.duckdb`` with a funnel view.

Parquet files are the durable, engine-neutral record; the DuckDB file is built from them in a
temporary file and renamed, so an analyst never opens a half-written catalog.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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


def read_funnel(out: Path) -> list[tuple[Any, ...]]:
    import duckdb

    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        return con.execute("SELECT status, stage, reason_code, tracks, hours FROM funnel").fetchall()
    finally:
        con.close()
