"""``songcorpus generate``: audio from a trained run, with inputs prepared exactly as the corpus was.

Reads: a run, loaded and checked by train/run.py ``load_run`` (its config, EMA weights, latent statistics, and
the corpus it trained on with that corpus's pipeline config and codebook), and raw audio files.
Writes: one WAV or FLAC (by suffix) at the corpus sample rate, 16-bit PCM; with ``stems=True`` also
``<out>.vocals<ext>`` / ``<out>.accompaniment<ext>`` for the models that generate both stems.

Inputs go through the corpus's own curation stages with the corpus's config, in a scratch artefact store:
ingest (decode, downmix, resample: transforms/stages/ingest.py), the stems stage for a mix (a ``vocals`` input is
taken as the vocal stem as given; ``inputs_are_stems`` says the melody/reference files are stems too), VAD
and f0 on the vocal stem (transforms/stages/vad.py, transforms/stages/f0.py), and the embedded codec (latents of each
window's mono stem, tokens = nearest centroid of the corpus codebook). Latents are z-scored with the run's
``latent_stats.npz`` and de-normalised before decoding.

Long inputs: the input is cut into consecutive windows of the run's window length (``data.window_s``, else
the corpus's window), each generated on its own (in batches of WINDOW_BATCH), the last one padded and masked;
each window's valid frames are decoded to exactly that window's samples as soon as it is generated and appended
to the output. Windows do not see each other, so there can be a seam at each window boundary. Nothing of the
generation is held for the whole input (its stems are read a window at a time, the output is written as it
grows and scaled in a second streaming pass), so memory is that of one batch of windows whatever the length;
the curation stages the input first passes through are the corpus's own. A bar per window goes to stderr.
Scratch files (the artefact store of those stages, the output as it grows) live in a folder next to the output
(:func:`scratch_folder`), removed on any exit and, after a ``kill -9``, by the next run writing that output;
the outputs are renamed into place complete.

What each model reads (the rest of its conditions are as the loader gives them):
- SAMUeL: the vocal latents -> accompaniment latents. No reference, no caption.
- LaDA-Band: the vocal tokens, a caption (default empty, as uncaptioned corpus samples) and the reference's
  accompaniment tokens (its first window); with no reference the reference slot is nulled (prefix dropout
  trains that case) -> accompaniment tokens, decoded through the codebook centroids.
- SongEcho stage A: caption (+ lyrics) only; the length is the melody file's duration, else ``duration_s``,
  else one window. Stage B: also the f0 of the melody file's vocals (separated from the mix unless stems).
- UniSinger song: caption + lyrics, the singer from ``reference`` (else the melody file's vocals), length
  from the melody file. Its song task nulls f0 by design (train/models/unisinger.py), so the melody file
  gives duration and singer, not pitch. SVC: content and f0 of ``vocals``, the singer of ``reference``.
Output: the generated accompaniment (SAMUeL, LaDA-Band) or the mix of both generated stems.

Uses the EMA weights of the latest checkpoint (or ``checkpoint``: a step number or a step folder).
Fails (the CLI exits 2) naming the problem: train/run.py's :class:`~songcorpus.train.run.RunError` for a run
that cannot be loaded (a missing run, config or checkpoint, a checkpoint of another model or a corrupt one, a
codebook whose sha256 differs from the corpus's); :class:`GenerateError` for a request that cannot be served (a
missing or unusable input, an input the model does not take, a full-profile run, an output suffix).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from songcorpus.train.run import LoadedRun, load_run
from songcorpus.train.text import caption_encoder

DEFAULT_STEPS = {"samuel": 50, "lada_band": 36, "songecho": 60, "songecho_melody": 60, "unisinger": 32}
WINDOW_BATCH = 8  # windows generated per model call


class GenerateError(ValueError):
    """A generation request that cannot be served, with what to do."""


# ---------------------------------------------------------------------------------------------
# inputs through the corpus's curation stages
# ---------------------------------------------------------------------------------------------

class Curation:
    """The corpus's ingest, stems, VAD and f0 stages over one scratch artefact store."""

    def __init__(self, config: Any, root: Path) -> None:
        from songcorpus.io.artefacts import ArtefactStore

        self.config = config
        self.store = ArtefactStore(root)

    def _ingest(self, path: Path, what: str) -> dict[str, Any]:
        from songcorpus.io.audio import DecodeError
        from songcorpus.transforms.base import Rejection
        from songcorpus.transforms.stages.ingest import IngestStage

        if not path.is_file():
            raise GenerateError(f"{what} file {path} does not exist")
        try:
            return IngestStage(self.config, self.store).process_one({"track": {"path": str(path)}})
        except (DecodeError, Rejection) as exc:
            raise GenerateError(f"{what} file {path}: {exc}") from None

    def stems(self, path: Path, what: str, is_stem: str | None) -> dict[str, Any]:
        """A row with ``ingest`` and ``stems`` results: the mix separated by the corpus's stems stage, or,
        with ``is_stem`` ("vocals" / "accompaniment"), the file standardised and taken as that stem."""
        from songcorpus.transforms.stages.stems import StemStage

        ingest = self._ingest(path, what)
        row: dict[str, Any] = {"track": {"path": str(path)}, "results": {"ingest": ingest}, "outcome": None}
        if is_stem is None:
            row["results"]["stems"] = StemStage(self.config, self.store).process_one(row)
        else:
            with StemReader(self.store.root / ingest["audio_file"]) as stem:
                audible = stem.energy_db() > -90.0
            row["results"]["stems"] = {f"{is_stem}_file": ingest["audio_file"], f"{is_stem}_sha256": ingest["audio_sha256"],
                                       "has_vocals": audible, "stems_method": "source"}  # a real stem: f0 reads it
        return row

    def audio(self, row: dict[str, Any], stem: str) -> np.ndarray:
        """The whole stem as mono float32 (short inputs; generation reads long ones through :meth:`reader`)."""
        from songcorpus.io.audio import read_standard_audio

        x, _ = read_standard_audio(self.store.root / row["results"]["stems"][f"{stem}_file"])
        return x.mean(axis=1)

    def reader(self, row: dict[str, Any], stem: str) -> StemReader:
        return StemReader(self.store.root / row["results"]["stems"][f"{stem}_file"])

    def f0(self, row: dict[str, Any]) -> np.ndarray:
        """f0 at 100 Hz of the row's vocal stem, by the corpus's f0 stage (after its VAD when configured)."""
        from songcorpus.transforms.stages.f0 import VocalF0Stage
        from songcorpus.transforms.stages.vad import SileroVadStage

        if self.config.f0.only_vocal_activity:
            row["results"]["vad"] = SileroVadStage(self.config, self.store).process_one(row)
        out = VocalF0Stage(self.config, self.store).process_one(row)
        return self.store.get_array(out["f0_file"]).astype(np.float32)


