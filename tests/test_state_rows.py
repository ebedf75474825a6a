"""The stored scores as a streamed file (pipelines/job/state_rows.py): rows in any order give one sorted, canonical
file; slim rows keep every score and what decisions read; the driver's engines yield results rather than lists."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from songcorpus.pipelines.job.state_rows import (
    StateRowsWriter,
    chunked,
    iter_state_rows,
    scores_of,
    slim_row,
    write_state_rows,
)
from songcorpus.schemas.catalog import SCORE_COLUMNS
from songcorpus.schemas.row import canonical_json


def _row(i: int) -> dict:
    score = next(iter(SCORE_COLUMNS))
    return {"track": {"source": f"song_{i:04d}.wav", "metadata": {"artist": f"a{i % 7}"}},
            "outcome": None,
            "results": {"ingest": {"audio_sha256": f"{i:064x}", "source_sha256": f"{i:064x}", "duration_s": 30.0 + i,
                                   "source_format": "WAV/PCM_16", "sample_rate": 44100},
                        "quality": {score: 0.5 + i / 1000, "bandwidth_hz": 16000.0, "spectrum": list(range(64))},
                        "lyrics": {"lyrics_text": "la " * 200, "lyrics_method": "whisper"}}}


def test_rows_in_any_order_give_one_sorted_canonical_file(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(300)]
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    n = write_state_rows(tmp_path / "a.jsonl", shuffled + shuffled[:10])  # a retried bundle's rows come twice
    write_state_rows(tmp_path / "b.jsonl", rows)
    assert n == 300
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() == "".join(canonical_json(r) + "\n" for r in rows).encode()
    assert [r["track"]["source"] for r in iter_state_rows(tmp_path / "a.jsonl")] == [r["track"]["source"] for r in rows]
    assert not list(tmp_path.glob("*.unsorted")) and not list(tmp_path.glob("*.tmp"))


def test_an_aborted_write_leaves_no_file(tmp_path: Path) -> None:
    writer = StateRowsWriter(tmp_path / "state" / "rows.jsonl")
    writer.add(_row(1))
    writer.abort()
    assert list((tmp_path / "state").iterdir()) == []


def test_slim_rows_keep_scores_and_what_decisions_read() -> None:
    row = _row(3)
    slim = slim_row(row)
    assert scores_of(slim) == scores_of(row)
    assert slim["results"]["ingest"] == {k: v for k, v in row["results"]["ingest"].items() if k != "sample_rate"}
    assert slim["results"]["quality"]["bandwidth_hz"] == 16000.0 and "spectrum" not in slim["results"]["quality"]
    assert slim["results"]["lyrics"] == {} and set(slim["results"]) == set(row["results"])  # names kept: lineage
    assert len(json.dumps(slim)) < len(json.dumps(row)) / 3


def test_a_decided_row_keeps_its_source_outcome_and_scores() -> None:
    row = _row(5)
    row["outcome"] = {"status": "rejected", "stage": "classify", "code": "speech", "reason": "speech", "early": True}
    slim = slim_row(row)
    assert scores_of(slim) == scores_of(row) and any(v is not None for v in scores_of(slim).values())
    assert slim["outcome"] == row["outcome"] and slim["track"] == {"source": row["track"]["source"], "metadata": {}}


def test_a_corrupt_or_missing_state_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rows.jsonl"):
        list(iter_state_rows(tmp_path / "rows.jsonl"))
    bad = tmp_path / "rows.jsonl"
    bad.write_text(canonical_json(_row(0)) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"rows.jsonl line 2 .*songcorpus curate"):
        list(iter_state_rows(bad))


def test_chunked() -> None:
    assert list(chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(chunked([], 3)) == []


def test_a_streamed_table_holds_the_rows_of_a_listed_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from songcorpus.pipelines.sinks import catalog

    schema = pa.schema([pa.field("key", pa.string()), pa.field("value", pa.float64())])
    rows = [{"key": f"k{i}", "value": i / 3} for i in range(25)]
    catalog.write_parquet(tmp_path / "listed.parquet", rows, schema)
    monkeypatch.setattr(catalog, "ROW_BATCH", 3)
    monkeypatch.setattr(catalog, "ROW_GROUP_ROWS", 8)
    catalog.write_parquet(tmp_path / "streamed.parquet", iter(rows), schema)
    catalog.write_parquet(tmp_path / "empty.parquet", iter(()), schema)
    streamed = pq.ParquetFile(tmp_path / "streamed.parquet")
    assert [streamed.metadata.row_group(i).num_rows for i in range(streamed.metadata.num_row_groups)] == [9, 9, 7]
    assert streamed.read().to_pylist() == pq.read_table(tmp_path / "listed.parquet").to_pylist() == rows
    assert pq.read_table(tmp_path / "empty.parquet").schema == schema


def test_packed_rows_read_back_as_given(tmp_path: Path) -> None:
    from songcorpus.pipelines.job.state_rows import PackedRows, slim_state_rows

    rows = [_row(i) for i in range(20)]
    packed = PackedRows(rows)
    assert len(packed) == 20 and list(packed) == rows and packed[3] == rows[3] and packed[-2:] == rows[-2:]
    packed.append(_row(99))
    assert packed[-1] == _row(99) and bool(PackedRows()) is False
    write_state_rows(tmp_path / "rows.jsonl", reversed(rows))
    assert list(slim_state_rows(tmp_path / "rows.jsonl")) == [slim_row(r) for r in rows]
