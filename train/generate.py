"""``songcorpus generate``: audio from a trained run, with inputs prepared exactly as the corpus was.

Reads: a run folder (``config.yaml``, ``provenance.json``, ``latent_stats.npz``, ``checkpoints/step-N/``; see
train/trainer.py), the corpus it names (``provenance.json`` lists the shard paths; the corpus folder is the
one above ``shards/``: its ``config.yaml`` is the pipeline config, ``codec/codebook.npy`` the codebook, whose
sha256 must equal ``embedded_codec.codebook_sha256`` of the corpus's samples), and raw audio files.
Writes: one WAV or FLAC (by suffix) at the corpus sample rate, 16-bit PCM; with ``stems=True`` also
``<out>.vocals<ext>`` / ``<out>.accompaniment<ext>`` for the models that generate both stems.

Inputs go through the corpus's own curation stages with the corpus's config, in a scratch artefact store:
ingest (decode, downmix, resample: transforms/ingest.py), the stems stage for a mix (a ``vocals`` input is
taken as the vocal stem as given; ``inputs_are_stems`` says the melody/reference files are stems too), VAD
and f0 on the vocal stem (transforms/vad.py, transforms/f0.py), and the embedded codec (latents of each
window's mono stem, tokens = nearest centroid of the corpus codebook). Latents are z-scored with the run's
``latent_stats.npz`` and de-normalised before decoding.

Long inputs: the input is cut into consecutive windows of the run's window length (``data.window_s``, else
the corpus's window), each generated on its own (in batches), the last one padded and masked; the valid
frames are concatenated and decoded once, to exactly the input's length. Windows do not see each other, so
there can be a seam at each window boundary.

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
Fails with :class:`GenerateError` (the CLI exits 2) naming the problem: a missing run, config or checkpoint,
a checkpoint of another model or a corrupt one (train/checkpoint.py's CheckpointError), a missing or
unusable input, an input the model does not take, a codebook whose sha256 differs from the corpus's.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from songcorpus.schemas.training import TrainConfig, load_train_config, saved_train_config

DEFAULT_STEPS = {"samuel": 50, "lada_band": 36, "songecho": 60, "songecho_melody": 60, "unisinger": 32}
WINDOW_BATCH = 8  # windows generated per model call


class GenerateError(ValueError):
    """A generation request that cannot be served, with what to do."""


# ---------------------------------------------------------------------------------------------
# the run: config, checkpoint (EMA weights), latent stats, and the corpus's codec
# ---------------------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    path: Path
    config: TrainConfig
    model: torch.nn.Module
    step: int
    checkpoint: Path
    corpus: Path
    pipeline: Any  # PipelineConfig of the corpus
    sample_meta: dict[str, Any]
    codebook: np.ndarray
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.model.name

    @property
    def sample_rate(self) -> int:
        return int(self.sample_meta["sample_rate"])

    @property
    def window_s(self) -> float:
        return float(self.config.data.window_s or self.sample_meta["duration_s"])

    @property
    def latent_rate(self) -> float:
        return float(self.sample_meta["embedded_codec"]["latent_rate_hz"])

    @property
    def token_rate(self) -> float:
        return float(self.sample_meta["embedded_codec"]["token_rate_hz"])


def find_checkpoint(run: Path, checkpoint: str | None) -> tuple[int, Path]:
    """The step folder to load: the latest, ``checkpoint`` as a step number, or as a folder path."""
    from songcorpus.train.checkpoint import STEP_DIR, list_checkpoints

    found = list_checkpoints(run)
    if checkpoint is None:
        if not found:
            raise GenerateError(f"run {run} has no checkpoint (no {run / 'checkpoints'}/step-N); train it first "
                                f"with `songcorpus train ... --out {run}`")
        return found[-1]
    if checkpoint.isdigit():
        for step, path in found:
            if step == int(checkpoint):
                return step, path
        have = ", ".join(str(s) for s, _ in found) or "none"
        raise GenerateError(f"run {run} has no checkpoint at step {int(checkpoint)} (it has: {have})")
    path = Path(checkpoint)
    m = STEP_DIR.match(path.name)
    if not path.is_dir() or m is None:
        raise GenerateError(f"--checkpoint {checkpoint}: neither a step number of {run} nor a step-NNNNNNNN folder")
    return int(m.group(1)), path


def corpus_of(run: Path) -> tuple[Path, dict[str, Any]]:
    """The corpus folder a run trained on (from provenance.json) and its first sample's JSON."""
    from songcorpus.train.data import ShardIndex, read_members

    prov_path = run / "provenance.json"
    if not prov_path.exists():
        raise GenerateError(f"run {run} has no provenance.json: it does not name its corpus (was it trained?)")
    shards = [Path(p) for p in json.loads(prov_path.read_text()).get("shard_paths", [])]
    present = [p for p in shards if p.is_file()]
    if not present:
        raise GenerateError(f"the corpus run {run} trained on is gone: none of its shards exists "
                            f"({', '.join(map(str, shards[:2])) or 'none listed'}); generation needs its codec")
    corpus = present[0].parent.parent if present[0].parent.name == "shards" else present[0].parent
    index = ShardIndex.scan([str(present[0])])
    if not index.samples or "json" not in index.samples[0].members:
        raise GenerateError(f"shard {present[0]} holds no songcorpus sample")
    return corpus, json.loads(read_members(index.samples[0], ["json"])["json"])


