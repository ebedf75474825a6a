"""The f0 Festival itself imposed on the demo's synthetic vocals, as a 100 Hz reference.

The demo's ``f0_vocal_100hz.csv`` is derived from the score; Festival's singing mode glides between
notes, drops or moves syllables, and leaves gaps where a diphone is missing, so the sung pitch differs.
This script re-renders each song's ``vocal_score.xml`` with its voice (``metadata.json`` "singer"),
exactly as ``text2wave -mode singing`` does (same Scheme path, byte-identical wave), and keeps the
utterance Festival synthesised:

- f0: the UniSyn *target pitchmarks* (relation TargetCoef), the epochs the residual-excited LPC
  synthesiser placed its pitch periods at; f0 = 1 / (distance between adjacent pitchmarks),
  interpolated to the frame centre. (The ``f0`` track from ``targets_to_f0``, which those pitchmarks
  are generated from, is reported for comparison.)
- voicing: from the Segment relation (phone classes of the voice's phone set) checked on the render:
  a frame is voiced when the render is audible there (>= -40 dB re the song's loud vowels, 30 ms
  window) and it is in a vowel, or in a voiced consonant that is periodic at the pitchmark period
  (normalised cross-correlation >= 0.5), or, in any other non-silence phone, pYIN on the clean render
  finds voicing at the pitchmark f0 (a vowel's tail stretched into a long consonant label). Silences,
  unvoiced consonants and missing-diphone gaps are 0.

The render is aligned to ``vocals.flac`` (soxr HQ to 44.1 kHz, FFT cross-correlation, least-squares
gain; the original was clipped to 16-bit range after resampling, which the fit models), and the f0 is
written on that file's grid: frame i centred at i / 100 s, as many frames as ``f0_vocal_100hz.csv``.

    apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-czech-dita
    .venv/bin/python bench/festival_f0_reference.py pipelines/demo song_00 song_01 song_05 [--evaluate]

Writes ``<demo>/<song>/f0_vocal_synth_100hz.csv`` (``time_s,f0_hz``; 0 = unvoiced) and prints the
alignment and checks per song; ``--evaluate`` also scores the score-derived f0 and the project's
tracker (``transforms.stages.f0.estimate_f0``) against it with mir_eval. Deterministic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
from scipy.signal import correlate

FRAME_RATE = 100
VOCALS_RATE = 44100
INSTALL_HINT = "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-czech-dita"
VOICE_PACKAGES = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
                  "czech_dita": "festvox-czech-dita", "lp_diphone": "festvox-italp16k"}
SILENCES = {"pau", "#", "_", "h#", "sil"}
LEVEL_FLOOR_DB = -40.0  # audible: re the 90th percentile level of vowel frames
NCCF_MIN = 0.5  # voiced consonants: periodic at the imposed period
PYIN_MIN_PROB = 0.5  # other phones: pYIN voiced probability ...
PYIN_MAX_CENTS = 100.0  # ... at (nearly) the imposed f0
HALF_WINDOW_S = 0.015
PYIN_RATE = 16000

DUMP_SCM = r"""
(define (sc_dump utt)
  (set! sc_count (+ sc_count 1))
  (utt.save.wave utt (string-append sc_out "/render.wav") 'riff)
  (track.save (item.feat (utt.relation.first utt 'TargetCoef) "coefs") (string-append sc_out "/pm.est") "est")
  (track.save (item.feat (utt.relation.first utt 'f0) "f0") (string-append sc_out "/f0.est") "est")
  (let ((fd (fopen (string-append sc_out "/segments.txt") "w")))
    (mapcar (lambda (s)
              (format fd "%s %f %s %s\n" (item.name s) (item.feat s 'end) (item.feat s 'ph_vc) (item.feat s 'ph_cvox)))
            (utt.relation.items utt 'Segment))
    (fclose fd))
  (let ((fd (fopen (string-append sc_out "/count.txt") "w")))
    (format fd "%d\n" sc_count)
    (fclose fd))
  utt)
(set! sc_count 0)
(set! tts_hooks (list utt.synth sc_dump))
"""


@dataclass
class Render:
    """What Festival synthesised: the wave, its target pitchmarks, f0 track and segments (render time)."""

    wave: np.ndarray
    rate: int
    pitchmarks: np.ndarray
    f0_track: np.ndarray  # (frames, 2): time_s, Hz
    segments: list[tuple[str, float, str, str]]  # name, end_s, ph_vc, ph_cvox


@dataclass
class Alignment:
    """Where the render sits in vocals.flac, and how well it explains it."""

    lag: int  # samples at 44.1 kHz: render time 0 = vocals time lag / 44100
    gain: float
    corr: float
    resid: float
    corr_noclip: float
    resid_noclip: float

    @property
    def offset_s(self) -> float:
        return self.lag / VOCALS_RATE


def voice_of(demo: Path, song: str) -> str:
    """Festival voice name from metadata.json ("festival kal_diphone" -> "kal_diphone")."""
    meta = {m["id"]: m for m in json.loads((demo / "metadata.json").read_text())}
    if song not in meta:
        raise SystemExit(f"{song}: not in {demo / 'metadata.json'}")
    singer = str(meta[song].get("singer") or "")
    if not singer.startswith("festival "):
        raise SystemExit(f"{song}: singer {singer!r} is not a Festival voice")
    return singer.split()[1]


def read_est(path: Path) -> np.ndarray:
    """An ascii EST track as (frames, 1 + channels): time, then channel values (breaks column dropped)."""
    text = path.read_text()
    body = text.split("EST_Header_End\n", 1)[1]
    rows = [line.split() for line in body.splitlines() if line.strip()]
    return np.array([[float(r[0])] + [float(v) for v in r[2:]] for r in rows])


def render(xml: Path, voice: str, workdir: Path) -> Render:
    """Synthesise ``xml`` in singing mode with ``voice`` and dump the utterance (one per song)."""
    if shutil.which("festival") is None:
        raise SystemExit(f"festival is not installed: {INSTALL_HINT}")
    workdir.mkdir(parents=True, exist_ok=True)
    scm = workdir / "dump.scm"
    scm.write_text(DUMP_SCM)
    cmd = ["festival", "-b", f"(voice_{voice})", f'(set! sc_out "{workdir}")', str(scm),
           f"(tts_file \"{xml}\" 'singing)"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if f"unbound variable : voice_{voice}" in log:
        pkg = VOICE_PACKAGES.get(voice, "festvox-...")
        raise SystemExit(f"Festival voice {voice} is not installed: apt-get install {pkg}")
    count = workdir / "count.txt"
    if proc.returncode != 0 or not count.exists():
        raise SystemExit(f"festival failed on {xml} ({' '.join(cmd)}):\n{log[-2000:]}")
    if count.read_text().strip() != "1":
        raise SystemExit(f"{xml}: Festival made {count.read_text().strip()} utterances, expected 1")
    wave, rate = sf.read(workdir / "render.wav", dtype="float64")
    segments = []
    for line in (workdir / "segments.txt").read_text().splitlines():
        name, end, vc, cvox = line.split()
        segments.append((name, float(end), vc, cvox))
    f0 = read_est(workdir / "f0.est")
    return Render(wave, rate, read_est(workdir / "pm.est")[:, 0], f0[:, :2], segments)


def align(rend: Render, vocals: np.ndarray) -> Alignment:
    """Integer lag (FFT cross-correlation at 44.1 kHz) and least-squares gain of the render in vocals."""
    x = soxr.resample(rend.wave, rend.rate, VOCALS_RATE, quality="HQ")
    c = correlate(vocals, x, mode="full", method="fft")
    lag = int(np.argmax(np.abs(c))) - (x.size - 1)
    y = np.zeros_like(vocals)
    lo, hi = max(lag, 0), min(vocals.size, lag + x.size)
    y[lo:hi] = x[lo - lag:hi - lag]

    def fit(z: np.ndarray) -> tuple[float, float, float]:
        g = float(np.dot(vocals, z) / np.dot(z, z))
        corr = float(np.dot(vocals, z) / np.sqrt(np.dot(vocals, vocals) * np.dot(z, z)))
        return g, corr, float(np.linalg.norm(vocals - g * z) / np.linalg.norm(vocals))

    _, corr0, resid0 = fit(y)
    gain, corr, resid = fit(np.clip(y, -1.0, 32767 / 32768))  # 16-bit write after resampling
    return Alignment(lag, gain, corr, resid, corr0, resid0)


def phone_class(seg: tuple[str, float, str, str]) -> str:
    """sil / vowel / voiced / unvoiced from the phone set features ph_vc and ph_cvox."""
    name, _, vc, cvox = seg
    if name in SILENCES or vc == "0":
        return "sil"
    if vc == "+":
        return "vowel"
    return "voiced" if cvox in ("+", "u") else "unvoiced"


def pitchmark_f0(pitchmarks: np.ndarray, times: np.ndarray) -> np.ndarray:
    """1 / pitch period at ``times`` (period interpolated between pitchmark midpoints); 0 outside."""
    period = np.diff(pitchmarks)
    mid = 0.5 * (pitchmarks[:-1] + pitchmarks[1:])
    f0 = 1.0 / np.interp(times, mid, period)
    return np.where((times >= pitchmarks[0]) & (times <= pitchmarks[-1]), f0, 0.0)


def frame_features(z: np.ndarray, rate: int, n: int, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame (30 ms window): level (dB), normalised cross-correlation at the imposed period, and the
    render's own f0 from the best such correlation within +-6 % of that period (parabolic peak)."""
    half = int(round(HALF_WINDOW_S * rate))
    pad = half + rate // 20
    zp = np.pad(z, (pad, pad + n * rate // FRAME_RATE))
    level = np.full(n, -200.0)
    nccf = np.zeros(n)
    measured = np.zeros(n)

    def corr(c: int, a: np.ndarray, ea: float, lag: int) -> float:
        best = -1.0
        for b in (zp[c - half + lag:c + half + lag], zp[c - half - lag:c + half - lag]):
            eb = float(np.dot(b, b))
            if eb > 0:
                best = max(best, float(np.dot(a, b)) / np.sqrt(ea * eb))
        return best

    for i in range(n):
        c = int(round(i * rate / FRAME_RATE)) + pad
        a = zp[c - half:c + half]
        ea = float(np.dot(a, a))
        level[i] = 10.0 * np.log10(ea / a.size + 1e-20)
        if f0[i] <= 0 or ea == 0.0:
            continue
        period = rate / f0[i]
        nccf[i] = corr(c, a, ea, int(round(period)))
        lags = np.arange(int(np.floor(period * 0.94)), int(np.ceil(period * 1.06)) + 1)
        r = np.array([corr(c, a, ea, int(k)) for k in lags])
        k = int(np.argmax(r))
        if 0 < k < r.size - 1:
            den = r[k - 1] - 2 * r[k] + r[k + 1]
            frac = 0.5 * (r[k - 1] - r[k + 1]) / den if den < 0 else 0.0
            measured[i] = rate / (lags[k] + frac)
    return level, nccf, measured


def reference_f0(rend: Render, al: Alignment, n: int) -> tuple[np.ndarray, dict[str, float]]:
    """Festival's f0 on the vocals.flac grid (n frames at i / 100 s), voicing applied; plus checks."""
    rate = rend.rate
    times = np.arange(n) / FRAME_RATE
    t_render = times - al.offset_s
    f0 = pitchmark_f0(rend.pitchmarks, t_render)

    # the render placed in vocals time at its own rate, so frame i is centred at sample i * rate / 100
    shift = int(round(al.offset_s * rate))
    total = int(np.ceil(n * rate / FRAME_RATE)) + rate
    z = np.zeros(total)
    src = rend.wave[max(0, -shift):]
    z[max(0, shift):max(0, shift) + src.size] = src[:total - max(0, shift)]
    level, nccf, measured = frame_features(z, rate, n, f0)

    ends = np.array([s[1] for s in rend.segments])
    idx = np.minimum(np.searchsorted(ends, t_render, side="right"), len(ends) - 1)
    cls = np.array([phone_class(rend.segments[k]) for k in idx])
    cls[(t_render < 0) | (t_render >= ends[-1])] = "sil"
    vowel = cls == "vowel"
    ref_level = float(np.percentile(level[vowel], 90)) if vowel.any() else float(level.max())
    audible = level - ref_level >= LEVEL_FLOOR_DB

    z16 = z if rate == PYIN_RATE else soxr.resample(z, rate, PYIN_RATE, quality="HQ")
    hop = PYIN_RATE // FRAME_RATE
    pf, _, pprob = librosa.pyin(z16[: (n - 1) * hop + 1], fmin=50.0, fmax=1100.0, sr=PYIN_RATE, frame_length=1024,
                                hop_length=hop, center=True)
    pf, pprob = pf[:n], pprob[:n]
    with np.errstate(divide="ignore", invalid="ignore"):
        cents_pyin = np.abs(1200.0 * np.log2(pf / np.where(f0 > 0, f0, np.nan)))
    pyin_voiced = (pprob >= PYIN_MIN_PROB) & (np.nan_to_num(cents_pyin, nan=1e9) <= PYIN_MAX_CENTS)

    voiced = audible & (f0 > 0) & (cls != "sil") & (
        vowel | ((cls == "voiced") & (nccf >= NCCF_MIN)) | pyin_voiced)
    out = np.where(voiced, f0, 0.0)

    track = np.interp(t_render, rend.f0_track[:, 0], rend.f0_track[:, 1])
    both = voiced & (track > 0)
    d_track = np.abs(1200.0 * np.log2(f0[both] / track[both]))
    pv = voiced & np.isfinite(cents_pyin) & (pprob >= 0.1)
    mv = voiced & (measured > 0)
    d_meas = np.abs(1200.0 * np.log2(measured[mv] / f0[mv]))
    stats = {
        "voiced_frames": int(voiced.sum()),
        "f0_track_max_cents": float(d_track.max()) if d_track.size else float("nan"),
        "f0_track_median_cents": float(np.median(d_track)) if d_track.size else float("nan"),
        "pyin_frames": int(pv.sum()),
        "pyin_median_cents": float(np.median(cents_pyin[pv])) if pv.any() else float("nan"),
        "pyin_within_50c": float(np.mean(cents_pyin[pv] <= 50.0)) if pv.any() else float("nan"),
        "measured_median_cents": float(np.median(d_meas)) if d_meas.size else float("nan"),
        "measured_within_10c": float(np.mean(d_meas <= 10.0)) if d_meas.size else float("nan"),
        "measured_frames": int(mv.sum()),
        "voiced_in_vowel_or_voiced_cons": float(voiced[vowel | (cls == "voiced")].mean()),
        "voiced_from_unvoiced_cons": int((voiced & (cls == "unvoiced")).sum()),
        "unvoiced_cons_frames": int((cls == "unvoiced").sum()),
        "inaudible_vowel_frames": int((vowel & ~audible).sum()),
    }
    return out, stats


def read_f0_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return data[:, 0], data[:, 1]


def write_f0_csv(path: Path, f0: np.ndarray) -> None:
    lines = ["time_s,f0_hz"] + [f"{i / FRAME_RATE:.3f},{v:.3f}" for i, v in enumerate(f0)]
    path.write_text("\n".join(lines) + "\n")


def melody_scores(ref: np.ndarray, est: np.ndarray) -> tuple[float, float, float]:
    """mir_eval raw pitch accuracy (50 cents), voicing recall and false alarm of est against ref."""
    import mir_eval

    t = np.arange(ref.size) / FRAME_RATE
    m = min(ref.size, est.size)
    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(t[:m], ref[:m], t[:m], est[:m].astype(np.float64))
    vr, vfa = mir_eval.melody.voicing_measures(ref_v, est_v)
    return float(mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c)), float(vr), float(vfa)


def evaluate(demo: Path, songs: list[str], refs: dict[str, np.ndarray]) -> None:
    """Score the score-derived f0 and the project's tracker against the Festival reference."""
    import torch

    from songcorpus.schemas.config import load_config
    from songcorpus.transforms.stages.f0 import MODEL_RATE, estimate_f0, load_f0_model
    from songcorpus.transforms.stages.vad import detect_vocal_activity, load_vad_model, to_vad_rate

    torch.set_num_threads(1)
    config = load_config()
    cfg = config.f0
    every = cfg.model_copy(update={"only_vocal_activity": False, "voicing_threshold": 0.0})
    model, vad_model = load_f0_model(cfg.method), load_vad_model()
    print(f"\n| song | estimate | RPA | VR | VFA |  (reference: Festival pitchmark f0; tracker {cfg.method}, "
          f"voicing_threshold {cfg.voicing_threshold}, input {MODEL_RATE} Hz)")
    print("|---|---|---|---|---|")
    for song in songs:
        ref = refs[song]
        _, score = read_f0_csv(demo / song / "f0_vocal_100hz.csv")
        x, rate = sf.read(demo / song / "vocals.flac", dtype="float32")
        mono = x.mean(axis=1) if x.ndim == 2 else x
        segments = detect_vocal_activity(to_vad_rate(mono, rate), config.vad, vad_model)
        rows = {
            "score-derived f0_vocal_100hz.csv": score,
            "estimate_f0, default cfg, VAD segments (stage path)": estimate_f0(mono, rate, cfg, model, segments)[0],
            "estimate_f0, default cfg, no segments": estimate_f0(mono, rate, cfg, model)[0],
            "estimate_f0, pitch on every frame (threshold 0)": estimate_f0(mono, rate, every, model)[0],
        }
        for name, est in rows.items():
            rpa, vr, vfa = melody_scores(ref, est)
            print(f"| {song} | {name} | {rpa:.3f} | {vr:.3f} | {vfa:.3f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Needs: " + INSTALL_HINT)
    ap.add_argument("demo", type=Path, help="demo corpus directory (has metadata.json and song_XX/)")
    ap.add_argument("songs", nargs="*", default=["song_00", "song_01", "song_05"], help="song ids (default: %(default)s)")
    ap.add_argument("--workdir", type=Path, help="keep Festival's outputs here (default: a temporary directory)")
    ap.add_argument("--no-write", action="store_true", help="do not write f0_vocal_synth_100hz.csv")
    ap.add_argument("--evaluate", action="store_true", help="also score the score-derived f0 and estimate_f0 (mir_eval)")
    args = ap.parse_args(argv)
    if shutil.which("festival") is None:
        raise SystemExit(f"festival is not installed: {INSTALL_HINT}")

    demo = args.demo.resolve()
    refs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="festival_f0_") as tmp:
        base = args.workdir.resolve() if args.workdir else Path(tmp)
        for song in args.songs:
            voice = voice_of(demo, song)
            rend = render(demo / song / "vocal_score.xml", voice, base / song)
            vocals, rate = sf.read(demo / song / "vocals.flac", dtype="float64")
            if vocals.ndim == 2:
                vocals = vocals.mean(axis=1)
            if rate != VOCALS_RATE:
                raise SystemExit(f"{song}: vocals.flac is {rate} Hz, expected {VOCALS_RATE}")
            al = align(rend, vocals)
            n = read_f0_csv(demo / song / "f0_vocal_100hz.csv")[0].size
            f0, st = reference_f0(rend, al, n)
            refs[song] = f0
            print(f"{song}: voice {voice}, render {rend.wave.size / rend.rate:.3f} s at {rend.rate} Hz; "
                  f"offset {al.lag} samples = {al.offset_s:.6f} s; gain {al.gain:.6f}; "
                  f"corr {al.corr:.8f}, residual {al.resid:.2e} (without the 16-bit clip: corr {al.corr_noclip:.6f}, "
                  f"residual {al.resid_noclip:.2e})")
            print(f"  {n} frames, {st['voiced_frames']} voiced; pitchmark f0 vs targets_to_f0 track: median "
                  f"{st['f0_track_median_cents']:.2f} c, max {st['f0_track_max_cents']:.1f} c; pYIN on the render vs "
                  f"pitchmark f0: median {st['pyin_median_cents']:.2f} c, {100 * st['pyin_within_50c']:.1f}% within 50 c "
                  f"({st['pyin_frames']} frames, pYIN's 10-cent grid); render period (autocorrelation peak) vs pitchmark "
                  f"f0: median {st['measured_median_cents']:.2f} c, {100 * st['measured_within_10c']:.1f}% within 10 c "
                  f"({st['measured_frames']} frames)")
            print(f"  voicing: {100 * st['voiced_in_vowel_or_voiced_cons']:.1f}% of vowel/voiced-consonant frames voiced, "
                  f"{st['inaudible_vowel_frames']} vowel frames inaudible (< {LEVEL_FLOOR_DB:.0f} dB), "
                  f"{st['voiced_from_unvoiced_cons']} of {st['unvoiced_cons_frames']} unvoiced-consonant frames voiced "
                  f"by pYIN")
            if al.corr < 0.99:
                print(f"  WARNING: {song}: the render does not reproduce vocals.flac (corr {al.corr:.4f})", file=sys.stderr)
            if not args.no_write:
                out = demo / song / "f0_vocal_synth_100hz.csv"
                write_f0_csv(out, f0)
                print(f"  wrote {out}")
    if args.evaluate:
        evaluate(demo, args.songs, refs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
