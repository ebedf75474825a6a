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
Needs: two store models. ``songeval`` (kind songeval): the SongEval head as ASLP-lab/SongEval publishes it
(``model.safetensors`` from ckpt/ and ``config.yaml``, read without instantiating its ``_target_``) plus
its feature extractor MuQ-large-msd-iter (OpenMuQ/MuQ-large-msd-iter's ``config.json`` and
``model.safetensors``, stored as ``muq_config.json`` / ``muq_model.safetensors`` since the names collide).
``audiobox-aesthetics`` (kind audiobox-aesthetics): facebookresearch's ``checkpoint.pt``
(``state_dict``, ``model_cfg``, ``target_transform``), read by torch.load(weights_only=True) and built by
the audiobox_aesthetics package's AesMultiOutput (WavLM backbone). The ``muq`` package is not used: it
imports x_clip, whose torchvision pin replaces the project's torch; the MuQ feature path is
re-implemented here over transformers' Wav2Vec2Conformer layers (the extractor is pluggable:
``SongEvalScorer(head, features)``). GPU when ``device`` allows (autocast under
``device.mixed_precision``), CPU otherwise; run it as an actor pool.
Fails when: either model is missing, altered or of another kind, or its configs are not the published ones
(preflight, naming it); its weights do not fit the architecture (setup); audio unreadable or a non-finite
score (failed).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch
from torch import nn

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.row import Row, audio_file, audio_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.models.registry import ModelError

SONGEVAL_KIND = "songeval"
AUDIOBOX_KIND = "audiobox-aesthetics"
SONGEVAL_FILES = ("config.yaml", "model.safetensors", "muq_config.json", "muq_model.safetensors")
AUDIOBOX_FILES = ("checkpoint.pt",)

SONGEVAL_RATE = 24000  # MuQ's mel front end is fixed at 24 kHz
SONGEVAL_DIMS = ("coherence", "musicality", "memorability", "clarity", "naturalness")  # the head's output order
SONGEVAL_LAYER = 6  # the head reads MuQ's hidden_states[6]: the output of the 6th conformer layer
AUDIOBOX_RATE = 16000
AUDIOBOX_AXES = ("PQ", "PC", "CE", "CU")
AUDIOBOX_WINDOW_S = 10  # the package scores 10 s windows (hop 10 s) and averages them weighted by length
AUDIOBOX_BATCH = 8  # windows per forward pass (halved on out-of-memory)
MIN_ANALYSIS_S = 1.0

FIELDS = (*(f"songeval_{d}" for d in SONGEVAL_DIMS), "songeval_mean",
          *(f"audiobox_{a.lower()}" for a in AUDIOBOX_AXES), "aesthetics_models")


# --- SongEval -----------------------------------------------------------------------------------------

