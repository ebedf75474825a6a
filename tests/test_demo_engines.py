"""The demo corpus on both engines: the funnel the README promises, and byte-identical output."""

from __future__ import annotations

import json
import tarfile

import duckdb
import pytest

from songcorpus.schemas.sample import JSON_REQUIRED_KEYS

from conftest import output_files, tracks


def test_demo_funnel_rejects_speech_and_accepts_songs(demo_ray):
    rows = tracks(demo_ray)
    assert len(rows) == 11  # one row per demo input
    for row in rows:
        clip = row["source"].split("/")[-2]
        if clip.startswith("speech"):
            assert (row["status"], row["stage"], row["reason_code"]) == ("rejected", "classify", "speech_dominant"), row
        elif clip.startswith("song"):
            assert row["status"] == "accepted" and row["n_windows"] >= 2, (clip, row["reason"])
        else:  # instrumentals: kept when their separated "vocal" stem is active enough, else no windows
            assert row["status"] == "accepted" or row["reason_code"] == "no_windows", (clip, row["reason"])
    con = duckdb.connect(str(demo_ray / "catalog.duckdb"), read_only=True)
    funnel = {(s, st, c): (n, h) for s, st, c, n, h in con.execute("SELECT * FROM funnel").fetchall()}
    assert funnel[("rejected", "classify", "speech_dominant")][0] == 3
    accepted = funnel[("accepted", "accepted", "accepted")][0]
    assert accepted >= 5
    assert accepted + funnel.get(("rejected", "samples", "no_windows"), (0, 0))[0] == 8
    n_windows = con.execute("SELECT sum(n_windows) FROM tracks").fetchone()[0]
    assert con.execute("SELECT count(*) FROM windows").fetchone()[0] == n_windows >= 10
    con.close()


def test_shard_samples_follow_the_spec(demo_ray):
    shards = sorted((demo_ray / "shards").glob("*.tar"))
    assert shards
    import io

    import soundfile as sf

    family = shards[0].name.split(".", 1)[0]
    members: dict[str, bytes] = {}
    for shard in (demo_ray / "shards").glob(f"{family}.*.tar"):  # the family's field-group files together
        with tarfile.open(shard) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
            assert all(m.mtime == 0 for m in tar.getmembers())
    keys = sorted({name.split(".", 1)[0] for name in members})
    for key in keys:
        meta = json.loads(members[f"{key}.json"])
        assert set(JSON_REQUIRED_KEYS) <= set(meta)
        audio, rate = sf.read(io.BytesIO(members[f"{key}.mix.flac"]))
        assert rate == meta["sample_rate"] == 44100
        assert abs(len(audio) / rate - meta["duration_s"]) < 1e-3
        lineage = {entry["stage"]: entry for entry in meta["lineage"]}
        assert lineage["classify"]["checksum"] and lineage["ingest"]["config_hash"]


def test_random_access_offsets_point_at_the_members(demo_ray):
    con = duckdb.connect(str(demo_ray / "catalog.duckdb"), read_only=True)
    key, shard, offsets = con.execute("SELECT key, shard, offsets_json FROM windows ORDER BY key LIMIT 1").fetchone()
    con.close()
    file, offset, size = json.loads(offsets)["json"]
    assert file == f"{shard}.meta.tar"  # the family's meta file holds the JSON
    with open(demo_ray / "shards" / file, "rb") as fh:
        fh.seek(offset)
        assert json.loads(fh.read(size))["key"] == key
    for suffix, (file, offset, _size) in json.loads(offsets).items():  # every member in its group's file
        with open(demo_ray / "shards" / file, "rb") as fh:
            fh.seek(offset - 512)
            assert tarfile.TarInfo.frombuf(fh.read(512), "utf-8", "surrogateescape").name == f"{key}.{suffix}"


def test_ray_and_beam_write_identical_bytes(demo_ray, demo_beam):
    ray_files, beam_files = output_files(demo_ray), output_files(demo_beam)
    assert sorted(ray_files) == sorted(beam_files)
    differing = [name for name in ray_files if ray_files[name] != beam_files[name]]
    assert not differing


@pytest.mark.slow  # location-free bytes are also checked by default: an S3 corpus equals a local one (test_object_store)
def test_the_demo_curated_from_another_folder_gives_identical_bytes(demo_ray, demo_elsewhere):
    """Track ids, sample keys and augmentation draws come from the files' bytes and sources are named
    relative to the input, so shards, catalog and codebook do not depend on where the corpus sits."""
    def location_free(out):
        files = output_files(out)
        files.pop("state/rows.jsonl")  # the state records where each file was read from (track.path)
        for p in sorted((out / "codec").iterdir()):
            files[f"codec/{p.name}"] = p.read_bytes()
        return files

    here, there = location_free(demo_ray), location_free(demo_elsewhere)
    assert sorted(here) == sorted(there)
    assert [name for name in here if here[name] != there[name]] == []
    con = duckdb.connect(str(demo_elsewhere / "catalog.duckdb"), read_only=True)
    sources = [s for (s,) in con.execute("SELECT source FROM tracks ORDER BY source").fetchall()]
    con.close()
    assert "song_00/mix.flac" in sources  # as the manifest names it
