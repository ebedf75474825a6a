"""Held-out windows and the systems that answer them: the trained model, the untrained model, the ground
truth, the codec ceiling and a floor, all on the same windows, so every number can be read between them.

Reads: one split of a corpus through the training loader (train/data.py: the run's fields, its latent
statistics, its caption encoder and phoneme tokenizer), each window's real stems (``vocals.flac``,
``accompaniment.flac``, ``mix.flac``) and its f0 (``f0.npy``), read by tar offset like every other member.
Writes: nothing; :class:`SystemOutput` holds audio in memory.

Windows start at the sample's start (no random crop) and last the run's window (``data.window_s``); a
corpus cut at a longer window is cropped, a shorter one padded and masked, as in training.

The systems (``SYSTEMS``), every one producing the same stems for the same windows:
- ``model``: the run's EMA weights at the chosen checkpoint;
- ``untrained``: the same architecture at the trainer's step-0 weights (``build_model`` seeds with the run's
  seed; SongEcho stage B keeps the run's frozen backbone, as its training started);
- ``ground_truth``: the real stems (what a perfect model scores);
- ``codec_ceiling``: the real stems through the run's representation and back (the window's own latents,
  or LaDA-Band's tokens, decoded by the corpus's embedded codec): the best any model on that representation
  can score;
- ``floor``: the same window position of the next held-out song (songs in track-id order, cyclic): a
  stated trivial system that ignores its conditions. Needs two songs in the split.
Generators read only their conditions: the target stems are removed from the batch before ``generate``
(``TARGET_KEYS``), so nothing of the answer reaches the model.
Fails: :class:`EvalError` naming the problem (no run, an empty split, a field the corpus lacks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SYSTEMS = ("model", "untrained", "ground_truth", "codec_ceiling", "floor")
STEMS = ("vocals", "accompaniment", "mix")
# batch keys a model must not see when it generates (the answer), per model and task
TARGET_KEYS = {"samuel": ("accompaniment_latents",), "lada_band": ("accompaniment_tokens",),
               "songecho": ("vocals_latents", "accompaniment_latents"),
               "songecho_melody": ("vocals_latents", "accompaniment_latents"),
               "unisinger:song": ("vocals_latents", "accompaniment_latents"),
               "unisinger:svc": ("accompaniment_latents",)}
ACCOMPANIMENT_MODELS = ("samuel", "lada_band")


class EvalError(ValueError):
    """An evaluation that cannot run, named, with what to do."""


class _StartCrop:
    """The loader's crop draw, pinned to the sample's start: evaluation windows are not random."""

    def uniform(self, low: float, high: float) -> float:
        return float(low)


@dataclass
class HeldOutWindow:
    """One held-out window: its key, song, real stems (mono float32 at ``rate``), f0 and texts."""

    key: str
    track_id: str
    rate: int
    n_samples: int
    stems: dict[str, np.ndarray]
    f0: np.ndarray
    caption: str
    lyrics: str
    language: str | None
    sample: dict[str, Any] = field(repr=False, default_factory=dict)  # the loader's sample (model inputs)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate


@dataclass
class SystemOutput:
    """The stems one system produced for one window (mono float32, ``n_samples`` long), and how long it took."""

    stems: dict[str, np.ndarray]
    phases: dict[str, float] = field(default_factory=dict)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` as float32 of exactly ``n`` values (samples, or f0 frames): cut, or zero-padded at the end, so every
    system's stems and the folder mode's files are scored at the window's length."""
    x = np.asarray(x, dtype=np.float32)
    return x[:n] if x.size >= n else np.concatenate([x, np.zeros(n - x.size, np.float32)])


def _flac(data: bytes) -> tuple[np.ndarray, int]:
    import io

    import soundfile as sf

    x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x.mean(axis=1), int(rate)


