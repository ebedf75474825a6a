"""Speaker embeddings (UniSinger's timbre prompt): speechbrain's ECAPA-TDNN, as published in
``speechbrain/spkrec-ecapa-voxceleb``, built here without HyperPyYAML.

Reads: mono float audio at any rate (resampled to 16 kHz with soxr; a 2-D ``(n, channels)`` array is
averaged to mono) and a store model of kind ``ecapa`` in the published layout: ``hyperparams.yaml``,
``embedding_model.ckpt`` (the ECAPA_TDNN ``state_dict``), ``mean_var_norm_emb.ckpt`` (global embedding
statistics; loaded and checked, applied only with ``subtract_embedding_mean``).
Provides: ``embed(audio, rate)`` -> float32 ``(lin_neurons,)`` (192 for the published model), L2-normalised;
``embed_many`` for many clips through :func:`accelerator.run_batched`.
The computation is speechbrain's ``EncoderClassifier.encode_batch`` (the path its ``verify_batch`` uses):
``Fbank`` (80 log-mels, 25 ms / 10 ms) -> ``InputNormalization`` (``sentence``, mean only) ->
``ECAPA_TDNN`` -> L2 norm, so cosine similarity of two embeddings is speechbrain's verification score.
Loading never runs code from the files: ``hyperparams.yaml`` is parsed with a safe YAML loader that
reads HyperPyYAML's ``!new:`` / ``!ref`` tags as plain data (nothing is instantiated from it; only the
numbers of the feature, normalisation and ECAPA sections are read), and the checkpoints go through
``torch.load(weights_only=True)``.
Fails (ModelError, naming the folder and the file): a model of another kind, a missing or unreadable
file, a ``hyperparams.yaml`` whose embedding model is not speechbrain's ECAPA_TDNN or has settings this
adapter does not know, a checkpoint whose tensors do not fit the architecture. ValueError: empty audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soxr
import torch
import yaml

from songcorpus.transforms.models.accelerator import autocast, map_equal_length, run_batched
from songcorpus.transforms.models.registry import ModelError

if TYPE_CHECKING:
    from songcorpus.transforms.models.registry import StoreModel

KIND = "ecapa"
SAMPLE_RATE = 16000
HPARAMS_FILE = "hyperparams.yaml"
EMBEDDING_FILE = "embedding_model.ckpt"
EMB_NORM_FILE = "mean_var_norm_emb.ckpt"
ECAPA_CLASS = "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"
FBANK_CLASS = "speechbrain.lobes.features.Fbank"
NORM_CLASS = "speechbrain.processing.features.InputNormalization"
# the ECAPA_TDNN / Fbank / InputNormalization arguments this adapter passes on (all plain numbers/lists)
_ECAPA_ARGS = ("input_size", "channels", "kernel_sizes", "dilations", "attention_channels", "lin_neurons",
               "res2net_scale", "se_channels", "global_context", "groups")
_FBANK_ARGS = ("n_mels", "sample_rate", "n_fft", "win_length", "hop_length", "f_min", "f_max", "deltas", "context",
               "left_frames", "right_frames", "filter_shape")
_NORM_ARGS = ("norm_type", "std_norm")
_IGNORED_ARGS = ("device", "dropout", "requires_grad")  # no effect at inference


# ---------------------------------------------------------------------------------------------
# hyperparams.yaml, read as data
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tagged:
    """A HyperPyYAML-tagged node (``!new:cls``, ``!ref <x>``...), kept as data, never constructed."""

    tag: str
    value: Any


class _HparamsLoader(yaml.SafeLoader):
    """yaml.SafeLoader that reads every ``!...`` tag as :class:`_Tagged` instead of refusing it."""


def _construct_tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> _Tagged:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return _Tagged("!" + suffix, value)


_HparamsLoader.add_multi_constructor("!", _construct_tagged)


@dataclass(frozen=True)
class EcapaHparams:
    """The numbers of a speechbrain speaker-verification ``hyperparams.yaml`` this adapter uses."""

    ecapa: dict[str, Any]
    fbank: dict[str, Any] = field(default_factory=dict)
    norm: dict[str, Any] = field(default_factory=lambda: {"norm_type": "sentence", "std_norm": False})

    @property
    def lin_neurons(self) -> int:
        return int(self.ecapa.get("lin_neurons", 192))


def _resolve(value: Any, top: dict[str, Any], where: str) -> Any:
    """Plain values as they are; ``!ref <key>`` from the file's top level (only that form of !ref)."""
    if isinstance(value, list):
        return [_resolve(v, top, where) for v in value]
    if not isinstance(value, _Tagged):
        return value
    text = str(value.value).strip()
    if value.tag == "!ref" and text.startswith("<") and text.endswith(">") and text[1:-1] in top:
        return _resolve(top[text[1:-1]], top, where)
    raise ModelError(f"{where}: cannot read {value.tag} {value.value!r} (only plain values and !ref <key> are read)")


