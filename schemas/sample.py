"""The shard sample spec: what every WebDataset sample holds (for this spec version), and its checks.

A sample is a group of tar members sharing a key: ``<track_id>_<window:04d>`` for a window of the
song as it is, ``<track_id>_<window:04d>_<op>`` (``speed1.2``, ``pitch-2``...: no dots) for a window
of its augmented copy. Members are named ``<key>.<suffix>``. Consumers should read ``json`` first:
it names the source, the window and the split, carries the labels, scores and lineage, and lists the
other members. Every timing in a sample is relative to the window's start.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from songcorpus.schemas.catalog import SCORE_COLUMNS
from songcorpus.schemas.track import METADATA_FIELDS

# 3: the JSON has one Arrow type per field in every sample (SAMPLE_JSON_SCHEMA, checked at write time), so
#    readers that type a column from a few samples (Hugging Face datasets) read every sample: spans,
#    sections and lyric words are objects ({start_s, end_s[, label|word]}) instead of mixed arrays;
#    augmentation is always an object with ``applied`` flags; metadata and scores carry every key (typed
#    nulls); lineage is a list of stage entries; the embedded codec's settings moved to ``embedded_codec``;
#    ``caption_method`` says where metadata.caption came from; float fields are always JSON floats.
#    Full profile: ``codecs`` is a list of fixed-shape entries and ``speaker`` is always an object
#    (``speaker.npy`` is zeros when there is no reference window).
# 4: every shard is a family of field-group tars (FIELD_GROUPS): ``<shard>.meta.tar`` (json and small arrays),
#    ``<shard>.tokens.tar``, ``<shard>.latents.tar``, ``<shard>.audio.tar``, each a WebDataset shard with the same
#    keys in the same order, so a token model streams kilobytes per sample, never the FLAC beside them.
# 5: labels.f0_trust (the window's f0 trust, what windows.min_f0_trust gates on); scores.f0_confidence
SAMPLE_SPEC_VERSION = 5
F0_RATE_HZ = 100.0
STEMS = ("vocals", "accompaniment")


# Field groups: which tar of a shard family holds a member (by its suffix). A group is a plain WebDataset shard of
# its own; the files of one family hold the same keys in the same order, so zipping them gives whole samples.
FIELD_GROUPS = ("meta", "tokens", "latents", "audio")
AUDIO_SUFFIXES = (".flac", ".wav", ".mp3", ".ogg", ".opus")


def field_group(suffix: str) -> str:
    """The group of a member: ``audio`` for encoded audio, ``tokens`` / ``latents`` for codec arrays, ``meta``
    for the JSON and every other (small) array: f0, content units, speaker embeddings."""
    if suffix.endswith(AUDIO_SUFFIXES):
        return "audio"
    if suffix.endswith("_tokens.npy"):
        return "tokens"
    if suffix.endswith("_latents.npy"):
        return "latents"
    return "meta"


def group_suffixes(suffixes: Iterable[str]) -> dict[str, list[str]]:
    """group -> the member suffixes it holds, in FIELD_GROUPS order (a group no suffix falls in is left out): the
    files a family of these members has."""
    groups: dict[str, set[str]] = {}
    for suffix in suffixes:
        groups.setdefault(field_group(suffix), set()).add(suffix)
    return {g: sorted(groups[g]) for g in FIELD_GROUPS if g in groups}


def group_file(shard: str, group: str) -> str:
    """The file of one field group of a shard family: ``shard-train-000000`` -> ``shard-train-000000.tokens.tar``."""
    return f"{shard}.{group}.tar"


def split_group_file(name: str) -> tuple[str, str | None]:
    """``shard-train-000000.tokens.tar`` -> (``shard-train-000000``, ``tokens``); a plain tar (another tool's,
    or a spec-3 shard) -> (its name without ``.tar``, None): one file that holds every member."""
    stem = name[:-4] if name.endswith(".tar") else name
    family, _, group = stem.rpartition(".")
    if family and group in FIELD_GROUPS:
        return family, group
    return stem, None


@dataclass(frozen=True)
class FieldSpec:
    suffix: str
    dtype: str
    rate: str
    units: str
    description: str


SAMPLE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("json", "utf-8 JSON object", "per sample", "-",
              "spec_version, key, track_id, source, split, start_s and duration_s of the window in the source track, "
              "sample_rate, channels, reference_key (a non-overlapping window of the same song), augmentation "
              "(song_op, eq, loudness, each with an applied flag; source_span_s), labels (vad_segments, beats, "
              "downbeats, sections, tempo_bpm: seconds from the window start), metadata (title, artist, caption, "
              "tags, lyrics, language, license), caption_method, scores, lineage, embedded_codec, stems_method, "
              "fields (the members present); every field typed by SAMPLE_JSON_SCHEMA"),
    FieldSpec("mix.flac", "FLAC, 16-bit PCM", "ingest.sample_rate (44.1 kHz in lite)", "full scale",
              "the window of the standardised mix (vocals + accompaniment + the source's residual)"),
    FieldSpec("vocals.flac", "FLAC, 16-bit PCM", "ingest.sample_rate", "full scale", "the vocal stem, as long as the mix"),
    FieldSpec("accompaniment.flac", "FLAC, 16-bit PCM", "ingest.sample_rate", "full scale",
              "the accompaniment stem, as long as the mix (frequency-balance EQ applied when json.augmentation.eq says so)"),
    FieldSpec("f0.npy", "float32 (ceil(duration_s * 100),)", "100 Hz, frame i at i / 100 s", "Hz, 0 = unvoiced",
              "vocal f0 (16 kHz vocal stem, hop 160)"),
    FieldSpec("vocals.embedded_latents.npy", "float32 (frames, codec.n_mels)", "codec.latent_rate_hz (25 Hz default)",
              "log-mel", "the embedded codec's continuous latents of the vocal stem (not a VAE, not MuCodec)"),
    FieldSpec("accompaniment.embedded_latents.npy", "float32 (frames, codec.n_mels)", "codec.latent_rate_hz", "log-mel",
              "the embedded codec's continuous latents of the accompaniment"),
    FieldSpec("vocals.embedded_tokens.npy", "int32 (frames,)", "codec.token_rate_hz (25 Hz default)", "codebook ids",
              "the embedded codec's tokens of the vocal stem (k-means codebook fit on the corpus)"),
    FieldSpec("accompaniment.embedded_tokens.npy", "int32 (frames,)", "codec.token_rate_hz", "codebook ids",
              "the embedded codec's tokens of the accompaniment"),
)


def _field(name: str, typ: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


# The JSON member's declared Arrow types. Every key is in every sample; a field is null only where it is
# declared nullable (scalars whose value can be unknown); lists and objects are never null.
SPAN = pa.struct([_field("start_s", pa.float64()), _field("end_s", pa.float64())])
SECTION = pa.struct([_field("start_s", pa.float64()), _field("end_s", pa.float64()), _field("label", pa.string())])
WORD = pa.struct([_field("start_s", pa.float64()), _field("end_s", pa.float64()), _field("word", pa.string())])
BIQUAD = pa.struct([_field("freq_hz", pa.float64()), _field("gain_db", pa.float64()), _field("q", pa.float64())])
AUGMENTATION = pa.struct([
    # kind "none" | "speed" | "pitch"; speed 1.0 and semitones 0.0 unless that op was applied
    _field("song_op", pa.struct([_field("applied", pa.bool_()), _field("kind", pa.string()),
                                 _field("speed", pa.float64()), _field("semitones", pa.float64()),
                                 _field("stretcher", pa.string()), _field("version", pa.string())])),
    # the accompaniment's frequency-balance EQ; every number 0.0 when not applied
    _field("eq", pa.struct([_field("applied", pa.bool_()), _field("bass", BIQUAD), _field("mid", BIQUAD),
                            _field("treble", BIQUAD), _field("version", pa.string())])),
    _field("loudness", pa.struct([_field("applied", pa.bool_()), _field("target_rms_db", pa.float64()),
                                  _field("peak_db", pa.float64())])),
    _field("source_span_s", SPAN),  # the span of the source track the window was cut from
])
LABEL_FIELDS = [_field("vad_segments", pa.list_(SPAN)), _field("beats", pa.list_(pa.float64())),
                _field("downbeats", pa.list_(pa.float64())), _field("sections", pa.list_(SECTION)),
                _field("tempo_bpm", pa.float64(), nullable=True),
                # share of the window's vocal frames whose f0 is trusted (transforms/stages/f0.py F0Trust); null: no
                # vocal frame in the window
                _field("f0_trust", pa.float64(), nullable=True)]
LINEAGE_ENTRY = pa.struct([_field("stage", pa.string()), _field("version", pa.string()),
                           _field("model", pa.string(), True), _field("checksum", pa.string(), True),
                           _field("config_hash", pa.string())])
EMBEDDED_CODEC = pa.struct([
    _field("codec", pa.string()), _field("version", pa.string()), _field("kind", pa.string()),
    _field("sample_rate", pa.int64()), _field("n_mels", pa.int64()), _field("n_fft", pa.int64()),
    _field("fmin_hz", pa.float64()), _field("fmax_hz", pa.float64()), _field("log_floor", pa.float64()),
    _field("latent_rate_hz", pa.float64()), _field("token_rate_hz", pa.float64()), _field("config_hash", pa.string()),
    _field("codebook_size", pa.int64()), _field("codebook_sha256", pa.string())])
SAMPLE_JSON_FIELDS: list[pa.Field] = [
    _field("spec_version", pa.int64()), _field("key", pa.string()), _field("track_id", pa.string()),
    _field("source", pa.string()), _field("split", pa.string()), _field("start_s", pa.float64()),
    _field("duration_s", pa.float64()), _field("sample_rate", pa.int64()), _field("channels", pa.int64()),
    _field("audio_sha256", pa.string()), _field("reference_key", pa.string(), nullable=True),
    _field("augmentation", AUGMENTATION), _field("labels", pa.struct(LABEL_FIELDS)),
    _field("metadata", pa.struct([_field(k, pa.string(), True) for k in METADATA_FIELDS if k != "split"])),
    # "source" (metadata.caption as the source gave it), "none" (no caption), "generated:<method>"
    _field("caption_method", pa.string()),
    _field("scores", pa.struct([_field(k, typ, True) for k, (typ, _, _) in SCORE_COLUMNS.items()])),
    _field("lineage", pa.list_(LINEAGE_ENTRY)),  # one entry per stage that made the sample, by stage name
    _field("embedded_codec", EMBEDDED_CODEC),
    _field("stems_method", pa.string()), _field("fields", pa.list_(pa.string())),
]
# The full profile's additions (transforms/stages/samples_full.py): word timings, neural codecs, units, speaker.
CODEC_ENTRY = pa.struct([
    _field("name", pa.string()), _field("kind", pa.string()), _field("model", pa.string()),
    _field("checksum", pa.string(), True), _field("sample_rate", pa.int64()), _field("frame_rate", pa.float64()),
    _field("hop_length", pa.int64()), _field("representation", pa.string()),
    _field("frame_shape", pa.list_(pa.int64())), _field("dtype", pa.string()), _field("frames", pa.string()),
    _field("n_frames", pa.int64()),
    _field("codebook_size", pa.int64()),  # 0 for continuous latents
    _field("bandwidth_kbps", pa.float64())])  # 0.0 where the codec has no bandwidth setting
FULL_PROFILE_JSON_FIELDS: list[pa.Field] = [
    _field("codecs", pa.list_(CODEC_ENTRY)),  # one entry per codec, in config order
    _field("units", pa.struct([_field("model", pa.string()), _field("layer", pa.int64()), _field("n_units", pa.int64()),
                               _field("frame_rate", pa.float64()), _field("first_frame_centre_s", pa.float64()),
                               _field("codebook_sha256", pa.string())])),
    # from_reference false: no reference window, speaker.npy is zeros and from_window_s is 0-0
    _field("speaker", pa.struct([_field("from_reference", pa.bool_()), _field("model", pa.string()),
                                 _field("from_window_s", SPAN), _field("dim", pa.int64())])),
]


def sample_json_schema(full_profile: bool = False) -> pa.Schema:
    """The Arrow schema of one sample's JSON: the lite keys, plus the full profile's when ``full_profile``."""
    if not full_profile:
        return pa.schema(SAMPLE_JSON_FIELDS)
    fields = [_field("labels", pa.struct([*LABEL_FIELDS, _field("lyrics_words", pa.list_(WORD))])) if f.name == "labels"
              else f for f in SAMPLE_JSON_FIELDS]
    return pa.schema([*fields, *FULL_PROFILE_JSON_FIELDS])


SAMPLE_JSON_SCHEMA = sample_json_schema()
JSON_REQUIRED_KEYS = tuple(SAMPLE_JSON_SCHEMA.names)


class InvalidSampleJson(ValueError):
    """A sample JSON that breaks its declared Arrow schema: it must fail its track, never enter a shard."""


def _conform(value: Any, typ: pa.DataType, nullable: bool, path: str, problems: list[str]) -> Any:
    if value is None:
        if not nullable:
            problems.append(f"{path} is null (declared {typ}, not nullable)")
        return None
    if pa.types.is_struct(typ):
        if not isinstance(value, dict):
            problems.append(f"{path} is {type(value).__name__}, declared an object")
            return value
        names = [typ.field(i).name for i in range(typ.num_fields)]
        missing = [n for n in names if n not in value]
        extra = sorted(set(value) - set(names))
        if missing or extra:
            problems.append(f"{path} has keys missing {missing} / not declared {extra}")
        return {k: (_conform(value[k], typ.field(k).type, typ.field(k).nullable, f"{path}.{k}", problems)
                    if k in names else value[k]) for k in value}
    if pa.types.is_list(typ):
        if not isinstance(value, list):
            problems.append(f"{path} is {type(value).__name__}, declared a list")
            return value
        return [_conform(v, typ.value_type, False, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if pa.types.is_boolean(typ):
        ok = isinstance(value, (bool, np.bool_))
        out: Any = bool(value) if ok else value
    elif pa.types.is_integer(typ):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        out = int(value) if ok else value
    elif pa.types.is_floating(typ):  # an int where a float is declared is widened (3 -> 3.0), never a bool
        ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
        out = float(value) if ok else value
    elif pa.types.is_string(typ):
        ok = isinstance(value, str)
        out = value
    else:
        raise TypeError(f"{path}: no JSON check for Arrow type {typ}")
    if not ok:
        problems.append(f"{path} is {value!r} ({type(value).__name__}), declared {typ}")
    return out


def conform_sample_json(meta: dict[str, Any], schema: pa.Schema = SAMPLE_JSON_SCHEMA) -> dict[str, Any]:
    """``meta`` with every float field a float (ints widened), checked against ``schema``: every declared key
    present, no other key, every value of its declared type, null only where declared nullable. Raises
    :class:`InvalidSampleJson` naming each field that breaks it."""
    problems: list[str] = []
    out = _conform(meta, pa.struct(list(schema)), False, "json", problems)
    if problems:
        key = meta.get("key", "?") if isinstance(meta, dict) else "?"
        raise InvalidSampleJson(f"sample {key} breaks the sample JSON schema (spec {SAMPLE_SPEC_VERSION}): "
                                + "; ".join(problems[:8]) + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""))
    return out


def window_key(track_id: str, window_index: int, tag: str | None = None) -> str:
    base = f"{track_id}_{window_index:04d}"
    return f"{base}_{tag}" if tag else base


def frames_for(duration_s: float, rate: float) -> int:
    """The frame-count contract for every frame-rate field: ceil(duration * rate)."""
    return math.ceil(duration_s * rate - 1e-9)


class MisalignedSample(ValueError):
    """A sample whose fields disagree in time: it must fail its track, never enter a shard."""


def check_alignment(key: str, duration_s: float, sample_rate: int, audio: dict[str, np.ndarray],
                    f0: np.ndarray, latents: dict[str, np.ndarray], tokens: dict[str, np.ndarray],
                    latent_rate: float, token_rate: float, labels: dict[str, Any]) -> None:
    """The write-time contract: stems as long as the mix, f0 frames = ceil(duration x 100), token and
    latent frames = ceil(duration x rate), every label timestamp inside [0, duration]."""
    problems: list[str] = []
    n = round(duration_s * sample_rate)
    for name, x in audio.items():
        if x.shape[0] != n:
            problems.append(f"{name} has {x.shape[0]} samples, the window has {n}")
    if f0.shape != (frames_for(duration_s, F0_RATE_HZ),):
        problems.append(f"f0 has shape {f0.shape}, expected ({frames_for(duration_s, F0_RATE_HZ)},)")
    for name, z in latents.items():
        if z.shape[0] != frames_for(duration_s, latent_rate):
            problems.append(f"{name} latents have {z.shape[0]} frames, expected {frames_for(duration_s, latent_rate)}")
    for name, t in tokens.items():
        if t.shape != (frames_for(duration_s, token_rate),):
            problems.append(f"{name} tokens have shape {t.shape}, expected ({frames_for(duration_s, token_rate)},)")
    spans = [*labels.get("vad_segments", []), *labels.get("sections", []), *labels.get("lyrics_words", [])]
    stamps = [v for span in spans for v in (span["start_s"], span["end_s"])]
    stamps += list(labels.get("beats", [])) + list(labels.get("downbeats", []))
    outside = [t for t in stamps if not (-1e-6 <= t <= duration_s + 1e-6)]
    if outside:
        problems.append(f"{len(outside)} label timestamps outside [0, {duration_s}] s (first {outside[0]})")
    if problems:
        raise MisalignedSample(f"sample {key} is misaligned: " + "; ".join(problems))