def load_run(run: str | Path, checkpoint: str | None = None, device: str = "cpu") -> LoadedRun:
    """Everything generation needs from a run, checked: EMA weights, stats, the corpus codec and codebook."""
    import yaml

    from songcorpus.schemas.config import PipelineConfig
    from songcorpus.train.checkpoint import CheckpointError, load_checkpoint
    from songcorpus.transforms.codec import CODEC_NAME, load_codebook

    run = Path(run)
    if not (run / "config.yaml").exists():
        raise GenerateError(f"{run} is not a training run folder (no config.yaml); give the --out of "
                            f"`songcorpus train`")
    text = yaml.safe_load((run / "config.yaml").read_text()) or {}
    name = (text.get("model") or {}).get("name")
    config = load_train_config(name, run / "config.yaml")
    step, ckpt = find_checkpoint(run, checkpoint)
    try:
        state, _ = load_checkpoint(ckpt, config.model.name, 0)
    except CheckpointError as exc:  # corrupt, not a checkpoint, or another model's
        raise GenerateError(f"cannot generate with run {run} ({config.model.name}): {exc}") from None
    if config.data.codec != "embedded":
        raise GenerateError(f"run {run} trained on codec {config.data.codec!r}; generation decodes the embedded "
                            f"codec only (a full-profile codec decoder needs its weights)")
    corpus, meta = corpus_of(run)
    pipeline = PipelineConfig.model_validate(yaml.safe_load((corpus / "config.yaml").read_text()))
    emb = meta.get("embedded_codec")
    if emb is None:
        raise GenerateError(f"corpus {corpus}: its samples (spec {meta.get('spec_version')}) do not name their "
                            f"embedded codec; re-curate it with this version")
    if emb.get("codec") != CODEC_NAME or emb.get("config_hash") != pipeline.codec.digest():
        raise GenerateError(f"corpus {corpus}: its samples' codec ({emb.get('codec')}, config "
                            f"{emb.get('config_hash')}) is not the one its config.yaml describes "
                            f"({CODEC_NAME}, {pipeline.codec.digest()}); the corpus folder was altered")
    try:
        codebook = load_codebook(corpus / "codec" / "codebook.npy", emb["codebook_sha256"])
    except (OSError, ValueError) as exc:
        raise GenerateError(f"corpus codebook: {exc}") from None
    from songcorpus.train.trainer import build_model

    model_config = saved_train_config(state["config"]) if "config" in state else config
    if model_config.model.name == "songecho_melody":  # the EMA state holds the frozen backbone too
        from songcorpus.train.models.songecho import SongEchoMelody

        model = SongEchoMelody(model_config.model)
    else:
        model = build_model(model_config)
    try:
        model.load_state_dict(state["ema"])
    except (KeyError, RuntimeError) as exc:
        raise GenerateError(f"checkpoint {ckpt}: its EMA weights do not fit the model its config describes "
                            f"({str(exc)[:200]})") from None
    model.to(device).eval()
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if config.data.normalise_latents and any("latents" in k for k in model.batch_keys):
        stats_path = run / "latent_stats.npz"
        if not stats_path.exists():
            raise GenerateError(f"run {run} has no latent_stats.npz: its latents cannot be normalised")
        saved = np.load(stats_path)
        for key in ("vocals_latents", "accompaniment_latents"):
            if f"{key}.mean" in saved:
                stats[key] = (saved[f"{key}.mean"], saved[f"{key}.std"])
    return LoadedRun(run, model_config, model, step, ckpt, corpus, pipeline, meta, codebook, stats)


# ---------------------------------------------------------------------------------------------
# inputs through the corpus's curation stages
# ---------------------------------------------------------------------------------------------