def _section(top: dict[str, Any], key: str, cls: str, allowed: tuple[str, ...], path: Path,
             required: bool) -> dict[str, Any]:
    node = top.get(key)
    if node is None and not required:
        return {}
    if not isinstance(node, _Tagged) or node.tag != f"!new:{cls}" or not isinstance(node.value, dict | None):
        raise ModelError(f"{path}: '{key}' must be a !new:{cls} section (this adapter builds only that class)")
    out = {}
    for arg, raw in (node.value or {}).items():
        if arg in _IGNORED_ARGS:
            continue
        if arg not in allowed:
            raise ModelError(f"{path}: {key}.{arg} is a setting this adapter does not support")
        out[arg] = _resolve(raw, top, f"{path}: {key}.{arg}")
    return out


def read_hparams(path: Path) -> EcapaHparams:
    """The ECAPA, Fbank and feature-normalisation settings of a published ``hyperparams.yaml``."""
    try:
        top = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_HparamsLoader)  # noqa: S506 - safe subclass
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelError(f"speaker model: cannot read {path} ({exc})") from None
    if not isinstance(top, dict):
        raise ModelError(f"speaker model: {path} is not a YAML mapping")
    ecapa = _section(top, "embedding_model", ECAPA_CLASS, _ECAPA_ARGS, path, required=True)
    fbank = _section(top, "compute_features", FBANK_CLASS, _FBANK_ARGS, path, required=False)
    norm = {"norm_type": "sentence", "std_norm": False,
            **_section(top, "mean_var_norm", NORM_CLASS, _NORM_ARGS, path, required=False)}
    if "input_size" not in ecapa:
        raise ModelError(f"speaker model: {path}: embedding_model.input_size is missing")
    if fbank.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise ModelError(f"speaker model: {path}: features at {fbank['sample_rate']} Hz; this adapter feeds {SAMPLE_RATE} Hz")
    if int(fbank.get("n_mels", 40)) != int(ecapa["input_size"]):
        raise ModelError(f"speaker model: {path}: {fbank.get('n_mels', 40)} mels but ECAPA input_size "
                         f"{ecapa['input_size']}")
    if norm["norm_type"] != "sentence":
        raise ModelError(f"speaker model: {path}: feature normalisation {norm['norm_type']!r}; only 'sentence' "
                         f"(per-clip statistics, what the published model uses) needs no extra statistics file")
    return EcapaHparams(ecapa=ecapa, fbank=fbank, norm=norm)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------

def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors of every kind mean the same to a user
        raise ModelError(f"speaker model: cannot load {path} as weights only ({type(exc).__name__}: {exc})") from None


def load_state_dict(module: torch.nn.Module, path: Path) -> None:
    """A speechbrain ``state_dict`` checkpoint into ``module``, with speechbrain's own key renames for
    older checkpoints; any parameter missing or left over is an error (BatchNorm's step counter aside)."""
    from speechbrain.utils.checkpoints import hook_on_loading_state_dict_checkpoint

    state = _torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"speaker model: {path} is not a state_dict of tensors")
    state = hook_on_loading_state_dict_checkpoint(dict(state))
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise ModelError(f"speaker model: {path} does not fit the architecture in {HPARAMS_FILE}: {exc}") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ModelError(f"speaker model: {path} does not fit the architecture in {HPARAMS_FILE}: "
                         f"missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}")


def load_embedding_stats(path: Path) -> torch.Tensor:
    """``glob_mean`` of a speechbrain ``InputNormalization`` statistics file (``mean_var_norm_emb.ckpt``)."""
    stats = _torch_load(path)
    mean = stats.get("glob_mean") if isinstance(stats, dict) else None
    if not isinstance(mean, torch.Tensor):
        raise ModelError(f"speaker model: {path} holds no glob_mean tensor")
    return mean.float().reshape(-1)


# ---------------------------------------------------------------------------------------------
# the encoder
# ---------------------------------------------------------------------------------------------

def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (soxr HQ); ``round(n * 16000 / rate)`` samples."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"speaker/content encoders take mono (n,) or (n, channels) audio, got shape {x.shape}")
    if int(rate) != SAMPLE_RATE and x.size:
        x = soxr.resample(x, int(rate), SAMPLE_RATE).astype(np.float32, copy=False)
    return np.ascontiguousarray(x)


