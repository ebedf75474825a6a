"""Near-duplicate groups of a corpus: which inputs are copies of one recording, and which copy is kept.

Late-binding (no model runs): reads each analysed row's stored fingerprint (stage ``fingerprint``, a ``.npy``
in the artefact store) and the stored ingest/quality scores; matches them corpus-wide with
transforms/corpus/fingerprint_index.py under ``config.near_duplicates``; joins matches into groups (connected
components). pipelines/corpus/decide.py rejects every copy but the kept one (``near_duplicate``, stage
``fingerprint``, ``duplicate_of`` = the kept source) when ``near_duplicates.reject`` is on, names the group in
``tracks.duplicate_group`` and puts a whole group in one split either way.

Exact duplicates (same decoded audio) are decided first, as before: only the copy they keep is matched, and
the others join its group. Rows without a fingerprint (state from before the stage existed, an input too
short for Chromaprint) are in no group.

The kept copy, in order: lossless source over lossy (ingest's ``source_format``); higher bandwidth
(quality's ``bandwidth_hz``, in steps of 10 % below the group's widest copy, so measurement noise between
two full-band copies does not decide); longer audible audio (``duration_s * (1 - silence_ratio)``, to
0.1 s, so added silence is not length); then the shorter file (less padding); then the smallest source.
Deterministic. Gates then judge the kept copy alone: the copies it stands for share its content.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, audio_sha256, ingest_result, optional_field, optional_result, outcome_of, source_of
from songcorpus.transforms.corpus.fingerprint_index import IndexStats, find_matches_on_disk
from songcorpus.transforms.stages.fingerprint import ITEM_S

KEPT_RULE = "lossless, then bandwidth, then audible duration, then less padding, then source order"

# Codecs that do not discard signal (libsndfile subtypes and FFmpeg decoder names as ingest records them).
_LOSSLESS = ("PCM_", "FLOAT", "DOUBLE", "ALAC", "ffmpeg:flac", "ffmpeg:alac", "ffmpeg:pcm_", "ffmpeg:wavpack",
             "ffmpeg:tta", "ffmpeg:ape", "ffmpeg:mlp", "ffmpeg:truehd", "ffmpeg:shorten")


def is_lossless(source_format: str | None) -> bool:
    """``FLAC/PCM_16``, ``WAV/FLOAT``, ``ffmpeg:alac``: lossless; ``MP3/MPEG_LAYER_III``, ``OGG/OPUS``,
    ``ffmpeg:aac``, unknown: lossy (a copy of unknown quality never wins over a known lossless one)."""
    if not source_format:
        return False
    subtype = source_format.split("/", 1)[-1]
    return subtype.startswith(_LOSSLESS) or source_format.startswith(_LOSSLESS)


def exact_duplicates(rows: Iterable[Row]) -> dict[str, str]:
    """Source -> the source kept (the smallest), for every analysed row that shares its decoded audio with another;
    a source missing here has no exact copy (``.get(src, src)``). One pass; the hashes are grouped in a scratch
    SQLite file (``songcorpus/io/disk_map.py``), so memory grows with the copies, not with the corpus."""
    import tempfile
    from pathlib import Path

    from songcorpus.io.disk_map import scratch_db

    with tempfile.TemporaryDirectory(prefix="songcorpus-exact-") as tmp:
        db = scratch_db(Path(tmp) / "exact.sqlite")
        try:
            db.execute("CREATE TABLE a (sha TEXT, src TEXT)")
            db.executemany("INSERT INTO a VALUES (?, ?)",
                           ((audio_sha256(row), source_of(row)) for row in rows if outcome_of(row) is None))
            db.execute("CREATE INDEX a_sha ON a (sha)")
            pairs = db.execute("SELECT a.src, d.kept FROM a JOIN (SELECT sha, MIN(src) AS kept FROM a GROUP BY sha "
                               "HAVING COUNT(*) > 1) AS d ON a.sha = d.sha").fetchall()
        finally:
            db.close()
    return dict(sorted(pairs))


def components(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Node -> the smallest node of its connected component (union-find)."""
    parent = {n: n for n in nodes}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {n: root(n) for n in parent}


@dataclass(frozen=True)
class Evidence:
    """The closest match of a copy: the other source, bit error, aligned overlap, and offset (where the shared
    audio starts in ``other`` minus where it starts in this copy)."""

    other: str
    bit_error: float
    overlap_s: float
    offset_s: float


@dataclass(frozen=True)
class NearDuplicates:
    kept_of: dict[str, str]  # every member of a group of >= 2 (exact copies included) -> its kept source
    evidence: dict[str, Evidence]  # near-duplicate members -> their closest match
    group_size: dict[str, int]  # kept source -> members
    stats: IndexStats

    def reason(self, src: str) -> str:
        kept, ev = self.kept_of[src], self.evidence[src]
        return (f"near duplicate of {kept}: Chromaprint bit error {ev.bit_error:.3f} over {ev.overlap_s:.1f} s "
                f"(offset {ev.offset_s:+.2f} s) against {ev.other}; {self.group_size[kept]} copies, kept by "
                f"{KEPT_RULE}")