class Curation:
    """The corpus's ingest, stems, VAD and f0 stages over one scratch artefact store."""

    def __init__(self, config: Any, root: Path) -> None:
        from songcorpus.transforms.artefacts import ArtefactStore

        self.config = config
        self.store = ArtefactStore(root)

    def _ingest(self, path: Path, what: str) -> dict[str, Any]:
        from songcorpus.transforms.audio_io import DecodeError
        from songcorpus.transforms.base import Rejection
        from songcorpus.transforms.ingest import IngestStage

        if not path.is_file():
            raise GenerateError(f"{what} file {path} does not exist")
        try:
            return IngestStage(self.config, self.store).process_one({"track": {"path": str(path)}})
        except (DecodeError, Rejection) as exc:
            raise GenerateError(f"{what} file {path}: {exc}") from None

    def stems(self, path: Path, what: str, is_stem: str | None) -> dict[str, Any]:
        """A row with ``ingest`` and ``stems`` results: the mix separated by the corpus's stems stage, or,
        with ``is_stem`` ("vocals" / "accompaniment"), the file standardised and taken as that stem."""
        from songcorpus.transforms.audio_io import read_standard_audio
        from songcorpus.transforms.stems import StemStage, energy_db

        ingest = self._ingest(path, what)
        row: dict[str, Any] = {"track": {"path": str(path)}, "results": {"ingest": ingest}, "outcome": None}
        if is_stem is None:
            row["results"]["stems"] = StemStage(self.config, self.store).process_one(row)
        else:
            x, _ = read_standard_audio(self.store.root / ingest["audio_file"])
            row["results"]["stems"] = {f"{is_stem}_file": ingest["audio_file"], f"{is_stem}_sha256": ingest["audio_sha256"],
                                       "has_vocals": bool(np.any(x) and energy_db(x) > -90.0)}
        return row

    def audio(self, row: dict[str, Any], stem: str) -> np.ndarray:
        from songcorpus.transforms.audio_io import read_standard_audio

        x, _ = read_standard_audio(self.store.root / row["results"]["stems"][f"{stem}_file"])
        return x.mean(axis=1)

    def f0(self, row: dict[str, Any]) -> np.ndarray:
        """f0 at 100 Hz of the row's vocal stem, by the corpus's f0 stage (after its VAD when configured)."""
        from songcorpus.transforms.f0 import VocalF0Stage
        from songcorpus.transforms.vad import SileroVadStage

        if self.config.f0.only_vocal_activity:
            row["results"]["vad"] = SileroVadStage(self.config, self.store).process_one(row)
        out = VocalF0Stage(self.config, self.store).process_one(row)
        return self.store.get_array(out["f0_file"]).astype(np.float32)


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

    def cut(self, x: np.ndarray, k: int) -> np.ndarray:
        n = round(self.window_s * self.rate)
        return x[k * n:(k + 1) * n]

    def mask(self, frame_rate: float) -> np.ndarray:
        n = self.frames(frame_rate)
        return np.stack([np.arange(n) < self.valid(k, frame_rate) for k in range(self.count)])


def pad_to(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] >= n:
        return x[:n]
    return np.concatenate([x, np.zeros((n - x.shape[0], *x.shape[1:]), dtype=x.dtype)])


@lru_cache(maxsize=1)
def caption_encoder() -> Any:
    """The loader's caption encoder (MiniLM, sha256-checked), loaded once per process."""
    from songcorpus.train.text import CaptionEncoder

    return CaptionEncoder()


class Conditions:
    """Per-window condition arrays in the models' batch contract, from prepared audio."""

    def __init__(self, run: LoadedRun) -> None:
        from songcorpus.transforms.codec import EmbeddedCodec

        self.run = run
        self.codec = EmbeddedCodec(run.pipeline.codec, run.sample_rate, run.codebook)
        self._phonemes = None

    def normalise(self, key: str, x: np.ndarray) -> np.ndarray:
        if key in self.run.stats:
            mean, std = self.run.stats[key]
            return ((x - mean) / std).astype(np.float32)
        return x.astype(np.float32)

    def latents(self, x: np.ndarray, w: Windows, key: str) -> np.ndarray:
        """(n_windows, T, C) normalised latents of each window's audio, padded past the valid frames."""
        n = w.frames(self.codec.latent_rate)
        rows = [pad_to(self.codec.encode_latents(w.cut(x, k)), n) for k in range(w.count)]
        return np.stack([self.normalise(key, r) for r in rows]) * w.mask(self.codec.latent_rate)[..., None]

    def tokens(self, x: np.ndarray, w: Windows) -> np.ndarray:
        n = w.frames(self.codec.token_rate)
        return np.stack([pad_to(self.codec.encode_tokens(w.cut(x, k)).astype(np.int64), n) for k in range(w.count)])

    def reference_latents(self, x: np.ndarray, key: str) -> np.ndarray:
        """The first window of a reference stem, whole (references are read unpadded)."""
        n = round(self.run.window_s * self.run.sample_rate)
        return self.normalise(key, self.codec.encode_latents(x[:n]))

    def reference_tokens(self, x: np.ndarray) -> np.ndarray:
        return self.codec.encode_tokens(x[:round(self.run.window_s * self.run.sample_rate)]).astype(np.int64)

    def f0(self, f0: np.ndarray, w: Windows) -> np.ndarray:
        n = w.frames(100.0)
        return np.stack([pad_to(f0[k * n:(k + 1) * n], n) for k in range(w.count)]).astype(np.float32)

    def text(self, caption: str, count: int) -> np.ndarray:
        return np.repeat(caption_encoder().encode([caption]), count, axis=0)

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