class HeldOut:
    """The held-out windows of one split for a loaded run (train/run.py ``LoadedRun``)."""

    def __init__(self, run: Any, data: str, split: str, limit: int | None = None, task: str = "svc") -> None:
        from songcorpus.schemas.sample import FIELD_GROUPS
        from songcorpus.train.data import BatchBuilder, CorpusView, DataError
        from songcorpus.train.text import PhonemeTokenizer, caption_encoder

        self.run = run
        self.split = split
        self.task = task if run.name == "unisinger" else None
        model = run.model
        keys = tuple(dict.fromkeys([*model.batch_keys, *[k for k in model.optional_keys if k != "mask"]]))
        keys = tuple(k for k in keys if k not in ("mask", "has_reference"))
        try:
            self.view = CorpusView(data, split, keys, codec=run.config.data.codec, window_s=run.window_s,
                                   extra_groups=FIELD_GROUPS)  # stems, and every codec array for the ceilings
        except DataError as exc:
            raise EvalError(f"cannot evaluate on split {split!r} of {data}: {exc}") from None
        stats = dict(run.stats)
        for ref_key, base in (("reference_latents", "accompaniment_latents"),
                              ("reference_vocals_latents", "vocals_latents")):
            if ref_key in keys and base in stats:
                stats[ref_key] = stats[base]
        self.builder = BatchBuilder(self.view, caption_encoder() if "text_emb" in keys else None,
                                    PhonemeTokenizer(vocab_size=getattr(run.config.model, "phoneme_vocab_size", 256))
                                    if "phonemes" in keys else None, stats, run.config.data.max_phonemes)
        self.indices = spread_over_songs([s.key for s in self.view.index.samples])
        if limit is not None:
            self.indices = sorted(self.indices[: max(0, int(limit))])
        if not self.indices:
            raise EvalError(f"--limit {limit}: no window of split {split!r} to evaluate")

    @property
    def target_keys(self) -> tuple[str, ...]:
        name = self.run.name if self.run.name != "unisinger" else f"unisinger:{self.task}"
        return TARGET_KEYS[name]

    def windows(self) -> list[HeldOutWindow]:
        """Every evaluated window with its real stems, in the split's order."""
        from songcorpus.train.data import read_members, window_lyrics

        out = []
        n = round(self.run.window_s * self.run.sample_rate)
        for index in self.indices:
            ref = self.view.index.samples[index]
            sample = self.builder.sample(index, _StartCrop())
            members = [m for m in ("json", "vocals.flac", "accompaniment.flac", "mix.flac", "f0.npy") if m in ref.members]
            raw = read_members(ref, members)
            meta = json.loads(raw["json"])
            stems: dict[str, np.ndarray] = {}
            for stem in STEMS:
                if f"{stem}.flac" not in raw:
                    raise EvalError(f"sample {ref.key} of {ref.shard} has no {stem}.flac: the evaluator scores "
                                    f"audio against the real stems; curate the corpus with stems kept")
                x, rate = _flac(raw[f"{stem}.flac"])
                if rate != self.run.sample_rate:
                    raise EvalError(f"sample {ref.key}: {stem}.flac is at {rate} Hz, the corpus at "
                                    f"{self.run.sample_rate} Hz")
                stems[stem] = fit_length(x, n)
            from songcorpus.train.data import npy

            f0 = npy(raw["f0.npy"], ref, "f0.npy").astype(np.float32) if "f0.npy" in raw else np.zeros(0, np.float32)
            f0_frames = math.ceil(self.run.window_s * 100 - 1e-9)
            f0 = fit_length(f0, f0_frames)
            valid = min(n, round(float(meta["duration_s"]) * self.run.sample_rate))
            metadata = meta.get("metadata") or {}
            caption = ", ".join(t for t in (metadata.get("caption"), metadata.get("tags")) if t) or ""
            language = (meta.get("labels") or {}).get("lyrics_language") or metadata.get("language")
            out.append(HeldOutWindow(ref.key, str(meta.get("track_id") or ref.key.split("_", 1)[0]),
                                     self.run.sample_rate, valid, {k: v[:valid] for k, v in stems.items()},
                                     f0[: math.ceil(valid / self.run.sample_rate * 100 - 1e-9)], caption,
                                     window_lyrics(meta, 0.0, self.run.window_s), language, sample))
        return out


def spread_over_songs(keys: list[str]) -> list[int]:
    """Sample indices ordered so that any prefix covers as many songs as it can: the first window of every
    song (in key order), then every second one... (a ``--limit`` then still has several songs and a floor).
    Keys are ``<track>_<NNNN>[_<augmentation>]``, as the samples stage writes them."""
    position: dict[str, int] = {}
    ranked = []
    for i, key in enumerate(keys):
        track = key.split("_", 1)[0]
        ranked.append((position.get(track, 0), track, i))
        position[track] = position.get(track, 0) + 1
    return [i for _, _, i in sorted(ranked)]


# ---------------------------------------------------------------------------------------------
# the systems
# ---------------------------------------------------------------------------------------------

