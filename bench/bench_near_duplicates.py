"""Benchmark of near-duplicate detection: accuracy on the demo songs' copies, and the index's cost at scale.

Why: re-encodings of one song must group with it (recall), different songs must never
group (precision), and the corpus-wide matcher must stay near-linear so a 100k-track corpus is feasible.

What it does:
  1. accuracy: every demo clip (5 songs, 3 instrumentals, 3 speech clips, whole length) plus, for each song,
     the eight variants of songcorpus/testing/reencode.py (mp3 128k / 64k, opus, AAC/m4a, -6 dB, 1.3 s of leading
     silence, a 30 s excerpt, a resample to 22.05 kHz), each through the stages a user runs (ingest ->
     fingerprint -> quality), then the corpus matcher (transforms/corpus/near_duplicates.py) with the profile's
     settings. Reports precision and recall over (song, variant) pairs and over all same-recording pairs,
     the groups, the kept copies, and the margin: the worst bit error of a true pair against the best
     bit error (exhaustive over every offset with the minimum overlap, no index) of any two different
     recordings.
  2. cost: synthetic random fingerprints (uniform uint32, ``--items`` per track on average) for 1k, 10k
     and 100k tracks, with 1 % planted copies (cut by up to 40 items, 5 % of bits flipped): index build
     (terms + sort), the join (votes + candidates + verification), votes, candidates, CPU seconds and peak
     memory, the scaling ratio per 10x tracks, and the planted copies found. Real fingerprints are less
     uniform than random ones (runs and common values; runs are merged and keys held by more than
     ``max_postings`` positions dropped), so the accuracy part is the one with real audio.

Times are CPU seconds (``time.process_time``) of this one process; wall seconds are printed too (a shared
machine inflates them). Results print as markdown and go to bench/out/near_duplicates.json.

Run from the repository root:  .venv/bin/python bench/bench_near_duplicates.py
(``--sizes 1000 10000`` and ``--items 240`` to change the scale; ``--no-accuracy`` / ``--no-cost``.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.schemas.config import load_config
from songcorpus.schemas.row import new_row, result_field, set_result, source_of
from songcorpus.testing.reencode import VARIANTS, write_variant
from songcorpus.transforms.corpus.fingerprint_index import IndexStats, auto_key_bits, bit_error, find_matches, index_terms
from songcorpus.transforms.corpus.near_duplicates import near_duplicate_groups
from songcorpus.transforms.stages.fingerprint import ITEM_S, FingerprintStage, fpcalc_version
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.quality import QualityStage

DEMO = Path(demo_manifest()).parent
SONGS = ("song_00", "song_01", "song_03", "song_05", "song_07")
OTHERS = ("instr_fof_00", "instr_fof_01", "instr_midi_00", "speech_00", "speech_01", "speech_02")


def analysed(path: Path, source: str, stages: list) -> dict[str, Any]:
    row = new_row({"path": str(path), "source": source, "metadata": {}})
    for stage in stages:
        set_result(row, stage.name, stage.process_one(row))
    return row


def best_bit_error(a: np.ndarray, b: np.ndarray, min_overlap: int) -> tuple[float, int]:
    """Lowest bit error over every offset whose overlap is at least ``min_overlap`` (brute force, no index)."""
    best = (1.0, 0)
    for off in range(-(b.size - min_overlap), a.size - min_overlap + 1):
        ber, n = bit_error(a, b, off)
        if n >= min_overlap and ber < best[0]:
            best = (ber, off)
    return best


def accuracy(workdir: Path) -> dict[str, Any]:
    config = load_config()
    cfg = config.near_duplicates
    store = ArtefactStore(workdir / "store")
    stages = [IngestStage(config, store), FingerprintStage(config, store), QualityStage(config, store)]
    rows = []
    t0 = time.process_time()
    for clip in SONGS + OTHERS:
        rows.append(analysed(DEMO / clip / "mix.flac", f"{clip}/original", stages))
        if clip in SONGS:
            x, rate = sf.read(DEMO / clip / "mix.flac", dtype="float32")
            for name in VARIANTS:
                rows.append(analysed(write_variant(name, x, rate, workdir / f"{clip}_{name}"), f"{clip}/{name}", stages))
    prepare_s = time.process_time() - t0
    srcs = [source_of(r) for r in rows]
    fps = [store.get_array(result_field(r, "fingerprint", "fingerprint_file")) for r in rows]
    min_items = math.ceil(cfg.min_overlap_s / ITEM_S)
    t0 = time.process_time()
    found = {(srcs[m.a], srcs[m.b]): m for m in find_matches(fps, cfg.max_bit_error, min_items, cfg.key_bits,
                                                             cfg.min_votes, cfg.max_postings)}
    match_s = time.process_time() - t0
    same = lambda a, b: a.split("/")[0] == b.split("/")[0]  # noqa: E731
    truth_all = {(a, b) for a, b in itertools.combinations(srcs, 2) if same(a, b)}
    truth_song = {(f"{s}/original", f"{s}/{v}") for s in SONGS for v in VARIANTS}
    # a true pair the minimum overlap rules out (none here: every copy overlaps its song >= 19 s) is not expected
    pair = lambda a, b: (a, b) if (a, b) in found else (b, a)  # noqa: E731
    predicted = set(found)
    hit_song = {p for p in truth_song if pair(*p) in found}
    hit_all = {p for p in truth_all if pair(*p) in found}
    per_variant = {v: {"bit_error": [found[pair(f"{s}/original", f"{s}/{v}")].bit_error for s in SONGS
                                     if pair(f"{s}/original", f"{s}/{v}") in found]} for v in VARIANTS}
    near = near_duplicate_groups(rows, config, store)
    groups: dict[str, list[str]] = {}
    for src, kept in sorted(near.kept_of.items()):
        groups.setdefault(kept, []).append(src)
    # different recordings, exhaustively: every original against every other, every variant against other songs
    t0 = time.process_time()
    worst = {"gate_overlap": (1.0, "", ""), "short_clips": (1.0, "", "")}
    by_src = dict(zip(srcs, fps, strict=True))
    originals = [f"{c}/original" for c in SONGS + OTHERS]
    cross = [(a, b) for a, b in itertools.combinations(originals, 2)]
    cross += [(f"{s}/{v}", o) for s in SONGS for v in VARIANTS for o in originals if not same(s, o)]
    for a, b in cross:
        fa, fb = by_src[a], by_src[b]
        # pairs the gate can match: over its minimum overlap; a clip shorter than that: over its whole length
        kind = "gate_overlap" if min(fa.size, fb.size) >= min_items else "short_clips"
        ber, _ = best_bit_error(fa, fb, min(min_items, fa.size, fb.size))
        if ber < worst[kind][0]:
            worst[kind] = (ber, a, b)
    brute_s = time.process_time() - t0
    return {
        "fpcalc": fpcalc_version(), "settings": cfg.model_dump(), "tracks": len(rows),
        "prepare_cpu_s": round(prepare_s, 2), "match_cpu_s": round(match_s, 4), "exhaustive_cpu_s": round(brute_s, 1),
        "song_variant_pairs": len(truth_song), "song_variant_found": len(hit_song),
        "same_recording_pairs": len(truth_all), "same_recording_found": len(hit_all),
        "predicted_pairs": len(predicted), "false_pairs": sorted(f"{a} ~ {b}" for a, b in predicted if not same(a, b)),
        "precision": len(predicted & {pair(*p) for p in truth_all}) / max(len(predicted), 1),
        "recall_song_variant": len(hit_song) / len(truth_song), "recall_all_pairs": len(hit_all) / len(truth_all),
        "max_true_bit_error": max(m.bit_error for m in found.values()),
        "per_variant_max_bit_error": {v: max(d["bit_error"], default=None) for v, d in per_variant.items()},
        "min_different_recording_bit_error": {k: {"bit_error": round(v[0], 4), "a": v[1], "b": v[2]}
                                              for k, v in worst.items()},
        "different_recording_pairs_checked": len(cross),
        "groups": {k: len(v) for k, v in groups.items()},
        "kept": sorted(groups),
    }


def synthetic(n_tracks: int, mean_items: int, rng: np.random.Generator) -> tuple[list[np.ndarray], set[tuple[int, int]]]:
    lengths = rng.integers(mean_items // 2, mean_items * 3 // 2 + 1, size=n_tracks)
    fps = [rng.integers(0, 2**32, size=int(n), dtype=np.uint32) for n in lengths]
    planted = set()
    for i in range(0, n_tracks, 100):  # 1 %: a copy cut by up to 40 items with 5 % of its bits flipped
        cut = int(rng.integers(0, 41))
        src = fps[i][cut:]
        noise = np.packbits(rng.random((src.size, 32)) < 0.05, bitorder="little").view("<u4")
        planted.add((i, len(fps)))
        fps.append(src ^ noise)
    return fps, planted


def cost(sizes: list[int], mean_items: int) -> list[dict[str, Any]]:
    cfg = load_config().near_duplicates
    min_items = math.ceil(cfg.min_overlap_s / ITEM_S)
    out = []
    for n in sizes:
        fps, planted = synthetic(n, mean_items, np.random.default_rng(n))
        stats = IndexStats()
        items = sum(f.size for f in fps)
        c0 = time.process_time()
        keys, _, _ = index_terms(fps, cfg.key_bits or auto_key_bits(items))
        np.argsort(keys, kind="stable")  # the index alone: terms and their sort (find_matches does it again)
        index_s = time.process_time() - c0
        del keys
        c1, w1 = time.process_time(), time.perf_counter()
        matches = find_matches(fps, cfg.max_bit_error, min_items, cfg.key_bits, cfg.min_votes, cfg.max_postings, stats)
        total_s, total_wall = time.process_time() - c1, time.perf_counter() - w1
        found = {(m.a, m.b) for m in matches}
        out.append({"tracks": len(fps), "items": items, "key_bits": stats.key_bits, "terms": stats.terms,
                    "votes": stats.votes, "candidates": stats.candidates, "matches": stats.matches,
                    "planted": len(planted), "planted_found": len(planted & found), "false": len(found - planted),
                    "index_cpu_s": round(index_s, 3), "find_matches_cpu_s": round(total_s, 3),
                    "find_matches_wall_s": round(total_wall, 3),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
        print(f"  {len(fps)} tracks: {out[-1]['find_matches_cpu_s']} CPU s", file=sys.stderr)
    for prev, cur in itertools.pairwise(out):
        cur["ratio_vs_previous"] = round(cur["find_matches_cpu_s"] / max(prev["find_matches_cpu_s"], 1e-9), 2)
        cur["items_ratio"] = round(cur["items"] / prev["items"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--items", type=int, default=240, help="mean sub-fingerprints per synthetic track (240 = 30 s)")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--out", default="bench/out/near_duplicates.json")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {}
    if not args.no_accuracy:
        with tempfile.TemporaryDirectory() as tmp:
            acc = result["accuracy"] = accuracy(Path(tmp))
        print(f"\n## Accuracy (fpcalc {acc['fpcalc']}, {acc['tracks']} tracks)\n")
        print(f"- precision {acc['precision']:.3f} ({acc['predicted_pairs']} predicted pairs, false: {acc['false_pairs']})")
        print(f"- recall, song vs variant: {acc['recall_song_variant']:.3f} ({acc['song_variant_found']} / "
              f"{acc['song_variant_pairs']}); all same-recording pairs: {acc['recall_all_pairs']:.3f} "
              f"({acc['same_recording_found']} / {acc['same_recording_pairs']})")
        print(f"- worst true bit error {acc['max_true_bit_error']:.4f}; best bit error of two different recordings "
              f"{acc['min_different_recording_bit_error']} ({acc['different_recording_pairs_checked']} pairs)")
        print("\n| variant | max bit error vs its song |\n|---|---:|")
        for v, ber in acc["per_variant_max_bit_error"].items():
            print(f"| {v} | {ber} |")
        print(f"\ngroups: {acc['groups']}\nmatch CPU s: {acc['match_cpu_s']}, stages CPU s: {acc['prepare_cpu_s']}")
    if not args.no_cost:
        rows = result["cost"] = cost(args.sizes, args.items)
        print("\n## Cost (synthetic fingerprints)\n")
        print("| tracks | items | key bits | votes | candidates | planted found | false | index CPU s | "
              "find_matches CPU s | x vs previous (items x) | peak RSS MB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['tracks']} | {r['items']} | {r['key_bits']} | {r['votes']} | {r['candidates']} | "
                  f"{r['planted_found']}/{r['planted']} | {r['false']} | {r['index_cpu_s']} | {r['find_matches_cpu_s']} | "
                  f"{r.get('ratio_vs_previous', '')} ({r.get('items_ratio', '')}) | {r['peak_rss_mb']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