class SpeakerEncoder:
    """ECAPA-TDNN speaker embeddings; one object per worker (weights loaded once)."""

    kind = KIND
    sample_rate = SAMPLE_RATE

    def __init__(self, hparams: EcapaHparams, model: torch.nn.Module, device: torch.device,
                 embedding_mean: torch.Tensor | None = None, mixed_precision: bool = False) -> None:
        from speechbrain.lobes.features import Fbank
        from speechbrain.processing.features import InputNormalization

        self.hparams = hparams
        self.device = torch.device(device)
        self.mixed_precision = mixed_precision
        self.features = Fbank(**hparams.fbank).to(self.device).eval()
        self.norm = InputNormalization(**hparams.norm).to(self.device).eval()
        self.model = model.to(self.device).eval()
        self.embedding_mean = None if embedding_mean is None else embedding_mean.to(self.device)

    @property
    def dim(self) -> int:
        return self.hparams.lin_neurons

    @torch.inference_mode()
    def _embed_equal(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Embeddings of equal-length 16 kHz clips, one forward pass."""
        x = torch.from_numpy(np.stack(wavs)).to(self.device)
        lens = torch.ones(x.shape[0], device=self.device)
        feats = self.norm(self.features(x), lens)
        with autocast(self.device, self.mixed_precision):
            emb = self.model(feats, lens)
        emb = emb.float().reshape(x.shape[0], -1)
        if self.embedding_mean is not None:
            emb = emb - self.embedding_mean
        emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return list(emb.cpu().numpy().astype(np.float32))

    def _embed_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Clips of equal length share a forward pass; others run alone, so no clip is ever padded and
        the result does not depend on the batch it came in (padding would reach the convolutions)."""
        return map_equal_length(wavs, self._embed_equal)

    def embed(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """float32 ``(dim,)`` unit-norm embedding of one clip."""
        return self.embed_many([(audio, rate)])[0]

    def embed_many(self, items: Sequence[tuple[np.ndarray, int]], max_items: int = 16) -> list[np.ndarray]:
        """Embeddings of many ``(audio, rate)`` clips, duration-bucketed, halving batches on out-of-memory."""
        wavs = [to_16k(a, r) for a, r in items]
        for i, w in enumerate(wavs):
            if w.size == 0:
                raise ValueError(f"speaker encoder: clip {i} is empty")
        return run_batched(wavs, self._embed_batch, [w.size / SAMPLE_RATE for w in wavs], max_items=max_items)


def load_speaker_encoder(spec: StoreModel, folder: Path, device: torch.device | str,
                         mixed_precision: bool = False, subtract_embedding_mean: bool = False) -> SpeakerEncoder:
    """The encoder from a verified store folder (``spec.verified_folder``). ``subtract_embedding_mean``
    subtracts the published global embedding mean before the L2 norm (speechbrain's
    ``encode_batch(normalize=True)``); off by default, as in speechbrain's verification scoring."""
    if spec.kind != KIND:
        raise ModelError(f"model {spec.name} is {spec.kind or 'of no kind'}; the speaker encoder loads {KIND} models "
                         f"(choose another: songcorpus models list)")
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    folder = Path(folder)
    for name in (HPARAMS_FILE, EMBEDDING_FILE):
        if not (folder / name).is_file():
            raise ModelError(f"model {spec.name}: {folder / name} is missing ({spec.how_to_get()})")
    hparams = read_hparams(folder / HPARAMS_FILE)
    try:
        model = ECAPA_TDNN(**hparams.ecapa)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ModelError(f"model {spec.name}: {folder / HPARAMS_FILE} does not describe a valid ECAPA_TDNN "
                         f"({type(exc).__name__}: {exc})") from None
    load_state_dict(model, folder / EMBEDDING_FILE)
    mean = None
    if (folder / EMB_NORM_FILE).is_file():
        mean = load_embedding_stats(folder / EMB_NORM_FILE)
        if mean.numel() != hparams.lin_neurons:
            raise ModelError(f"model {spec.name}: {folder / EMB_NORM_FILE} has {mean.numel()} values for "
                             f"{hparams.lin_neurons}-dimensional embeddings")
    elif subtract_embedding_mean:
        raise ModelError(f"model {spec.name}: {folder / EMB_NORM_FILE} is missing ({spec.how_to_get()})")
    return SpeakerEncoder(hparams, model, torch.device(device), mean if subtract_embedding_mean else None,
                          mixed_precision)
