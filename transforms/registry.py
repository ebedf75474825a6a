"""The stage registry: which stage implements each step of a profile, in order, and the contract check that runs
when a profile's stages are composed.

Reads nothing and writes nothing. Every stage is named here once, by the module and class that implement it, and
imported only when a profile that uses it is composed (so a worker imports only the stages it runs). A profile is
an ordered list of registry names per phase: "analysis" runs on every input and stores scores; "samples" runs on
the accepted songs once decisions, splits and the corpus codebook are known. Profile variants of one stage (the
lite YAMNet and the full AST classifier are both ``classify``) are two registry entries with the same stage name.

Composition fails with :class:`StageContractError` (a ``ConfigError``: the job has not started) when a stage
requires a field that no earlier stage provides, naming the stage, the field and who provides it if anyone does.
"""

from __future__ import annotations

import importlib
from dataclasses import fields

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.row import ROW_INPUTS, TRACK_PREFIX
from songcorpus.schemas.track import METADATA_FIELDS, TrackRecord
from songcorpus.transforms.base import Stage

PHASES = ("analysis", "samples")

# registry name -> "module:Class"
STAGES: dict[str, str] = {
    "ingest": "songcorpus.transforms.stages.ingest:IngestStage",
    "fingerprint": "songcorpus.transforms.stages.fingerprint:FingerprintStage",
    "quality": "songcorpus.transforms.stages.quality:QualityStage",
    "classify_yamnet": "songcorpus.transforms.stages.classify_yamnet:YamnetContentClassifier",
    "classify_ast": "songcorpus.transforms.stages.classify_ast:AstContentClassifier",
    "stems": "songcorpus.transforms.stages.stems:StemStage",
    "vad": "songcorpus.transforms.stages.vad:SileroVadStage",
    "f0": "songcorpus.transforms.stages.f0:VocalF0Stage",
    "structure": "songcorpus.transforms.stages.structure:StructureStage",
    "key": "songcorpus.transforms.stages.key:KeyStage",
    "caption": "songcorpus.transforms.stages.caption:CaptionStage",
    "lyrics": "songcorpus.transforms.stages.lyrics:LyricsStage",
    "aesthetics": "songcorpus.transforms.stages.aesthetics:AestheticsStage",
    "codec_frames": "songcorpus.transforms.stages.codec_frames:CodecFramesStage",
    "unit_frames": "songcorpus.transforms.stages.samples_full:UnitFramesStage",
    "samples_lite": "songcorpus.transforms.stages.samples_lite:SampleStage",
    "samples_full": "songcorpus.transforms.stages.samples_full:FullSampleStage",
}

# The full profile runs the papers' models from the model store, with the same stage names and fields as lite.
PROFILES: dict[str, dict[str, tuple[str, ...]]] = {
    "lite": {
        "analysis": ("ingest", "fingerprint", "quality", "classify_yamnet", "stems", "vad", "f0", "structure", "key",
                     "caption", "codec_frames"),
        "samples": ("samples_lite",),
    },
    "full": {
        "analysis": ("ingest", "fingerprint", "quality", "classify_ast", "stems", "vad", "f0", "structure", "key",
                     "caption", "lyrics", "aesthetics", "codec_frames", "unit_frames"),
        "samples": ("samples_full",),
    },
}


class StageContractError(ConfigError):
    """A composition in which a stage reads a field nothing before it provides."""


def stage_class(entry: str) -> type[Stage]:
    module, _, name = STAGES[entry].partition(":")
    return getattr(importlib.import_module(module), name)


def track_fields() -> set[str]:
    """What a stage may require from the input itself: ``track.<field>`` of the record, or
    ``track.metadata.<key>`` of its metadata."""
    return {f.name for f in fields(TrackRecord)} | {f"metadata.{k}" for k in METADATA_FIELDS}


def check_contract(phases: list[tuple[str, list[type[Stage]]]]) -> None:
    """Every stage's ``requires`` is provided by an earlier stage (of this phase or an earlier one), by the row
    the driver builds for that phase (``schemas/row.py``: ``ROW_INPUTS``), or is a field of the input."""
    known_track = track_fields()
    provided: dict[str, str] = {}
    for phase, classes in phases:
        later = {f: cls.name for cls in classes for f in cls.provides}
        for cls in classes:
            for req in cls.requires:
                if req.startswith(TRACK_PREFIX):
                    if req[len(TRACK_PREFIX):] not in known_track:
                        raise StageContractError(
                            f"stage {cls.name} requires {req!r}, which is not a field of an input track "
                            f"(known: {', '.join(sorted(known_track))})")
                elif req not in provided and req not in ROW_INPUTS.get(phase, ()):
                    who = (f"it is provided by stage {later[req]}, which runs after {cls.name} in the {phase} phase"
                           if req in later else "no stage of this profile provides it")
                    raise StageContractError(f"stage {cls.name} requires the field {req!r}, but {who}")
            for f in cls.provides:
                provided.setdefault(f, cls.name)


def stage_classes(profile: str, phase: str) -> tuple[type[Stage], ...]:
    """A profile's stages for one phase, in order, after checking the whole profile's contract up to it."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r} (known: {', '.join(PHASES)})")
    upto = PHASES[: PHASES.index(phase) + 1]
    composed = [(p, [stage_class(e) for e in PROFILES[profile][p]]) for p in upto]
    check_contract(composed)
    return tuple(composed[-1][1])


def build_stages(config: PipelineConfig, store: ArtefactStore, phase: str = "analysis") -> list[Stage]:
    return [cls(config, store) for cls in stage_classes(config.profile, phase)]
