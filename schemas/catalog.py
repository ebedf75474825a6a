"""Arrow schemas of the catalog tables (Parquet files + DuckDB views over them).

``tracks``: one row per input, whatever happened to it. ``windows``: one row per shard sample.
Scores are plain columns so analysts can query them and gates can be re-applied without models.
"""

from __future__ import annotations

import pyarrow as pa

CATALOG_VERSION = 6  # 2: tracks.source_sha256
# 4: tracks.duplicate_group (the kept copy's track_id for every copy of one recording; null for a track with none)
# 5: tracks.key, mode, key_strength, key_margin, key_method, caption_method; tracks.caption is the effective caption
#    (the source's, else the caption stage's: caption_method says which)
# 6: tracks.f0_confidence and n_f0_gated_windows (windows the f0 confidence gate dropped); windows.f0_trust

STATUSES = ("accepted", "rejected", "failed")

# Every score a stage stores, with the stage that produces it (gates report this stage).
SCORE_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    # name: (type, producing stage, unit / meaning)
    "duration_s": (pa.float64(), "ingest", "seconds of decoded audio"),
    "source_sample_rate": (pa.int64(), "ingest", "Hz, as decoded"),
    "source_channels": (pa.int64(), "ingest", "channels, as decoded"),
    "loudness_lufs": (pa.float64(), "ingest", "integrated loudness, ITU-R BS.1770 (LUFS); -70 (the absolute "
                      "gate) when every 400 ms block is below it; null when shorter than one block"),
    "clipping_ratio": (pa.float64(), "ingest", "fraction of source samples at full scale"),
    "nonfinite_ratio": (pa.float64(), "ingest", "fraction of source samples that are NaN or inf"),
    "silence_ratio": (pa.float64(), "quality", "fraction of 10 ms frames that are digital silence"),
    "bandwidth_hz": (pa.float64(), "quality", "effective bandwidth of the long-term spectrum"),
    "dc_offset": (pa.float64(), "quality", "absolute mean sample value"),
    "snr_db": (pa.float64(), "quality", "WADA-SNR blind estimate (Kim & Stern 2008)"),
    "speech_prob": (pa.float64(), "classify", "mean AudioSet 'Speech' probability"),
    "singing_prob": (pa.float64(), "classify", "mean AudioSet 'Singing' probability"),
    "music_prob": (pa.float64(), "classify", "mean AudioSet 'Music' probability"),
    "speech_fraction": (pa.float64(), "classify", "fraction of frames where speech beats music and singing"),
    "has_vocals": (pa.bool_(), "stems", "the vocal stem holds more than -30 dB of the mix's energy"),
    "vocal_energy_ratio": (pa.float64(), "stems", "vocal stem energy / mix energy"),
    "stem_residual_db": (pa.float64(), "stems", "energy of mix - (vocals + accompaniment) relative to the mix, dB"),
    "separator_sdr_vocals": (pa.float64(), "stems", "lite separator vs the source's stems: vocal SDR (dB, BSS Eval)"),
    "separator_sdr_accompaniment": (pa.float64(), "stems", "lite separator vs the source's stems: accompaniment SDR (dB)"),
    "separator_si_sdr_vocals": (pa.float64(), "stems", "lite separator vs the source's stems: vocal SI-SDR (dB)"),
    "vocal_activity": (pa.float64(), "vad", "fraction of the track inside vocal segments (Silero VAD or the singing gate)"),
    "speech_activity": (pa.float64(), "vad", "fraction of the track inside Silero VAD's own speech segments"),
    "f0_voiced_fraction": (pa.float64(), "f0", "fraction of 10 ms frames with a voiced vocal f0"),
    "f0_median_hz": (pa.float64(), "f0", "median voiced vocal f0 (Hz)"),
    "f0_confidence": (pa.float64(), "f0", "mean f0 confidence (the model's activation at the chosen pitch) over voiced frames"),
    "tempo_bpm": (pa.float64(), "structure", "global tempo estimate (BPM)"),
    "key_strength": (pa.float64(), "key", "correlation of the pitch-class profile with its key's Krumhansl-Kessler profile"),
    "key_margin": (pa.float64(), "key", "key_strength minus the best other key's correlation (small: ambiguous key)"),
    # full profile (null on lite runs)
    "lyrics_language_probability": (pa.float64(), "lyrics", "Whisper's language probability on the vocal stem"),
    "lyrics_cer": (pa.float64(), "lyrics", "character error rate of the transcript against the source lyrics"),
    "songeval_coherence": (pa.float64(), "aesthetics", "SongEval coherence (1-5)"),
    "songeval_musicality": (pa.float64(), "aesthetics", "SongEval musicality (1-5)"),
    "songeval_memorability": (pa.float64(), "aesthetics", "SongEval memorability (1-5)"),
    "songeval_clarity": (pa.float64(), "aesthetics", "SongEval clarity (1-5)"),
    "songeval_naturalness": (pa.float64(), "aesthetics", "SongEval naturalness (1-5)"),
    "songeval_mean": (pa.float64(), "aesthetics", "mean of the five SongEval dimensions (LaDA-Band keeps >= 3.5)"),
    "audiobox_pq": (pa.float64(), "aesthetics", "Audiobox-Aesthetics production quality (1-10)"),
    "audiobox_pc": (pa.float64(), "aesthetics", "Audiobox-Aesthetics production complexity (1-10)"),
    "audiobox_ce": (pa.float64(), "aesthetics", "Audiobox-Aesthetics content enjoyment (1-10)"),
    "audiobox_cu": (pa.float64(), "aesthetics", "Audiobox-Aesthetics content usefulness (1-10)"),
}

