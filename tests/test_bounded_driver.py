"""A driver that does not grow with the corpus: per-track state on disk (songcorpus/io/disk_map.py, state_rows.SpooledRows
and SortedSpool, job_folder.JobFolder) and the corpus-level steps that now stream over it (exact copies, split
groups, the codebook's frame draw), each checked against the in-memory computation it replaces, on random data."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import pytest

from songcorpus.io.disk_map import DiskMap
from songcorpus.pipelines.corpus.decide import Decision, decision_map
from songcorpus.pipelines.corpus.splits import split_groups, split_key
from songcorpus.pipelines.job.exchange_folder import JobFolder, part_count, read_part
from songcorpus.pipelines.job.state_rows import SortedSpool, SpooledRows
from songcorpus.transforms.corpus.near_duplicates import components, exact_duplicates


def test_disk_map_matches_a_dict_under_random_operations() -> None:
    rng = random.Random(0)
    ref: dict[str, object] = {}
    m: DiskMap[object] = DiskMap()
    for _ in range(3000):
        key = f"k{rng.randrange(400):03d}"
        op = rng.random()
        if op < 0.5:
            value = {"n": rng.randrange(10), "s": "é" * rng.randrange(3)}
            ref[key] = value
            m[key] = value
        elif op < 0.7 and key in ref:
            del ref[key]
            del m[key]
        else:
            assert (key in m) == (key in ref)
            assert m.get(key) == ref.get(key)
    assert len(m) == len(ref)
    assert list(m) == sorted(ref)  # key order, not insertion order
    assert dict(m.items()) == ref and sorted(map(json.dumps, m.values())) == sorted(map(json.dumps, ref.values()))
    with pytest.raises(KeyError):
        m["missing"]
    m.update_many((f"b{i}", i) for i in range(5000))  # batched: the length is counted again
    assert len(m) == len(ref) + 5000 and m["b4999"] == 4999


def test_disk_map_round_trips_decisions_and_removes_its_file() -> None:
    d = decision_map([("b", Decision("rejected", "quality", "low_snr", "SNR 3 dB < 10 dB")), ("a", Decision("accepted"))])
    assert list(d) == ["a", "b"] and d["b"] == Decision("rejected", "quality", "low_snr", "SNR 3 dB < 10 dB")
    folder = Path(d._dir)
    assert folder.exists()
    d.close()
    assert not folder.exists()


def test_spooled_rows_are_sized_reiterable_and_removed() -> None:
    rows = [{"track": {"source": f"s{i}"}, "i": i} for i in range(1000)]
    spooled = SpooledRows(iter(rows))
    assert len(spooled) == 1000 and bool(spooled) and not SpooledRows()
    assert list(spooled) == rows and list(spooled) == rows  # a second pass reads the file again
    spooled.append({"track": {"source": "late"}})
    assert len(list(spooled)) == 1001
    folder = Path(spooled._dir)
    spooled.close()
    assert not folder.exists()


def test_sorted_spool_sorts_drops_repeats_and_cleans_up(tmp_path: Path) -> None:
    spool = SortedSpool(tmp_path / "x.unsorted")
    keys = [f"{random.Random(1).random():.6f}-{i}" for i in range(500)]
    random.Random(2).shuffle(keys)
    assert all(spool.add(k, (k + "\n").encode()) for k in keys)
    assert not spool.add(keys[0], b"again\n") and len(spool) == 500
    assert [line.decode().strip() for line in spool.sorted_lines()] == sorted(keys)
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_job_folder_streams_rows_into_balanced_parts(tmp_path: Path) -> None:
    assert part_count(5, 1, 1, 4096) == 5 and part_count(10_000, 1, 1, 4096) == 4096
    assert part_count(1000, 8, 256) == 8 and part_count(3, 8, 256) == 3
    with JobFolder(str(tmp_path), "test") as job:
        lines = [f"line {i}" for i in range(103)]
        parts = job.write_inputs(iter(lines), 103, 10)
        sizes = [len(list(read_part(p))) for p in parts]
        assert len(parts) == 10 and sorted(sizes) == [10] * 7 + [11] * 3
        assert [line for p in parts for line in read_part(p)] == lines  # in order
        with pytest.raises(ValueError, match="103 lines"):
            job.write_inputs(iter(lines[:50]), 103, 10)
        root = Path(job.root)
    assert not root.exists()


def _brute_split_groups(rows: list[dict], kept_of: dict[str, str]) -> dict[str, str]:
    """The source-level union-find the key-level one replaced: sources joined by key and by copies."""
    own = {r["track"]["source"]: split_key(r) for r in rows}
    by_key: dict[str, list[str]] = defaultdict(list)
    for src, key in own.items():
        by_key[key].append(src)
    edges = [(v[0], s) for v in by_key.values() for s in v[1:]]
    edges += [(s, k) for s, k in kept_of.items() if s in own and k in own]
    comp = components(own, edges)
    smallest: dict[str, str] = {}
    for src, root in comp.items():
        smallest[root] = min(smallest.get(root, own[src]), own[src])
    return {src: smallest[comp[src]] for src in own}


@pytest.mark.parametrize("seed", range(5))
def test_split_groups_and_exact_copies_match_the_in_memory_computation(seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(300):
        artist = f"artist{rng.randrange(40)}" if rng.random() < 0.5 else None
        rows.append({"track": {"source": f"s{i:03d}", "metadata": {"artist": artist} if artist else {}},
                     "outcome": None if rng.random() < 0.9 else {"status": "failed"},
                     "results": {"ingest": {"source_sha256": f"f{rng.randrange(280)}",
                                            "audio_sha256": f"a{rng.randrange(250)}"}}})
    groups = [rng.sample(range(300), rng.randrange(2, 5)) for _ in range(25)]
    kept_of = {}
    for g in groups:
        kept = f"s{min(g):03d}"
        for i in g:
            kept_of.setdefault(f"s{i:03d}", kept)

    class Near:
        pass

    near = Near()
    near.kept_of = kept_of  # type: ignore[attr-defined]
    assert dict(split_groups(rows, near).items()) == _brute_split_groups(rows, kept_of)  # type: ignore[arg-type]

    by_sha: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["outcome"] is None:
            by_sha[r["results"]["ingest"]["audio_sha256"]].append(r["track"]["source"])
    want = {s: min(v) for v in by_sha.values() if len(v) > 1 for s in v}
    assert exact_duplicates(rows) == want and want  # only the copies are listed


@pytest.mark.parametrize("max_rows", [10, 500, 5000])
def test_codebook_fit_reads_only_the_rows_the_subsample_keeps(tmp_path: Path, max_rows: int) -> None:
    import numpy as np

    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.pipelines.corpus.codebooks import gather_rows
    from songcorpus.transforms.dsp.kmeans import subsample_rows

    store = ArtefactStore(tmp_path / "cache")
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((int(rng.integers(0, 300)), 4)).astype(np.float32) for _ in range(20)]
    files = [store.put_array(a) for a in arrays]
    got, n = gather_rows(store, files, max_rows, seed=7)
    want = subsample_rows(np.concatenate(arrays), max_rows, 7)
    assert n == sum(a.shape[0] for a in arrays) and got.dtype == np.float32
    assert np.array_equal(got, want)
