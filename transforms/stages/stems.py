"""StemStage: the vocal and accompaniment stems every later stage and every sample is cut from.

Reads: the standardised mix (``results.ingest.audio_file``) and, when the source names them, its stem
files (``track.vocals`` / ``track.accompaniment``; a source that gives only one stem gets the other as
mix minus the given one).
Writes: both stems as standardised 16-bit FLAC in the artefact store, exactly as long as the mix.
Provides: vocals_file, accompaniment_file, vocals_sha256, accompaniment_sha256, stems_method
(``source`` = used as given, ``repet-sim``, or ``demucs:<model>``), has_vocals (the vocal stem is not silent),
vocal_energy_ratio (vocal energy / mix energy), stem_residual_db (energy of mix - (vocals +
accompaniment) relative to the mix; -inf is stored as None), and, when the source has stems and
``stems.evaluate_separator`` is set, separator_sdr_vocals / separator_sdr_accompaniment /
separator_si_sdr_vocals: how the lite separator does against those stems (BSS Eval SDR and SI-SDR),
so a better separator later is a measured improvement; ``stems.evaluate_separator_share`` scores a fixed sample
of them instead (the others' scores are None), since scoring is most of the stage's cost on a song with stems.
Needs: librosa (REPET-SIM: Rafii & Pardo 2012, nearest-neighbour median filtering of the magnitude
spectrogram, soft masks) and scipy; no model weights. With ``stems.separator: demucs`` (the full
profile) the separator is ``separation.model`` from the model store (kind ``htdemucs``, loaded once per
worker by transforms/models/demucs_separator.py; accompaniment = the sum of its non-vocal sources, so
stem_residual_db measures what the model leaves out of the mix), on CUDA when ``device`` allows.
Fails when: the Demucs model is missing, altered or of another kind (preflight/setup, naming it and
the ``songcorpus models`` command); a given stem is unreadable (failed, naming the stem) or its duration differs from the mix by
more than ``STEM_LENGTH_TOLERANCE_S`` (failed: the stems do not belong to this mix). Shorter differences
(encoder padding) are padded or trimmed to the mix and recorded in ``stem_length_fixed_frames``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.io.atomic import sha256_file
from songcorpus.io.audio import DecodeError, from_int16, read_standard_audio, share_written_audio, to_int16
from songcorpus.io.storage import is_url, sha256_of
from songcorpus.schemas.failures import is_machine_error
from songcorpus.schemas.row import Row, audio_file, audio_sha256, has_vocals, track_of, vocals_sha256
from songcorpus.transforms.base import Rejection, Resources, Stage
from songcorpus.transforms.dsp.neighbour_median import neighbour_median
from songcorpus.transforms.dsp.separation_scores import scale_invariant_sdr, signal_distortion_ratio
from songcorpus.transforms.dsp.soft_mask import soft_mask
from songcorpus.transforms.stages.ingest import IngestStage

STEM_LENGTH_TOLERANCE_S = 0.5
HAS_VOCALS_MIN_RATIO = 1e-3  # vocal energy under -30 dB of the mix: no vocals (instrumental)
SIM_MELS = 64  # frame similarity is computed on a compact log-mel view of the spectrogram


def similar_frames(feat: np.ndarray, k: int, width: int, chunk: int = 1024) -> np.ndarray:
    """Indices (T, k) of each frame's ``k`` most cosine-similar frames at least ``width`` frames away.

    librosa's generic ``recurrence_matrix`` does the same but spends most of its time clearing the
    diagonal band in a sparse LIL matrix; this is row-chunked dense algebra, memory O(chunk * T).
    """
    unit = feat / np.maximum(np.linalg.norm(feat, axis=0, keepdims=True), 1e-12)
    n = unit.shape[1]
    out = np.empty((n, k), dtype=np.int64)
    cols = np.arange(n)
    for lo in range(0, n, chunk):
        rows = np.arange(lo, min(n, lo + chunk))
        sim = unit[:, rows].T @ unit
        sim[np.abs(rows[:, None] - cols[None, :]) < width] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.lexsort((top, -np.take_along_axis(sim, top, axis=1)), axis=1)  # ties broken by index
        out[rows] = np.take_along_axis(top, order, axis=1)
    return out


LITE_SEPARATOR_METHOD = "repet-sim"  # stems_method of the lite separator's estimate (what f0 reads the mix past)


def repet_sim(mix: np.ndarray, rate: int, n_fft: int, hop: int, width_s: float, n_neighbours: int,
              margin: float) -> np.ndarray:
    """Vocal (foreground) estimate of a mono mix by REPET-SIM (Rafii & Pardo 2012).

    The repeating background of each frame is the median magnitude of its most similar frames (cosine
    similarity of log-mel frames at least ``width_s`` apart); a soft mask with ``margin`` keeps what
    stands above it, as in the librosa reference example. Returns the vocal waveform, same length.
    """
    import librosa

    if mix.size < n_fft or not np.any(mix):
        return np.zeros_like(mix)
    spec = librosa.stft(mix, n_fft=n_fft, hop_length=hop)
    mag = np.abs(spec)
    n_frames = mag.shape[1]
    width = max(1, int(round(width_s * rate / hop)))
    if n_frames < 2 * width + n_neighbours:
        return np.zeros_like(mix)
    feat = librosa.power_to_db(librosa.feature.melspectrogram(S=mag**2, sr=rate, n_mels=SIM_MELS) + 1e-10)
    background = np.minimum(mag, neighbour_median(mag, similar_frames(feat, n_neighbours, width)))
    mask = soft_mask(mag - background, margin * background)  # librosa.util.softmask(..., power=2), same bits
    return librosa.istft(mask * spec, hop_length=hop, length=mix.size).astype(np.float32)


def vocal_stem_identity(row: Row) -> str:
    """Content identity of a row's vocal stem, for the stages that read it (VAD, f0): a stem the stems
    stage found silent is marked, since those stages skip the model on it."""
    return vocals_sha256(row) + ("" if has_vocals(row) else ":no-vocals")


def in_share(sha256_hex: str, share: float) -> bool:
    """Whether content with this sha256 falls in the first ``share`` of the hash space: a sample of the corpus that
    is the same on every run and every machine, and grows by inclusion as ``share`` grows."""
    return share >= 1.0 or int(sha256_hex[:16], 16) < share * 16**16


def energy_db(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def bss_scores(ref_vocals: np.ndarray, ref_acc: np.ndarray, est_vocals: np.ndarray, est_acc: np.ndarray,
               rate: int) -> dict[str, float | None]:
    """SDR per source (BSS Eval with 512-tap distortion filters) and vocal SI-SDR, at 16 kHz to bound the cost
    (transforms/dsp/separation_scores.py; the same numbers as torchmetrics' and mir_eval's bss_eval_sources).
    None for all three when a reference or an estimate is silent (no ratio to take)."""
    import soxr

    def at16k(x: np.ndarray) -> np.ndarray:
        return soxr.resample(x.astype(np.float64), rate, 16000, quality="HQ") if rate != 16000 else x.astype(np.float64)

    ref = [at16k(ref_vocals), at16k(ref_acc)]
    est = [at16k(est_vocals), at16k(est_acc)]
    if not all(np.any(x != 0) for x in (*ref, *est)):
        return {"separator_sdr_vocals": None, "separator_sdr_accompaniment": None, "separator_si_sdr_vocals": None}
    sdr = [signal_distortion_ratio(est[i], ref[i]) for i in range(2)]
    si = scale_invariant_sdr(est[0], ref[0])
    return {"separator_sdr_vocals": round(sdr[0], 4), "separator_sdr_accompaniment": round(sdr[1], 4),
            "separator_si_sdr_vocals": round(si, 4)}


class StemStage(Stage):
    name = "stems"
    version = "1"
    requires = ("audio_file", "track.vocals", "track.accompaniment")
    provides = ("vocals_file", "accompaniment_file", "vocals_sha256", "accompaniment_sha256", "stems_method",
                "has_vocals", "vocal_energy_ratio", "stem_residual_db", "stem_length_fixed_frames",
                "separator_sdr_vocals", "separator_sdr_accompaniment", "separator_si_sdr_vocals")
    resources = Resources(num_cpus=1.0, memory_mb=2048)
    batch_size = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._uses_demucs():  # a model per long-lived worker, on the GPU when there is one
            self.uses_gpu = True
            self.resources = Resources(num_cpus=1.0, memory_mb=4096)

    def _uses_demucs(self) -> bool:
        return self.config.stems.separator == "demucs"

    def config_digest(self) -> str:
        digest = self.config.stems.digest() + self.config.ingest.digest()
        if self._uses_demucs():  # batch size and device only change speed, not the stems
            digest += self.config.separation.model_copy(update={"batch_size": 1}).digest()
        return digest

    def model_name(self) -> str | None:
        return self.config.separation.model if self._uses_demucs() else None

    def model_kind(self) -> str | None:
        return "htdemucs" if self._uses_demucs() else None

    def model_id(self) -> str | None:
        return super().model_id() if self._uses_demucs() else f"{self.config.stems.separator}@librosa"

    def setup(self) -> None:
        if self._uses_demucs():
            from songcorpus.transforms.models.demucs_separator import DemucsSeparator

            self._demucs = DemucsSeparator.from_folder(self.model_path(), self.config, self.config.separation.model)

    def method(self) -> str:
        """What ``stems_method`` records for separated tracks."""
        return f"demucs:{self.config.separation.model}" if self._uses_demucs() else self.config.stems.separator

    def input_identity(self, row: Row) -> str:
        """The mix plus the given stems' bytes: a changed stem file changes the result."""
        parts = [audio_sha256(row)]
        for which in ("vocals", "accompaniment"):
            given = track_of(row).get(which)
            if given:
                try:
                    digest = sha256_of(given)[0] if is_url(given) else sha256_file(Path(given))[0]
                    parts.append(f"{which}:{digest}")
                except OSError as exc:
                    if is_url(given) and is_machine_error(exc):  # the network, not this stem: the job stops
                        raise
                    raise DecodeError(f"{which} stem unreadable: {exc.strerror or exc} ({given})", "stem_unreadable") from None
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def process_one(self, row: Row) -> dict[str, Any]:
        x, rate = read_standard_audio(self.store.path(audio_file(row)))
        mix = x.mean(axis=1)
        track = track_of(row)
        given = {w: track.get(w) for w in ("vocals", "accompaniment") if track.get(w)}
        cfg = self.config.stems
        out: dict[str, Any] = {"stem_length_fixed_frames": 0, "separator_sdr_vocals": None,
                               "separator_sdr_accompaniment": None, "separator_si_sdr_vocals": None}
        if given:
            stems = {w: self._load_given(w, p, mix.size, out) for w, p in given.items()}
            vocals = stems.get("vocals", mix - stems.get("accompaniment", 0.0))
            acc = stems.get("accompaniment", mix - vocals)
            method = "source"
            if cfg.evaluate_separator and "vocals" in given and "accompaniment" in given \
                    and in_share(audio_sha256(row), cfg.evaluate_separator_share):
                est_v, est_a = self._separate(x, rate)
                out.update(bss_scores(vocals, acc, est_v, est_a, rate))
        else:
            vocals, acc = self._separate(x, rate)
            method = self.method()
        residual = mix - (vocals + acc)
        mix_db = energy_db(mix)
        res_db = energy_db(residual) - mix_db if np.any(residual) else None
        v_sha, v_file = self._put(vocals, rate)
        a_sha, a_file = self._put(acc, rate)
        out.update({
            "vocals_file": v_file, "accompaniment_file": a_file, "vocals_sha256": v_sha, "accompaniment_sha256": a_sha,
            "stems_method": method,
            "has_vocals": bool(np.any(mix) and energy_db(vocals) - mix_db > 10 * np.log10(HAS_VOCALS_MIN_RATIO)),
            "vocal_energy_ratio": round(float(10 ** ((energy_db(vocals) - mix_db) / 10)) if np.any(mix) else 0.0, 6),
            "stem_residual_db": None if res_db is None else round(res_db, 4),
        })
        return out

    def _separate(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """(vocals, accompaniment), mono, from the standardised mix ``x`` (frames, channels)."""
        mix = x.mean(axis=1)
        if self._uses_demucs():
            if not hasattr(self, "_demucs"):
                self.setup()
            vocals, acc = self._demucs.separate(x, rate)
            return vocals.mean(axis=1), acc.mean(axis=1)
        cfg = self.config.stems
        vocals = repet_sim(mix, rate, cfg.n_fft, cfg.hop_length, cfg.similarity_width_s, cfg.n_neighbours, cfg.margin)
        return vocals, mix - vocals

    def _load_given(self, which: str, path: str, n_mix: int, out: dict[str, Any]) -> np.ndarray:
        """Decode and standardise a given stem exactly like the mix, then fit it to the mix's length."""
        ingest = IngestStage(self.config, self.store)
        ingest.measure_loudness = False  # only the standardised samples are used: BS.1770 was a sixth of the stage here
        ingest.keep_file = False  # and only in memory: the stem kept is the mono one this stage writes
        try:
            std = ingest.process_one({"track": {"path": path}})
        except (DecodeError, Rejection) as exc:
            raise DecodeError(f"{which} stem {path}: {exc}", "stem_unreadable") from None
        rate = self.config.ingest.sample_rate
        y = from_int16(std["pcm"]).mean(axis=1)  # as read_standard_audio would read it back from a FLAC
        diff = y.size - n_mix
        if abs(diff) > STEM_LENGTH_TOLERANCE_S * rate:
            raise DecodeError(f"{which} stem {path} is {y.size / rate:.2f} s but the mix is {n_mix / rate:.2f} s "
                              f"(more than {STEM_LENGTH_TOLERANCE_S} s apart): it does not belong to this mix",
                              "stem_length_mismatch")
        out["stem_length_fixed_frames"] = max(out["stem_length_fixed_frames"], abs(diff))
        return np.pad(y, (0, max(0, -diff)))[:n_mix]

    def _put(self, y: np.ndarray, rate: int) -> tuple[str, str]:
        """Store a kept stem; the vad, f0, key and samples stages read it next, so its samples are handed to them
        (within the row's shared decodes) instead of decoded from the FLAC again."""
        pcm = to_int16(y)[:, None]
        sha = hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest()
        rel = self.store.put_pcm16(pcm, rate, sha)
        share_written_audio(self.store.path(rel), pcm, rate)
        return sha, rel
