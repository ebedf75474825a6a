"""Seeded, label-preserving augmentation (LaDA-Band appendix A.2).

Two kinds, both reproducible from the config seed and a key, so shards stay byte-identical:
- per song (``plan_song_augmentation``): ``fraction`` of songs get one augmented copy, with exactly
  one op drawn uniformly from the union of ``speeds`` (time stretch, pitch kept) and ``semitones``
  (pitch shift, tempo kept). The same op applies to the mix and every stem, and the label transforms
  here keep every label true: a stretch divides times by the factor and resamples frame tracks; a
  pitch shift multiplies voiced f0 (0 = unvoiced stays 0).
- per sample (``plan_eq``): with ``eq_probability``, the frequency-balance EQ (low shelf
  -> peaking EQ -> high shelf biquads as torchaudio's bass / equalizer / treble_biquad define them, run with
  scipy; parameters uniform in the config ranges), then
  loudness normalisation to ``target_rms_db`` with the peak capped at ``peak_db``. It is applied by
  the caller to accompaniment and reference only; vocals are never equalised. Where the mix rebuilt from an EQ'd
  accompaniment would pass full scale, the caller lowers that accompaniment (``gain_under_full_scale``).

Reads: mono float audio, an :class:`AugmentConfig`, string keys (track id, window key).
Provides: pure audio functions, label transforms, and plan dataclasses whose ``to_dict()`` is what
a sample records. Randomness comes only from sha256(seed, purpose, key), never from Python's
``hash()`` or global state.
Needs: for ``stretcher: rubberband-library``, the default, the Rubber Band library (R3 "finer" engine with its
short window, offline, one thread) through pylibrb, a Python extension that carries the library and is loaded at
run time; for ``stretcher: rubberband``, the ``rubberband`` command (R3 with its standard window, through
pyrubberband; Debian and Ubuntu package ``rubberband-cli``, installed by setup.sh), which keeps Rubber Band in a
separate program; librosa (phase vocoder; pitch shift with soxr resampling) for ``stretcher: librosa``;
scipy (biquads). Rubber Band is GPL: like the other GPL parts (setup.sh), it is a separate program or a
library loaded at run time, never part of this Apache-2.0 package. The stretcher is chosen by measurement: the
f0 a tracker reads from the output agrees with the moved f0 label far more often than on phase-vocoder audio, and
the library's short window agrees as often as the command's standard one at about a third of its CPU
(bench/RESULTS.md, "Augmentation: stretcher").
Fails: ValueError on a non-positive stretch factor, non-mono audio, or a config with no ops;
:class:`StretcherError` when the Rubber Band library or command is missing or fails (naming the fix).
"""

from __future__ import annotations

import functools
import hashlib
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from songcorpus.io.audio import INT16_FULL_SCALE
from songcorpus.schemas.config import AugmentConfig, EqBand

AUGMENT_VERSION = "2"
F0_RATE_HZ = 100.0
# Each band's output is clamped to [-1, 1] (as torchaudio's lfilter, which ran the EQ before, did); filtering a
# copy scaled to this peak (the filters are linear) keeps boosted peaks from being clipped.
_FILTER_HEADROOM_PEAK = 0.125


# ---------------------------------------------------------------------------------------------
# seeded randomness
# ---------------------------------------------------------------------------------------------

