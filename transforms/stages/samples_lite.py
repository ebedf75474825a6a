"""SampleStage: an accepted song's training samples, cut, augmented, encoded and checked.

Runs after the decisions (it needs the song's split and the corpus codebook), once per accepted song.
Reads: the standardised mix and stems (``ingest``, ``stems``), vocal f0 (``f0``), VAD segments
(``vad``), beats and sections (``structure``), the song's metadata, ``row["split"]`` and
``row["codebook"]`` (store path + sha256, set by the corpus builder).
Writes: every member of every sample as a content-addressed blob in the artefact store (FLAC stems,
f0, embedded-codec latents and tokens per stem, and the sample's JSON), so the shard writer only packs.
Provides: samples (per sample: key, start_s, duration_s, reference_key, augmentation, members
{suffix: store path}) and n_candidate_windows.
Windows come from :mod:`windows`; a selected song (``augment.fraction``) also gets windows of its
augmented copy (one speed or pitch op for the whole song, every label moved to match; the op runs on the stems,
and the augmented mix is their sum plus the moved residual where the stems leave an audible part of the mix out);
each sample's accompaniment gets the frequency-balance EQ with ``augment.eq_probability`` (the vocals never do),
lowered further where the mix rebuilt from it would clip as 16-bit audio.
Rejects a song with no usable window (``no_windows``: too short for a window and its reference, or too
little vocal activity; set ``windows.min_vocal_activity: 0`` to keep instrumentals).
Fails when: a sample breaks the time-alignment contract (:func:`schemas.sample.check_alignment`) or
its JSON breaks the declared Arrow schema (:func:`schemas.sample.conform_sample_json`: every key, one
type per field, so every reader types every sample alike): the song fails at this stage, naming the
sample and the check, and none of its samples is written.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf

from songcorpus.io.audio import read_standard_audio, to_int16
from songcorpus.schemas.catalog import SCORE_COLUMNS
from songcorpus.schemas.config import AugmentConfig
from songcorpus.schemas.row import (
    Row,
    accompaniment_file,
    audio_file,
    audio_sha256,
    canonical_json,
    caption_result,
    has_result,
    lyrics_result,
    optional_result,
    result_field,
    structure_result,
    track_of,
    vad_result,
    vocals_file,
)
from songcorpus.schemas.sample import (
    F0_RATE_HZ,
    SAMPLE_SPEC_VERSION,
    STEMS,
    check_alignment,
    conform_sample_json,
    frames_for,
    sample_json_schema,
    window_key,
)
from songcorpus.schemas.track import METADATA_FIELDS, track_id_of
from songcorpus.transforms.base import Rejection, Resources, Stage
from songcorpus.transforms.dsp.augment import (
    EqParams,
    SongAugmentation,
    StretcherError,
    apply_eq,
    gain_under_full_scale,
    plan_eq,
    plan_song_augmentation,
    shift_f0,
    stretch_frames,
    stretcher_id,
)
from songcorpus.transforms.dsp.windows import Window, choose_references, plan_windows
from songcorpus.transforms.models.embedded_codec import EmbeddedCodec, encode_tokens, load_codebook
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.stages.caption import sample_caption
from songcorpus.transforms.stages.f0 import F0Trust, frames_in_segments
from songcorpus.transforms.stages.stems import energy_db

EDGE_S = 0.25  # context cut on both sides of a window before a time stretch or pitch shift (edge effects)
RESIDUAL_FLOOR_DB = -60.0  # mix - (vocals + accompaniment) below this (dB re the mix) is left out of an augmented mix
ANALYSIS_STAGES = ("ingest", "quality", "classify", "stems", "vad", "f0", "structure", "key", "caption")


def flac_bytes(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, to_int16(x)[:, None], rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def clip_times(times: list[float] | np.ndarray, start: float, end: float) -> list[float]:
    return [round(float(t) - start, 3) for t in times if start - 1e-9 <= t <= end + 1e-9]


def clip_segments(segments: list[list[float]], start: float, end: float) -> list[dict[str, float]]:
    """``[s, e]`` spans overlapping the window as ``{start_s, end_s}`` objects, clipped, window-relative."""
    out = []
    for s, e in segments:
        lo, hi = max(s, start), min(e, end)
        if hi > lo:
            out.append({"start_s": round(lo - start, 3), "end_s": round(hi - start, 3)})
    return out


def clip_sections(sections: list[list[Any]], start: float, end: float) -> list[dict[str, Any]]:
    """``[s, e, label]`` sections overlapping the window as ``{start_s, end_s, label}``, clipped, window-relative."""
    out = []
    for s, e, label in sections:
        lo, hi = max(float(s), start), min(float(e), end)
        if hi > lo:
            out.append({"start_s": round(lo - start, 3), "end_s": round(hi - start, 3), "label": str(label)})
    return out


def clip_words(words: list[list[Any]], start: float, end: float) -> list[dict[str, Any]]:
    """``[s, e, word]`` words whose middle falls inside the window as ``{start_s, end_s, word}``, clipped to it,
    times relative to its start."""
    out = []
    for s, e, word in words:
        if start <= (s + e) / 2 < end:
            out.append({"start_s": round(max(s, start) - start, 3), "end_s": round(min(e, end) - start, 3),
                        "word": str(word)})
    return out


def augmentation_record(aug: SongAugmentation | None, eq: EqParams | None, acfg: AugmentConfig,
                        span: tuple[float, float]) -> dict[str, Any]:
    """The sample JSON's ``augmentation``: the same keys and types whether or not anything was applied
    (``applied`` flags; neutral numbers otherwise), so every sample has one Arrow type
    (schemas.sample.AUGMENTATION)."""
    op = aug.to_dict() if aug else {}
    flat = {"freq_hz": 0.0, "gain_db": 0.0, "q": 0.0}
    eqd = eq.to_dict() if eq else {}
    return {
        "song_op": {"applied": aug is not None, "kind": aug.kind if aug else "none",
                    "speed": float(aug.speed) if aug else 1.0,
                    "semitones": float(aug.semitones) if aug else 0.0,
                    "stretcher": op.get("stretcher", ""), "version": str(op.get("version", ""))},
        "eq": {"applied": eq is not None, **{band: {k: float(v) for k, v in eqd.get(band, flat).items()}
                                             for band in ("bass", "mid", "treble")},
               "version": str(eqd.get("version", ""))},
        "loudness": {"applied": eq is not None,  # the EQ'd accompaniment is re-levelled; nothing else is
                     "target_rms_db": float(acfg.target_rms_db) if eq else 0.0, "peak_db": float(acfg.peak_db) if eq else 0.0},
        "source_span_s": {"start_s": float(span[0]), "end_s": float(span[1])},
    }


def caption_method(metadata: dict[str, Any]) -> str:
    """Where ``metadata.caption`` came from: "source" when the input gave one, else "none" (a caption stage
    writes "generated:<method>")."""
    return "source" if metadata.get("caption") else "none"


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    return np.pad(x, (0, max(0, n - x.shape[0])))[:n]


class SampleStage(Stage):
    name = "samples"
    version = "6"  # 2: a song with no window is rejected (no_windows); 3: keys and draws from the file's bytes;
    # 4: an augmented window's mix is the sum of its augmented stems (and residual); 5: an EQ'd accompaniment is
    # lowered where the mix rebuilt from it would clip; 6: the EQ's biquads run in scipy (the same filters, last bits)
    requires = ("audio_file", "vocals_file", "accompaniment_file", "f0_file", "vad_segments", "beats", "sections",
                "split", "codebook")
    provides = ("samples", "n_candidate_windows", "n_f0_gated_windows")
    resources = Resources(num_cpus=1.0, memory_mb=2048)
    batch_size = 1

    def config_digest(self) -> str:
        c = self.config
        digest = "".join(s.digest() for s in (c.windows, c.augment, c.codec, c.ingest)) + f"spec{SAMPLE_SPEC_VERSION}"
        if c.augment.fraction > 0:
            digest += stretcher_id(c.augment.stretcher)  # another Rubber Band release makes other audio
        return digest

    def preflight(self) -> None:
        """A missing ``rubberband`` program fails before any input is read, with the fix."""
        if self.config.augment.fraction > 0:
            try:
                stretcher_id(self.config.augment.stretcher)
            except StretcherError as exc:
                raise ModelError(str(exc)) from exc

    def input_identity(self, row: Row) -> str:
        """Everything a sample is made of: analysis results, metadata, split, codebook, and lineage."""
        track = track_of(row)
        used = {"source": track["source"], "metadata": track["metadata"], "split": row["split"],
                "codebook": row["codebook"], "lineage": row.get("lineage", {}),
                "results": {k: optional_result(row, k) for k in ANALYSIS_STAGES}}
        return hashlib.sha256(canonical_json(used).encode()).hexdigest()

    def model_id(self) -> str:
        return "embedded-mel-codec"

    def model_checksum(self) -> str | None:
        return None  # the codebook's checksum is part of the input identity and of every sample's lineage

    def process_one(self, row: Row) -> dict[str, Any]:
        path = self.store.path
        mix, rate = read_standard_audio(path(audio_file(row)))
        audio = {"mix": mix.mean(axis=1),
                 "vocals": read_standard_audio(path(vocals_file(row)))[0].mean(axis=1),
                 "accompaniment": read_standard_audio(path(accompaniment_file(row)))[0].mean(axis=1)}
        f0 = self.store.get_array(result_field(row, "f0", "f0_file")).astype(np.float32)
        confidence = self.store.get_array(result_field(row, "f0", "periodicity_file")).astype(np.float32)
        trust = F0Trust(f0, confidence, frames_in_segments(f0.size, vad_result(row)["vad_segments"], 0.0))
        codec = EmbeddedCodec(self.config.codec, rate)
        codebook = load_codebook(path(row["codebook"]["file"]), row["codebook"]["sha256"])
        track_id = track_id_of(row)  # from the file's bytes: same keys and augmentation wherever the corpus lives
        variants: list[SongAugmentation | None] = [None]
        aug = plan_song_augmentation(track_id, self.config.augment)
        if aug is not None:
            variants.append(aug)
            residual = audio["mix"] - audio["vocals"] - audio["accompaniment"]
            if np.any(audio["mix"]) and energy_db(residual) - energy_db(audio["mix"]) > RESIDUAL_FLOOR_DB:
                audio["residual"] = residual  # what the stems leave out of the mix, moved with them by the song op
        samples: list[dict[str, Any]] = []
        n_candidates = n_gated = 0
        for variant in variants:
            made, n, gated = self._variant(row, variant, audio, f0, trust, rate, codec, codebook, track_id)
            samples += made
            n_candidates += n
            n_gated += gated
        w = self.config.windows
        if not samples and n_gated:
            raise Rejection("f0_untrusted", f"all {n_gated} candidate windows have an f0 confidence below "
                            f"windows.min_f0_trust {w.min_f0_trust:g} (f0 method "
                            f"{result_field(row, 'f0', 'f0_method')}; set it lower to keep them)")
        if not samples:
            raise Rejection("no_windows", f"no {w.length_s:g} s window with vocal activity >= {w.min_vocal_activity:g}"
                            + (" and a non-overlapping reference window" if w.require_reference else "")
                            + f" (track {audio['mix'].shape[0] / rate:.1f} s, vocal activity "
                            f"{vad_result(row).get('vocal_activity', 0.0):.2f}; {n_candidates} candidate windows)")
        return {"samples": samples, "n_candidate_windows": n_candidates, "n_f0_gated_windows": n_gated}

    def _variant(self, row: Row, aug: SongAugmentation | None, audio: dict[str, np.ndarray], f0: np.ndarray,
                 trust: F0Trust, rate: int, codec: EmbeddedCodec, codebook: np.ndarray,
                 track_id: str) -> tuple[list[dict[str, Any]], int, int]:
        """(samples, candidate windows, windows dropped by the f0 confidence gate) of one variant of the song."""
        structure, vad_segments = structure_result(row), vad_result(row)["vad_segments"]
        speed = aug.speed if aug else 1.0
        duration = audio["mix"].shape[0] / rate / speed

        def moved(times: list[float] | np.ndarray) -> np.ndarray:
            return np.asarray(aug.times(times) if aug else times, dtype=np.float64)

        beats = moved(structure["beats"])
        downbeats = moved(structure.get("downbeats") or [])
        given = structure["sections"]
        sections = [[float(a), float(b), sec[2]] for a, b, sec in
                    zip(moved([x[0] for x in given]), moved([x[1] for x in given]), given, strict=True)]
        vad = moved(vad_segments).reshape(-1, 2).tolist() if vad_segments else []
        words: list[list[Any]] | None = None
        if has_result(row, "lyrics"):  # full profile: word timings move with the song's op like every other label
            from songcorpus.transforms.stages.lyrics import lyrics_detail

            found = lyrics_detail(self.store, lyrics_result(row))[1]
            times = moved([t for w in found for t in (w["start"], w["end"])]).reshape(-1, 2)
            words = [[float(a), float(b), w["word"]] for (a, b), w in zip(times, found, strict=True)]
        tempo = structure.get("tempo_bpm")
        cfg = self.config.windows
        planned = plan_windows(duration, beats.tolist(), [s[0] for s in sections], vad, cfg)
        trusted = {w.index: trust.window(w.start_s * speed, w.end_s * speed) for w in planned}
        windows = [w for w in planned if cfg.min_f0_trust <= 0 or trusted[w.index] is None
                   or trusted[w.index] >= cfg.min_f0_trust]  # keys keep the planned index either way
        tag = aug.tag if aug else None
        keys = [window_key(track_id, w.index, tag) for w in windows]
        kept, refs = choose_references(windows, keys, cfg.require_reference)
        key_of = {w.index: k for w, k in zip(windows, keys, strict=True)}
        by_index = {w.index: w for w in windows}
        out = []
        for w in kept:
            key = key_of[w.index]
            ref = refs[w.index]
            labels = {"vad_segments": clip_segments(vad, w.start_s, w.end_s),
                      "beats": clip_times(beats, w.start_s, w.end_s),
                      "downbeats": clip_times(downbeats, w.start_s, w.end_s),
                      "sections": clip_sections(sections, w.start_s, w.end_s),
                      "tempo_bpm": None if tempo is None else float(round(float(tempo) * speed, 3))}
            labels["f0_trust"] = trusted[w.index]
            if words is not None:
                labels["lyrics_words"] = clip_words(words, w.start_s, w.end_s)
            out.append(self._sample(row, key, None if ref is None else key_of[ref], w, aug, audio, f0, rate,
                                    codec, codebook, labels, None if ref is None else by_index[ref]))
        return out, len(planned), len(planned) - len(windows)

    def json_schema(self) -> pa.Schema:
        """The declared Arrow schema every sample JSON of this stage conforms to (schemas/sample.py)."""
        return sample_json_schema(full_profile=False)

    def extra_fields(self, row: Row, key: str, w: Window, ref_window: Window | None, aug: SongAugmentation | None,
                     audio: dict[str, np.ndarray], cut: dict[str, np.ndarray],
                     rate: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """More per-sample arrays (member name without ``.npy``) and JSON keys; the full profile's neural
        codecs, content units and speaker embedding come in here (transforms/stages/samples_full.py). Checked
        for alignment by whoever makes them, before anything is stored."""
        return {}, {}

    def _cut(self, x: np.ndarray, w: Window, aug: SongAugmentation | None, rate: int) -> np.ndarray:
        """The window of one signal, after the song's op; exactly round(duration * rate) samples."""
        n = round(w.duration_s * rate)
        if aug is None:
            s0 = round(w.start_s * rate)
            return fit_length(x[s0:s0 + n], n)
        speed = aug.speed
        edge = round(EDGE_S * rate)
        s0 = round(w.start_s * speed * rate)
        lo = max(0, s0 - edge)
        span = x[lo:s0 + round(w.duration_s * speed * rate) + edge]
        y = aug.audio(span, rate)
        head = round((s0 - lo) / speed)
        return fit_length(y[head:], n)

    def _cuts(self, audio: dict[str, np.ndarray], w: Window, aug: SongAugmentation | None,
              rate: int) -> dict[str, np.ndarray]:
        """The window of the mix and of each stem. After a song op the mix is the sum of the augmented stems (plus
        the augmented residual, mix - stems, where it is above :data:`RESIDUAL_FLOOR_DB`): the sample's mix stays
        the sum of its parts, as without the op, and the stretcher runs on two signals instead of three."""
        if aug is None:
            return {name: self._cut(audio[name], w, None, rate) for name in ("mix", *STEMS)}
        cut = {stem: self._cut(audio[stem], w, aug, rate) for stem in STEMS}
        mix = cut["vocals"] + cut["accompaniment"]
        if "residual" in audio:
            mix += self._cut(audio["residual"], w, aug, rate)
        return {"mix": mix, **cut}

    def _f0(self, f0: np.ndarray, w: Window, aug: SongAugmentation | None) -> np.ndarray:
        n = frames_for(w.duration_s, F0_RATE_HZ)
        if aug is None:
            i0 = round(w.start_s * F0_RATE_HZ)
            return fit_length(f0[i0:i0 + n], n).astype(np.float32)
        if aug.kind == "pitch":
            i0 = round(w.start_s * F0_RATE_HZ)
            return shift_f0(fit_length(f0[i0:i0 + n], n), aug.semitones).astype(np.float32)
        i0 = round(w.start_s * aug.speed * F0_RATE_HZ)
        n_src = frames_for(w.duration_s * aug.speed, F0_RATE_HZ)
        return stretch_frames(fit_length(f0[i0:i0 + n_src], n_src), aug.speed, n).astype(np.float32)

    def _sample(self, row: Row, key: str, ref_key: str | None, w: Window, aug: SongAugmentation | None,
                audio: dict[str, np.ndarray], f0: np.ndarray, rate: int, codec: EmbeddedCodec, codebook: np.ndarray,
                labels: dict[str, Any], ref_window: Window | None = None) -> dict[str, Any]:
        acfg = self.config.augment
        cut = self._cuts(audio, w, aug, rate)
        eq = plan_eq(key, acfg)
        if eq is not None:  # EQ on the accompaniment only; the mix keeps vocals + EQ'd accompaniment + residual
            new_acc = apply_eq(cut["accompaniment"], rate, eq, acfg)
            rest = cut["mix"] - cut["accompaniment"]
            gain = gain_under_full_scale(rest, new_acc)
            if gain < 1.0:  # the rebuilt mix would clip when stored: the accompaniment is lowered, never the vocals
                new_acc = (new_acc.astype(np.float64) * gain).astype(np.float32)
            cut["mix"] = rest + new_acc
            cut["accompaniment"] = new_acc
        f0_w = self._f0(f0, w, aug)
        latents = {s: codec.encode_latents(cut[s]) for s in STEMS}
        if codec.token_rate == codec.latent_rate:
            tokens = {s: encode_tokens(latents[s], codebook) for s in STEMS}
        else:
            tokens = {s: encode_tokens(codec.encode_latents(cut[s], rate=codec.token_rate), codebook) for s in STEMS}
        check_alignment(key, w.duration_s, rate, cut, f0_w, latents, tokens, codec.latent_rate, codec.token_rate, labels)

        members: dict[str, str] = {}
        for name in ("mix", *STEMS):
            members[f"{name}.flac"] = self.store.put_blob(flac_bytes(cut[name], rate), ".flac")
        members["f0.npy"] = self.store.put_array(f0_w)
        for s in STEMS:
            members[f"{s}.embedded_latents.npy"] = self.store.put_array(latents[s].astype(np.float32))
            members[f"{s}.embedded_tokens.npy"] = self.store.put_array(tokens[s].astype(np.int32))
        extra_arrays, extra_meta = self.extra_fields(row, key, w, ref_window, aug, audio, cut, rate)
        for name, array in sorted(extra_arrays.items()):
            members[f"{name}.npy"] = self.store.put_array(array)
        track = track_of(row)
        start_in_source = round(w.start_s * (aug.speed if aug else 1.0), 6)
        span = (start_in_source, round(start_in_source + w.duration_s * (aug.speed if aug else 1.0), 6))
        augmentation = None  # the catalog's compact form (windows.augmentation_json): null when nothing was applied
        if aug is not None or eq is not None:
            augmentation = {"song_op": aug.to_dict() if aug else None, "eq": eq.to_dict() if eq else None,
                            "loudness": ({"target_rms_db": acfg.target_rms_db, "peak_db": acfg.peak_db} if eq else None),
                            "source_span_s": list(span)}
        metadata = {k: (None if track["metadata"].get(k) is None else str(track["metadata"][k]))
                    for k in METADATA_FIELDS if k != "split"}
        caption_from = caption_method(metadata)
        if has_result(row, "caption"):  # the caption stage's: the source's own, else generated (this copy's tempo, key)
            metadata["caption"], caption_from = sample_caption(caption_result(row), aug.speed if aug else 1.0,
                                                               aug.semitones if aug else 0.0)
        lineage = {**row.get("lineage", {}), "samples": self.lineage()}
        meta = {
            "spec_version": SAMPLE_SPEC_VERSION,
            "key": key,
            "track_id": track_id_of(row),
            "source": track["source"],
            "split": row["split"],
            "start_s": start_in_source,
            "duration_s": w.duration_s,
            "sample_rate": rate,
            "channels": 1,
            "audio_sha256": audio_sha256(row),
            "reference_key": ref_key,
            "augmentation": augmentation_record(aug, eq, acfg, span),
            "labels": labels,
            "metadata": metadata,
            "caption_method": caption_from,
            "scores": {k: row["scores"].get(k) for k in SCORE_COLUMNS},
            "lineage": [{"stage": name, "version": str(entry["version"]), "model": entry.get("model"),
                         "checksum": entry.get("checksum"), "config_hash": entry["config_hash"]}
                        for name, entry in sorted(lineage.items())],
            "embedded_codec": {**codec.lineage(), "codebook_size": int(codebook.shape[0]),
                               "codebook_sha256": row["codebook"]["sha256"]},
            "stems_method": result_field(row, "stems", "stems_method"),
            "fields": sorted(["json", *members]),
            **extra_meta,
        }
        meta = conform_sample_json(meta, self.json_schema())  # a sample that breaks the schema fails its song
        members["json"] = self.store.put_blob(canonical_json(meta).encode("utf-8"), ".json")
        return {"key": key, "start_s": start_in_source, "duration_s": w.duration_s, "reference_key": ref_key,
                "augmentation": augmentation, "f0_trust": labels["f0_trust"],
                "members": dict(sorted(members.items()))}
