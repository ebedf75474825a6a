"""Audiobox-Aesthetics (facebookresearch): Production Quality / Complexity, Content Enjoyment / Usefulness.

Reads: a store folder of kind ``audiobox-aesthetics`` holding ``checkpoint.pt`` (``state_dict``, ``model_cfg``,
``target_transform``), read by torch.load(weights_only=True) and built by the audiobox_aesthetics package's
AesMultiOutput (WavLM backbone) with the checkpoint's own config. Scores 10 s windows (hop 10 s) averaged by
length, as the package does; the model is a regressor and is not clipped. Writes nothing.
Fails when: the checkpoint's config holds values the package does not know, or its weights do not fit.
"""

from __future__ import annotations

import pickle
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from songcorpus.transforms.models.registry import ModelError

AUDIOBOX_KIND = "audiobox-aesthetics"
AUDIOBOX_FILES = ("checkpoint.pt",)
AUDIOBOX_RATE = 16000
AUDIOBOX_AXES = ("PQ", "PC", "CE", "CU")
AUDIOBOX_WINDOW_S = 10  # the package scores 10 s windows (hop 10 s) and averages them weighted by length
AUDIOBOX_BATCH = 8  # windows per forward pass (halved on out-of-memory)
_AES_CFG_KEYS = ("proj_num_layer", "proj_ln", "proj_act_fn", "proj_dropout", "nth_layer", "use_weighted_layer_sum",
                 "precision", "normalize_embed", "output_dim")


# A checkpoint may size its WavLM with ``model_cfg["wavlm_cfg"]`` (a fine-tune, the tests' tiny model); the
# published one does not and gets the package's WavLM base+ config. Only these plain values are taken
# (never a string the package would eval).
_WAVLM_INTS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads", "conv_pos",
               "conv_pos_groups", "num_buckets", "max_distance")
_WAVLM_BOOLS = ("layer_norm_first", "conv_bias", "relative_position_embedding", "gru_rel_pos", "normalize")
_WAVLM_CHOICES = {"extractor_mode": ("default", "layer_norm"), "activation_fn": ("gelu", "relu", "tanh", "linear")}
_BUILD_LOCK = threading.Lock()