def keyed_rng(seed: int, purpose: str, key: str) -> np.random.Generator:
    """A numpy Generator determined by (seed, purpose, key) alone, stable across runs and machines."""
    digest = hashlib.sha256(f"songcorpus-augment\x00{seed}\x00{purpose}\x00{key}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


# ---------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------

def _mono32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"augment: expected mono audio (1-D), got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def stretched_length(n: int, factor: float) -> int:
    """Length after a time stretch by ``factor`` (1.2 = 20% faster): ``round(n / factor)``."""
    if factor <= 0:
        raise ValueError(f"augment: stretch factor must be positive, got {factor}")
    return int(round(n / factor))


class StretcherError(RuntimeError):
    """The configured time/pitch stretcher cannot run here; the message says how to fix it."""


RUBBERBAND_HELP = ("install Rubber Band's command-line tool (Debian/Ubuntu: apt-get install rubberband-cli; "
                   "setup.sh does this), or set augment.stretcher: librosa")


@functools.cache
def rubberband_version() -> str:
    """``rubberband-<version>`` of the ``rubberband`` command on PATH (recorded in every augmented sample)."""
    exe = shutil.which("rubberband")
    if exe is None:
        raise StretcherError(f"augment.stretcher 'rubberband' needs the rubberband command, not found on PATH: {RUBBERBAND_HELP}")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    version = (out.stdout or out.stderr).strip().splitlines()
    if out.returncode != 0 or not version:
        raise StretcherError(f"'{exe} --version' failed (exit {out.returncode}): {RUBBERBAND_HELP}")
    return f"rubberband-{version[-1].strip()}"


LIBRARY_HELP = ("reinstall the locked environment (bash setup.sh), which has pylibrb, or set augment.stretcher: "
                "rubberband (the command) or librosa")


@functools.cache
def rubberband_library_version() -> str:
    """``pylibrb-<version>`` of the Rubber Band library binding (recorded in every augmented sample)."""
    import importlib.metadata

    try:
        import pylibrb  # noqa: F401
    except ImportError as exc:
        raise StretcherError(f"augment.stretcher 'rubberband-library' needs pylibrb, which is not importable "
                             f"({exc}): {LIBRARY_HELP}") from None
    return f"pylibrb-{importlib.metadata.version('pylibrb')}"


def stretcher_id(stretcher: str) -> str:
    """What a sample's lineage names as the stretcher: the program or library, its version and engine."""
    if stretcher == "rubberband-library":
        return f"rubberband-library {rubberband_library_version()} R3 short-window"
    if stretcher == "rubberband":
        return f"{rubberband_version()} --fine"
    import librosa

    return f"librosa-{librosa.__version__} phase-vocoder"


def stretcher_of(recorded: str) -> str:
    """The stretcher setting a recorded :func:`stretcher_id` came from (version 1 plans recorded none: librosa)."""
    if recorded.startswith("rubberband-library"):
        return "rubberband-library"
    return "rubberband" if recorded.startswith("rubberband") else "librosa"


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Exactly ``n`` float32 samples (trimmed, or zero-padded at the end)."""
    import librosa

    return librosa.util.fix_length(np.asarray(y, dtype=np.float32), size=n)


def _rubberband(x: np.ndarray, rate: int, speed: float, semitones: float) -> np.ndarray:
    """One run of the ``rubberband`` command (R3 engine), at a fixed gain through pyrubberband's 16-bit WAV files.

    The program would quietly lower the gain of a run whose output clips, which would change levels
    between the mix and its stems; instead every signal goes through scaled to a peak of 0.5 (a quiet
    stem keeps its resolution in the 16-bit files) with ``--ignore-clipping``, and a run whose output
    still reaches full scale is redone 6 dB lower. The op is linear in gain, so the scale is undone after.
    """
    import pyrubberband

    rubberband_version()  # a missing program fails here with the fix, not as a bare OSError
    peak = float(np.max(np.abs(x), initial=0.0))
    scale = 0.5 / peak if peak > 0 else 1.0
    args = {"--fine": "", "--ignore-clipping": ""}
    while True:
        try:
            if speed != 1.0:
                y = pyrubberband.time_stretch(x * scale, rate, speed, rbargs=dict(args))
            else:
                y = pyrubberband.pitch_shift(x * scale, rate, semitones, rbargs=dict(args))
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            raise StretcherError(f"rubberband failed on a {x.shape[0] / rate:.1f} s signal at {rate} Hz "
                                 f"(speed {speed:g}, semitones {semitones:g}): {exc}") from exc
        y = np.asarray(y, dtype=np.float32)
        if float(np.max(np.abs(y), initial=0.0)) < INT16_FULL_SCALE or scale < 1e-3:
            return y / np.float32(scale)
        scale /= 2.0


_LIBRARY_BLOCK = 65536  # samples handed to the library per call (its per-call limit is 524,288)


def _rubberband_library(x: np.ndarray, rate: int, speed: float, semitones: float) -> np.ndarray:
    """One Rubber Band run in this process: R3 engine, short window, offline (the whole signal studied first, as
    the command does), one thread, so the same input gives the same samples. Float in, float out (no 16-bit files,
    nothing clipped), at a peak of 0.5 as through the command: the engine is not linear in gain near silence (a
    sine at -60 dB came out 7 dB lower unscaled), and the op is linear at a fixed level, so the scale is undone."""
    rubberband_library_version()  # a missing binding fails here with the fix
    from pylibrb import Option, RubberBandStretcher

    options = (Option.PROCESS_OFFLINE | Option.ENGINE_FINER | Option.WINDOW_SHORT | Option.THREADING_NEVER
               | Option.CHANNELS_APART)
    try:
        stretcher = RubberBandStretcher(rate, 1, options, 1.0 / speed, 2.0 ** (semitones / 12.0))
        stretcher.set_max_process_size(_LIBRARY_BLOCK)
        stretcher.set_expected_input_duration(x.shape[0])
        peak = float(np.max(np.abs(x), initial=0.0))
        scale = np.float32(0.5 / peak if peak > 0 else 1.0)
        signal = np.ascontiguousarray(x[None, :] * scale, dtype=np.float32)
        n = signal.shape[1]
        for i in range(0, n, _LIBRARY_BLOCK):
            stretcher.study(signal[:, i:i + _LIBRARY_BLOCK], final=i + _LIBRARY_BLOCK >= n)
        out: list[np.ndarray] = []
        for i in range(0, n, _LIBRARY_BLOCK):
            stretcher.process(signal[:, i:i + _LIBRARY_BLOCK], final=i + _LIBRARY_BLOCK >= n)
            while stretcher.available() > 0:
                out.append(stretcher.retrieve(stretcher.available()))
        while not stretcher.is_done():  # offline and final: the rest is ready without more input
            ready = stretcher.available()
            if ready <= 0:
                break
            out.append(stretcher.retrieve(ready))
    except (RuntimeError, ValueError) as exc:
        raise StretcherError(f"the Rubber Band library failed on a {x.shape[0] / rate:.1f} s signal at {rate} Hz "
                             f"(speed {speed:g}, semitones {semitones:g}): {exc}") from exc
    return (np.concatenate(out, axis=1)[0] / scale).astype(np.float32) if out else np.zeros(0, np.float32)


def _stretched(x: np.ndarray, rate: int, speed: float, semitones: float, stretcher: str) -> np.ndarray:
    """The Rubber Band run the stretcher setting names (the library or the command)."""
    if stretcher == "rubberband-library":
        return _rubberband_library(x, rate, speed, semitones)
    return _rubberband(x, rate, speed, semitones)


RUBBER_BAND_STRETCHERS = ("rubberband-library", "rubberband")


def time_stretch(x: np.ndarray, rate: int, factor: float, stretcher: str = "rubberband-library") -> np.ndarray:
    """Tempo change by ``factor`` with pitch kept; length ``round(len / factor)``."""
    x = _mono32(x)
    n_out = stretched_length(x.shape[0], factor)
    if factor == 1.0 or x.shape[0] == 0:
        return x.copy()
    if stretcher in RUBBER_BAND_STRETCHERS:
        return _fit(_stretched(x, rate, factor, 0.0, stretcher), n_out)
    import librosa

    return _fit(librosa.effects.time_stretch(x, rate=factor), n_out)


def pitch_shift(x: np.ndarray, rate: int, semitones: float, stretcher: str = "rubberband-library") -> np.ndarray:
    """Pitch moved by ``semitones`` with tempo and length kept."""
    x = _mono32(x)
    if semitones == 0 or x.shape[0] == 0:
        return x.copy()
    if stretcher in RUBBER_BAND_STRETCHERS:
        return _fit(_stretched(x, rate, 1.0, semitones, stretcher), x.shape[0])
    import librosa

    return _fit(librosa.effects.pitch_shift(x, sr=rate, n_steps=float(semitones), res_type="soxr_hq"), x.shape[0])


@dataclass(frozen=True)
class Biquad:
    gain_db: float
    freq_hz: float
    q: float


@dataclass(frozen=True)
class EqParams:
    """One sample's frequency-balance EQ: three biquads applied in this order."""

    bass: Biquad
    mid: Biquad
    treble: Biquad

    def to_dict(self) -> dict[str, Any]:
        return {"version": AUGMENT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EqParams:
        return cls(bass=Biquad(**d["bass"]), mid=Biquad(**d["mid"]), treble=Biquad(**d["treble"]))


def shelf_and_peak_coefficients(kind: Literal["bass", "mid", "treble"], rate: int,
                                band: Biquad) -> tuple[np.ndarray, np.ndarray]:
    """``(b, a)`` of one band, normalised so ``a[0] == 1``: the Audio EQ Cookbook's low shelf (``bass``), peaking
    EQ (``mid``) and high shelf (``treble``) with shelf slope given as Q, as torchaudio's ``bass_biquad``,
    ``equalizer_biquad`` and ``treble_biquad`` define them (the EQ's parameters were drawn for those)."""
    w0 = 2.0 * math.pi * band.freq_hz / rate
    cos_w0 = math.cos(w0)
    alpha = math.sin(w0) / 2.0 / band.q
    amp = math.exp(band.gain_db / 40.0 * math.log(10.0))
    if kind == "mid":
        b = [1.0 + alpha * amp, -2.0 * cos_w0, 1.0 - alpha * amp]
        a = [1.0 + alpha / amp, -2.0 * cos_w0, 1.0 - alpha / amp]
    else:
        shelf = 2.0 * math.sqrt(amp) * alpha
        minus, plus = (amp - 1.0) * cos_w0, (amp + 1.0) * cos_w0
        sign = 1.0 if kind == "treble" else -1.0  # a high shelf mirrors a low one in the cosine terms
        b = [amp * ((amp + 1.0) + sign * minus + shelf), -2.0 * sign * amp * ((amp - 1.0) + sign * plus),
             amp * ((amp + 1.0) + sign * minus - shelf)]
        a = [(amp + 1.0) - sign * minus + shelf, 2.0 * sign * ((amp - 1.0) - sign * plus),
             (amp + 1.0) - sign * minus - shelf]
    b_arr, a_arr = np.asarray(b), np.asarray(a)
    return b_arr / a_arr[0], a_arr / a_arr[0]


def frequency_balance_eq(x: np.ndarray, rate: int, params: EqParams) -> np.ndarray:
    """Bass shelf, mid peaking EQ and treble shelf, in float64 (scipy's lfilter; a fifth of the cost of torchaudio's
    biquads, which made the same filters before: the test compares them). Each band's output is clamped to
    [-1, 1] as torchaudio's was, on a copy scaled to a small peak, so nothing reaches the clamp."""
    from scipy.signal import lfilter

    x = _mono32(x)
    peak = float(np.max(np.abs(x), initial=0.0))
    if peak == 0.0 or not np.isfinite(peak):
        return x.copy()
    scale = _FILTER_HEADROOM_PEAK / peak
    w = x.astype(np.float64) * scale
    for kind, band in (("bass", params.bass), ("mid", params.mid), ("treble", params.treble)):
        b, a = shelf_and_peak_coefficients(kind, rate, band)
        w = np.clip(lfilter(b, a, w), -1.0, 1.0)
    return (w / scale).astype(np.float32)


def rms_db(x: np.ndarray) -> float:
    """RMS level in dB re full scale 1.0 (a full-scale sine is -3.01 dB); -inf for silence."""
    ms = float(np.mean(np.square(np.asarray(x, dtype=np.float64)))) if np.size(x) else 0.0
    return 10.0 * math.log10(ms) if ms > 0 else -math.inf


def normalise_loudness(x: np.ndarray, target_rms_db: float, peak_db: float) -> np.ndarray:
    """Gain to ``target_rms_db`` RMS, reduced if needed so the peak is at most ``peak_db`` dBFS.

    Silence is returned unchanged (no gain can give it a level).
    """
    x = np.asarray(x)
    level = rms_db(x)
    if not math.isfinite(level):
        return x.astype(np.float32, copy=True)
    gain = 10.0 ** ((target_rms_db - level) / 20.0)
    peak = float(np.max(np.abs(x.astype(np.float64))))
    gain = min(gain, 10.0 ** (peak_db / 20.0) / peak)
    return (x.astype(np.float64) * gain).astype(np.float32)


def gain_under_full_scale(rest: np.ndarray, part: np.ndarray, limit: float = INT16_FULL_SCALE) -> float:
    """The largest gain g in [0, 1] with max|rest + g * part| <= ``limit``: how far to lower an EQ'd, loudness-
    normalised accompaniment so the mix rebuilt from it (``rest`` = vocals + residual) is not clipped when stored.

    1.0 when the sum already fits, or when ``rest`` alone passes the limit (the source was clipped: no gain on the
    part can mend that). The peak is convex in g, so bisection finds the bound; fixed steps keep it deterministic.
    """
    rest64, part64 = np.asarray(rest, dtype=np.float64), np.asarray(part, dtype=np.float64)
    if float(np.max(np.abs(rest64), initial=0.0)) > limit:
        return 1.0
    # Only the samples over the limit at g = 1 can bind: any other lies between its value at 0 and at 1, both
    # within the limit, and rounding is monotone, so its |rest + g * part| stays within it for every g in [0, 1].
    over = np.abs(rest64 + part64) > limit
    if not np.any(over):
        return 1.0
    rest64, part64 = rest64[over], part64[over]

    def peak(g: float) -> float:
        return float(np.max(np.abs(rest64 + g * part64)))

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if peak(mid) <= limit else (lo, mid)
    return lo


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------

def stretch_times(times: np.ndarray | list[float], factor: float) -> np.ndarray:
    """Event times (beats, boundaries, VAD segments, lyric timings; any shape) after a stretch: t / factor."""
    if factor <= 0:
        raise ValueError(f"augment: stretch factor must be positive, got {factor}")
    return np.asarray(times, dtype=np.float64) / factor


def stretch_frames(values: np.ndarray, factor: float, n_out: int) -> np.ndarray:
    """A frame-rate track (axis 0; f0 at 100 Hz, ...) after a stretch, as ``n_out`` frames.

    Output frame j shows source frame round(j * factor) (nearest neighbour, last frame held), so
    values are only ever copied: unvoiced 0s stay 0 and no pitch is invented across a voicing edge.
    The caller picks ``n_out`` from the stretched duration (``ceil(duration / factor * rate)``).
    """
    if factor <= 0:
        raise ValueError(f"augment: stretch factor must be positive, got {factor}")
    values = np.asarray(values)
    if n_out <= 0 or values.shape[0] == 0:
        return values[:0].copy() if n_out <= 0 else np.zeros((n_out, *values.shape[1:]), dtype=values.dtype)
    src = np.floor(np.arange(n_out, dtype=np.float64) * factor + 0.5).astype(np.int64)
    return values[np.minimum(src, values.shape[0] - 1)].copy()


def shift_f0(f0: np.ndarray, semitones: float) -> np.ndarray:
    """Voiced f0 (> 0) times 2^(semitones / 12); 0 (unvoiced) and NaN stay as they are."""
    f0 = np.asarray(f0)
    ratio = 2.0 ** (semitones / 12.0)
    return np.where(f0 > 0, f0 * ratio, f0).astype(f0.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SongAugmentation:
    """The one op a selected song gets: ``kind`` "speed" (``value`` = factor) or "pitch" (semitones)."""

    kind: Literal["speed", "pitch"]
    value: float
    stretcher: Literal["rubberband-library", "rubberband", "librosa"] = "rubberband-library"

    @property
    def tag(self) -> str:
        """Short suffix for sample keys, e.g. ``speed120`` (x1.2) or ``pitch-2``: no dots, since WebDataset
        splits a member name into key and field at the first dot."""
        return f"speed{round(self.value * 100):d}" if self.kind == "speed" else f"pitch{int(self.value):+d}"

    def to_dict(self) -> dict[str, Any]:
        return {"version": AUGMENT_VERSION, "kind": self.kind, "value": self.value,
                "stretcher": stretcher_id(self.stretcher)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SongAugmentation:
        return cls(kind=d["kind"], value=d["value"], stretcher=stretcher_of(d.get("stretcher", "librosa")))

    @property
    def speed(self) -> float:
        return self.value if self.kind == "speed" else 1.0

    @property
    def semitones(self) -> float:
        return self.value if self.kind == "pitch" else 0.0

    def audio(self, x: np.ndarray, rate: int) -> np.ndarray:
        """The op on one signal (mix or any stem)."""
        if self.kind == "speed":
            return time_stretch(x, rate, self.value, self.stretcher)
        return pitch_shift(x, rate, self.value, self.stretcher)

    def n_samples(self, n: int) -> int:
        """Signal length after the op."""
        return stretched_length(n, self.speed)

    def times(self, times: np.ndarray | list[float]) -> np.ndarray:
        """Event times after the op (a pitch shift leaves them alone)."""
        return stretch_times(times, self.speed)

    def f0(self, f0: np.ndarray, n_samples_out: int, sample_rate: int, frame_rate: float = F0_RATE_HZ) -> np.ndarray:
        """An f0 track after the op, ``ceil(duration_out * frame_rate)`` frames for a speed change."""
        if self.kind == "pitch":
            return shift_f0(f0, self.value)
        n_out = math.ceil(n_samples_out / sample_rate * frame_rate - 1e-9)
        return stretch_frames(f0, self.value, n_out)


def song_ops(cfg: AugmentConfig) -> list[SongAugmentation]:
    """The union the one op is drawn from, in config order: speeds first, then semitone shifts."""
    return [SongAugmentation("speed", float(s), cfg.stretcher) for s in cfg.speeds] + [
        SongAugmentation("pitch", float(k), cfg.stretcher) for k in cfg.semitones
    ]


def plan_song_augmentation(track_id: str, cfg: AugmentConfig) -> SongAugmentation | None:
    """The song's augmentation, or None when it is not among the ``fraction`` selected."""
    ops = song_ops(cfg)
    if not ops:
        raise ValueError("augment: no speeds and no semitones configured, nothing to draw from")
    rng = keyed_rng(cfg.seed, "song", track_id)
    selected = rng.random() < cfg.fraction
    pick = int(rng.integers(len(ops)))  # drawn either way, so the stream does not depend on fraction
    return ops[pick] if selected else None


def _draw(rng: np.random.Generator, band: EqBand) -> Biquad:
    return Biquad(
        gain_db=float(rng.uniform(*band.gain_db)),
        freq_hz=float(rng.uniform(*band.freq_hz)),
        q=float(rng.uniform(*band.q)),
    )


def plan_eq(key: str, cfg: AugmentConfig) -> EqParams | None:
    """This sample's EQ parameters, or None when the EQ is not activated (probability 1 - eq_probability)."""
    rng = keyed_rng(cfg.seed, "eq", key)
    active = rng.random() < cfg.eq_probability
    params = EqParams(bass=_draw(rng, cfg.eq_bass), mid=_draw(rng, cfg.eq_mid), treble=_draw(rng, cfg.eq_treble))
    return params if active else None


def apply_eq(x: np.ndarray, rate: int, params: EqParams | None, cfg: AugmentConfig) -> np.ndarray:
    """EQ then loudness normalisation, as the paper does; ``params=None`` leaves the audio unchanged."""
    if params is None:
        return _mono32(x).copy()
    return normalise_loudness(frequency_balance_eq(x, rate, params), cfg.target_rms_db, cfg.peak_db)
