"""Every bad or odd input gets exactly one catalog row with a precise reason, on both engines,
and the job goes on: the good inputs beside them are accepted."""

from __future__ import annotations

import pytest

from conftest import BAD_INPUTS, curate_with, tracks


@pytest.mark.parametrize("engine", ["ray", "beam"])
def test_bad_inputs_each_get_one_precise_row(engine, bad_inputs, tmp_path):
    # 12 s clips: 4 s windows leave room for a window and its non-overlapping reference. Beam on one worker (in
    # memory): a bad input becomes its row inside the DoFn, whichever process runs it; the demo engine test
    # covers Beam's multi-process workers.
    out = curate_with(engine, [str(bad_inputs)], tmp_path / "out", workers=1 if engine == "beam" else 2,
                      windows={"length_s": 4.0})
    rows = tracks(out)
    by_name = {r["source"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == len(by_name) == len(BAD_INPUTS), sorted(by_name)
    for name, (status, code) in BAD_INPUTS.items():
        row = by_name[name]
        assert (row["status"], row["reason_code"]) == (status, code), (name, row["stage"], row["reason"])
        if status != "accepted":
            assert row["stage"] and row["reason"], name
    assert by_name["surround_5_1.wav"]["source_channels"] == 6
    assert by_name["rate_192k.flac"]["source_sample_rate"] == 192000
    assert by_name["zz_duplicate.flac"]["duplicate_of"].endswith("odd ‘名前’ \"quoted\" it's.flac")
    assert "max_duration_s" in by_name["hour_long.wav"]["reason"]
    assert by_name["nonfinite.wav"]["nonfinite_ratio"] > 0
    # accepted inputs are in the shards, nothing else is
    accepted = {r["track_id"] for r in rows if r["status"] == "accepted"}
    import duckdb

    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    in_shards = {t for (t,) in con.execute("SELECT track_id FROM windows").fetchall()}
    con.close()
    assert in_shards == accepted