def floor_partner(windows: list[HeldOutWindow]) -> dict[str, HeldOutWindow | None]:
    """Window key -> the window at the same position of the next song (track-id order, cyclic); None when
    the split holds one song only."""
    songs: dict[str, list[HeldOutWindow]] = {}
    for w in windows:
        songs.setdefault(w.track_id, []).append(w)
    order = sorted(songs)
    if len(order) < 2:
        return {w.key: None for w in windows}
    out: dict[str, HeldOutWindow | None] = {}
    for i, song in enumerate(order):
        other = songs[order[(i + 1) % len(order)]]
        for j, w in enumerate(songs[song]):
            out[w.key] = other[j % len(other)]
    return out


def stems_of(name: str, accompaniment: np.ndarray, vocals: np.ndarray | None, real_vocals: np.ndarray) -> dict[str, np.ndarray]:
    """The three stems of an output: an accompaniment model's mix is the real vocals over its accompaniment."""
    if vocals is None:
        return {"accompaniment": accompaniment, "vocals": real_vocals, "mix": real_vocals + accompaniment}
    return {"vocals": vocals, "accompaniment": accompaniment, "mix": vocals + accompaniment}


class Decoder:
    """Model outputs (normalised latents or token ids) -> audio, by the corpus's embedded codec."""

    def __init__(self, run: Any) -> None:
        from songcorpus.transforms.models.embedded_codec import EmbeddedCodec

        self.run = run
        self.codec = EmbeddedCodec(run.pipeline.codec, run.sample_rate, run.codebook)

    def latents(self, x: np.ndarray, key: str, n: int, normalised: bool = True) -> np.ndarray:
        if normalised and key in self.run.stats:
            mean, std = self.run.stats[key]
            x = x * std + mean
        return fit_length(self.codec.decode_latents(np.ascontiguousarray(x, dtype=np.float32), n), n)

    def tokens(self, ids: np.ndarray, n: int) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        ids = np.where((ids >= 0) & (ids < self.run.codebook.shape[0]), ids, 0)  # pad ids past the valid frames
        return fit_length(self.codec.decode_tokens(ids, n), n)


def untrained_model(run: Any) -> torch.nn.Module:
    """The run's architecture at the trainer's initial weights (``build_model`` seeds with the run's seed);
    SongEcho stage B keeps the run's frozen backbone from its checkpoint, as its training began."""
    from songcorpus.train.trainer import build_model

    if run.name == "songecho_melody":
        from songcorpus.train.models.songecho import SongEchoMelody

        torch.manual_seed(run.config.seed)
        model = SongEchoMelody(run.config.model)
        trained = run.model.state_dict()
        state = model.state_dict()
        state.update({k: v for k, v in trained.items() if k.startswith("backbone.")})
        model.load_state_dict(state)
    else:
        model = build_model(run.config)
    return model.eval()


