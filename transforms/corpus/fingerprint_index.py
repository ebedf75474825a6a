"""Offset-tolerant matching of Chromaprint fingerprints across a whole corpus, without comparing all pairs.

The method is Chromaprint's own matcher (``src/fingerprint_matcher.cpp``: an index on the top 28 bits of each
sub-fingerprint, an offset histogram, then the bit error rate over the aligned overlap), made corpus-wide:

1. terms: the top ``key_bits`` of every sub-fingerprint; a run of equal keys (a held chord) is one term.
2. inverted index: terms sorted by key (a stable sort of the track-major list, so ties keep track, position
   order); keys held by more than ``max_postings`` positions (silence, steady tones) are dropped.
3. votes: every two postings of one key from different tracks vote for (track a, track b, offset). With
   ``key_bits`` near log2(corpus items) a key holds O(1) random postings, so there are O(items) votes and
   the whole join is one sort: near-linear in the corpus (bench/bench_near_duplicates.py measures it).
4. candidates: a pair whose best offset (with the next one, for a copy shifted by half an item) has at least
   ``min_votes`` votes.
5. verification: the bit error rate of the two fingerprints over their overlap at offsets o-1, o, o+1; a match
   needs at most ``max_bit_error`` over at least ``min_overlap_items``. So a 30 s excerpt matches its song
   (the overlap is the excerpt), while two songs sharing an intro do not (the overlap is all of the shorter).

Reads and writes nothing: uint32 arrays in, :class:`Match` list out (``find_matches``). ``find_matches_on_disk``
gives the same matches with the index in key buckets on local scratch disk, one bucket in memory at a time, so
the curate driver does not hold the corpus's index. Deterministic (sorts, no hashing seeds).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Match:
    """Fingerprints ``a < b`` match: item i of a lies on item i - offset of b."""

    a: int
    b: int
    offset: int
    bit_error: float
    overlap_items: int


@dataclass
class IndexStats:
    """What the join cost: sizes at each step (the benchmark reports them)."""

    items: int = 0
    terms: int = 0
    key_bits: int = 0
    dropped_keys: int = 0
    votes: int = 0
    candidates: int = 0
    matches: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def auto_key_bits(n_items: int) -> int:
    """Key width that keeps random postings per key below one: log2(items) + 1, within 20..30 bits."""
    return int(min(30, max(20, math.ceil(math.log2(max(n_items, 2))) + 1)))


def index_terms(fps: Sequence[np.ndarray], key_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, track, position) of every term, track-major, each track in position order."""
    keys, tracks, positions = [], [], []
    shift = np.uint32(32 - key_bits)
    for t, fp in enumerate(fps):
        if fp.size == 0:
            continue
        k = np.asarray(fp, dtype=np.uint32) >> shift
        start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        keys.append(k[start])
        tracks.append(np.full(start.size, t, np.int32))
        positions.append(start.astype(np.int32))
    if not keys:
        empty = np.zeros(0, np.int32)
        return np.zeros(0, np.uint32), empty, empty
    return np.concatenate(keys), np.concatenate(tracks), np.concatenate(positions)


def vote_pairs(keys: np.ndarray, tracks: np.ndarray, positions: np.ndarray, max_postings: int,
               stats: IndexStats | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, offset) for every two postings of one key from tracks a < b (offset = pos in a - pos in b)."""
    order = np.argsort(keys, kind="stable")
    k, t, p = keys[order], tracks[order], positions[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if k.size else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, k.size])
    size_of = np.repeat(sizes, sizes)
    keep = (size_of >= 2) & (size_of <= max_postings)
    if stats is not None:
        stats.dropped_keys = int((sizes > max_postings).sum())
    k, t, p = k[keep], t[keep], p[keep]
    out_a, out_b, out_off = [], [], []
    active = np.arange(max(k.size - 1, 0))
    d = 1
    while active.size:
        active = active[k[active] == k[active + d]]  # still inside one key group at distance d
        j = active + d
        diff = t[active] != t[j]
        out_a.append(t[active][diff])
        out_b.append(t[j][diff])
        out_off.append(p[active][diff] - p[j][diff])
        d += 1
        active = active[active + d < k.size]
    if not out_a:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return (np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64),
            np.concatenate(out_off).astype(np.int64))


def candidates(a: np.ndarray, b: np.ndarray, off: np.ndarray, n_tracks: int, max_items: int,
               min_votes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track pair, its best-voted offset o (votes at o plus o+1); pairs with at least ``min_votes``."""
    width = 2 * max_items + 3
    if n_tracks * n_tracks * width >= 2**62:
        raise ValueError(f"corpus too large for one join ({n_tracks} tracks of up to {max_items} items)")
    code = (a * n_tracks + b) * width + (off + max_items + 1)
    uniq, counts = np.unique(code, return_counts=True)
    pair, o = uniq // width, uniq % width - (max_items + 1)
    follows = np.r_[(pair[1:] == pair[:-1]) & (o[1:] == o[:-1] + 1), False]
    votes = counts + np.where(follows, np.r_[counts[1:], 0], 0)
    best = np.lexsort((o, -votes, pair))  # per pair: most votes, then the smallest offset
    first = best[np.r_[True, pair[best][1:] != pair[best][:-1]]] if best.size else best
    first = first[votes[first] >= min_votes]
    return pair[first] // n_tracks, pair[first] % n_tracks, o[first]


