"""The four compact generators and the contract the loader and the trainer wire them by.

Files: ``blocks.py`` (attention + RoPE, RMSNorm, SwiGLU, adaLN, timestep embedding, linear attention: written
once), ``schedules.py`` (noise/mask schedules, v/x0/eps conversions, guidance), ``base.py`` (the shared
interface), one file per generator: ``samuel.py``, ``lada_band.py``, ``songecho.py`` (stages A and B),
``unisinger.py``. Configs live in ``schemas/train_models.py`` (pydantic, importable without torch).

Registry: ``build_model(config)`` builds the generator a config names (``config.name``):

=================  ======================  =================  =============================================
name               config                  module             batch_keys (default config; read the instance)
=================  ======================  =================  =============================================
samuel             SamuelConfig            SAMUeL             vocals_latents, accompaniment_latents
lada_band          LadaBandConfig          LadaBand           vocals_tokens, accompaniment_tokens,
                                                              reference_tokens, text_emb
songecho           SongEchoConfig          SongEcho           vocals_latents, accompaniment_latents,
                                                              text_emb, phonemes (+ speaker if use_speaker)
songecho_melody    SongEchoMelodyConfig    SongEchoMelody     the backbone's + f0
unisinger          UniSingerConfig         UniSinger          vocals_latents, accompaniment_latents, text_emb,
                                                              phonemes, f0, reference_vocals_latents
                                                              (units / speaker with the full-profile config)
=================  ======================  =================  =============================================
Every model also reads ``mask`` when present (``optional_keys``).

Batch contract (the loader hands tensors; models never read files; time lengths come from the tensors):
- ``vocals_latents``, ``accompaniment_latents``: float (B, T, C) normalised latents (embedded codec: C = 128
  log-mel at 25 Hz; a 10.24 s window is T = 256); ``reference_vocals_latents``: float (B, T_ref, C), the
  vocal latents of the sample's reference window (UniSinger's lite speaker source).
- ``vocals_tokens``, ``accompaniment_tokens``: int64 (B, T) codebook ids in [0, vocab_size);
  ``reference_tokens``: int64 (B, T_ref), the reference window's accompaniment tokens.
- ``f0``: float (B, T_f0) Hz at 100 Hz, 0 = unvoiced (T_f0 = 1024 for 10.24 s).
- ``text_emb``: float (B, D_text) caption/tags sentence embedding (384-d MiniLM by default).
- ``phonemes``: int64 (B, L), 0 = pad; ``units``: int64 (B, T_u) content units at 50 Hz (full profile);
  ``speaker``: float (B, D_spk) (full profile).
- ``mask``: optional bool (B, T) valid latent/token frames (windows padded to the model length). Padded
  frames are zeroed (latents) or set to the pad id (tokens) on input and kept out of attention keys and the
  loss, so the loss does not depend on what the padding holds (tested). Reference windows
  (``reference_tokens``, ``reference_vocals_latents``) are read whole: give them unpadded.

Interface (:class:`base.GeneratorModel`), identical for the five modules:
- ``loss(batch, generator=None, step=None, total_steps=None) -> (scalar tensor, dict[str, float])``: the
  training loss and its terms (always a "loss" entry). ``step``/``total_steps`` are the trainer's counters;
  only UniSinger needs them (its curriculum) and raises without them; pass them always.
- ``generate(cond_batch, steps=..., guidance=..., generator=None, **model_options) -> tensor``:
  SAMUeL (B, T, C) accompaniment latents (steps 50, guidance 3.0, ``method`` "ddim"|"ddpm", ``eta``);
  LadaBand (B, T) accompaniment ids (steps 36, guidance 1.0 = no CFG, ``trace``); SongEcho /
  SongEchoMelody (B, T, 2C) [vocals; accompaniment] latents (steps 60, APG guidance 15, ``length``);
  UniSinger (B, T, 2C) (steps 32, guidance 2.5, ``task`` "song"|"svc", ``length``). ``base.split_stems``
  splits a (B, T, 2C) result into the two stems.
- ``trainable_parameters()``: what the optimiser gets (SongEchoMelody: exactly the melody encoder and the
  injections; the backbone is frozen, load stage A into ``model.backbone``).
- ``batch_keys`` / ``optional_keys`` (instance attributes; the class attributes are the default config's).
Determinism: every random draw in ``loss`` and ``generate`` (noise, timesteps, masks, CFG dropout, Sobol
scrambling seed, sampling) comes from ``generator``; no module uses dropout, so a resumed run that restores
the generator state repeats the uninterrupted one. With ``generator=None`` torch's global RNG is used.

Parameter counts (``count_parameters(config)``, counted on the meta device, never allocated; tested):
compact defaults SAMUeL 3.91M, LaDA-Band 8.56M, SongEcho 10.68M (stage B trains 2.43M), UniSinger 14.05M;
paper sizes SAMUeL 15.58M, LaDA-Band 1.06B, SongEcho 2.58B (stage B trains 49.10M), UniSinger 0.60B (proposed).
"""

from __future__ import annotations

import torch

from songcorpus.schemas.train_models import (
    MODEL_CONFIGS,
    LadaBandConfig,
    SamuelConfig,
    SongEchoConfig,
    SongEchoMelodyConfig,
    UniSingerConfig,
)
from songcorpus.train.models.base import GeneratorModel, split_stems, stems_latents
from songcorpus.train.models.lada_band import LadaBand
from songcorpus.train.models.samuel import SAMUeL
from songcorpus.train.models.songecho import SongEcho, SongEchoMelody
from songcorpus.train.models.unisinger import UniSinger, task_probabilities

MODELS: dict[str, type[GeneratorModel]] = {
    "samuel": SAMUeL,
    "lada_band": LadaBand,
    "songecho": SongEcho,
    "songecho_melody": SongEchoMelody,
    "unisinger": UniSinger,
}

ModelConfig = SamuelConfig | LadaBandConfig | SongEchoConfig | SongEchoMelodyConfig | UniSingerConfig


def build_model(config: ModelConfig) -> GeneratorModel:
    """The generator ``config.name`` names, built from ``config``."""
    try:
        cls = MODELS[config.name]
    except KeyError:
        raise ValueError(f"unknown generator {config.name!r}; known: {sorted(MODELS)}") from None
    return cls(config)


def count_parameters(config: ModelConfig, trainable_only: bool = False) -> int:
    """Parameters of the model ``config`` builds (``trainable_only``: those ``trainable_parameters`` returns),
    counted on the meta device so paper-size models cost no memory."""
    with torch.device("meta"):
        model = build_model(config)
    params = model.trainable_parameters() if trainable_only else list(model.parameters())
    return sum(p.numel() for p in params)


__all__ = [
    "MODELS", "MODEL_CONFIGS", "GeneratorModel", "LadaBand", "LadaBandConfig", "SAMUeL", "SamuelConfig", "SongEcho",
    "SongEchoConfig", "SongEchoMelody", "SongEchoMelodyConfig", "UniSinger", "UniSingerConfig", "build_model",
    "count_parameters", "split_stems", "stems_latents", "task_probabilities",
]
