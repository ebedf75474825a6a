"""Shards -> batches for the generators: fields by name, split by rank and worker, an endless seeded stream,
resumable from the step alone.

Reads: WebDataset shards (a corpus folder's ``shards/index-<split>.json``, a wids index, a glob, or a list
of paths; each may be an object-store URL, read by ranged GETs through ``songcorpus/io/storage.py``, and a corpus
URL is read only once published, from what its ``published.json`` lists), the members each model asks for and
nothing else. A shard is a family of field-group tars (``<shard>.meta.tar``, ``.tokens.tar``, ``.latents.tar``,
``.audio.tar``: ``schemas/sample.py`` FIELD_GROUPS); only the files of the groups a model needs are opened, their
tar headers scanned once for member offsets (512-byte reads), and a sample's members are then read by offset, so a
token model reads its 2 KB of tokens and the JSON from two small files, never the 1 MB of FLAC. A plain tar
(every member in one file: another tool's, or a spec-3 corpus) is read the same way.
Writes: nothing (the trainer saves :meth:`ShardStream.state_dict` in its checkpoints and the latent
statistics of :func:`latent_statistics` in the run folder).

Order. The samples of a split form one list (shards in index order, members in tar order). Epoch ``e`` is
the permutation ``default_rng([seed, e])`` of that list, epochs follow each other without end, and global
step ``s`` takes positions ``[s*G, (s+1)*G)`` of that sequence (``G`` = global batch). Rank ``r`` of ``W``
takes the ``r``-th of ``W`` equal slices of each global batch; DataLoader worker ``w`` of ``K`` builds the
steps ``(s - start) % K == w`` (counted from the stream's first step, so the DataLoader's round-robin, which
always begins at worker 0, yields the steps in order from any start). So:
- no rank runs out before another (the stream is endless and the trainer counts steps);
- the batch of step ``s`` is a pure function of (seed, s, rank, world size): a resumed run draws exactly
  the batches an uninterrupted one would, and the global batch does not depend on the world size (2 ranks
  of 2 see what 1 rank of 4 sees), so a resume on another world size is re-sharded exactly;
- fewer shards than ranks x workers is no problem: the split is by sample, not by shard.
Crops are seeded the same way, per (seed, step, position in the global batch).

Fails: an empty split, a shard that is missing or not a tar, a field the model needs that the corpus lacks
(naming it and the profile that makes it) each raise :class:`DataError` before training starts.
"""

from __future__ import annotations

import glob as globlib
import io
import json
import math
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.io import storage
from songcorpus.schemas.sample import FIELD_GROUPS, field_group, split_group_file
from songcorpus.schemas.track import SPLITS

F0_RATE_HZ = 100.0


class DataError(ValueError):
    """Training data that cannot be used, named, with what to do."""


# batch key -> (member suffix template, rate kind); {codec} is the configured codec
TENSOR_FIELDS: dict[str, tuple[str, str]] = {
    "vocals_latents": ("vocals.{codec}_latents.npy", "latent"),
    "accompaniment_latents": ("accompaniment.{codec}_latents.npy", "latent"),
    "vocals_tokens": ("vocals.{codec}_tokens.npy", "token"),
    "accompaniment_tokens": ("accompaniment.{codec}_tokens.npy", "token"),
    "f0": ("f0.npy", "f0"),
    "units": ("vocals.units.npy", "units"),
    "speaker": ("speaker.npy", "static"),
}
# batch keys read from the reference window (LaDA-Band's reference accompaniment, UniSinger's lite speaker)
REFERENCE_FIELDS: dict[str, str] = {"reference_tokens": "accompaniment_tokens",
                                    "reference_latents": "accompaniment_latents",
                                    "reference_vocals_latents": "vocals_latents"}
TEXT_FIELDS = ("text_emb", "phonemes")
FULL_PROFILE_ONLY = {"units", "speaker"}


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's members are: its shard family and, per member, (file, offset, size)."""

    key: str
    shard: str
    members: dict[str, tuple[str, int, int]]