def keep_order(rows: list[Row]) -> list[Row]:
    """A group's rows, the kept copy first (module docstring: the rule)."""
    def bandwidth(r: Row) -> float | None:
        return optional_field(r, "quality", "bandwidth_hz")

    widest = max((bandwidth(r) or 0.0 for r in rows), default=0.0)

    def key(r: Row) -> tuple:
        ingest = ingest_result(r)
        bw = bandwidth(r)
        steps = math.floor(math.log(widest / bw) / math.log(1.1) + 1e-9) if bw and widest > 0 else 10**6
        silence = optional_field(r, "quality", "silence_ratio") or 0.0
        audible = round(float(ingest["duration_s"]) * (1.0 - silence), 1)
        return (not is_lossless(ingest.get("source_format")), steps, -audible, round(float(ingest["duration_s"]), 1),
                source_of(r))

    return sorted(rows, key=key)


def near_duplicate_groups(rows: Iterable[Row], config: PipelineConfig, store: ArtefactStore) -> NearDuplicates:
    """Groups of copies among ``rows`` (all of a corpus's rows, re-iterable; only analysed ones take part). Two
    passes: the fingerprints (matched by transforms/corpus/fingerprint_index.py's on-disk join: the index lives in key
    buckets in a scratch folder, the listing of indexed tracks in a DiskMap), then the rows of the groups found,
    to choose their kept copies. What stays in memory grows with the copies found, not with the corpus."""
    from songcorpus.io.disk_map import DiskMap

    cfg = config.near_duplicates
    exact = exact_duplicates(rows)
    indexed: DiskMap[list[str]] = DiskMap()  # "%09d" position in the index -> [source, fingerprint file]
    n_tracks = n_items = 0

    def listed() -> Iterable[tuple[str, list[str]]]:
        nonlocal n_tracks, n_items
        for r in rows:
            src = source_of(r)
            fp = (optional_result(r, "fingerprint") or {}) if outcome_of(r) is None else {}
            if fp.get("fingerprint_items") and exact.get(src, src) == src:
                yield f"{n_tracks:09d}", [src, fp["fingerprint_file"]]
                n_tracks, n_items = n_tracks + 1, n_items + int(fp["fingerprint_items"])

    indexed.update_many(listed())

    def entry(i: int) -> list[str]:
        return indexed[f"{i:09d}"]

    stats = IndexStats()
    matches = find_matches_on_disk(lambda i: store.get_array(entry(i)[1]), n_tracks, cfg.max_bit_error,
                                   math.ceil(cfg.min_overlap_s / ITEM_S), cfg.key_bits, cfg.min_votes,
                                   cfg.max_postings, stats, items_hint=n_items)
    srcs = {i: entry(i)[0] for i in sorted({i for m in matches for i in (m.a, m.b)})}  # the matched tracks only
    indexed.close()
    evidence: dict[str, Evidence] = {}
    for m in matches:  # each member's closest match (lowest error, then the longest overlap, then source)
        for me, other, sign in ((srcs[m.a], srcs[m.b], 1), (srcs[m.b], srcs[m.a], -1)):
            ev = Evidence(other, m.bit_error, round(m.overlap_items * ITEM_S, 2), round(sign * -m.offset * ITEM_S, 2))
            old = evidence.get(me)
            if old is None or (ev.bit_error, -ev.overlap_s, ev.other) < (old.bit_error, -old.overlap_s, old.other):
                evidence[me] = ev
    matched = sorted({srcs[i] for m in matches for i in (m.a, m.b)})
    comp = components(matched, ((srcs[m.a], srcs[m.b]) for m in matches))
    del srcs
    members: dict[str, list[Row]] = defaultdict(list)
    if comp:
        for r in rows:  # the rows of the matched copies only
            if outcome_of(r) is None and source_of(r) in comp:
                members[comp[source_of(r)]].append(r)
    kept_of: dict[str, str] = {}
    for group in members.values():
        if len(group) > 1:
            kept = source_of(keep_order(group)[0])
            kept_of.update({source_of(r): kept for r in group})
    for src, exact_kept in exact.items():  # exact copies follow the copy they duplicate
        if src != exact_kept:
            kept_of[src] = kept_of.get(exact_kept, exact_kept)
            kept_of.setdefault(exact_kept, exact_kept)
    group_size: dict[str, int] = defaultdict(int)
    for kept in kept_of.values():
        group_size[kept] += 1
    return NearDuplicates(kept_of, evidence, dict(group_size), stats)
