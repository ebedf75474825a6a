"""AestheticsStage: the full profile's aesthetic scores, SongEval (song-level) and Audiobox-Aesthetics.

Reads: the standardised mix (``results.ingest.audio_file``), mixed to mono; at most
``aesthetics.max_analysis_s`` seconds from the middle of the track are scored, resampled (soxr HQ) to each
model's rate: 24 kHz for SongEval, 16 kHz for Audiobox-Aesthetics. Audio under 1 s is zero-padded to 1 s.
Provides: songeval_coherence, songeval_musicality, songeval_memorability, songeval_clarity,
songeval_naturalness (SongEval's five dimensions, 1-5: the head ends in 3 + 2 tanh) and songeval_mean
(their mean, the LaDA-Band gate score); audiobox_pq, audiobox_pc, audiobox_ce, audiobox_cu (Production
Quality / Complexity, Content Enjoyment / Usefulness, nominally 1-10; the model is a regressor and is not
clipped, as in the package); aesthetics_models ("name@version" of each model that ran, joined by " + ").
A model set to None in the config (``aesthetics.songeval_model`` / ``audiobox_model``) is skipped and its
fields are None.
Needs: two store models, each loaded by its adapter: ``songeval`` (kind songeval;
transforms/models/songeval.py: the SongEval head over MuQ features) and ``audiobox-aesthetics`` (kind
audiobox-aesthetics; transforms/models/audiobox_aesthetics.py). GPU when ``device`` allows (autocast under
``device.mixed_precision``), CPU otherwise; one model load per long-lived worker.
Fails when: either model is missing, altered or of another kind, or its configs are not the published ones
(preflight, naming it); its weights do not fit the architecture (setup); audio unreadable or a non-finite
score (failed).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.row import Row, audio_file, audio_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.models.aesthetic_inputs import finite_scores, to_rate
from songcorpus.transforms.models.audiobox_aesthetics import (
    AUDIOBOX_AXES,
    AUDIOBOX_KIND,
    AudioboxAestheticsScorer,
    read_aes_checkpoint,
)
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.models.songeval import (
    SONGEVAL_DIMS,
    SONGEVAL_KIND,
    SongEvalScorer,
    muq_settings,
    read_muq_config,
    read_songeval_config,
)

FIELDS = (*(f"songeval_{d}" for d in SONGEVAL_DIMS), "songeval_mean",
          *(f"audiobox_{a.lower()}" for a in AUDIOBOX_AXES), "aesthetics_models")


def middle_excerpt(x: np.ndarray, rate: int, max_s: float) -> np.ndarray:
    """At most ``max_s`` seconds from the middle of ``x`` (frames first)."""
    n = int(round(max_s * rate))
    if x.shape[0] <= n:
        return x
    start = (x.shape[0] - n) // 2
    return x[start : start + n]


class AestheticsStage(Stage):
    name = "aesthetics"
    version = "1"
    requires = ("audio_file",)
    provides = FIELDS
    resources = Resources(num_cpus=1.0, memory_mb=6144)
    uses_gpu = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scorers: dict[str, Any] | None = None

    def _wanted(self) -> dict[str, str]:
        """Kind -> configured store model name, for the models that are not switched off."""
        cfg = self.config.aesthetics
        wanted = {SONGEVAL_KIND: cfg.songeval_model, AUDIOBOX_KIND: cfg.audiobox_model}
        return {kind: name for kind, name in wanted.items() if name is not None}

    def model_names(self) -> tuple[str, ...]:
        return tuple(self._wanted().values())

    def _store_models(self) -> dict[str, tuple[Any, Path]]:
        """Kind -> (registry entry, verified folder) of each enabled model; a missing, altered or
        wrong-kind model raises ModelError naming it."""
        wanted = list(self._wanted().items())
        found = self.store_models([(name, (kind,)) for kind, name in wanted])
        return {kind: model for (kind, _), model in zip(wanted, found, strict=True)}

    def model_path(self) -> Path | None:
        """Every enabled model verified; the SongEval folder when it is enabled, else Audiobox's."""
        folders = [folder for _, folder in self._store_models().values()]
        return folders[0] if folders else None

    def preflight(self) -> None:
        """Both models present, intact and of their kind, and their configs readable (the checkpoint is
        memory-mapped, not loaded)."""
        models = self._store_models()
        if SONGEVAL_KIND in models:
            folder = models[SONGEVAL_KIND][1]
            head, muq = read_songeval_config(folder / "config.yaml"), muq_settings(read_muq_config(folder / "muq_config.json"))
            if head["in_features"] != muq["dim"]:
                raise ModelError(f"model {self._wanted()[SONGEVAL_KIND]}: MuQ gives {muq['dim']}-d features, "
                                 f"the head reads {head['in_features']}")
        if AUDIOBOX_KIND in models:
            read_aes_checkpoint(models[AUDIOBOX_KIND][1] / "checkpoint.pt")

    def model_id(self) -> str | None:
        specs = [spec for spec, _ in self._specs()]
        return " + ".join(f"{s.name}@{s.version}" for s in specs) or None

    def model_checksum(self) -> str | None:
        """sha256 over each enabled model's 'name@version checksum' line (the checksums are the store's)."""
        specs = [spec for spec, _ in self._specs()]
        if not specs:
            return None
        return hashlib.sha256("".join(f"{s.name}@{s.version} {s.sha256}\n" for s in specs).encode()).hexdigest()

    def _specs(self) -> list[tuple[Any, str]]:
        """Registry entries of the enabled models (no file check: lineage is cheap and names what is configured)."""
        from songcorpus.transforms.models.store import store_model

        return [(store_model(name, self.store_registry()), kind) for kind, name in self._wanted().items()]

    def lineage(self) -> dict[str, Any]:
        models = {kind: {"model": f"{spec.name}@{spec.version}", "checksum": spec.sha256}
                  for spec, kind in self._specs()}
        return {**super().lineage(), "models": models}

    def config_digest(self) -> str:
        return self.config.aesthetics.digest() + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        return audio_sha256(row)

    def setup(self) -> None:
        from songcorpus.transforms.models.accelerator import pick_device

        device = pick_device(self.config.device.name)
        mixed = self.config.device.mixed_precision
        models = self._store_models()
        self._scorers = {}
        if SONGEVAL_KIND in models:
            self._scorers[SONGEVAL_KIND] = SongEvalScorer.from_folder(models[SONGEVAL_KIND][1], device, mixed)
        if AUDIOBOX_KIND in models:
            self._scorers[AUDIOBOX_KIND] = AudioboxAestheticsScorer.from_folder(models[AUDIOBOX_KIND][1], device, mixed)

    def process_one(self, row: Row) -> dict[str, Any]:
        if self._scorers is None:
            self.setup()
        out: dict[str, Any] = dict.fromkeys(FIELDS)
        if not self._scorers:
            return out
        x, rate = read_standard_audio(self.store.path(audio_file(row)))
        mono = middle_excerpt(x, rate, self.config.aesthetics.max_analysis_s).mean(axis=1)
        songeval = self._scorers.get(SONGEVAL_KIND)
        if songeval is not None:
            dims = finite_scores(songeval.score(to_rate(mono, rate, songeval.rate)), "SongEval")
            out.update({f"songeval_{d}": round(v, 4) for d, v in dims.items()})
            out["songeval_mean"] = round(float(np.mean(list(dims.values()))), 4)
        audiobox = self._scorers.get(AUDIOBOX_KIND)
        if audiobox is not None:
            axes = finite_scores(audiobox.score(to_rate(mono, rate, audiobox.rate)), "Audiobox-Aesthetics")
            out.update({f"audiobox_{a.lower()}": round(v, 4) for a, v in axes.items()})
        out["aesthetics_models"] = self.model_id()
        return out