class SongEvalHead(nn.Module):
    """SongEval's scorer over MuQ features (ASLP-lab/SongEval, model.py ``Generator``), same parameter
    names so its ``model.safetensors`` loads as is: a position-wise MLP, self-attention layers, then
    [mean of the attended frames, max of the MLP frames] -> linear -> 3 + 2 tanh, one score per dimension."""

    def __init__(self, in_features: int, ffd_hidden_size: int, num_classes: int, attn_layer_num: int) -> None:
        super().__init__()
        self.attn = nn.ModuleList(nn.MultiheadAttention(in_features, num_heads=8, dropout=0.2, batch_first=True)
                                  for _ in range(attn_layer_num))
        self.ffd = nn.Sequential(nn.Linear(in_features, ffd_hidden_size), nn.ReLU(),
                                 nn.Linear(ffd_hidden_size, in_features))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(in_features * 2, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, frames, in_features) -> (batch, num_classes) in (1, 5)."""
        frames = self.ffd(features)
        attended = frames
        for attn in self.attn:
            attended, _ = attn(attended, attended, attended, need_weights=False)
        pooled = torch.cat([attended.mean(dim=1), frames.max(dim=1).values], dim=1)
        return torch.tanh(self.fc(self.dropout(pooled))) * 2.0 + 3.0


def read_songeval_config(path: Path) -> dict[str, int]:
    """The head's sizes from SongEval's hydra ``config.yaml`` (its ``generator`` section); the ``_target_``
    there is never imported."""
    import yaml

    try:
        generator = yaml.safe_load(Path(path).read_text())["generator"]
        sizes = {k: int(generator[k]) for k in ("in_features", "ffd_hidden_size", "num_classes", "attn_layer_num")}
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
        raise ModelError(f"{path} is not a SongEval config (a generator section with in_features, "
                         f"ffd_hidden_size, num_classes, attn_layer_num): {exc!r}") from None
    if sizes["num_classes"] != len(SONGEVAL_DIMS) or sizes["in_features"] % 8:
        raise ModelError(f"{path}: a SongEval head scores {len(SONGEVAL_DIMS)} dimensions over features divisible "
                         f"by its 8 heads, not {sizes}")
    return sizes


class _Res2d(nn.Module):
    """MuQ's Res2dModule (tencent-ailab/MuQ src/muq/muq/modules/conv.py): two 3x3 conv+BN with a strided
    3x3 conv+BN shortcut, ReLU after the sum. MuQ always strides frequency by 2, so the shortcut always exists."""

    def __init__(self, idim: int, odim: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(self.bn3(self.conv3(x)) + out)


class _ConvSubsampling(nn.Module):
    """MuQ's Conv2dSubsampling: two Res2d blocks (frequency /4, time /n_fold) then a linear over (channel, band)."""

    def __init__(self, hdim: int, odim: int, time_strides: tuple[int, int], n_bands: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_Res2d(1, hdim, (2, time_strides[0])), _Res2d(hdim, hdim, (2, time_strides[1])))
        self.linear = nn.Linear(hdim * (n_bands // 4), odim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv(mel.unsqueeze(1))  # (b, c, f, t)
        b, c, f, t = x.shape
        return self.linear(x.permute(0, 3, 1, 2).reshape(b, t, c * f))


def muq_settings(config: Any, n_layers: int = SONGEVAL_LAYER) -> dict[str, Any]:
    """What the feature path needs from a MuQ ``config.json`` (MuQConfig's fields, muq/muq.py), checked."""
    if not isinstance(config, dict):
        raise ModelError(f"a MuQ config is a JSON object, not {type(config).__name__}")
    if config.get("features", ["melspec_2048"]) != ["melspec_2048"] or config.get("is_flash"):
        raise ModelError(f"MuQ config with features {config.get('features')} / is_flash "
                         f"{config.get('is_flash')} is not supported (melspec_2048, is_flash false)")
    try:
        strides = {4: (2, 2), 2: (2, 1)}.get(int(100 // int(config.get("label_rate", 25))))
        out = {"hop": int(config.get("hop_length", 240)), "dim": int(config.get("encoder_dim", 1024)),
               "conv_dim": int(config.get("conv_dim", 512)), "depth": int(config.get("encoder_depth", 12)),
               "mean": float(config["stat"]["melspec_2048_mean"]), "std": float(config["stat"]["melspec_2048_std"]),
               "w2v2": dict(config.get("w2v2_config") or {}), "strides": strides}
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelError(f"MuQ config is incomplete or malformed ({exc!r}): it needs stat.melspec_2048_mean/std, "
                         "label_rate, encoder_dim, conv_dim, encoder_depth, w2v2_config") from None
    if strides is None or int(config.get("n_mels", 128)) != 128:
        raise ModelError(f"MuQ config: label_rate {config.get('label_rate')} / n_mels {config.get('n_mels')} "
                         "not supported (25 or 50 Hz, 128 bands)")
    if not 1 <= n_layers <= out["depth"]:
        raise ModelError(f"MuQ has {out['depth']} layers; hidden state {n_layers} does not exist")
    return out


def read_muq_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a MuQ config.json ({exc})") from None
    muq_settings(config)
    return config


class MuQFeatures(nn.Module):
    """MuQ's feature path up to one hidden state (tencent-ailab/MuQ src/muq/muq/models/muq_model.py,
    ``get_predictions``): mel (n_fft 2048, 128 bands, power dB) -> (x - mean) / std -> conv subsampling ->
    Wav2Vec2-Conformer layers. Only the layers up to ``n_layers`` are built: hidden_states[k] of MuQ is the
    output of its k-th layer, so later layers cannot change it. Parameter names are MuQModel's."""

    def __init__(self, config: dict[str, Any], n_layers: int) -> None:
        super().__init__()
        from transformers import Wav2Vec2ConformerConfig
        from transformers.models.wav2vec2_conformer import modeling_wav2vec2_conformer as w2c

        settings = muq_settings(config, n_layers)
        self.mean, self.std, self.hop, dim = settings["mean"], settings["std"], settings["hop"], settings["dim"]
        conformer_cfg = Wav2Vec2ConformerConfig(**settings["w2v2"])
        conformer_cfg.hidden_size, conformer_cfg.num_hidden_layers = dim, n_layers
        conformer_cfg._attn_implementation = "sdpa" if conformer_cfg.position_embeddings_type == "rotary" else "eager"
        self.conv = _ConvSubsampling(settings["conv_dim"], dim, settings["strides"], 128)
        self.conformer = nn.Module()
        self.conformer.embed_positions = {
            "rotary": w2c.Wav2Vec2ConformerRotaryPositionalEmbedding,
            "relative": w2c.Wav2Vec2ConformerRelPositionalEmbedding,
        }.get(conformer_cfg.position_embeddings_type, lambda _cfg: None)(conformer_cfg)
        self.conformer.layers = nn.ModuleList(w2c.Wav2Vec2ConformerEncoderLayer(conformer_cfg) for _ in range(n_layers))
        self.dim = dim
        self._frontend: dict[str, Any] = {}  # torchaudio transforms kept out of the state dict (as in MuQ)

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        import torchaudio

        if self._frontend.get("device") != wav.device:
            self._frontend = {
                "device": wav.device,
                "mel": torchaudio.transforms.MelSpectrogram(sample_rate=SONGEVAL_RATE, n_fft=2048, hop_length=self.hop,
                                                            n_mels=128).to(wav.device),
                "db": torchaudio.transforms.AmplitudeToDB().to(wav.device),
            }
        with torch.autocast(wav.device.type, enabled=False):
            mel = self._frontend["db"](self._frontend["mel"](wav.float()))[..., :-1]
        return (mel - self.mean) / self.std

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(batch, samples at 24 kHz) -> (batch, frames at 25 Hz, dim): MuQ's hidden_states[n_layers]."""
        x = self.conv(self.mel(wav))
        positions = None if self.conformer.embed_positions is None else self.conformer.embed_positions(x)
        for layer in self.conformer.layers:
            x = layer(x, attention_mask=None, relative_position_embeddings=positions)
        return x

    @classmethod
    def from_files(cls, config_path: Path, weights_path: Path, n_layers: int = SONGEVAL_LAYER) -> MuQFeatures:
        """A MuQ checkpoint as OpenMuQ publishes it (config.json, model.safetensors of ``MuQ``: keys
        ``model.<MuQModel name>``); the keys this path uses must all be there, the others are left."""
        from safetensors.torch import load_file

        module = cls(read_muq_config(config_path), n_layers)
        state = {k.removeprefix("model."): v for k, v in load_file(str(weights_path), device="cpu").items()}
        load_subset(module, state, f"MuQ checkpoint {weights_path}", derived=("embed_positions.inv_freq",))
        return module.eval()


def load_subset(module: nn.Module, state: dict[str, torch.Tensor], what: str, derived: tuple[str, ...] = ()) -> None:
    """Load every key of ``module`` from ``state`` (which may hold more: layers past the one read, the
    pre-training heads); a missing key or a shape that differs is a ModelError naming ``what``. Keys ending
    in one of ``derived`` are computed from the config and keep the module's value when the file lacks them."""
    wanted = module.state_dict()
    missing = sorted(k for k in set(wanted) - set(state) if not k.endswith(derived))
    if missing:
        raise ModelError(f"{what} lacks {len(missing)} weights of the architecture, e.g. {missing[:3]}")
    try:
        module.load_state_dict({k: state.get(k, wanted[k]) for k in wanted}, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{what} does not fit the architecture: {exc}") from None


class SongEvalScorer:
    """SongEval over 24 kHz mono audio: a feature extractor ((batch, samples) -> (batch, frames, dim), MuQ
    hidden state 6 for the published head; any callable of that shape plugs in) and the head."""

    rate = SONGEVAL_RATE

    def __init__(self, head: SongEvalHead, features: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 mixed_precision: bool = True) -> None:
        self.head = head.eval().to(device)
        self.features = features.eval().to(device) if isinstance(features, nn.Module) else features
        self.device = torch.device(device)
        self.mixed_precision = mixed_precision

    @classmethod
    def from_folder(cls, folder: Path, device: torch.device, mixed_precision: bool = True,
                    features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> SongEvalScorer:
        from safetensors.torch import load_file

        folder = Path(folder)
        head = SongEvalHead(**read_songeval_config(folder / "config.yaml"))
        state = load_file(str(folder / "model.safetensors"), device="cpu")
        load_subset(head, state, f"SongEval head {folder / 'model.safetensors'}")
        if features is None:
            features = MuQFeatures.from_files(folder / "muq_config.json", folder / "muq_model.safetensors")
            if features.dim != head.fc.in_features // 2:
                raise ModelError(f"{folder}: MuQ gives {features.dim}-d features, the head reads "
                                 f"{head.fc.in_features // 2}")
        return cls(head, features, device, mixed_precision)

    def score(self, mono: np.ndarray) -> dict[str, float]:
        """The five dimensions (1-5) of one clip, as SongEval scores a whole song: one pass, no chunking."""
        from songcorpus.transforms.models.accelerator import autocast

        wav = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None].to(self.device)
        with torch.inference_mode(), autocast(self.device, self.mixed_precision):
            scores = self.head(self.features(wav)).float()[0].cpu().numpy()
        return {d: float(s) for d, s in zip(SONGEVAL_DIMS, scores, strict=True)}


# --- Audiobox-Aesthetics -------------------------------------------------------------------------------

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


# --- the stage -----------------------------------------------------------------------------------------

def middle_excerpt(x: np.ndarray, rate: int, max_s: float) -> np.ndarray:
    """At most ``max_s`` seconds from the middle of ``x`` (frames first)."""
    n = int(round(max_s * rate))
    if x.shape[0] <= n:
        return x
    start = (x.shape[0] - n) // 2
    return x[start : start + n]


def to_rate(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 at ``target`` Hz (soxr HQ), zero-padded to ``MIN_ANALYSIS_S``."""
    out = soxr.resample(mono, rate, target, quality="HQ") if rate != target else mono
    out = np.asarray(out, dtype=np.float32)
    least = int(MIN_ANALYSIS_S * target)
    return np.pad(out, (0, least - out.size)) if out.size < least else out


def _finite(scores: dict[str, float], model: str) -> dict[str, float]:
    bad = [k for k, v in scores.items() if not np.isfinite(v)]
    if bad:
        raise RuntimeError(f"{model} gave non-finite scores for {bad}")
    return scores


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
        from songcorpus.transforms.models.store import get_store_model

        return [(get_store_model(name, self.store_registry()), kind) for kind, name in self._wanted().items()]

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
            dims = _finite(songeval.score(to_rate(mono, rate, songeval.rate)), "SongEval")
            out.update({f"songeval_{d}": round(v, 4) for d, v in dims.items()})
            out["songeval_mean"] = round(float(np.mean(list(dims.values()))), 4)
        audiobox = self._scorers.get(AUDIOBOX_KIND)
        if audiobox is not None:
            axes = _finite(audiobox.score(to_rate(mono, rate, audiobox.rate)), "Audiobox-Aesthetics")
            out.update({f"audiobox_{a.lower()}": round(v, 4) for a, v in axes.items()})
        out["aesthetics_models"] = self.model_id()
        return out