def bit_error(fa: np.ndarray, fb: np.ndarray, offset: int) -> tuple[float, int]:
    """Share of differing bits between ``fa[i]`` and ``fb[i - offset]`` over their overlap, and its length."""
    i0 = max(0, offset)
    j0 = i0 - offset
    n = min(fa.size - i0, fb.size - j0)
    if n <= 0:
        return 1.0, 0
    x = np.bitwise_xor(fa[i0:i0 + n], fb[j0:j0 + n])
    return float(np.bitwise_count(x).sum()) / (32.0 * n), int(n)


def _verify(load: Callable[[int], np.ndarray], ca: np.ndarray, cb: np.ndarray, co: np.ndarray,
            max_bit_error: float, min_overlap_items: int) -> list[Match]:
    """Step 5 on candidate pairs (a, b, offset), fingerprints read through ``load``."""
    matches = []
    for ta, tb, o in zip(ca.tolist(), cb.tolist(), co.tolist(), strict=True):
        fa, fb = load(ta), load(tb)
        trials = [(*bit_error(fa, fb, o + d), o + d) for d in (0, 1, -1)]
        long_enough = [(ber, shift, n) for ber, n, shift in trials if n >= min_overlap_items]
        if long_enough:
            ber, shift, n = min(long_enough)  # the lowest error, then the smallest offset
            if ber <= max_bit_error:
                matches.append(Match(ta, tb, shift, round(ber, 6), n))
    return matches


def find_matches(fps: Sequence[np.ndarray], max_bit_error: float, min_overlap_items: int, key_bits: int | None = None,
                 min_votes: int = 3, max_postings: int = 256, stats: IndexStats | None = None) -> list[Match]:
    """Every pair of fingerprints that is a copy of the other (or of part of it), sorted by (a, b)."""
    stats = stats if stats is not None else IndexStats()
    fps = [np.asarray(f, dtype=np.uint32) for f in fps]
    stats.items = int(sum(f.size for f in fps))
    stats.key_bits = key_bits or auto_key_bits(stats.items)
    keys, tracks, positions = index_terms(fps, stats.key_bits)
    stats.terms = int(keys.size)
    a, b, off = vote_pairs(keys, tracks, positions, max_postings, stats)
    stats.votes = int(a.size)
    if not a.size:
        return []
    ca, cb, co = candidates(a, b, off, len(fps), max(f.size for f in fps), min_votes)
    stats.candidates = int(ca.size)
    matches = _verify(fps.__getitem__, ca, cb, co, max_bit_error, min_overlap_items)
    stats.matches = len(matches)
    return matches


# ---------------------------------------------------------------------------------------------
# the same join with one bucket in memory at a time (the curate driver's path)
# ---------------------------------------------------------------------------------------------

POSTING = np.dtype([("k", "<u4"), ("t", "<i4"), ("p", "<i4")])
VOTE = np.dtype([("a", "<i8"), ("b", "<i8"), ("o", "<i8")])