def _wavlm_overrides(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ModelError(f"wavlm_cfg must be a mapping, not {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _WAVLM_INTS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out[key] = value
        elif key in _WAVLM_BOOLS and isinstance(value, bool):
            out[key] = value
        elif key in _WAVLM_CHOICES and value in _WAVLM_CHOICES[key]:
            out[key] = value
        elif key == "conv_feature_layers" and isinstance(value, list | tuple) and value and all(
                isinstance(t, list | tuple) and len(t) == 3 and all(isinstance(v, int) and v > 0 for v in t)
                for t in value):
            out[key] = repr([tuple(int(v) for v in t) for t in value])  # a literal we wrote ourselves
        else:
            raise ModelError(f"wavlm_cfg entry {key}={value!r} is not a supported WavLM setting")
    return out


def build_aes_model(model_cfg: dict[str, Any], target_transform: dict[str, Any],
                    wavlm: dict[str, Any] | None = None) -> nn.Module:
    """The package's AesMultiOutput from a checkpoint's ``model_cfg`` (the keys its own predictor reads);
    ``wavlm``: WavLM settings that replace the package's base+ ones (checked by ``_wavlm_overrides``)."""
    from audiobox_aesthetics.model import aes
    from audiobox_aesthetics.model.wavlm import WavLMConfig

    try:
        kwargs = {k: model_cfg[k] for k in _AES_CFG_KEYS}
    except KeyError as exc:
        raise ModelError(f"Audiobox-Aesthetics checkpoint model_cfg lacks {exc}") from None
    with warnings.catch_warnings():  # the package's WavLM uses the old weight_norm (same state-dict names)
        warnings.filterwarnings("ignore", message=r"`torch.nn.utils.weight_norm` is deprecated", category=FutureWarning)
        if not wavlm:
            return aes.AesMultiOutput(**kwargs, target_transform=target_transform)
        with _BUILD_LOCK:  # AesMultiOutput always builds aes.DEFAULT_AUDIO_CFG: swap it for this one build
            default = aes.DEFAULT_AUDIO_CFG
            aes.DEFAULT_AUDIO_CFG = WavLMConfig({**default.__dict__, **wavlm})
            try:
                return aes.AesMultiOutput(**kwargs, target_transform=target_transform)
            finally:
                aes.DEFAULT_AUDIO_CFG = default


def read_aes_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """facebookresearch/audiobox-aesthetics ``checkpoint.pt``, weights only (memory-mapped where the file
    allows): its state dict, model_cfg, de-normalisation per axis and WavLM settings, checked."""
    try:
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        state, model_cfg, transform = ckpt["state_dict"], ckpt["model_cfg"], ckpt["target_transform"]
        targets = {a: {"mean": float(transform[a]["mean"]), "std": float(transform[a]["std"])} for a in AUDIOBOX_AXES}
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        raise ModelError(f"{path} is not an Audiobox-Aesthetics checkpoint (state_dict, model_cfg, target_transform "
                         f"for {', '.join(AUDIOBOX_AXES)}): {exc!r}") from None
    if not isinstance(model_cfg, dict) or not isinstance(state, dict):
        raise ModelError(f"{path}: model_cfg / state_dict are not mappings")
    from audiobox_aesthetics.model.aes import DEFAULT_AUDIO_CFG

    wavlm = _wavlm_overrides(model_cfg["wavlm_cfg"]) if "wavlm_cfg" in model_cfg else {}
    nth, layers = model_cfg.get("nth_layer"), wavlm.get("encoder_layers", DEFAULT_AUDIO_CFG.encoder_layers)
    if not isinstance(nth, int) or not 1 <= nth <= layers + 1:
        raise ModelError(f"{path}: nth_layer {nth!r} does not fit a WavLM of {layers} layers")
    missing = [k for k in _AES_CFG_KEYS if k not in model_cfg]
    if missing:
        raise ModelError(f"{path}: model_cfg lacks {missing}")
    return state, model_cfg, targets, wavlm


def load_aes_checkpoint(path: Path) -> nn.Module:
    """``checkpoint.pt`` -> the package's AesMultiOutput with its weights, eval mode."""
    state, model_cfg, targets, wavlm = read_aes_checkpoint(path)
    model = build_aes_model(model_cfg, targets, wavlm)
    state = {re.sub(r"^model\.", "", k): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path} does not fit the Audiobox-Aesthetics architecture: {exc}") from None
    return model.eval()


class AudioboxAestheticsScorer:
    """Audiobox-Aesthetics over 16 kHz mono audio, as the package's predictor scores a file: 10 s windows
    (the last zero-padded and masked), each axis de-normalised, windows averaged weighted by their length."""

    rate = AUDIOBOX_RATE

    def __init__(self, model: nn.Module, device: torch.device, mixed_precision: bool = True,
                 batch: int = AUDIOBOX_BATCH) -> None:
        from audiobox_aesthetics.infer import make_inference_batch
        from audiobox_aesthetics.model.aes import Normalize

        self._make_batch = make_inference_batch  # the package's windowing (importing it takes seconds: here, once)
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.mixed_precision = mixed_precision
        self.batch = batch
        self.transform = {a: Normalize(**model.target_transform[a]) for a in AUDIOBOX_AXES}

    @classmethod
    def from_folder(cls, folder: Path, device: torch.device, mixed_precision: bool = True) -> AudioboxAestheticsScorer:
        return cls(load_aes_checkpoint(Path(folder) / "checkpoint.pt"), device, mixed_precision)

    def _windows(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, float]]:
        from songcorpus.transforms.models.accelerator import autocast

        wavs = torch.stack([w for w, _ in batch]).to(self.device)
        masks = torch.stack([m for _, m in batch]).to(self.device)
        with torch.inference_mode(), autocast(self.device, self.mixed_precision), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")  # inside WavLM
            preds = self.model({"wav": wavs, "mask": masks})
        values = {a: self.transform[a].inverse(preds[a].float()).cpu().numpy() for a in AUDIOBOX_AXES}
        return [{a: float(values[a][i]) for a in AUDIOBOX_AXES} for i in range(len(batch))]

    def score(self, mono: np.ndarray) -> dict[str, float]:
        from songcorpus.transforms.models.accelerator import run_batched

        wav = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None]
        wavs, masks, weights, _ = self._make_batch([wav], AUDIOBOX_WINDOW_S, AUDIOBOX_WINDOW_S, sample_rate=self.rate)
        per_window = run_batched(list(zip(wavs, masks, strict=True)), self._windows, max_items=self.batch)
        w = np.asarray(weights, dtype=np.float64)
        return {a: float(np.dot([p[a] for p in per_window], w) / w.sum()) for a in AUDIOBOX_AXES}
