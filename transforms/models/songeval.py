"""SongEval (ASLP-lab/SongEval): a song-level aesthetic head over MuQ-large-msd-iter features, five dimensions 1-5.

Reads: a store folder of kind ``songeval`` holding the head as published (``model.safetensors`` from ckpt/ and
``config.yaml``, read without instantiating its ``_target_``) and MuQ's ``config.json`` / ``model.safetensors``,
stored as ``muq_config.json`` / ``muq_model.safetensors`` since the names collide. The ``muq`` package is not
used: it imports x_clip, whose torchvision pin replaces the project's torch; the MuQ feature path is
re-implemented here over transformers' Wav2Vec2Conformer layers (the extractor is pluggable:
``SongEvalScorer(head, features)``). Writes nothing.
Fails when: a config is not the published one, or the weights do not fit the architecture (naming the file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from songcorpus.transforms.models.registry import ModelError

SONGEVAL_KIND = "songeval"
SONGEVAL_FILES = ("config.yaml", "model.safetensors", "muq_config.json", "muq_model.safetensors")
SONGEVAL_RATE = 24000  # MuQ's mel front end is fixed at 24 kHz
SONGEVAL_DIMS = ("coherence", "musicality", "memorability", "clarity", "naturalness")  # the head's output order
SONGEVAL_LAYER = 6  # the head reads MuQ's hidden_states[6]: the output of the 6th conformer layer


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