class StemReader:
    """A standardised stem of the scratch store, read a span at a time as mono float32 (the values
    :meth:`Curation.audio` gives), so that a long input is never held whole."""

    BLOCK = 1 << 20  # frames per read of :meth:`energy_db`

    def __init__(self, path: Path) -> None:
        import soundfile as sf

        self._file = sf.SoundFile(str(path))
        self.n_samples = int(self._file.frames)

    def read(self, start: int, count: int) -> np.ndarray:
        self._file.seek(start)
        data = self._file.read(count, dtype="int16", always_2d=True)
        return (data.astype(np.float32) / 32768.0).mean(axis=1)

    def energy_db(self) -> float:
        """transforms/stages/stems.py ``energy_db`` of the whole stem (every channel), summed a block at a time."""
        total, count = 0.0, 0
        self._file.seek(0)
        for _ in range(0, self.n_samples, self.BLOCK):
            data = self._file.read(self.BLOCK, dtype="int16", always_2d=True).astype(np.float64) / 32768.0
            total += float(np.square(data).sum())
            count += data.size
        return float(10.0 * np.log10(total / max(count, 1) + 1e-20))

    def window(self, w: Windows, k: int) -> np.ndarray:
        start, count = w.span(k)
        return self.read(start, count)

    def __enter__(self) -> StemReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


