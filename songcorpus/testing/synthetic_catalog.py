"""A synthetic catalog in the real schema (schemas/catalog.py), without audio: what the view's benchmark and its query
tests page through at any size (bench/bench_view_pages.py, tests/test_view_queries.py).

``write_synthetic_catalog(OUT, n_tracks)`` writes OUT/catalog/*.parquet and OUT/catalog.duckdb through the catalog sink
(pipelines/sinks/catalog.py, the same code a curate runs) and OUT/config.yaml with the lite profile's gates. Tracks
are 70 % accepted (split 90/5/5), 25 % rejected by one of five gates and 5 % failed; an accepted track has up to six
10.24 s windows and every fifth one an augmented copy. Titles, captions and lyrics hold words a text search can
find. Deterministic for a seed. The windows' ``offsets_json`` name shard files that do not exist: media requests on
such a catalog are 404s. Fails only as the sink does (a full or read-only disk).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from songcorpus.pipelines.sinks.catalog import write_catalog
from songcorpus.schemas.catalog import METHOD_COLUMNS, SCORE_COLUMNS, TRACKS_SCHEMA
from songcorpus.schemas.config import profile_dict

WORDS = ("love", "night", "river", "summer", "fire", "dream", "city", "heart", "rain", "gold", "ocean", "light")
GENRES = ("pop", "rock", "jazz", "folk", "electronic", "hip hop", "classical")
LANGUAGES = ("en", "es", "fr", "ja", None)
REJECTIONS = (("classify", "speech_dominant"), ("ingest", "too_quiet"), ("quality", "low_snr"),
              ("fingerprint", "duplicate"), ("samples", "no_windows"))
WINDOW_S = 10.24
MAX_WINDOWS = 6


def _tracks(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    blank = {f.name: None for f in TRACKS_SCHEMA}
    status = rng.choice(["accepted", "rejected", "failed"], size=n, p=[0.70, 0.25, 0.05])
    split = rng.choice(["train", "valid", "test"], size=n, p=[0.9, 0.05, 0.05])
    duration = rng.uniform(40, 300, size=n)
    rows = []
    for i in range(n):
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), size=3)]
        row = {**blank, "track_id": f"t{i * 2654435761 % (1 << 80):020x}", "source": f"songs/{i:06d}.flac",
               "status": str(status[i]), "audio_sha256": f"{i:064x}", "source_format": "flac",
               "title": f"{words[0].title()} {words[1]} {i}", "artist": f"artist {i % 997}",
               "caption": f"Music with guitar and vocals about {words[2]}, {90 + i % 60} BPM.",
               "lyrics": " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), size=12)),
               "language": LANGUAGES[i % len(LANGUAGES)], "tags": ",".join(GENRES[j] for j in {i % 7, (i * 3) % 7}),
               "license": "cc-by-4.0", "has_stems": bool(i % 3 == 0), "extra_json": "{}",
               "lineage_json": json.dumps({"ingest": {"version": 4}}), "duration_s": float(duration[i])}
        for name, (typ, _, _) in SCORE_COLUMNS.items():
            if name == "duration_s" or name.startswith(("songeval", "audiobox", "lyrics_", "separator_")):
                continue
            row[name] = bool(rng.random() < 0.8) if str(typ) == "bool" else \
                (int(rng.choice([22050, 44100, 48000])) if name == "source_sample_rate" else
                 int(rng.integers(1, 3)) if name == "source_channels" else float(rng.normal(0.5, 0.25)))
        row.update({m: f"{m.removesuffix('_method')}-lite-v1" for m in METHOD_COLUMNS})
        if row["status"] == "accepted":
            row["split"] = str(split[i])
            row["n_windows"] = min(MAX_WINDOWS, int(row["duration_s"] // WINDOW_S)) + (1 if i % 5 == 0 else 0)
        else:
            stage, code = REJECTIONS[i % len(REJECTIONS)] if row["status"] == "rejected" else ("ingest", "undecodable")
            row.update({"stage": stage, "reason_code": code, "reason": f"{code} (synthetic)", "n_windows": 0})
        rows.append(row)
    return rows


def _windows(tracks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for t in tracks:
        if t["status"] != "accepted":
            continue
        shard = f"shard-{t['split']}-{int(t['source'][6:12]) // 1000:06d}"
        n = min(MAX_WINDOWS, int(t["duration_s"] // WINDOW_S))
        for w in range(t["n_windows"]):
            augmented = w >= n
            key = f"{t['track_id']}_{w % max(n, 1):04d}" + ("_speed110" if augmented else "")
            offsets = {s: [f"{shard}.{g}.tar", 512 * (w + 1), 1000] for s, g in
                       (("json", "meta"), ("mix.flac", "audio"), ("vocals.flac", "audio"))}
            yield {"key": key, "track_id": t["track_id"], "source": t["source"], "shard": shard,
                   "index_in_shard": w, "split": t["split"], "start_s": (w % max(n, 1)) * WINDOW_S,
                   "duration_s": WINDOW_S, "fields": "json,mix.flac,vocals.flac", "bytes": 3000,
                   "offsets_json": json.dumps(offsets, sort_keys=True),
                   "reference_key": f"{t['track_id']}_{(w + 1) % max(n, 1):04d}" if n > 1 else None,
                   "augmentation_json": json.dumps({"song_op": {"kind": "speed", "speed": 1.1}}) if augmented else None}


def write_synthetic_catalog(out: Path, n_tracks: int, seed: int = 0) -> Path:
    """OUT with a catalog of ``n_tracks`` synthetic tracks and their windows, and the lite profile's config."""
    rng = np.random.default_rng(seed)
    tracks = _tracks(n_tracks, rng)
    out.mkdir(parents=True, exist_ok=True)
    families = sorted({(w["shard"], w["split"]) for w in _windows(tracks)})
    shards = [{"shard": f"{f}.{g}.tar", "family": f, "field_group": g, "n_samples": 1, "bytes": 1 << 20,
               "sha256": "0" * 64, "split": s} for f, s in families for g in ("meta", "audio")]
    write_catalog(out, {"tracks": tracks, "windows": _windows(tracks), "shards": shards, "fields": []})
    (out / "config.yaml").write_text(yaml.safe_dump({"gates": profile_dict("lite")["gates"]}))
    return out