# Which method produced each derived field of a track (the catalog says it, so a corpus never mixes silently).
METHOD_COLUMNS = ("classify_method", "stems_method", "f0_method", "structure_method", "lyrics_method", "key_method",
                  "caption_method")

TRACKS_SCHEMA = pa.schema(
    [
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("stage", pa.string()),
        pa.field("reason_code", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("audio_sha256", pa.string()),
        pa.field("source_sha256", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("duplicate_group", pa.string()),  # the kept copy's track_id, for exact and near duplicates
        pa.field("source_format", pa.string()),
        pa.field("split", pa.string()),
        *[pa.field(name, typ) for name, (typ, _, _) in SCORE_COLUMNS.items()],
        pa.field("title", pa.string()),
        pa.field("artist", pa.string()),
        pa.field("caption", pa.string()),  # the source's caption, else the caption stage's (caption_method says which)
        pa.field("key", pa.string()),  # tonic of the estimated key (key stage), e.g. "F#"
        pa.field("mode", pa.string()),  # "major" or "minor"
        pa.field("tags", pa.string()),
        pa.field("lyrics", pa.string()),
        pa.field("language", pa.string()),
        pa.field("license", pa.string()),
        pa.field("has_stems", pa.bool_()),
        pa.field("extra_json", pa.string()),
        pa.field("lineage_json", pa.string()),
        *[pa.field(name, pa.string()) for name in METHOD_COLUMNS],
        pa.field("n_windows", pa.int64()),
        pa.field("n_f0_gated_windows", pa.int64()),  # candidate windows dropped by windows.min_f0_trust
    ]
)

WINDOWS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # the shard family: its files are <shard>.<group>.tar
        pa.field("index_in_shard", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("fields", pa.string(), nullable=False),  # comma-separated member suffixes, e.g. "json,mix.flac"
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("offsets_json", pa.string(), nullable=False),  # {suffix: [file, data offset, size]}: file is the group tar
        pa.field("reference_key", pa.string()),  # a non-overlapping window of the same song
        pa.field("augmentation_json", pa.string()),  # null, or the song op / EQ parameters
        pa.field("f0_trust", pa.float64()),  # share of the window's vocal frames with a trusted f0 (null: none)
    ]
)

SHARDS_SCHEMA = pa.schema(  # one row per file: a shard family has one tar per field group
    [
        pa.field("shard", pa.string(), nullable=False),  # the file, e.g. shard-train-000000.tokens.tar
        pa.field("family", pa.string(), nullable=False),  # shard-train-000000 (windows.shard)
        pa.field("field_group", pa.string(), nullable=False),  # meta, tokens, latents or audio
        pa.field("n_samples", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)

# Which stage, model (name@version), weights checksum and settings produced each field: one row per
# (stage, field), so "which corpora used htdemucs 4.0 for their stems" is one query.
FIELDS_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("phase", pa.string(), nullable=False),
        pa.field("stage_version", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("model_checksum", pa.string()),
        pa.field("config_hash", pa.string(), nullable=False),
    ]
)

FUNNEL_SQL = """
CREATE OR REPLACE VIEW funnel AS
SELECT status, stage, reason_code, tracks, hours FROM (
    SELECT
        status,
        coalesce(stage, 'accepted') AS stage,
        coalesce(reason_code, 'accepted') AS reason_code,
        count(*) AS tracks,
        round(coalesce(sum(duration_s), 0) / 3600.0, 6) AS hours,
        CASE status WHEN 'failed' THEN 0 WHEN 'rejected' THEN 1 ELSE 2 END AS status_order
    FROM tracks
    GROUP BY status, coalesce(stage, 'accepted'), coalesce(reason_code, 'accepted')
)
ORDER BY status_order, stage, reason_code
"""