def _tensors(batch: dict[str, np.ndarray], lo: int, hi: int, device: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v[lo:hi])).to(device) for k, v in batch.items()}


def run_model(run: LoadedRun, batch: dict[str, np.ndarray], req: Request, device: str,
              **options: Any) -> np.ndarray:
    """``model.generate`` over the windows in batches of WINDOW_BATCH, one seeded generator for the call."""
    n = next(iter(batch.values())).shape[0]
    g = torch.Generator(device=device).manual_seed(req.seed)
    kwargs: dict[str, Any] = {"steps": req.steps or DEFAULT_STEPS[run.name], "generator": g, **options}
    if req.guidance is not None:
        kwargs["guidance"] = req.guidance
    outs = []
    for lo in range(0, n, WINDOW_BATCH):
        outs.append(run.model.generate(_tensors(batch, lo, lo + WINDOW_BATCH, device), **kwargs).float().cpu().numpy())
    return np.concatenate(outs)


def join_windows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n_windows, T, ...) -> the valid frames of every window, in order."""
    return np.concatenate([x[k][mask[k]] for k in range(x.shape[0])])


def generate(run_path: str | Path, req: Request, checkpoint: str | None = None, device: str = "cpu",
             scratch: Path | None = None) -> dict[str, Any]:
    """Generate ``req.out`` from run ``run_path``; returns what was written and how."""
    import soundfile as sf

    run = load_run(run_path, checkpoint, device)
    name = run.name
    check_request(name, req)
    backbone = run.config.model.backbone if name == "songecho_melody" else run.config.model
    if getattr(backbone, "use_speaker", False):
        raise GenerateError(f"run {run.path} reads a speaker embedding (full profile); generation prepares the "
                            f"lite inputs only")
    if req.out.suffix.lower() not in (".wav", ".flac"):
        raise GenerateError(f"--out {req.out}: write a .wav or .flac file")
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        cur = Curation(run.pipeline, Path(tmp))
        cond = Conditions(run)
        rate = run.sample_rate
        ref_stem = "accompaniment" if name == "lada_band" else "vocals"
        given = "vocals" if req.inputs_are_stems else None

        def ref_row() -> dict[str, Any] | None:
            if req.reference is None:
                return None
            return cur.stems(req.reference, "--reference", ref_stem if req.inputs_are_stems else None)

        stems_out: dict[str, np.ndarray]
        if name in ("samuel", "lada_band"):
            vrow = cur.stems(req.vocals, "--vocals", "vocals")
            voc = cur.audio(vrow, "vocals")
            w = Windows(voc.size, rate, run.window_s)
            if name == "samuel":
                batch = {"vocals_latents": cond.latents(voc, w, "vocals_latents"), "mask": w.mask(cond.codec.latent_rate)}
                lat = join_windows(run_model(run, batch, req, device), batch["mask"])
                stems_out = {"accompaniment": decode_latents(cond, lat, "accompaniment_latents", voc.size)}
            else:
                rrow = ref_row()
                ref = cond.reference_tokens(cur.audio(rrow, "accompaniment")) if rrow else np.zeros(1, np.int64)
                batch = {"vocals_tokens": cond.tokens(voc, w), "mask": w.mask(cond.codec.token_rate),
                         "reference_tokens": np.repeat(ref[None], w.count, axis=0),
                         "text_emb": cond.text(req.caption or "", w.count)}
                ids = join_windows(run_model(run, batch, req, device, keep_reference=rrow is not None),
                                   batch["mask"]).astype(np.int64)
                if ids.size and (ids.min() < 0 or ids.max() >= run.codebook.shape[0]):
                    raise GenerateError(f"the model sampled token ids outside the corpus codebook "
                                        f"(0..{run.codebook.shape[0] - 1}): its vocab_size "
                                        f"{run.config.model.vocab_size} does not match the codebook")
                stems_out = {"accompaniment": cond.codec.decode_tokens(ids, voc.size)}
            stems_out["_length"] = np.zeros(voc.size)
        else:
            stems_out = _generate_song(run, req, cur, cond, given, ref_row, device)
        n = stems_out.pop("_length").size
        parts = {k: v[:n] for k, v in stems_out.items()}
        mix = sum(parts.values())
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    scale = 0.99 / peak if peak > 0.99 else 1.0  # Griffin-Lim can overshoot: scale down, never clip
    req.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(req.out, (mix * scale).astype(np.float32), rate, subtype="PCM_16")
    written = [req.out]
    if req.stems and len(parts) > 1:
        for stem, y in parts.items():
            path = req.out.with_name(f"{req.out.stem}.{stem}{req.out.suffix}")
            sf.write(path, (y * scale).astype(np.float32), rate, subtype="PCM_16")
            written.append(path)
    return {"model": name, "step": run.step, "checkpoint": str(run.checkpoint), "written": [str(p) for p in written],
            "duration_s": round(n / rate, 6), "sample_rate": rate, "window_s": run.window_s,
            "windows": math.ceil(n / rate / run.window_s - 1e-9), "gain": round(scale, 6)}


def decode_latents(cond: Conditions, latents: np.ndarray, key: str, n_samples: int) -> np.ndarray:
    """De-normalise with the run's stats, then the corpus's embedded codec (Griffin-Lim from log-mel)."""
    if key in cond.run.stats:
        mean, std = cond.run.stats[key]
        latents = latents * std + mean
    return cond.codec.decode_latents(latents.astype(np.float32), n_samples)


def _generate_song(run: LoadedRun, req: Request, cur: Curation, cond: Conditions, given: str | None,
                   ref_row: Any, device: str) -> dict[str, np.ndarray]:
    """SongEcho (A, B) and UniSinger: [vocals; accompaniment] latents, both decoded."""
    from songcorpus.train.models.base import split_stems

    name, rate = run.name, run.sample_rate
    task = req.task or "song"
    mrow = None
    if req.melody is not None and name != "songecho":  # stage A reads only the melody file's duration
        mrow = cur.stems(req.melody, "--melody", given)
    if name == "unisinger" and task == "svc":
        src_row = cur.stems(req.vocals, "--vocals", "vocals")
        src = cur.audio(src_row, "vocals")
        n = src.size
    elif mrow is not None:
        src_row, src = mrow, cur.audio(mrow, "vocals")
        n = src.size
    elif req.melody is not None:  # SongEcho stage A: the caption alone, as long as the melody file
        src_row, src = None, None
        n = int(cur._ingest(req.melody, "--melody")["n_frames"])
    else:
        src_row, src = None, None
        n = round((req.duration_s or run.window_s) * rate)
    w = Windows(n, rate, run.window_s)
    lat_rate = cond.codec.latent_rate
    batch: dict[str, np.ndarray] = {"mask": w.mask(lat_rate), "text_emb": cond.text(req.caption or "", w.count)}
    if name == "unisinger":
        uses_lyrics = task == "song"
    else:
        backbone = run.config.model.backbone if name == "songecho_melody" else run.config.model
        uses_lyrics = backbone.use_lyrics
    if uses_lyrics:
        batch["phonemes"] = cond.phonemes(req.lyrics or "", w.count)
    options: dict[str, Any] = {}
    if name == "songecho_melody":
        batch["f0"] = cond.f0(cur.f0(src_row), w)
    if name == "unisinger":
        options["task"] = task
        cfg = run.config.model
        if cfg.speaker_source != "reference_latents" or cfg.content_source != "latents":
            raise GenerateError("this UniSinger run reads content units / a speaker embedding (full profile); "
                                "generation prepares the lite inputs only")
        rrow = ref_row() or src_row
        batch["reference_vocals_latents"] = np.repeat(
            cond.reference_latents(cur.audio(rrow, "vocals"), "vocals_latents")[None], w.count, axis=0)
        if task == "svc":
            batch["vocals_latents"] = cond.latents(src, w, "vocals_latents")
            batch["f0"] = cond.f0(cur.f0(src_row), w)
    x = run_model(run, batch, req, device, **options)
    voc, acc = (join_windows(s.numpy(), batch["mask"]) for s in split_stems(torch.from_numpy(x)))
    return {"vocals": decode_latents(cond, voc, "vocals_latents", n),
            "accompaniment": decode_latents(cond, acc, "accompaniment_latents", n), "_length": np.zeros(n)}
