"""``songcorpus inspect``: read one sample back from its shard and draw it, to check the corpus by eye.

The sample is found through the catalog (``windows`` table: shard and byte offsets of every member),
read straight from the tar without unpacking, and drawn as one PNG: log spectrograms of the mix,
vocals and accompaniment, with the vocal f0 over the vocal spectrogram, VAD segments shaded, beats as
ticks, downbeats as strong ticks and section boundaries with their labels. ``--listen`` writes the
stems as WAV next to what the embedded codec's latents and tokens decode back to.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np


class SampleNotFound(LookupError):
    pass


def describe_augmentation(aug: dict[str, Any]) -> str:
    """One title line from a sample JSON's ``augmentation`` (spec 3: every part there, with an ``applied``
    flag): the song op (with its stretcher) and the accompaniment EQ, rounded for the eye."""
    parts = []
    op = aug["song_op"]
    if op["applied"]:
        what = f"speed x{op['speed']:g}" if op["kind"] == "speed" else f"pitch {op['semitones']:+g} st"
        parts.append(what + (f" ({op['stretcher']})" if op["stretcher"] else ""))
    eq = aug["eq"]
    if eq["applied"]:
        bands = ", ".join(f"{name} {eq[name]['gain_db']:+.1f} dB @ {eq[name]['freq_hz']:.0f} Hz"
                          for name in ("bass", "mid", "treble"))
        loud = aug["loudness"]
        parts.append(f"accompaniment EQ {bands}" + (f"; {loud['target_rms_db']:g} dB RMS, peak <= {loud['peak_db']:g} dBFS"
                                                    if loud["applied"] else ""))
    return "; ".join(parts) or "none"


def read_sample(out: Path, key: str) -> dict[str, bytes]:
    """Every member of sample ``key`` as bytes, read at the catalog's offsets (no tar scan)."""
    import duckdb

    db = out / "catalog.duckdb"
    if not db.exists():
        raise SampleNotFound(f"{out} has no catalog.duckdb; is it a curated corpus folder?")
    con = duckdb.connect(str(db), read_only=True)
    try:
        hit = con.execute("SELECT shard, offsets_json FROM windows WHERE key = ?", [key]).fetchone()
        if hit is None:
            near = con.execute("SELECT key FROM windows ORDER BY key LIMIT 3").fetchall()
            raise SampleNotFound(f"no sample {key!r} in {out}; keys look like: {', '.join(k for (k,) in near) or '(none)'}"
                                 " (list them with: duckdb catalog.duckdb \"SELECT key FROM windows\")")
    finally:
        con.close()
    shard, offsets_json = hit
    members: dict[str, bytes] = {}
    for suffix, (file, offset, size) in json.loads(offsets_json).items():  # file: the family's field-group tar
        with open(out / "shards" / file, "rb") as fh:
            fh.seek(offset)
            members[suffix] = fh.read(size)
    return members