def _append_by_bucket(files: list, records: np.ndarray, bucket: np.ndarray) -> None:
    order = np.argsort(bucket, kind="stable")  # keeps each bucket's records in their order
    records, bucket = records[order], bucket[order]
    cuts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]]) if bucket.size else np.zeros(0, np.int64)
    for start, stop in zip(cuts.tolist(), [*cuts[1:].tolist(), bucket.size], strict=True):
        files[int(bucket[start])].write(records[start:stop].tobytes())


def find_matches_on_disk(load: Callable[[int], np.ndarray], n_tracks: int, max_bit_error: float,
                         min_overlap_items: int, key_bits: int | None = None, min_votes: int = 3,
                         max_postings: int = 256, stats: IndexStats | None = None, items_hint: int | None = None,
                         bucket_terms: int = 1 << 22, scratch: str | Path | None = None) -> list[Match]:
    """:func:`find_matches` of fingerprints ``load(0) .. load(n_tracks - 1)``, the same matches, with memory
    bounded by ``bucket_terms`` instead of the corpus. Why it gives the same result: every posting of a key goes
    to the bucket ``key % B``, written track by track, so a bucket holds whole key groups in the global order
    and yields exactly their votes; votes go to the bucket ``(a * n + b) % B``, so one bucket holds every vote
    of a pair and picks its best offset as the global join does. Passes: fingerprints -> posting buckets on
    disk -> votes -> vote buckets -> candidates -> verification (loading the two fingerprints of each).
    ``items_hint`` (the corpus's item count, e.g. from the rows) sizes the buckets and, without ``key_bits``,
    the key width (``auto_key_bits``: give the exact count to reproduce :func:`find_matches`'s keys).
    Scratch files live in a temporary folder under ``scratch`` (the system's by default), removed at the end."""
    stats = stats if stats is not None else IndexStats()
    hint = items_hint if items_hint is not None else sum(int(load(t).size) for t in range(n_tracks))
    stats.key_bits = key_bits or auto_key_bits(hint)
    n_buckets = max(1, math.ceil(hint / bucket_terms))
    with tempfile.TemporaryDirectory(prefix="songcorpus-fpindex-", dir=scratch) as tmp:
        folder = Path(tmp)
        posts = [folder / f"post-{i:05d}" for i in range(n_buckets)]
        votes_at = [folder / f"vote-{i:05d}" for i in range(n_buckets)]
        items = terms = widest = 0
        with ExitStack() as stack:
            files = [stack.enter_context(path.open("wb")) for path in posts]
            for t in range(n_tracks):
                fp = np.asarray(load(t), dtype=np.uint32)
                items, widest = items + fp.size, max(widest, fp.size)
                if fp.size == 0:
                    continue
                k, _, p = index_terms([fp], stats.key_bits)
                rec = np.empty(k.size, POSTING)
                rec["k"], rec["t"], rec["p"] = k, t, p
                _append_by_bucket(files, rec, (k % n_buckets).astype(np.int64))
                terms += k.size
        stats.items, stats.terms = items, terms
        dropped = n_votes = 0
        with ExitStack() as stack:
            files = [stack.enter_context(path.open("wb")) for path in votes_at]
            for path in posts:
                rec = np.fromfile(path, POSTING)
                path.unlink()
                part = IndexStats()
                a, b, off = vote_pairs(rec["k"], rec["t"], rec["p"], max_postings, part)
                dropped, n_votes = dropped + part.dropped_keys, n_votes + a.size
                if a.size:
                    vote = np.empty(a.size, VOTE)
                    vote["a"], vote["b"], vote["o"] = a, b, off
                    _append_by_bucket(files, vote, (a * n_tracks + b) % n_buckets)
        stats.dropped_keys, stats.votes = dropped, n_votes
        if not n_votes:
            return []
        found = []
        for path in votes_at:
            vote = np.fromfile(path, VOTE)
            path.unlink()
            if vote.size:
                found.append(candidates(vote["a"], vote["b"], vote["o"], n_tracks, widest, min_votes))
    ca, cb, co = (np.concatenate([f[i] for f in found]) for i in range(3))
    order = np.lexsort((cb, ca))
    ca, cb, co = ca[order], cb[order], co[order]
    stats.candidates = int(ca.size)
    matches = _verify(lambda t: np.asarray(load(t), dtype=np.uint32), ca, cb, co, max_bit_error, min_overlap_items)
    stats.matches = len(matches)
    return matches
