"""LyricsStage: what is sung, with word timings, from the vocal stem (full profile, faster-whisper).

Reads: the vocal stem (``results.stems.vocals_file``), mixed to mono and resampled to 16 kHz (soxr HQ);
``results.vad.vad_segments`` when the VAD stage ran (segments over mostly non-vocal audio are dropped);
``track.lyrics`` when the source gives lyrics (then the transcript is scored against them).
Provides: lyrics_text (the kept segments' text), lyrics_language, lyrics_language_probability,
lyrics_segments (start, end, text, avg_logprob, no_speech_prob, compression_ratio), lyrics_words
(start, end, word, probability): inline when small, else both None and the pair stored as one JSON
blob named by lyrics_detail_file (:func:`lyrics_detail` reads either way); lyrics_method (model,
compute type, device); lyrics_flags (sorted reason codes: ``repetition_loop`` and ``outside_vocals``
for dropped segments, ``low_language_probability``); lyrics_cer (character error rate of the
normalised transcript against the normalised source lyrics, via jiwer; None without source lyrics).
Needs: a store model of kind ``ct2-whisper`` (``lyrics.model``; the CTranslate2 layout: model.bin,
config.json, vocabulary.*, tokenizer.json), loaded with ``faster_whisper.WhisperModel`` from the
verified store folder (no download: the folder must hold tokenizer.json, else faster-whisper would
fetch one). int8 on CPU (one thread per worker), float16 on CUDA, unless ``lyrics.compute_type`` says.
Decoding is deterministic: temperature 0 only, beam search, and no conditioning on the previous
window's text (on singing that conditioning feeds repetition loops).
Fails when: the model is missing, altered or of another kind (preflight, naming the model and the
``songcorpus models`` command); the stem is unreadable (failed). A stem the stems stage found silent
(``has_vocals`` false: instrumental) gives empty text, no segments, and no error.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.row import Row, canonical_json, has_vocals, optional_field, track_of, vocals_file
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.stages.stems import vocal_stem_identity

MODEL_KIND = "ct2-whisper"
WHISPER_RATE = 16000
INLINE_DETAIL_BYTES = 32768  # segments + words above this go to the artefact store as one JSON blob
MIN_LOOP_UNITS = 6  # shorter segments are never called loops (too short to tell a loop from a refrain)
MIN_AUDIO_S = 0.1


def source_lyrics_of(row: Row) -> str | None:
    """The source's lyrics: the track's metadata (TrackRecord), or a plain ``lyrics`` key (hand-built rows)."""
    track = track_of(row)
    return (track.get("metadata") or {}).get("lyrics") or track.get("lyrics")


def normalise_text(text: str) -> str:
    """Lowercase, apostrophes removed (``it's`` -> ``its``), other punctuation and symbols to spaces,
    whitespace collapsed: the form both sides of the CER are compared in."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"['\u2018\u2019\u02bc`]", "", text)
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(text.split())


def character_error_rate(hypothesis: str, reference: str | None) -> float | None:
    """CER (jiwer) of the normalised transcript against normalised source lyrics; None without lyrics."""
    ref = normalise_text(reference or "")
    if not ref:
        return None
    hyp = normalise_text(hypothesis)
    if not hyp:
        return 1.0  # nothing transcribed: every reference character is deleted
    import jiwer

    return round(float(jiwer.cer(ref, hyp)), 4)


def repetition_share(text: str) -> float:
    """Share of a segment's units (words; characters for text without spaces) that lie inside a bigram
    repeating an earlier bigram: 0 for ordinary text, ~1 for Whisper's loops ("la la la la ...").

    A refrain sung twice ("come on and hear come on and hear") scores 0.5; loops score higher, since a
    decoder stuck in a loop repeats until the window ends. Segments under ``MIN_LOOP_UNITS`` score 0."""
    norm = normalise_text(text)
    units: list[str] = norm.split()
    if len(units) < 3 and len(norm.replace(" ", "")) >= 2 * MIN_LOOP_UNITS:
        units = list(norm.replace(" ", ""))  # no-space scripts and one-token loops ("aaaaaaaa...")
    if len(units) < MIN_LOOP_UNITS:
        return 0.0
    seen: set[tuple[str, str]] = set()
    repeated = np.zeros(len(units), dtype=bool)
    for i in range(len(units) - 1):
        gram = (units[i], units[i + 1])
        if gram in seen:
            repeated[i:i + 2] = True
        seen.add(gram)
    return round(float(repeated.sum()) / len(units), 4)


def vocal_share(start: float, end: float, vad_segments: list[list[float]] | list[tuple[float, float]]) -> float:
    """Share of [start, end] inside the VAD's vocal segments (a zero-length span: 1 if its point is inside)."""
    if end <= start:
        return 1.0 if any(s <= start <= e for s, e in vad_segments) else 0.0
    inside = sum(max(0.0, min(end, e) - max(start, s)) for s, e in vad_segments)
    return min(1.0, inside / (end - start))


def guard_segments(segments: list[dict[str, Any]], vad_segments: list[list[float]] | None, max_repetition: float,
                   min_vocal_activity: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Drop repetition loops and segments over mostly non-vocal audio; returns the kept segments (in
    order) and the sorted reason codes of what was dropped."""
    kept, flags = [], set()
    for seg in segments:
        if repetition_share(seg["text"]) > max_repetition:
            flags.add("repetition_loop")
        elif vad_segments is not None and vocal_share(seg["start"], seg["end"], vad_segments) < min_vocal_activity:
            flags.add("outside_vocals")
        else:
            kept.append(seg)
    return kept, sorted(flags)


def lyrics_detail(store: ArtefactStore, result: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """(segments, words) of a lyrics result, inline or from its JSON blob."""
    if result.get("lyrics_detail_file"):
        detail = json.loads((store.path(result["lyrics_detail_file"])).read_text())
        return detail["segments"], detail["words"]
    return result["lyrics_segments"], result["lyrics_words"]


def resolve_compute(device_setting: str, compute_type: str) -> tuple[str, int, str]:
    """(ctranslate2 device, device index, compute type): ``auto`` is int8 on CPU, float16 on CUDA."""
    from songcorpus.transforms.models.accelerator import pick_device

    device = pick_device(device_setting)
    kind = "cuda" if device.type == "cuda" else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if kind == "cuda" else "int8"
    return kind, device.index or 0, compute_type


def load_whisper(folder: Path, device_setting: str = "cpu", compute_type: str = "auto", cpu_threads: int = 1) -> Any:
    """faster-whisper on a verified CTranslate2 folder, nothing fetched: a folder without tokenizer.json is
    refused here, since faster-whisper would download a tokenizer for it."""
    from faster_whisper import WhisperModel

    if not (folder / "tokenizer.json").is_file():
        raise ModelError(f"{folder} has no tokenizer.json; a ct2-whisper model folder must hold one "
                         f"(register the full CTranslate2 layout: songcorpus models add NAME DIR --kind {MODEL_KIND})")
    device, index, compute = resolve_compute(device_setting, compute_type)
    return WhisperModel(str(folder), device=device, device_index=index, compute_type=compute,
                        cpu_threads=cpu_threads, local_files_only=True)


def to_whisper_rate(x: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (soxr HQ), from (frames,) or (frames, channels)."""
    import soxr

    mono = x.mean(axis=1) if x.ndim == 2 else x
    if rate != WHISPER_RATE:
        mono = soxr.resample(mono, rate, WHISPER_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def transcribe(model: Any, audio_16k: np.ndarray, language: str | None, beam_size: int,
               **options: Any) -> tuple[list[dict[str, Any]], str | None, float | None]:
    """Segments (each with its words) of one 16 kHz clip, the language and its probability; times are
    clipped to the clip. ``options`` go to ``WhisperModel.transcribe`` (benchmarks bound max_new_tokens)."""
    duration = audio_16k.size / WHISPER_RATE
    if duration < MIN_AUDIO_S:
        return [], None, None
    segments, info = model.transcribe(audio_16k, language=language, beam_size=beam_size, temperature=0.0,
                                      condition_on_previous_text=False, word_timestamps=True, vad_filter=False,
                                      **options)

    def t(x: float) -> float:
        return round(min(max(float(x), 0.0), duration), 3)

    def score(x: float) -> float | None:
        return round(float(x), 4) if np.isfinite(x) else None  # results are strict JSON (no inf/nan)

    out = []
    for seg in segments:
        words = [{"start": t(w.start), "end": t(w.end), "word": w.word.strip(), "probability": score(w.probability)}
                 for w in (seg.words or [])]
        out.append({"start": t(seg.start), "end": t(seg.end), "text": seg.text.strip(),
                    "avg_logprob": score(seg.avg_logprob), "no_speech_prob": score(seg.no_speech_prob),
                    "compression_ratio": score(seg.compression_ratio), "words": words})
    return out, info.language, round(float(info.language_probability), 4)


class LyricsStage(Stage):
    name = "lyrics"
    version = "1"
    requires = ("vocals_file", "vocals_sha256", "has_vocals", "track.metadata.lyrics")  # and vad_segments when present
    provides = ("lyrics_text", "lyrics_language", "lyrics_language_probability", "lyrics_segments", "lyrics_words",
                "lyrics_detail_file", "lyrics_method", "lyrics_flags", "lyrics_cer")
    resources = Resources(num_cpus=1.0, memory_mb=2048)
    uses_gpu = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._runtime = "faster-whisper"  # + compute type and device once loaded

    def model_name(self) -> str:
        return self.config.lyrics.model

    def model_kind(self) -> str:
        return MODEL_KIND

    def config_digest(self) -> str:
        return self.config.lyrics.digest() + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        """The vocal stem, the VAD segments the guard reads, and the source lyrics the CER reads."""
        vad = optional_field(row, "vad", "vad_segments")
        parts = [vocal_stem_identity(row), canonical_json(vad), source_lyrics_of(row) or ""]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def setup(self) -> None:
        _, folder = self.store_model(self.model_name(), (MODEL_KIND,))
        cfg = self.config.lyrics
        self._model = load_whisper(folder, self.config.device.name, cfg.compute_type, cpu_threads=1)
        device, _, compute = resolve_compute(self.config.device.name, cfg.compute_type)
        self._runtime = f"faster-whisper/{compute}/{device}"

    def process_one(self, row: Row) -> dict[str, Any]:
        cfg = self.config.lyrics
        source_lyrics = source_lyrics_of(row)
        if not has_vocals(row):
            return self._result([], None, None, [], source_lyrics)
        if self._model is None:
            self.setup()
        x, rate = read_standard_audio(self.store.path(vocals_file(row)))
        segments, language, probability = transcribe(self._model, to_whisper_rate(x, rate), cfg.language, cfg.beam_size)
        vad = optional_field(row, "vad", "vad_segments")
        kept, flags = guard_segments(segments, vad, cfg.max_repetition, cfg.min_vocal_activity)
        if probability is not None and probability < cfg.min_language_probability:
            flags = sorted({*flags, "low_language_probability"})
        return self._result(kept, language, probability, flags, source_lyrics)

    def _result(self, segments: list[dict[str, Any]], language: str | None, probability: float | None,
                flags: list[str], source_lyrics: str | None) -> dict[str, Any]:
        words = [w for seg in segments for w in seg["words"]]
        segs = [{k: v for k, v in seg.items() if k != "words"} for seg in segments]
        text = " ".join(s["text"] for s in segs if s["text"])
        blob = canonical_json({"segments": segs, "words": words}).encode()
        detail_file = self.store.put_blob(blob, ".json") if len(blob) > INLINE_DETAIL_BYTES else None
        return {"lyrics_text": text, "lyrics_language": language, "lyrics_language_probability": probability,
                "lyrics_segments": None if detail_file else segs, "lyrics_words": None if detail_file else words,
                "lyrics_detail_file": detail_file, "lyrics_method": f"{self._runtime}/{self.model_id()}", "lyrics_flags": flags,
                "lyrics_cer": character_error_rate(text, source_lyrics)}


def random_ct2_whisper(out_dir: Path, tokenizer_dir: Path, *, d_model: int = 64, layers: int = 2, heads: int = 2,
                       ffn: int | None = None, n_mels: int = 80, seed: int = 0, quantization: str = "float16",
                       half_init: bool = False) -> Path:
    """A randomly initialised Whisper of the given size in the published CTranslate2 layout (model.bin,
    config.json, vocabulary.txt, tokenizer.json; preprocessor_config.json for 128 mel bins), for tests and
    benchmarks where real weights cannot be fetched. ``tokenizer_dir`` holds an English-only Whisper
    tokenizer.json and config.json (e.g. the published tiny.en folder); the model's vocabulary matches it.
    Built with transformers (seeded init, ``save_pretrained``) and ctranslate2's TransformersConverter;
    ``half_init`` builds in float16 (half the memory, for real-size architectures)."""
    import shutil
    import tempfile

    import ctranslate2
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    real = json.loads((tokenizer_dir / "config.json").read_text())
    vocab = (tokenizer_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    added = {t["id"]: t["content"] for t in json.loads((tokenizer_dir / "tokenizer.json").read_text())["added_tokens"]}
    eot, sot = vocab.index("<|endoftext|>"), vocab.index("<|startoftranscript|>")
    config = WhisperConfig(vocab_size=len(vocab), num_mel_bins=n_mels, d_model=d_model, encoder_layers=layers,
                           decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                           encoder_ffn_dim=ffn or 4 * d_model, decoder_ffn_dim=ffn or 4 * d_model,
                           decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16 if half_init else torch.float32)
    try:
        model = WhisperForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, suppress_tokens=real["suppress_ids"],
        begin_suppress_tokens=real["suppress_ids_begin"], lang_to_id={added[i]: i for i in real["lang_ids"]},
        alignment_heads=[[layer, h] for layer in range(layers // 2, layers) for h in range(heads)])
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp)
        model.save_pretrained(hf)
        del model  # the converter loads its own copy: do not hold two
        shutil.copyfile(tokenizer_dir / "tokenizer.json", hf / "tokenizer.json")
        (hf / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "WhisperTokenizer"}))
        ctranslate2.converters.TransformersConverter(str(hf), copy_files=["tokenizer.json"]).convert(
            str(out_dir), quantization=quantization, force=True)
    tokens = json.loads((out_dir / "vocabulary.json").read_text())
    (out_dir / "vocabulary.json").unlink()
    (out_dir / "vocabulary.txt").write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")  # published layout
    if n_mels != 80:
        (out_dir / "preprocessor_config.json").write_text(json.dumps({"feature_size": n_mels}))
    return out_dir