def _spectrogram_db(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy import signal

    f, t, z = signal.stft(x, fs=rate, nperseg=2048, noverlap=1536)
    return f, t, 20 * np.log10(np.abs(z) + 1e-6)


def draw_sample(members: dict[str, bytes], png: Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    meta = json.loads(members["json"])
    labels = meta.get("labels", {})
    stems = [s for s in ("mix", "vocals", "accompaniment") if f"{s}.flac" in members]
    fig, axes = plt.subplots(len(stems) + 1, 1, figsize=(12, 2.6 * (len(stems) + 1)), sharex=True,
                             gridspec_kw={"height_ratios": [3] * len(stems) + [1]})
    duration = float(meta["duration_s"])
    for ax, stem in zip(axes, stems, strict=False):
        x, rate = sf.read(io.BytesIO(members[f"{stem}.flac"]), dtype="float32")
        f, t, s_db = _spectrogram_db(x, rate)
        keep = f <= (2000 if stem == "vocals" else 8000)  # the vocal panel zooms in on f0 and its first harmonics
        ax.pcolormesh(t, f[keep], s_db[keep], shading="auto", cmap="magma", vmin=s_db.max() - 80, vmax=s_db.max())
        ax.set_ylabel(f"{stem}\nHz")
        if stem == "vocals" and "f0.npy" in members:
            f0 = np.load(io.BytesIO(members["f0.npy"]))
            times = np.arange(f0.size) / 100.0
            ax.plot(times, np.where(f0 > 0, f0, np.nan), color="cyan", lw=1.2, label="f0 (Hz)")
            ax.legend(loc="upper right", fontsize=8)
        for seg in labels.get("vad_segments", []):
            ax.axvspan(seg["start_s"], seg["end_s"], color="lime", alpha=0.12 if stem == "vocals" else 0.0)
    lane = axes[-1]
    for seg in labels.get("vad_segments", []):
        lane.axvspan(seg["start_s"], seg["end_s"], ymin=0.0, ymax=0.3, color="green", alpha=0.5)
    for b in labels.get("beats", []):
        lane.axvline(b, ymin=0.35, ymax=0.65, color="black", lw=0.8)
    for b in labels.get("downbeats", []):
        lane.axvline(b, ymin=0.35, ymax=0.75, color="red", lw=1.6)
    for sec in labels.get("sections", []):
        for ax in axes:
            ax.axvline(sec["start_s"], color="white" if ax is not lane else "blue", lw=1.0, ls="--")
        lane.text(sec["start_s"] + 0.05, 0.85, sec["label"], color="blue", fontsize=9, va="center")
    lane.set_ylim(0, 1)
    lane.set_yticks([0.15, 0.5, 0.85], ["VAD", "beats", "sections"])
    lane.set_xlim(0, duration)
    lane.set_xlabel("seconds from the window start")
    aug = describe_augmentation(meta["augmentation"])
    title = (f"{meta['key']}  ({meta['split']})  {meta['source']}  [{meta['start_s']:.2f} s + {duration:.2f} s]"
             f"  ref: {meta.get('reference_key')}" + (f"\naugmentation: {aug}" if aug != "none" else ""))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return meta


def write_listening(out: Path, members: dict[str, bytes], folder: Path) -> list[Path]:
    """The sample's stems as WAV, and what the embedded codec's latents and tokens decode back to
    (Griffin-Lim phase: expect a phasey sound; it is for checking content and timing by ear)."""
    import soundfile as sf
    import yaml

    from songcorpus.schemas.config import PipelineConfig
    from songcorpus.transforms.models.embedded_codec import EmbeddedCodec, load_codebook

    meta = json.loads(members["json"])
    config = PipelineConfig.model_validate(yaml.safe_load((out / "config.yaml").read_text()))
    rate = int(meta["sample_rate"])
    codec_meta = meta["embedded_codec"]
    codec = EmbeddedCodec(config.codec, rate, load_codebook(out / "codec" / "codebook.npy", codec_meta["codebook_sha256"]))
    n = round(float(meta["duration_s"]) * rate)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem in ("mix", "vocals", "accompaniment"):
        x, r = sf.read(io.BytesIO(members[f"{stem}.flac"]), dtype="float32")
        written.append(folder / f"{stem}.wav")
        sf.write(written[-1], x, r, subtype="PCM_16")
        if stem == "mix":
            continue
        latents = np.load(io.BytesIO(members[f"{stem}.embedded_latents.npy"]))
        tokens = np.load(io.BytesIO(members[f"{stem}.embedded_tokens.npy"]))
        for kind, audio in (("latents", codec.decode_latents(latents, n)), ("tokens", codec.decode_tokens(tokens, n))):
            written.append(folder / f"{stem}.embedded_{kind}_decoded.wav")
            sf.write(written[-1], audio, rate, subtype="PCM_16")
    return written


def inspect_sample(out: Path, key: str, png: Path | None, listen: Path | None = None) -> dict[str, Any]:
    members = read_sample(out, key)
    meta = json.loads(members["json"])
    if png is not None:
        draw_sample(members, png)
    if listen is not None:
        write_listening(out, members, listen)
    return meta
