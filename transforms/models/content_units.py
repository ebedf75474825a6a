"""Content units (UniSinger): HuBERT features of the vocals and k-means ids over them.

Reads: mono float audio at any rate (resampled to 16 kHz with soxr; ``(n, channels)`` is averaged to
mono) and a store model of kind ``hubert`` in the transformers layout of ``facebook/hubert-base-ls960``:
``config.json``, ``model.safetensors`` and, where present, ``preprocessor_config.json`` (its
``do_normalize`` decides the zero-mean / unit-variance input normalisation; absent: none, as fairseq's
HuBERT base was trained).
Provides:
- ``features(audio, rate)`` -> float32 ``(T, hidden_size)``: the output of transformer layer ``layer``
  (``hidden_states[layer]`` of transformers' HubertModel; 0 is the input to the first layer), 50 Hz.
- frame grid: ``n = round(duration_s * 16000)`` samples at 16 kHz; the conv feature extractor (no padding;
  kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2) for HuBERT base/large) gives
  ``T = floor((n - k_i) / s_i) + 1`` layer by layer, which for that stack is ``T = floor((n - 400) / 320) + 1``
  for ``n >= 400`` and 0 below (receptive field 400 samples, hop 320). Frame ``i`` covers samples
  ``[320 i, 320 i + 400)``: it is centred at ``0.02 i + 0.0125`` s. So 10 s gives 499 frames, not 500.
  :func:`unit_frames_for` is that formula; :meth:`ContentUnitEncoder.frames_for` computes it from the
  loaded model's own conv stack.
- units: :func:`fit_unit_codebook` fits k-means centroids (float32 ``(K, D)``, stored like the embedded
  codec's codebook: ``codec.save_codebook`` / ``codebook_sha256``) on frames sampled from the train
  tracks; :func:`assign_units` maps features to int16 ids of the nearest centroid (exact float64 squared
  distances, ties to the lowest id). Fit and assignment are deterministic for the same frames and seed.
Loading never runs code from the files: config JSON, safetensors weights, ``local_files_only``, no
remote code. Batched inference (``features_many``) groups only equal-length clips: HuBERT base's
group-norm conv layer sees padding, so padded batches would change a clip's features.
Fails (ModelError, naming the model and the file): a model of another kind, a config that is not a
HuBERT one, missing weights, a layer the model does not have. ValueError: non-mono audio, empty or
non-finite frames to fit, features and centroids of different widths, more than 32767 units.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from songcorpus.transforms.dsp.kmeans import fit_kmeans, nearest_centroid
from songcorpus.transforms.models.accelerator import autocast, map_equal_length, run_batched
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.models.speaker import to_16k

if TYPE_CHECKING:
    from songcorpus.transforms.models.registry import StoreModel

KIND = "hubert"
SAMPLE_RATE = 16000
FRAME_RATE_HZ = 50.0
HUBERT_CONV = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))  # (kernel, stride) of HuBERT base/large
FIT_MAX_FRAMES = 100_000
FIT_MAX_ITER = 100


def samples_16k(duration_s: float) -> int:
    """Samples of a clip of ``duration_s`` at 16 kHz: what :func:`to_16k` gives for it."""
    return max(0, round(duration_s * SAMPLE_RATE))


def conv_frames(n_samples: int, conv: Sequence[tuple[int, int]] = HUBERT_CONV) -> int:
    """Output frames of an unpadded conv stack of ``(kernel, stride)`` layers over ``n_samples``."""
    n = int(n_samples)
    for kernel, stride in conv:
        if n < kernel:
            return 0
        n = (n - kernel) // stride + 1
    return n


def unit_frames_for(duration_s: float) -> int:
    """HuBERT frames (and unit ids) of a clip of ``duration_s``: ``floor((n - 400) / 320) + 1``,
    ``n = round(duration_s * 16000)``; 0 when ``n < 400``."""
    return conv_frames(samples_16k(duration_s))


class ContentUnitEncoder:
    """HuBERT layer features at 50 Hz; one object per worker (weights loaded once)."""

    kind = KIND
    sample_rate = SAMPLE_RATE
    frame_rate = FRAME_RATE_HZ

    def __init__(self, model: torch.nn.Module, layer: int, device: torch.device, do_normalize: bool = False,
                 mixed_precision: bool = False) -> None:
        cfg = model.config
        if not 0 <= layer <= cfg.num_hidden_layers:
            raise ValueError(f"layer {layer} is not in 0..{cfg.num_hidden_layers}")
        self.layer = layer
        self.device = torch.device(device)
        self.do_normalize = do_normalize
        self.mixed_precision = mixed_precision
        self.conv = tuple(zip(cfg.conv_kernel, cfg.conv_stride, strict=True))
        self.dim = int(cfg.hidden_size)
        # Post-norm encoders (base): hidden_states[layer] is the output of the first `layer` layers, so the
        # layers above are dropped (less compute). Pre-norm ones (large) need the full model's hidden_states.
        self._truncated = not getattr(cfg, "do_stable_layer_norm", False)
        if self._truncated:
            model.encoder.layers = model.encoder.layers[:layer]
        self.model = model.to(self.device).eval()

    def frames_for(self, duration_s: float) -> int:
        """Frames :meth:`features` returns for a clip of ``duration_s`` (this model's conv stack)."""
        return conv_frames(samples_16k(duration_s), self.conv)

    def _prepare(self, audio: np.ndarray, rate: int) -> np.ndarray:
        x = to_16k(audio, rate)
        n = samples_16k(np.asarray(audio).shape[0] / rate)
        if x.shape[0] != n:  # soxr gives round(n * 16000 / rate) already; keep the contract exact anyway
            x = np.pad(x, (0, max(0, n - x.shape[0])))[:n]
        if self.do_normalize and x.size:  # transformers' Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
            x = ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
        return x

    @torch.inference_mode()
    def _features_equal(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        if conv_frames(wavs[0].shape[0], self.conv) == 0:
            return [np.zeros((0, self.dim), np.float32) for _ in wavs]
        x = torch.from_numpy(np.stack(wavs)).to(self.device)
        with autocast(self.device, self.mixed_precision):
            if self._truncated:
                h = self.model(x).last_hidden_state
            else:
                h = self.model(x, output_hidden_states=True).hidden_states[self.layer]
        return list(h.float().cpu().numpy().astype(np.float32))

    def _features_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        return map_equal_length(wavs, self._features_equal)

    def features(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """float32 ``(frames_for(len(audio) / rate), dim)`` features of one clip."""
        return self.features_many([(audio, rate)])[0]

    def features_many(self, items: Sequence[tuple[np.ndarray, int]], max_items: int = 8) -> list[np.ndarray]:
        """Features of many ``(audio, rate)`` clips, duration-bucketed, halving batches on out-of-memory."""
        wavs = [self._prepare(a, r) for a, r in items]
        return run_batched(wavs, self._features_batch, [w.size / SAMPLE_RATE for w in wavs], max_items=max_items)


def load_content_encoder(spec: StoreModel, folder: Path, device: torch.device | str, layer: int,
                         mixed_precision: bool = False) -> ContentUnitEncoder:
    """The encoder from a verified store folder (``spec.verified_folder``), features of ``layer``."""
    if spec.kind != KIND:
        raise ModelError(f"model {spec.name} is {spec.kind or 'of no kind'}; content units load {KIND} models "
                         f"(choose another: songcorpus models list)")
    from transformers import HubertConfig, HubertModel

    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise ModelError(f"model {spec.name}: {folder / name} is missing ({spec.how_to_get()})")
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {spec.name}: {folder / 'config.json'} is unreadable ({exc})") from None
    if raw.get("model_type") != "hubert":
        raise ModelError(f"model {spec.name}: {folder / 'config.json'} describes a {raw.get('model_type')!r} model, "
                         f"not hubert")
    config = HubertConfig.from_pretrained(folder, local_files_only=True)
    if not 0 <= layer <= config.num_hidden_layers:
        raise ModelError(f"model {spec.name} has {config.num_hidden_layers} layers; content_units.layer {layer} "
                         f"is not in 0..{config.num_hidden_layers}")
    do_normalize = False
    if (folder / "preprocessor_config.json").is_file():
        try:
            pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"model {spec.name}: {folder / 'preprocessor_config.json'} is unreadable ({exc})") from None
        if int(pre.get("sampling_rate", SAMPLE_RATE)) != SAMPLE_RATE:
            raise ModelError(f"model {spec.name}: expects {pre['sampling_rate']} Hz input; this adapter feeds "
                             f"{SAMPLE_RATE} Hz")
        do_normalize = bool(pre.get("do_normalize", False))
    model, info = HubertModel.from_pretrained(folder, config=config, local_files_only=True, use_safetensors=True,
                                              trust_remote_code=False, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", ()) if k != "masked_spec_embed"]  # training-only parameter
    if missing or info.get("mismatched_keys"):
        raise ModelError(f"model {spec.name}: {folder / 'model.safetensors'} does not fit its config.json: "
                         f"missing {sorted(missing)[:5]}, mismatched {list(info.get('mismatched_keys', ()))[:5]}")
    return ContentUnitEncoder(model, layer, torch.device(device), do_normalize, mixed_precision)


# ---------------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------------

def fit_unit_codebook(frames: Sequence[np.ndarray] | np.ndarray, n_units: int, seed: int = 0,
                      max_frames: int = FIT_MAX_FRAMES, max_iter: int = FIT_MAX_ITER, threads: int = 1) -> np.ndarray:
    """k-means centroids float32 ``(K, D)`` of feature frames (as :func:`codec.fit_codebook`: same frames and
    seed, same bytes, on any number of ``threads``). Frames beyond ``max_frames`` are subsampled with a generator
    seeded by ``seed``; with fewer distinct frames than ``n_units`` the codebook is those frames (K shrinks).
    Lloyd k-means, k-means++ init, one run (``transforms/dsp/kmeans.py``)."""
    parts = [np.asarray(f) for f in ([frames] if isinstance(frames, np.ndarray) else frames)]
    parts = [p for p in parts if p.size]
    if not parts or any(p.ndim != 2 for p in parts) or len({p.shape[1] for p in parts}) != 1:
        raise ValueError(f"content units: need non-empty (n_frames, D) arrays of one width, got "
                         f"{[p.shape for p in parts]}")
    data = np.concatenate(parts).astype(np.float64)
    if not np.isfinite(data).all():
        raise ValueError("content units: frames to fit contain NaN or inf")
    if n_units < 2 or n_units > np.iinfo(np.int16).max:
        raise ValueError(f"content units: n_units {n_units} is not in 2..{np.iinfo(np.int16).max} (ids are int16)")
    return fit_kmeans(data, n_units, seed, max_frames, max_iter, threads)


def assign_units(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """int16 ids ``(T,)`` of each frame's nearest centroid (exact float64 squared distances, ties to the lowest id)."""
    features = np.asarray(features, dtype=np.float64)
    centroids = np.asarray(centroids, dtype=np.float64)
    if features.ndim != 2 or centroids.ndim != 2 or features.shape[1] != centroids.shape[1]:
        raise ValueError(f"content units: features {features.shape} and centroids {centroids.shape} do not match")
    if centroids.shape[0] == 0 or centroids.shape[0] > np.iinfo(np.int16).max:
        raise ValueError(f"content units: {centroids.shape[0]} centroids; ids are int16 (1..32767 centroids)")
    return nearest_centroid(features, centroids, np.int16)
