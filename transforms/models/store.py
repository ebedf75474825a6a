"""The model store: a directory of weights that do not ship in a package, each checked against the registry.

Where it is: ``--store DIR`` or the config key ``models.store_dir``, else the environment variable
``SONGCORPUS_MODELS``, else ``~/.cache/songcorpus/models``. Layout: ``<store>/<name>/<version>/<file>``, exactly
the files the registry names, each with its sha256. Nothing is ever downloaded while a stage runs: ``songcorpus
models pull NAME`` fetches where the network allows (and says so clearly where it does not), ``songcorpus models
add NAME PATH`` takes files a user copied in (air-gapped clusters), ``list`` and ``verify`` say what is present
and intact. Files are checked before they are moved into place, so a store never holds a file that does not match
its registry entry.

Two kinds of entry: the built-in store models of the one registry (transforms/models/registry.py: published
weights, name, version, file layout, licence, source) and ``<store>/registry.json``, which ``models add NAME PATH
--kind K`` writes for weights the project does not know (a fine-tuned separator, a tiny test model). A built-in
entry whose sha256 could not be taken here (no network) is pinned on its first ``add``/``pull``: the digests are
recorded in ``registry.json`` and every later load is checked against them (trust on first use; the demucs entries
also check the hash prefix their published file names carry). ``kind`` names the architecture family a stage
adapter loads (``htdemucs``, ``ct2-whisper``, ``encodec`` ...), so a stage refuses a model of the wrong kind at
setup.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from songcorpus.io.atomic import sha256_file
from songcorpus.transforms.models.registry import MODELS, ModelError, PackageModel, RegisteredModel, StoreModel, get_model

ENV_VAR = "SONGCORPUS_MODELS"


def store_root(configured: str | None = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path.home() / ".cache" / "songcorpus" / "models"




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


def load_registry(root: Path) -> dict[str, RegisteredModel]:
    """The one registry (transforms/models/registry.py) with pins from ``<root>/registry.json``, plus the models
    registered there."""
    registry: dict[str, RegisteredModel] = dict(MODELS)
    for name, entry in _read_local(root).items():
        builtin = MODELS.get(name)
        if isinstance(builtin, StoreModel):
            if entry.get("version") != builtin.version:
                continue  # a pin for another version of a built-in model does not apply
            pinned = {f: builtin.files[f] or entry["files"].get(f) for f in builtin.files}
            registry[name] = dataclasses.replace(builtin, files=pinned)
        elif builtin is None:
            registry[name] = StoreModel(name=name, version=entry["version"], files=entry["files"],
                                        licence=entry.get("licence", "unknown"), url_base=entry.get("url_base"),
                                        notes=entry.get("notes", ""), tags=tuple(entry.get("tags", ())),
                                        kind=entry.get("kind", ""))
    return registry


def store_model(name: str, registry: Mapping[str, RegisteredModel] | None = None) -> StoreModel:
    """A model that lives in the store (what ``add``, ``pull`` and a stage's store loader take)."""
    spec = get_model(name, registry)
    if not isinstance(spec, StoreModel):
        raise ModelError(f"model {name} ships inside the package {spec.package} and has no store folder; "
                         f"{spec.how_to_get}")
    return spec


def list_models(root: Path, registry: Mapping[str, RegisteredModel] | None = None) -> list[dict[str, str]]:
    """Every known model, package-shipped and store-hosted, with its state (verified, missing, corrupt)."""
    registry = load_registry(root) if registry is None else registry
    packaged = {name: m for name, m in MODELS.items() if m.source == "package"}  # installed with the project
    rows = []
    for spec in sorted({**packaged, **registry}.values(), key=lambda m: m.source != "package"):  # packages first
        if isinstance(spec, PackageModel):
            try:
                path, state = str(spec.verified_path()), "verified"
            except ModelError as exc:
                path, state = "-", f"unusable: {exc}"
            rows.append({"name": spec.name, "version": spec.version, "where": f"package {spec.package}", "path": path,
                         "state": state, "licence": spec.licence})
            continue
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


def _install(spec: StoreModel, root: Path, fetch: dict[str, Path]) -> Path:
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
    if name in MODELS:
        raise ModelError(f"model {name} is built in; use `songcorpus models add {name} PATH` without --kind")
    source = Path(source)
    paths = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
    if not paths:
        raise ModelError(f"model {name}: {source} holds no files")
    files: dict[str, str | None] = {p.name: sha256_file(p)[0] for p in paths}
    spec = StoreModel(name=name, version=version, files=files, licence=licence, notes=notes, kind=kind)
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


def add_model(name: str, source: Path, root: Path, registry: Mapping[str, RegisteredModel] | None = None) -> Path:
    """Register weights a user copied in: ``source`` is a folder with the model's files (or, for a
    one-file model, that file)."""
    spec = store_model(name, load_registry(root) if registry is None else registry)
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


def pull_model(name: str, root: Path, registry: Mapping[str, RegisteredModel] | None = None, timeout_s: float = 30.0) -> Path:
    """Fetch the model's files from its source (where the network allows), verify, install."""
    spec = store_model(name, load_registry(root) if registry is None else registry)
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