class Generator:
    """One model (trained or untrained) generating the held-out windows in batches, timed by phase."""

    def __init__(self, run: Any, model: torch.nn.Module, heldout: HeldOut, decoder: Decoder, seed: int = 0,
                 steps: int | None = None, device: str = "cpu", batch: int = 8) -> None:
        self.run, self.model, self.heldout, self.decoder = run, model.to(device).eval(), heldout, decoder
        self.seed, self.steps, self.device, self.batch = seed, steps, device, batch

    def outputs(self, windows: list[HeldOutWindow]) -> Iterator[tuple[HeldOutWindow, SystemOutput]]:
        from songcorpus.train.eval.metrics.speed import GenerationTimer
        from songcorpus.train.generate import DEFAULT_STEPS
        from songcorpus.train.models.base import split_stems

        name = self.run.name
        if windows:  # one untimed call first: lazy initialisation is not part of a generation's cost
            with torch.no_grad():
                warm = self._conditions(windows[:1])
                warm.pop("has_reference", None)
                self.model.generate(warm, steps=1, **({"task": self.heldout.task} if name == "unisinger" else {}))
        g = torch.Generator(device=self.device).manual_seed(self.seed)
        for lo in range(0, len(windows), self.batch):
            group = windows[lo:lo + self.batch]
            timer = GenerationTimer(self.device)
            with timer.phase("encode"):  # the conditions from audio, as `generate` prepares a raw input
                batch = self._conditions(group)
            kwargs: dict[str, Any] = {"steps": self.steps or DEFAULT_STEPS[name], "generator": g}
            if name == "lada_band":
                kwargs["keep_reference"] = bool(batch.pop("has_reference").all().item())
            else:
                batch.pop("has_reference", None)
            if name == "unisinger":
                kwargs["task"] = self.heldout.task
            with timer.phase("sample"), torch.no_grad():
                out = self.model.generate(batch, **kwargs).float().cpu().numpy()
            with timer.phase("decode"):
                results = []
                for i, w in enumerate(group):
                    n, valid = w.n_samples, int(batch["mask"][i].sum().item())
                    if name == "lada_band":
                        acc = self.decoder.tokens(out[i][:valid], n)
                        results.append(stems_of(name, acc, None, w.stems["vocals"]))
                    elif name == "samuel":
                        acc = self.decoder.latents(out[i][:valid], "accompaniment_latents", n)
                        results.append(stems_of(name, acc, None, w.stems["vocals"]))
                    else:
                        voc, acc = (s.numpy()[0][:valid] for s in split_stems(torch.from_numpy(out[i:i + 1])))
                        results.append(stems_of(name, self.decoder.latents(acc, "accompaniment_latents", n),
                                                self.decoder.latents(voc, "vocals_latents", n), w.stems["vocals"]))
            share = {k: v / len(group) for k, v in timer.phases.items()}
            for w, stems in zip(group, results, strict=True):
                yield w, SystemOutput(stems, share)

    def _conditions(self, group: list[HeldOutWindow]) -> dict[str, torch.Tensor]:
        """The loader's batch for the windows, the conditioning stem re-encoded from its audio (so the timing
        includes the encode a raw input needs) and the answer's keys removed."""
        builder = self.heldout.builder
        samples = []
        for w in group:
            s = dict(w.sample)
            for key in ("vocals_latents", "vocals_tokens"):
                if key in s and key not in self.heldout.target_keys:  # the condition, from the window's audio
                    s[key] = self._encode(key, w.stems["vocals"], s[key])
            samples.append(s)
        batch = builder.collate(samples)
        batch.pop("keys", None)
        for key in self.heldout.target_keys:
            batch.pop(key, None)
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in batch.items()}

    def _encode(self, key: str, audio: np.ndarray, like: np.ndarray) -> np.ndarray:
        codec = self.decoder.codec
        if key.endswith("tokens"):
            x = codec.encode_tokens(audio).astype(np.int64)
        else:
            x = codec.encode_latents(audio)
            if key in self.run.stats:
                mean, std = self.run.stats[key]
                x = (x - mean) / std
        out = np.zeros_like(like)
        n = min(out.shape[0], x.shape[0])
        out[:n] = x[:n]
        return out.astype(like.dtype)


def codec_ceiling(run: Any, decoder: Decoder, view: Any, w: HeldOutWindow) -> SystemOutput:
    """The window's own representation decoded: latents (SAMUeL, SongEcho, UniSinger) or tokens (LaDA-Band),
    read raw (unnormalised) from the held-out ``view`` (train/data.py CorpusView)."""
    from songcorpus.train.data import npy, read_members

    ref = view.index.samples[view.key_index[w.key]]
    codec = run.config.data.codec
    n = w.n_samples
    if run.name == "lada_band":
        member = f"accompaniment.{codec}_tokens.npy"
        ids = npy(read_members(ref, [member])[member], ref, member)
        return SystemOutput(stems_of(run.name, decoder.tokens(ids, n), None, w.stems["vocals"]))
    raw = read_members(ref, [f"vocals.{codec}_latents.npy", f"accompaniment.{codec}_latents.npy"])
    lat = {stem: npy(raw[f"{stem}.{codec}_latents.npy"], ref, f"{stem}.{codec}_latents.npy")
           for stem in ("vocals", "accompaniment")}
    frames = math.ceil(n / run.sample_rate * run.latent_rate - 1e-9)
    acc = decoder.latents(lat["accompaniment"][:frames], "accompaniment_latents", n, normalised=False)
    if run.name == "samuel":
        return SystemOutput(stems_of(run.name, acc, None, w.stems["vocals"]))
    voc = decoder.latents(lat["vocals"][:frames], "vocals_latents", n, normalised=False)
    return SystemOutput(stems_of(run.name, acc, voc, w.stems["vocals"]))


def ground_truth(w: HeldOutWindow) -> SystemOutput:
    return SystemOutput(dict(w.stems))


def floor_output(run_name: str, w: HeldOutWindow, partner: HeldOutWindow | None) -> SystemOutput | None:
    """Another song's stems on this window (its length); an accompaniment model keeps the real vocals."""
    if partner is None:
        return None
    other = {k: fit_length(v, w.n_samples) for k, v in partner.stems.items()}
    if run_name in ACCOMPANIMENT_MODELS:
        return SystemOutput(stems_of(run_name, other["accompaniment"], None, w.stems["vocals"]))
    return SystemOutput(other)


def run_label(run: Path) -> str:
    return Path(run).resolve().name