def shard_families(shards: Sequence[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Files -> families, in first-seen order: ``[(family, [(file, group), ...])]`` with each family's files in
    FIELD_GROUPS order. A plain tar (another tool's, or a spec-3 shard: every member in one file) is a family of
    its own with group None."""
    families: dict[str, list[tuple[str, str | None]]] = {}
    for shard in shards:
        name = storage.basename(shard) if storage.is_url(shard) else Path(shard).name
        family, group = split_group_file(name)
        base = shard[: len(shard) - len(name)] + family
        families.setdefault(base, []).append((shard, group))
    order = {g: i for i, g in enumerate(FIELD_GROUPS)}
    return [(base, sorted(files, key=lambda f: order.get(f[1], -1))) for base, files in families.items()]


@dataclass
class ShardIndex:
    """Every sample of a list of shards, in order, with member offsets (from the tar headers)."""

    shards: list[str]
    samples: list[SampleRef] = field(default_factory=list)

    @classmethod
    def scan(cls, shards: Sequence[str], groups: Sequence[str] | None = None) -> ShardIndex:
        """Scan the tar headers of ``shards`` (files of shard families, or plain tars). ``groups``: the field
        groups to read (``meta`` always); files of other groups are neither opened nor listed in ``shards``."""
        wanted = None if groups is None else {"meta", *groups}
        index = cls([])
        for family, files in shard_families(shards):
            grouped: dict[str, dict[str, tuple[str, int, int]]] = {}
            for shard, group in files:
                if wanted is not None and group is not None and group not in wanted:
                    continue
                remote = storage.is_url(shard)
                if not (storage.exists(shard) if remote else Path(shard).is_file()):
                    raise DataError(f"shard {shard} does not exist (re-run `songcorpus curate`, or fix the shard list)")
                location = shard if remote else str(Path(shard))
                try:
                    with _open_for_headers(shard) as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
                        for member in tar:
                            if not member.isfile():
                                continue
                            key, _, suffix = member.name.partition(".")
                            grouped.setdefault(key, {})[suffix] = (location, member.offset_data, member.size)
                except tarfile.TarError as exc:
                    raise DataError(f"shard {shard} is not a readable tar ({exc}); re-run `songcorpus curate`") from exc
                index.shards.append(location)
            index.samples += [SampleRef(k, family, m) for k, m in grouped.items()]
        return index

    def by_key(self) -> dict[str, int]:
        return {s.key: i for i, s in enumerate(self.samples)}


HEADER_BLOCK = 64 * 1024  # ranged-read size while scanning an object-store shard's tar headers


def _open_for_headers(shard: str):
    """The shard as a seekable file; on an object store with small ranged reads, since the scan touches only
    the 512-byte headers between members."""
    if not storage.is_url(shard):
        return open(shard, "rb")
    fs, path = storage.filesystem(shard)
    return fs.open(path, "rb", block_size=HEADER_BLOCK, cache_type="readahead")


def resolve_url_corpus(data: str, split: str) -> list[str]:
    """Shard URLs of a split of a corpus on an object store: only a published corpus (``published.json``, written
    last by the curator) is read, and only the index and shards it lists."""
    marker = storage.read_published(data)
    if marker is None:
        raise DataError(f"{data} holds no published corpus (no {storage.PUBLISHED}: not curated, or a curate there "
                        f"is running or crashed; run `songcorpus curate` again to finish it)")
    objects = marker["objects"]
    rel = f"shards/index-{split}.json"
    if rel not in objects:
        known = sorted(k.removeprefix("shards/index-").removesuffix(".json") for k in objects
                       if k.startswith("shards/index-") and k.count(".") == 1)
        raise DataError(f"corpus {data} has no samples in split {split!r} (splits with samples: "
                        f"{', '.join(known) or 'none'}); choose one of {SPLITS} that has samples, or curate more songs")
    spec = json.loads(storage.read_bytes(storage.join(data, rel)))
    urls = []
    for name in index_files(spec):
        if f"shards/{name}" not in objects:
            raise DataError(f"shard {name} of {data} is not in its publication marker; re-run `songcorpus curate`")
        urls.append(storage.join(data, "shards", name))
    return urls


def index_files(spec: dict[str, Any]) -> list[str]:
    """The files a wids index lists: every field-group file of each family (songcorpus's ``index-<split>.json``
    names them under ``groups``), else each entry's ``url`` (any wids index, e.g. ``index-train.tokens.json``)."""
    out = []
    for entry in spec["shardlist"]:
        groups = entry.get("groups")
        out += [g["url"] for g in groups.values()] if groups else [entry["url"]]
    return out


def resolve_shards(data: str | Sequence[str], split: str = "train") -> list[str]:
    """A corpus folder or URL (its ``shards/index-<split>.json``), a wids index JSON, a glob, one shard, or a list
    (each local or on an object store)."""
    if not isinstance(data, (str, Path)):
        return [str(p) for p in data]
    data = str(data)
    if storage.is_url(data):
        if any(ch in data for ch in "*?["):
            found = storage.glob(data)
            if not found:
                raise DataError(f"pattern {data!r} matches no shard")
            return found
        if data.endswith(".json"):
            spec = json.loads(storage.read_bytes(data))
            base = storage.parent(data)
            return [u if "://" in u else storage.join(base, u) for u in index_files(spec)]
        if data.endswith(".tar"):
            return [data]
        return resolve_url_corpus(data, split)
    path = Path(data)
    if path.is_dir():
        index = path / "shards" / f"index-{split}.json" if (path / "shards").is_dir() else path / f"index-{split}.json"
        if not index.exists():
            known = sorted(p.stem.removeprefix("index-") for p in index.parent.glob("index-*.json") if "." not in p.stem)
            raise DataError(f"corpus {data} has no samples in split {split!r} (no {index.name}; splits with "
                            f"samples: {', '.join(known) or 'none'}); choose one of {SPLITS} that has samples, "
                            f"or curate more songs")
        path = index
    if path.suffix == ".json":
        spec = json.loads(path.read_text())
        return [str((path.parent / u).resolve()) if "://" not in u else u for u in index_files(spec)]
    if any(ch in data for ch in "*?["):
        found = sorted(globlib.glob(data))
        if not found:
            raise DataError(f"pattern {data!r} matches no shard")
        return found
    return [data]


def _by_file(ref: SampleRef, suffixes: Sequence[str]) -> dict[str, list[str]]:
    """file of the sample's family -> the asked-for suffixes it holds."""
    by_file: dict[str, list[str]] = {}
    for suffix in suffixes:
        by_file.setdefault(ref.members[suffix][0], []).append(suffix)
    return by_file


def read_members(ref: SampleRef, suffixes: Sequence[str]) -> dict[str, bytes]:
    """The named members of one sample: per file of its family, one seek and one read per member (on an object
    store: one ranged GET over the span of the members asked for in that file, which sit next to each other)."""
    out: dict[str, bytes] = {}
    for file, names in _by_file(ref, suffixes).items():
        if storage.is_url(file):
            start, end = member_span(ref, names)
            data = storage.read_range(file, start, end - start)
            out.update({s: data[ref.members[s][1] - start: ref.members[s][1] - start + ref.members[s][2]]
                        for s in names})
            continue
        with open(file, "rb") as fh:
            for suffix in sorted(names, key=lambda s: ref.members[s][1]):
                _, offset, size = ref.members[suffix]
                fh.seek(offset)
                out[suffix] = fh.read(size)
    return out


def member_span(ref: SampleRef, suffixes: Sequence[str]) -> tuple[int, int]:
    """The byte range [start, end) of one file that holds these members of one sample (all in that file)."""
    spans = [ref.members[s][1:] for s in suffixes]
    return min(o for o, _ in spans), max(o + n for o, n in spans)


def bytes_per_sample(ref: SampleRef, suffixes: Sequence[str]) -> int:
    """What :func:`read_members` reads for these members (the span per file on an object store)."""
    total = 0
    for file, names in _by_file(ref, suffixes).items():
        if storage.is_url(file):
            start, end = member_span(ref, names)
            total += end - start
        else:
            total += sum(ref.members[s][2] for s in names)
    return total


def npy(data: bytes, ref: SampleRef | None = None, member: str | None = None) -> np.ndarray:
    """A plain ``.npy`` member as an array; never unpickles (a shard is data, never code) and never opens an
    ``.npz``. A member that is not one (an object array, a truncated or foreign file) raises :class:`DataError`
    naming the shard file, the sample and the member when ``ref`` and ``member`` are given."""
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        where = "a shard member"
        if ref is not None and member is not None:
            shard = ref.members[member][0] if member in ref.members else ref.shard
            where = f"member {member} of sample {ref.key} in shard {shard}"
        raise DataError(f"{where} is not a plain numeric .npy array ({exc}); re-curate that shard "
                        f"(`songcorpus curate`) or remove it from the shard list") from None


@dataclass(frozen=True)
class FieldPlan:
    """What a model needs from a corpus: member suffixes, their rates (from the shard lineage), and lengths."""

    keys: tuple[str, ...]
    codec: str
    window_s: float
    rates: dict[str, float]

    def frames(self, key: str) -> int:
        kind = TENSOR_FIELDS[REFERENCE_FIELDS.get(key, key)][1]
        return math.ceil(self.window_s * self.rates[kind] - 1e-9)


def corpus_rates(meta: dict[str, Any], codec: str) -> dict[str, float]:
    """Frame rates named by a sample's JSON (never assumed): the embedded codec's, or a full-profile codec's."""
    rates = {"f0": F0_RATE_HZ, "static": 0.0}
    if codec == "embedded":
        emb = meta.get("embedded_codec")
        if emb is None:  # samples older than spec 3 do not name their codec: nothing may be assumed
            raise DataError(f"sample {meta.get('key')} (sample spec {meta.get('spec_version')}) does not name its "
                            f"embedded codec (no 'embedded_codec' in its JSON); re-curate the corpus with this "
                            f"version (`songcorpus curate`)")
        rates["latent"], rates["token"] = float(emb["latent_rate_hz"]), float(emb["token_rate_hz"])
    else:
        entry = next((c for c in meta.get("codecs", []) if c["name"] == codec), None)
        if entry is None:
            names = [c["name"] for c in meta.get("codecs", [])] or ["none (a lite corpus has only 'embedded')"]
            raise DataError(f"the corpus has no codec {codec!r} (its samples have: {', '.join(names)}); set the "
                            f"training config's data.codec to one of them, or curate with a profile that makes it")
        rates["latent"] = rates["token"] = float(entry["frame_rate"])
    if "units" in meta:
        rates["units"] = float(meta["units"]["frame_rate"])
    return rates


def check_model_fits(meta: dict[str, Any], model: Any, keys: Sequence[str], codec: str = "embedded") -> None:
    """DataError when the model's data-shaped settings (latent channels, token vocabulary) differ from what the
    corpus's embedded codec made: a shape error deep in the first forward pass would not name the cause."""
    if codec != "embedded" or "embedded_codec" not in meta:
        return
    emb = meta["embedded_codec"]

    def misfit(setting: str, have: Any, what: str) -> DataError:
        return DataError(f"model {model.name} has {setting} {have}, but sample {meta.get('key')} was made by an "
                         f"embedded codec with {what} {emb[what]}; set model.{setting}: {emb[what]} in the training "
                         f"config (or re-curate the corpus with codec.{what}: {have})")

    if any("latents" in k for k in keys) and hasattr(model, "latent_channels") and "n_mels" in emb:
        if model.latent_channels != emb["n_mels"]:
            raise misfit("latent_channels", model.latent_channels, "n_mels")
    if any("tokens" in k for k in keys) and hasattr(model, "vocab_size") and "codebook_size" in emb:
        if model.vocab_size < emb["codebook_size"]:  # a larger vocabulary holds every id; a smaller one does not
            raise misfit("vocab_size", model.vocab_size, "codebook_size")


class CorpusView:
    """One split of a corpus, indexed, with the fields a model needs checked against what the samples hold."""

    def __init__(self, data: str | Sequence[str], split: str, keys: Sequence[str], codec: str = "embedded",
                 window_s: float | None = None, extra_groups: Sequence[str] = ()) -> None:
        """``extra_groups``: field groups to open besides the model's (the evaluator reads the audio too)."""
        self.split = split
        self.suffixes = {k: TENSOR_FIELDS[k][0].format(codec=codec) for k in keys if k in TENSOR_FIELDS}
        self.reference_suffixes = {k: TENSOR_FIELDS[REFERENCE_FIELDS[k]][0].format(codec=codec)
                                   for k in keys if k in REFERENCE_FIELDS}
        needed = [*self.suffixes.values(), *self.reference_suffixes.values()]
        self.groups = sorted({"meta", *extra_groups, *(field_group(s) for s in needed)})  # the files this view reads
        self.index = ShardIndex.scan(resolve_shards(data, split), self.groups)
        if not self.index.samples:
            raise DataError(f"split {split!r} of {data} has no samples; curate more songs or pick another split")
        first = self.index.samples[0]
        if "json" not in first.members:
            raise DataError(f"sample {first.key} in {first.shard} has no json member: not a songcorpus shard")
        self.first_meta = json.loads(read_members(first, ["json"])["json"])
        self.codec = codec
        self.rates = corpus_rates(self.first_meta, codec)
        self.window_s = float(window_s or self.first_meta["duration_s"])
        self.plan = FieldPlan(tuple(keys), codec, self.window_s, self.rates)
        missing = sorted({s for s in needed if s not in first.members})
        if missing:
            wanted = [k for k in keys if self.suffixes.get(k) in missing or self.reference_suffixes.get(k) in missing]
            profile = "the full profile (`songcorpus curate --profile full`)" if FULL_PROFILE_ONLY & set(wanted) else \
                f"a profile whose codecs include {codec!r}"
            has = self.first_meta.get("fields") or sorted(first.members)
            lost = sorted(s for s in missing if s in has)
            if lost:  # the sample JSON names them: a field-group file of the family is missing from the list
                raise DataError(f"sample {first.key} of shard {first.shard} has {', '.join(lost)}, but no file of "
                                f"its field group{'s' if len(lost) > 1 else ''} "
                                f"{', '.join(sorted({field_group(x) for x in lost}))} was given; pass the corpus "
                                f"folder or its index-<split>.json, or add the <shard>.<group>.tar files")
            raise DataError(f"the model needs {', '.join(missing)} (batch keys {', '.join(wanted)}), which sample "
                            f"{first.key} of {first.shard} does not have (it has {', '.join(has)}); "
                            f"curate with {profile}")
        self.key_index = self.index.by_key()

    def __len__(self) -> int:
        return len(self.index.samples)


@dataclass(frozen=True)
class StepOrder:
    """The global sample order: seeded epoch permutations, endless; step -> indices for one rank."""

    n_samples: int
    seed: int
    global_batch: int

    def __post_init__(self) -> None:
        if self.n_samples <= 0:
            raise DataError("no samples to draw from")

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)

    def global_indices(self, step: int) -> np.ndarray:
        start = step * self.global_batch
        positions = np.arange(start, start + self.global_batch)
        epochs, offsets = np.divmod(positions, self.n_samples)
        out = np.empty(self.global_batch, dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self.permutation(int(epoch))[offsets[sel]]
        return out

    def rank_slice(self, world_size: int, rank: int) -> slice:
        if self.global_batch % world_size:
            raise DataError(f"global batch {self.global_batch} does not split over {world_size} ranks; make it a "
                            f"multiple of the world size")
        per = self.global_batch // world_size
        return slice(rank * per, (rank + 1) * per)


def crop_or_pad(x: np.ndarray, start: int, n: int) -> tuple[np.ndarray, int]:
    """``n`` frames from ``start`` (zero-padded past the end); returns the frames and how many are real."""
    piece = x[start:start + n]
    valid = piece.shape[0]
    if valid < n:
        piece = np.concatenate([piece, np.zeros((n - valid, *x.shape[1:]), dtype=x.dtype)])
    return piece, valid


class BatchBuilder:
    """Sample members -> a dict of numpy arrays in the models' batch contract (train/models/__init__.py)."""

    def __init__(self, view: CorpusView, caption_encoder: Any = None, phonemes: Any = None,
                 latent_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, max_phonemes: int = 256) -> None:
        self.view = view
        self.caption_encoder = caption_encoder
        self.phonemes = phonemes
        self.latent_stats = latent_stats or {}
        self.max_phonemes = max_phonemes
        keys = set(view.plan.keys)
        if "text_emb" in keys and caption_encoder is None:
            raise DataError("the model needs text_emb: give the loader a caption encoder (train/text.py CaptionEncoder)")
        if "phonemes" in keys and phonemes is None:
            raise DataError("the model needs phonemes: give the loader a phoneme tokenizer (train/text.py)")

    def sample(self, index: int, crop_rng: np.random.Generator) -> dict[str, Any]:
        view = self.view
        ref = view.index.samples[index]
        raw = read_members(ref, ["json", *view.suffixes.values()])
        meta = json.loads(raw["json"])
        plan = view.plan
        duration = float(meta["duration_s"])
        spare = max(0.0, duration - plan.window_s)
        offset_s = float(crop_rng.uniform(0.0, spare)) if spare > 0 else 0.0
        out: dict[str, Any] = {"key": ref.key}
        valid_s = min(plan.window_s, duration - offset_s)
        for key, suffix in view.suffixes.items():
            arr = npy(raw[suffix], ref, suffix)
            kind = TENSOR_FIELDS[key][1]
            if kind == "static":
                out[key] = arr.astype(np.float32)
                continue
            n = plan.frames(key)
            start = round(offset_s * view.rates[kind])
            piece, _ = crop_or_pad(arr, start, n)
            out[key] = self._normalise(key, piece)
        if view.reference_suffixes:
            rkey = meta.get("reference_key")
            rref = view.index.samples[view.key_index[rkey]] if rkey in view.key_index else None
            rraw = read_members(rref, list(view.reference_suffixes.values())) if rref else {}
            for key, suffix in view.reference_suffixes.items():
                n = plan.frames(key)
                base = REFERENCE_FIELDS[key]
                if suffix in rraw:
                    piece, _ = crop_or_pad(npy(rraw[suffix], rref, suffix), 0, n)
                else:  # no reference window in this split: zeros, flagged, so the model can null it
                    shape = (n, *out[base].shape[1:]) if base in out else (n,)
                    piece = np.zeros(shape, dtype=np.float32 if "latents" in base else np.int64)
                out[key] = self._normalise(base, piece)
                out["has_reference"] = rref is not None
        rate = view.rates["latent"] if any("latents" in k for k in out) else view.rates.get("token", 25.0)
        frames = math.ceil(plan.window_s * rate - 1e-9)
        out["mask"] = np.arange(frames) < math.ceil(valid_s * rate - 1e-9)
        metadata = meta.get("metadata", {})
        if "text_emb" in plan.keys:
            out["caption"] = ", ".join(t for t in (metadata.get("caption"), metadata.get("tags")) if t) or ""
        if "phonemes" in plan.keys:
            out["lyrics"] = window_lyrics(meta, offset_s, plan.window_s)
        return out

    def _normalise(self, key: str, x: np.ndarray) -> np.ndarray:
        if "tokens" in key or key == "units":
            return x.astype(np.int64)
        if key in self.latent_stats:
            mean, std = self.latent_stats[key]
            return ((x - mean) / std).astype(np.float32)
        return x.astype(np.float32)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"keys": [s["key"] for s in samples]}
        for key in samples[0]:
            if key in ("key", "caption", "lyrics"):
                continue
            batch[key] = np.stack([np.asarray(s[key]) for s in samples])
        if "text_emb" in self.view.plan.keys:
            batch["text_emb"] = self.caption_encoder.encode([s["caption"] for s in samples])
        if "phonemes" in self.view.plan.keys:
            ids = [self.phonemes.ids(s["lyrics"])[: self.max_phonemes] for s in samples]
            width = max(1, max(len(i) for i in ids))
            batch["phonemes"] = np.stack([np.pad(i, (0, width - len(i))) for i in ids]).astype(np.int64)
        return batch


def window_lyrics(meta: dict[str, Any], offset_s: float, window_s: float) -> str:
    """The lyrics sung in the (cropped) window: its timed words where the corpus has them (full profile),
    else the song's lyric sheet cut in proportion to where the window sits in the song (the lite profile has
    no word timings; a coarse but honest stand-in, stated here)."""
    words = meta.get("labels", {}).get("lyrics_words")
    if words is not None:
        return " ".join(w["word"] for w in words if offset_s <= (w["start_s"] + w["end_s"]) / 2 < offset_s + window_s)
    text = (meta.get("metadata") or {}).get("lyrics") or ""
    tokens = text.split()
    span = meta.get("augmentation", {}).get("source_span_s") or {}
    total = float(meta.get("scores", {}).get("duration_s") or 0.0)
    if not tokens or total <= 0:
        return ""
    start = float(span.get("start_s", meta.get("start_s", 0.0))) + offset_s
    lo = int(len(tokens) * max(0.0, start) / total)
    hi = int(math.ceil(len(tokens) * min(total, start + window_s) / total))
    return " ".join(tokens[lo:max(lo, hi)])


def latent_statistics(view: CorpusView, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and std of each latent field over every sample of the view (SAMUeL z-scores per
    stem over the training split); computed once by the trainer, saved with the run, inverted before decoding."""
    stats = {}
    for key in keys:
        if key not in view.suffixes or "latents" not in key:
            continue
        total = total_sq = None
        count = 0
        for ref in view.index.samples:
            suffix = view.suffixes[key]
            x = npy(read_members(ref, [suffix])[suffix], ref, suffix).astype(np.float64)
            total = x.sum(0) if total is None else total + x.sum(0)
            total_sq = (x ** 2).sum(0) if total_sq is None else total_sq + (x ** 2).sum(0)
            count += x.shape[0]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
        stats[key] = (mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32))
    return stats


class ShardStream:
    """An iterable of batches for one rank, steps ``[start_step, end_step)``; a torch IterableDataset when
    torch is used (see :meth:`torch_dataset`), with its state (the next step) for checkpoints."""

    def __init__(self, builder: BatchBuilder, order: StepOrder, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, end_step: int | None = None) -> None:
        self.builder = builder
        self.order = order
        self.rank = rank
        self.world_size = world_size
        self.slice = order.rank_slice(world_size, rank)
        self.start_step = start_step
        self.end_step = end_step

    def batch(self, step: int) -> dict[str, Any]:
        indices = self.order.global_indices(step)
        positions = range(self.slice.start, self.slice.stop)
        samples = [self.builder.sample(int(indices[p]),
                                       np.random.default_rng([self.order.seed, 1, step, p])) for p in positions]
        batch = self.builder.collate(samples)
        batch["step"] = step
        return batch

    def steps(self, worker: int = 0, n_workers: int = 1) -> Iterator[int]:
        """The steps worker ``worker`` of ``n_workers`` builds: every ``n_workers``-th from ``start_step +
        worker``. Counting from the start step, not from 0, is what keeps a resume from a step that is not a
        multiple of ``n_workers`` in order: the round-robin hands worker 0's batch out first."""
        step = self.start_step + worker
        while self.end_step is None or step < self.end_step:
            yield step
            step += n_workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for step in self.steps():
            yield self.batch(step)

    def state_dict(self, next_step: int) -> dict[str, Any]:
        return {"next_step": next_step, "seed": self.order.seed, "global_batch": self.order.global_batch,
                "n_samples": self.order.n_samples}

    def check_resume(self, state: dict[str, Any]) -> None:
        """A checkpoint's loader state must describe this stream's order (same corpus size, seed, batch)."""
        for name in ("seed", "global_batch", "n_samples"):
            if state.get(name) != getattr(self.order, name):
                raise DataError(f"the checkpoint's loader {name} is {state.get(name)}, this run's is "
                                f"{getattr(self.order, name)}: resuming would draw other batches; use the same "
                                f"corpus and config, or start a new run folder")

    def torch_dataset(self):
        """A torch IterableDataset over this stream: DataLoader worker ``w`` of ``K`` builds steps
        ``(s - start_step) % K == w`` and the DataLoader's round-robin (from worker 0) yields them in step order;
        the trainer checks that order on every batch."""
        import torch

        stream = self

        class _Steps(torch.utils.data.IterableDataset):
            def __iter__(self):
                info = torch.utils.data.get_worker_info()
                w, k = (info.id, info.num_workers) if info else (0, 1)
                for step in stream.steps(w, k):
                    yield stream.batch(step)

        return _Steps()
