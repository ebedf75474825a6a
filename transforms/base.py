"""The stage contract every transform keeps (after NeMo Curator's stages).

A stage declares its name and version, the fields it requires and provides, and the resources
one worker needs. ``setup()`` runs once per worker (load models there, never in ``__init__``, so a
stage object pickles cheaply to Ray actors and Beam workers). ``process_one`` maps one in-flight
row to the fields this stage provides. A stage raises :class:`Rejection` to reject an input with a reason, or an
``InputError`` (``schemas/failures.py``) when the input cannot be used; the runner records either on the row and
goes on. Any other exception is the job's fault and stops it.

The row's shape (a plain dict every engine carries: the input's record, the earlier stages' results, the outcome)
is defined in ``schemas/row.py``, with the accessors stages read it through and a typed view of each result other
stages read, whose keys are exactly the providing stage's ``provides``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row
from songcorpus.transforms.models.registry import MODELS, ModelError, RegisteredModel, StoreModel, get_model
from songcorpus.transforms.models.store import load_registry, store_model, store_root


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; runners turn this into Ray resources / Beam hints."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int = 1024


class Rejection(Exception):  # noqa: N818 - it is a decision, not an error
    """The input is readable but unusable; ``code`` is the funnel's reason code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Stage(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()
    batch_size: ClassVar[int] = 1
    uses_gpu: ClassVar[bool] = False  # True: runs on CUDA when ``device`` allows (declares ``device.gpu_share``)

    def __init__(self, config: PipelineConfig, store: ArtefactStore) -> None:
        self.config = config
        self.store = store

    def setup(self) -> None:
        """Load models and other per-worker state."""

    def preflight(self) -> None:
        """Cheap checks on the driver before any data moves: a missing or altered model fails here,
        naming the model and the command that gets it."""
        self.model_path()

    def model_path(self) -> Path | None:
        """The verified weights: a package file (lite models) or a store folder (full-profile models)."""
        spec = self.model_spec()
        if spec is None:
            return None
        return self.verified_model(spec, (self.model_kind(),) if self.model_kind() else ())

    def store_model(self, name: str, kinds: tuple[str, ...] = ()) -> tuple[StoreModel, Path]:
        """A store model's registry entry and verified folder; a model of another kind than ``kinds`` is
        refused, naming what the stage loads (stages with several models call this once per model)."""
        spec = store_model(name, self.store_registry())
        return spec, self.verified_model(spec, kinds)

    def verified_model(self, spec: RegisteredModel, kinds: tuple[str, ...] = ()) -> Path:
        """The model's verified file or folder, wherever its source keeps it."""
        if kinds and spec.kind not in kinds:
            raise ModelError(f"stage {self.name} loads {' or '.join(kinds)} models; {spec.name} is "
                             f"{spec.kind or 'of no kind'} (choose another model: songcorpus models list)")
        return spec.verified(store_root(self.config.models.store_dir))

    def store_registry(self) -> dict[str, RegisteredModel]:
        """The one registry plus the store's ``registry.json`` (pins, added models), read once per stage object."""
        if not hasattr(self, "_store_registry"):
            self._store_registry = load_registry(store_root(self.config.models.store_dir))
        return self._store_registry

    @abstractmethod
    def config_digest(self) -> str:
        """Hash of the settings that change this stage's output."""

    @abstractmethod
    def input_identity(self, row: Row) -> str:
        """Content identity of what this stage reads (e.g. the decoded audio's sha256)."""

    @abstractmethod
    def process_one(self, row: Row) -> dict[str, Any]:
        """The provided fields for one row. Raise Rejection or any error; the runner records it."""

    def model_name(self) -> str | None:
        """The registry name of the weights this stage loads (transforms/models/registry.py, whichever the
        model's source); None: no registered model."""
        return None

    def store_models(self, wanted: list[tuple[str, tuple[str, ...]]]) -> list[tuple[StoreModel, Path]]:
        """:meth:`store_model` for each (name, kinds) of a stage with several models; every problem is
        reported in one ModelError, not just the first."""
        found, problems = [], []
        for name, kinds in wanted:
            try:
                found.append(self.store_model(name, kinds))
            except ModelError as exc:
                problems += exc.problems
        if problems:
            raise ModelError.of(problems)
        return found

    def model_kind(self) -> str | None:
        """For store models: the architecture family this stage's adapter loads (a store entry's ``kind``)."""
        return None

    def model_spec(self) -> RegisteredModel | None:
        name = self.model_name()
        if name is None:
            return None
        builtin = MODELS.get(name)
        if builtin is not None and builtin.source == "package":
            return builtin  # package-shipped weights: the store's registry.json is not read
        return get_model(name, self.store_registry())

    def model_id(self) -> str | None:
        spec = self.model_spec()
        return None if spec is None else f"{spec.name}@{spec.version}"

    def model_checksum(self) -> str | None:
        spec = self.model_spec()
        return None if spec is None else spec.sha256

    def cache_key(self, row: Row) -> str:
        parts = [self.name, self.version, self.input_identity(row), self.config_digest(),
                 self.model_id() or "", self.model_checksum() or ""]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def lineage(self) -> dict[str, Any]:
        return {"stage": self.name, "version": self.version, "model": self.model_id(),
                "checksum": self.model_checksum(), "config_hash": self.config_digest()}