@dataclass(frozen=True)
class Windows:
    """Consecutive windows of ``window_s`` over ``n_samples`` at ``rate``; the last one may be partial."""

    n_samples: int
    rate: int
    window_s: float

    @property
    def count(self) -> int:
        return max(1, math.ceil(self.n_samples / self.rate / self.window_s - 1e-9))

    def frames(self, frame_rate: float) -> int:
        return math.ceil(self.window_s * frame_rate - 1e-9)

    def valid(self, k: int, frame_rate: float) -> int:
        left = self.n_samples / self.rate - k * self.window_s
        return min(self.frames(frame_rate), math.ceil(min(left, self.window_s) * frame_rate - 1e-9))

    def span(self, k: int) -> tuple[int, int]:
        """(first sample, sample count) of window ``k``: the output it decodes to has exactly that length."""
        n = round(self.window_s * self.rate)
        return k * n, max(0, min(n, self.n_samples - k * n))

    def mask(self, frame_rate: float, ks: Sequence[int]) -> np.ndarray:
        n = self.frames(frame_rate)
        return np.stack([np.arange(n) < self.valid(k, frame_rate) for k in ks])

    def batches(self) -> Iterator[range]:
        """The windows in model calls of WINDOW_BATCH, in order."""
        for lo in range(0, self.count, WINDOW_BATCH):
            yield range(lo, min(lo + WINDOW_BATCH, self.count))


def pad_to(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] >= n:
        return x[:n]
    return np.concatenate([x, np.zeros((n - x.shape[0], *x.shape[1:]), dtype=x.dtype)])


