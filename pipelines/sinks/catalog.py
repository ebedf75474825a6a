"""Catalog sink: Parquet tables (tracks, windows, shards, fields) plus ``catalog.duckdb`` with a funnel view.

Parquet files are the durable, engine-neutral record; the DuckDB file is built from them in a
temporary file and renamed, so an analyst never opens a half-written catalog. For a corpus on an object
store both are built in the local staging folder and uploaded at publication (``songcorpus/io/storage.py``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from songcorpus.io.atomic import commit_file
from songcorpus.io.fault_points import fault_point
from songcorpus.pipelines.job.state_rows import chunked
from songcorpus.schemas.catalog import FIELDS_SCHEMA, FUNNEL_SQL, SHARDS_SCHEMA, TRACKS_SCHEMA, WINDOWS_SCHEMA

DUCKDB_MEMORY_LIMIT = "128MB"  # what building catalog.duckdb may hold in memory (it spills past it)
TABLES = {"tracks": TRACKS_SCHEMA, "windows": WINDOWS_SCHEMA, "shards": SHARDS_SCHEMA, "fields": FIELDS_SCHEMA}


# A streamed table is converted to Arrow ROW_BATCH Python rows at a time and written ROW_GROUP_ROWS rows per row
# group: Python objects for one batch, columnar memory for one group, and few enough groups that the file's footer
# (statistics per group and column) stays small for a catalog of any size.
ROW_BATCH = 1024
ROW_GROUP_ROWS = 16384


def write_parquet(path: Path, rows: Iterable[dict[str, Any]], schema: pa.Schema) -> None:
    """``rows`` (a list, or an iterator that streams them) as one Parquet file, written under a temporary name and
    renamed; memory is one row group's Arrow columns, whatever the table's length."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_parquet(tmp, rows, schema)
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not be left fuller by a half table
        raise


def _write_parquet(tmp: Path, rows: Iterable[dict[str, Any]], schema: pa.Schema) -> None:
    with pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=True) as writer:
        group: list[pa.Table] = []
        wrote = False

        def write_group() -> None:
            table = pa.concat_tables(group) if group else pa.Table.from_pylist([], schema=schema)  # keeps its schema
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
            group.clear()

        for batch in chunked(rows, ROW_BATCH):
            group.append(pa.Table.from_pylist(batch, schema=schema))
            if sum(t.num_rows for t in group) >= ROW_GROUP_ROWS:
                write_group()
                wrote = True
        if group or not wrote:
            write_group()


def write_catalog(out: Path, tables: dict[str, Iterable[dict[str, Any]]]) -> None:
    import duckdb

    cat_dir = out / "catalog"
    cat_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in TABLES.items():
        write_parquet(cat_dir / f"{name}.parquet", tables[name], schema)
    fault_point("catalog")
    db_path = out / "catalog.duckdb"
    tmp = out / "catalog.duckdb.tmp"
    for stale in (tmp, Path(str(tmp) + ".wal")):
        stale.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        try:
            # DuckDB keeps a new table's pages in memory until the checkpoint unless told a limit; with one it
            # evicts (and spills next to the file), so the driver's peak does not grow with the corpus
            # (bench/RESULTS.md).
            con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
            for name in TABLES:
                parquet = (cat_dir / f"{name}.parquet").as_posix().replace("'", "''")
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{parquet}')")
            con.execute(FUNNEL_SQL)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        commit_file(tmp, db_path)
    except duckdb.Error as exc:  # DuckDB's own error type: a full or read-only disk said as the OSError it is
        disk = catalog_os_error(exc, tmp)
        if disk is None:
            raise
        raise disk from None
    finally:
        for stale in (tmp, Path(str(tmp) + ".wal")):  # nothing half-written is left filling the disk
            stale.unlink(missing_ok=True)


def catalog_os_error(exc: Exception, path: Path) -> OSError | None:
    """DuckDB reports a full or read-only disk as ``IOException: ... No space left on device``; the job's fault
    handling (``schemas/failures.py``) needs the OSError with its errno and path."""
    import errno

    text = str(exc)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
        if os.strerror(code).lower() in text.lower():
            return OSError(code, os.strerror(code), str(path))
    return None


@contextmanager
def local_catalog(out: Path | str) -> Iterator[Path]:
    """``catalog.duckdb`` of the corpus at ``out`` as a local file: the file itself, or for an object-store URL
    a download checked against the publication marker (DuckDB opens local files only), removed afterwards."""
    from songcorpus.io import storage

    if not storage.is_url(out):
        yield Path(out) / "catalog.duckdb"
        return
    with tempfile.TemporaryDirectory(prefix="songcorpus-catalog-") as tmp:
        yield storage.fetch_published(out, ["catalog.duckdb"], Path(tmp))["catalog.duckdb"]


def funnel_rows(con: Any) -> list[tuple[Any, ...]]:
    """(status, stage, reason_code, tracks, hours) per funnel row, from an open connection to ``catalog.duckdb``:
    the ``funnel`` view, read the same way by ``songcorpus report`` and ``songcorpus view``."""
    return con.execute("SELECT status, stage, reason_code, tracks, hours FROM funnel").fetchall()


def read_funnel(out: Path | str) -> list[tuple[Any, ...]]:
    import duckdb

    with local_catalog(out) as db:
        con = duckdb.connect(str(db), read_only=True)
        try:
            return funnel_rows(con)
        finally:
            con.close()