class Conditions:
    """Condition arrays of one window in the models' batch contract, from prepared audio."""

    def __init__(self, run: LoadedRun) -> None:
        from songcorpus.transforms.models.embedded_codec import EmbeddedCodec

        self.run = run
        self.codec = EmbeddedCodec(run.pipeline.codec, run.sample_rate, run.codebook)
        self._phonemes = None

    def normalise(self, key: str, x: np.ndarray) -> np.ndarray:
        if key in self.run.stats:
            mean, std = self.run.stats[key]
            return ((x - mean) / std).astype(np.float32)
        return x.astype(np.float32)

    def latents(self, x: np.ndarray, w: Windows, k: int, key: str) -> np.ndarray:
        """(T, C) normalised latents of window ``k``'s audio ``x``, zero past its valid frames."""
        rate = self.codec.latent_rate
        row = self.normalise(key, pad_to(self.codec.encode_latents(x), w.frames(rate)))
        return row * w.mask(rate, [k])[0][:, None]

    def tokens(self, x: np.ndarray, w: Windows) -> np.ndarray:
        return pad_to(self.codec.encode_tokens(x).astype(np.int64), w.frames(self.codec.token_rate))

    def reference_latents(self, x: np.ndarray, key: str) -> np.ndarray:
        """The first window of a reference stem, whole (references are read unpadded)."""
        n = round(self.run.window_s * self.run.sample_rate)
        return self.normalise(key, self.codec.encode_latents(x[:n]))

    def reference_tokens(self, x: np.ndarray) -> np.ndarray:
        return self.codec.encode_tokens(x[:round(self.run.window_s * self.run.sample_rate)]).astype(np.int64)

    def f0(self, f0: np.ndarray, w: Windows, k: int) -> np.ndarray:
        n = w.frames(100.0)
        return pad_to(f0[k * n:(k + 1) * n], n).astype(np.float32)

    def text(self, caption: str) -> np.ndarray:
        return caption_encoder().encode([caption])[0]

    def phonemes(self, lyrics: str, count: int) -> np.ndarray:
        """The lyrics split over the windows in proportion (as the loader cuts a lyric sheet), as ids."""
        if self._phonemes is None:
            from songcorpus.train.text import PhonemeTokenizer

            self._phonemes = PhonemeTokenizer(vocab_size=getattr(self.run.config.model, "phoneme_vocab_size", 256))
        words = lyrics.split()
        parts = [" ".join(words[len(words) * k // count:len(words) * (k + 1) // count]) for k in range(count)]
        ids = [self._phonemes.ids(p)[: self.run.config.data.max_phonemes] for p in parts]
        width = max(1, max(len(i) for i in ids))
        return np.stack([np.pad(i, (0, width - len(i))) for i in ids]).astype(np.int64)

    def decode(self, latents: np.ndarray, key: str, n_samples: int) -> np.ndarray:
        """De-normalise with the run's stats, then the corpus's embedded codec (Griffin-Lim from log-mel)."""
        if key in self.run.stats:
            mean, std = self.run.stats[key]
            latents = latents * std + mean
        return self.codec.decode_latents(latents.astype(np.float32), n_samples)


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------

@dataclass
class Request:
    """What the user asked for (paths are raw audio files)."""

    out: Path
    vocals: Path | None = None
    melody: Path | None = None
    reference: Path | None = None
    caption: str | None = None
    lyrics: str | None = None
    task: str | None = None
    duration_s: float | None = None
    inputs_are_stems: bool = False
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    stems: bool = False


ALLOWED = {  # model -> inputs it takes (others are refused by name, never silently ignored)
    "samuel": {"vocals"},
    "lada_band": {"vocals", "reference", "caption"},
    "songecho": {"melody", "caption", "lyrics", "duration_s"},
    "songecho_melody": {"melody", "caption", "lyrics"},
    "unisinger": {"task", "vocals", "melody", "reference", "caption", "lyrics"},
}
LABEL = {"samuel": "SAMUeL", "lada_band": "LaDA-Band", "songecho": "SongEcho stage A",
         "songecho_melody": "SongEcho stage B (melody)", "unisinger": "UniSinger"}
FLAG = {"duration_s": "--duration", "inputs_are_stems": "--inputs-are-stems"}


def check_request(name: str, req: Request) -> None:
    """Refuse inputs the model does not read and name the ones it needs."""
    given = {k for k in ("vocals", "melody", "reference", "caption", "lyrics", "task", "duration_s")
             if getattr(req, k) is not None}
    extra = sorted(given - ALLOWED[name])
    if extra:
        flags = ", ".join(FLAG.get(k, f"--{k}") for k in extra)
        raise GenerateError(f"{LABEL[name]} does not take {flags} (it reads: "
                            f"{', '.join(FLAG.get(k, '--' + k) for k in sorted(ALLOWED[name]))})")
    need: list[str] = []
    if name in ("samuel", "lada_band"):
        need = ["vocals"]
    elif name == "songecho":
        need = ["caption"]
    elif name == "songecho_melody":
        need = ["melody", "caption"]
    elif name == "unisinger":
        task = req.task or "song"
        if task not in ("song", "svc"):
            raise GenerateError(f"UniSinger --task must be song or svc, not {task!r}")
        need = ["caption", "melody"] if task == "song" else ["vocals", "reference"]
        if task == "svc" and req.lyrics is not None:
            raise GenerateError("UniSinger --task svc reads no --lyrics (conversion keeps the source's words)")
    missing = [k for k in need if getattr(req, k) is None]
    if missing:
        what = LABEL[name] + (f" --task {req.task or 'song'}" if name == "unisinger" else "")
        raise GenerateError(f"{what} needs {', '.join('--' + k for k in missing)}"
                            + (" (a stage-B run follows the f0 of that song's vocals)" if "melody" in missing
                               and name == "songecho_melody" else ""))


class Sampler:
    """``model.generate`` over the windows a batch at a time, with one seeded generator for the whole input:
    fed batch after batch (of WINDOW_BATCH windows, in order), every window gets the draws it always had."""

    def __init__(self, run: LoadedRun, req: Request, device: str, **options: Any) -> None:
        self.model = run.model
        self.device = device
        g = torch.Generator(device=device).manual_seed(req.seed)
        self.kwargs: dict[str, Any] = {"steps": req.steps or DEFAULT_STEPS[run.name], "generator": g, **options}
        if req.guidance is not None:
            self.kwargs["guidance"] = req.guidance

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in batch.items()}
        return self.model.generate(tensors, **self.kwargs).float().cpu().numpy()


OUTPUT_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
COPY_BLOCK = 1 << 20  # samples per block when the scaled 16-bit outputs are written


class OutputFiles:
    """The generated stems, appended window by window as float32 to files of the scratch folder while the mix's
    peak is tracked; :meth:`finish` then writes the 16-bit outputs, scaled by that peak, a block at a time and
    renames them into place. A long input is thus never held whole, and a kill never leaves a half output."""

    def __init__(self, folder: Path, rate: int) -> None:
        self.folder = folder
        self.rate = rate
        self.files: dict[str, Any] = {}
        self.peak = 0.0
        self.n_samples = 0

    def write(self, parts: dict[str, np.ndarray]) -> None:
        mix = sum(parts.values())
        for name, x in {"mix": mix, **parts}.items():
            if name not in self.files:
                self.files[name] = open(self.folder / f"{name}.f32", "wb")  # closed by finish() or close()
            np.asarray(x, dtype=np.float32).tofile(self.files[name])
        self.peak = max(self.peak, float(np.max(np.abs(mix))) if mix.size else 0.0)
        self.n_samples += int(mix.size)

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()

    def finish(self, out: Path, stems: bool) -> tuple[list[Path], float]:
        """Write ``out`` (the mix) and, with ``stems`` and more than one stem, ``out.<stem><ext>``."""
        import soundfile as sf

        self.close()
        scale = 0.99 / self.peak if self.peak > 0.99 else 1.0  # Griffin-Lim can overshoot: scale down, never clip
        parts = [name for name in self.files if name != "mix"]
        targets = [("mix", out)]
        if stems and len(parts) > 1:
            targets += [(stem, out.with_name(f"{out.stem}.{stem}{out.suffix}")) for stem in parts]
        staged = []
        for name, final in targets:
            tmp = self.folder / f"out.{name}{out.suffix}"
            with open(self.folder / f"{name}.f32", "rb") as src, sf.SoundFile(
                    str(tmp), "w", samplerate=self.rate, channels=1, subtype="PCM_16",
                    format=OUTPUT_FORMATS[out.suffix.lower()]) as dst:
                while block := src.read(COPY_BLOCK * 4):
                    dst.write((np.frombuffer(block, dtype=np.float32) * scale).astype(np.float32))
            staged.append((tmp, final))
        for tmp, final in staged:
            os.replace(tmp, final)
        return [final for _, final in staged], scale


SCRATCH_SUFFIX = ".tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def scratch_folder(out: Path) -> Iterator[Path]:
    """``.<out name>.generate-<pid>.tmp`` next to the output: the scratch artefact store and the window-by-window
    output, removed on any exit that runs Python's cleanup (a normal end, an error, Ctrl-C, SIGTERM through the
    CLI). One a ``kill -9`` left behind, whose process is gone, is removed by the next run writing the same output;
    it sits next to the output, never in the system temp folder, so it cannot pile up unseen there."""
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}.generate-"
    for old in out.parent.iterdir():
        if not (old.name.startswith(prefix) and old.name.endswith(SCRATCH_SUFFIX)):
            continue
        pid = old.name[len(prefix):-len(SCRATCH_SUFFIX)]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    folder = out.parent / f"{prefix}{os.getpid()}{SCRATCH_SUFFIX}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bar(total: int, name: str, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"generate {name}", unit="window", file=sys.stderr, disable=not progress)


def generate(run_path: str | Path, req: Request, checkpoint: str | None = None, device: str = "cpu",
             progress: bool = False) -> dict[str, Any]:
    """Generate ``req.out`` from run ``run_path``, window by window (``progress``: a bar per window on stderr);
    returns what was written and how."""
    run = load_run(run_path, checkpoint, device)
    name = run.name
    check_request(name, req)
    backbone = run.config.model.backbone if name == "songecho_melody" else run.config.model
    if getattr(backbone, "use_speaker", False):
        raise GenerateError(f"run {run.path} reads a speaker embedding (full profile); generation prepares the "
                            f"lite inputs only")
    if req.out.suffix.lower() not in OUTPUT_FORMATS:
        raise GenerateError(f"--out {req.out}: write a .wav or .flac file")
    rate = run.sample_rate
    with scratch_folder(req.out) as tmp:
        cur = Curation(run.pipeline, tmp / "store")
        cond = Conditions(run)
        files = OutputFiles(tmp, rate)
        try:
            if name in ("samuel", "lada_band"):
                _generate_accompaniment(run, req, cur, cond, files, device, progress)
            else:
                _generate_song(run, req, cur, cond, files, device, progress)
            written, scale = files.finish(req.out, req.stems)
        finally:
            files.close()
    n = files.n_samples
    return {"model": name, "step": run.step, "checkpoint": str(run.checkpoint), "written": [str(p) for p in written],
            "duration_s": round(n / rate, 6), "sample_rate": rate, "window_s": run.window_s,
            "windows": math.ceil(n / rate / run.window_s - 1e-9), "gain": round(scale, 6)}


def _reference_row(req: Request, cur: Curation, stem: str) -> dict[str, Any] | None:
    if req.reference is None:
        return None
    return cur.stems(req.reference, "--reference", stem if req.inputs_are_stems else None)


def _first_window(cur: Curation, row: dict[str, Any], stem: str, run: LoadedRun) -> np.ndarray:
    with cur.reader(row, stem) as reader:
        return reader.read(0, round(run.window_s * run.sample_rate))


def _generate_accompaniment(run: LoadedRun, req: Request, cur: Curation, cond: Conditions, files: OutputFiles,
                            device: str, progress: bool) -> None:
    """SAMUeL (vocal latents -> accompaniment latents) and LaDA-Band (vocal tokens, caption, reference ->
    accompaniment tokens), one batch of windows at a time, each window decoded as soon as it is generated."""
    samuel = run.name == "samuel"
    vrow = cur.stems(req.vocals, "--vocals", "vocals")
    if samuel:
        sample, rate = Sampler(run, req, device), cond.codec.latent_rate
    else:
        rrow = _reference_row(req, cur, "accompaniment")
        ref = cond.reference_tokens(_first_window(cur, rrow, "accompaniment", run)) if rrow else np.zeros(1, np.int64)
        text = cond.text(req.caption or "")
        sample, rate = Sampler(run, req, device, keep_reference=rrow is not None), cond.codec.token_rate
    with cur.reader(vrow, "vocals") as voc:
        w = Windows(voc.n_samples, run.sample_rate, run.window_s)
        with _bar(w.count, run.name, progress) as bar:
            for ks in w.batches():
                mask = w.mask(rate, ks)
                if samuel:
                    batch = {"vocals_latents": np.stack([cond.latents(voc.window(w, k), w, k, "vocals_latents")
                                                         for k in ks]), "mask": mask}
                else:
                    batch = {"vocals_tokens": np.stack([cond.tokens(voc.window(w, k), w) for k in ks]), "mask": mask,
                             "reference_tokens": np.repeat(ref[None], len(ks), axis=0),
                             "text_emb": np.repeat(text[None], len(ks), axis=0)}
                out = sample(batch)
                for i, k in enumerate(ks):
                    n = w.span(k)[1]
                    if samuel:
                        files.write({"accompaniment": cond.decode(out[i][mask[i]], "accompaniment_latents", n)})
                    else:
                        files.write({"accompaniment": cond.codec.decode_tokens(_token_ids(run, out[i][mask[i]]), n)})
                    bar.update(1)


def _token_ids(run: LoadedRun, ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= run.codebook.shape[0]):
        raise GenerateError(f"the model sampled token ids outside the corpus codebook "
                            f"(0..{run.codebook.shape[0] - 1}): its vocab_size "
                            f"{run.config.model.vocab_size} does not match the codebook")
    return ids


def _generate_song(run: LoadedRun, req: Request, cur: Curation, cond: Conditions, files: OutputFiles,
                   device: str, progress: bool) -> None:
    """SongEcho (A, B) and UniSinger: [vocals; accompaniment] latents, both decoded window by window."""
    from songcorpus.train.models.base import split_stems

    name, rate = run.name, run.sample_rate
    task = req.task or "song"
    given = "vocals" if req.inputs_are_stems else None
    mrow = None
    if req.melody is not None and name != "songecho":  # stage A reads only the melody file's duration
        mrow = cur.stems(req.melody, "--melody", given)
    svc = name == "unisinger" and task == "svc"
    src_row = cur.stems(req.vocals, "--vocals", "vocals") if svc else mrow
    if src_row is not None:
        with cur.reader(src_row, "vocals") as src:
            n = src.n_samples
    elif req.melody is not None:  # SongEcho stage A: the caption alone, as long as the melody file
        n = int(cur._ingest(req.melody, "--melody")["n_frames"])
    else:
        n = round((req.duration_s or run.window_s) * rate)
    w = Windows(n, rate, run.window_s)
    lat_rate = cond.codec.latent_rate
    text = cond.text(req.caption or "")
    if name == "unisinger":
        uses_lyrics = task == "song"
    else:
        backbone = run.config.model.backbone if name == "songecho_melody" else run.config.model
        uses_lyrics = backbone.use_lyrics
    phonemes = cond.phonemes(req.lyrics or "", w.count) if uses_lyrics else None
    f0 = cur.f0(src_row) if name == "songecho_melody" or svc else None
    options: dict[str, Any] = {}
    reference = None
    if name == "unisinger":
        options["task"] = task
        cfg = run.config.model
        if cfg.speaker_source != "reference_latents" or cfg.content_source != "latents":
            raise GenerateError("this UniSinger run reads content units / a speaker embedding (full profile); "
                                "generation prepares the lite inputs only")
        rrow = _reference_row(req, cur, "vocals") or src_row
        reference = cond.reference_latents(_first_window(cur, rrow, "vocals", run), "vocals_latents")
    sample = Sampler(run, req, device, **options)
    with ExitStack() as stack:
        src = stack.enter_context(cur.reader(src_row, "vocals")) if svc else None
        bar = stack.enter_context(_bar(w.count, name, progress))
        for ks in w.batches():
            batch: dict[str, np.ndarray] = {"mask": w.mask(lat_rate, ks),
                                            "text_emb": np.repeat(text[None], len(ks), axis=0)}
            if phonemes is not None:
                batch["phonemes"] = phonemes[ks.start:ks.stop]
            if reference is not None:
                batch["reference_vocals_latents"] = np.repeat(reference[None], len(ks), axis=0)
            if src is not None:
                batch["vocals_latents"] = np.stack([cond.latents(src.window(w, k), w, k, "vocals_latents") for k in ks])
            if f0 is not None:
                batch["f0"] = np.stack([cond.f0(f0, w, k) for k in ks])
            voc, acc = (s.numpy() for s in split_stems(torch.from_numpy(sample(batch))))
            for i, k in enumerate(ks):
                keep, n_k = batch["mask"][i], w.span(k)[1]
                files.write({"vocals": cond.decode(voc[i][keep], "vocals_latents", n_k),
                             "accompaniment": cond.decode(acc[i][keep], "accompaniment_latents", n_k)})
                bar.update(1)
