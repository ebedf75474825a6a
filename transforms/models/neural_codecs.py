"""Neural audio codecs of the full profile: EnCodec and DAC tokens, Stable Audio Open's Oobleck VAE latents.

Reads: mono float32 audio ``(n,)`` at any sample rate (a training window's mix or stems), resampled
to the codec's rate with soxr (HQ) and fixed to ``round(n * codec_rate / rate)`` samples.
Provides: per codec, tokens ``(n_codebooks, T)`` int16/int32 or latents ``(C, T)`` float32, with the
frame-count contract ``T = ceil(round(duration_s * sample_rate) / hop_length)`` (:meth:`NeuralCodec.frames_for`),
i.e. one frame per started hop: frame ``i`` covers samples ``[i * hop, (i + 1) * hop)`` at the codec rate.
``encode_window_fields`` names those arrays for a sample (``"vocals.encodec-24khz_tokens"``) and
``codec_manifest`` describes them for the sample JSON. ``decode`` gives audio back (for listening
and checks): ``T * hop_length`` samples, mono ``(n,)`` or ``(n, channels)`` for a stereo model.
Needs: a store folder in the published hub layout (transformers ``EncodecModel`` / ``DacModel``,
diffusers ``AutoencoderOobleck``), loaded with ``local_files_only=True`` from safetensors, never
remote code. The descript-audio-codec package is not used: its audiotools dependency pins
protobuf<3.20, which breaks Ray; transformers' ``DacModel`` is a port of the same architecture.
How long audio is handled: every window is encoded whole. The three models are fully convolutional
(EnCodec adds a unidirectional LSTM), so memory grows linearly with length and the longest window
(163.84 s) fits on one GPU; cutting into chunks would change the frames at chunk borders (the
receptive field crosses them) and make tokens depend on the chunk size. The published 24 kHz
EnCodec has ``chunk_length_s: null`` (whole-input encoding); chunked layouts (the 48 kHz EnCodec)
are refused. Out-of-memory halves the batch (accelerator.run_batched).
Precision: always float32, also on CUDA: token ids are argmins over codebook distances and bf16
flips some of them, which would make a corpus depend on the hardware it was built on.
Fails: ModelError for an unknown or missing store model (naming it and the ``songcorpus models``
command), a model of another kind, or a folder whose config is not the architecture its kind says;
ValueError for non-mono input or an array of the wrong shape to decode.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import soxr
import torch

from songcorpus.transforms.models.accelerator import equal_length_groups, run_batched
from songcorpus.transforms.models.registry import ModelError

if TYPE_CHECKING:
    from songcorpus.schemas.config import PipelineConfig
    from songcorpus.transforms.models.registry import StoreModel

ENCODEC_BANDWIDTH_KBPS = 6.0  # 8 codebooks at 24 kHz: see EncodecCodec
CODEC_KINDS = ("encodec", "dac", "oobleck")


def resampled_length(n_samples: int, rate: int, target_rate: int) -> int:
    """``round(n * target / rate)`` in exact integer arithmetic (halves round up): what soxr gives, pinned."""
    return (2 * n_samples * target_rate + rate) // (2 * rate)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is unreadable ({exc})") from None


class NeuralCodec(ABC):
    """One loaded codec: encode mono audio at any rate to frames, decode frames back to audio."""

    kind: ClassVar[str]
    representation: ClassVar[str]  # "tokens" or "latents"
    stack_batches: bool | None = None  # equal-length clips in one forward pass; None: on CUDA only

    def __init__(self, name: str, sample_rate: int, channels: int, hop_length: int, device: torch.device,
                 model_id: str | None = None, checksum: str | None = None) -> None:
        self.name = name
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.hop_length = int(hop_length)
        self.device = torch.device(device)
        self.model_id = model_id or name  # "name@version" of the store model, for lineage
        self.checksum = checksum

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    @abstractmethod
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame: ``(n_codebooks,)`` for tokens, ``(C,)`` for latents."""

    @property
    def field_suffix(self) -> str:
        return f"{self.name}_{self.representation}"

    def frames_for(self, duration_s: float) -> int:
        """Frames ``encode`` returns for ``duration_s`` of audio: ceil(round(duration * sr) / hop), halves
        rounding up as in :func:`resampled_length`."""
        return -(-math.floor(duration_s * self.sample_rate + 0.5) // self.hop_length)

    def frames_for_samples(self, n_samples: int, rate: int) -> int:
        """:meth:`frames_for` for ``n_samples`` at ``rate``, exact (no float duration in between)."""
        return -(-resampled_length(n_samples, rate, self.sample_rate) // self.hop_length)

    def prepare(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """Mono float32 at the codec rate, exactly ``round(n * sample_rate / rate)`` samples long."""
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"codec {self.name}: expected mono audio of shape (n,), got {x.shape}")
        if x.size == 0:
            raise ValueError(f"codec {self.name}: empty audio")
        n = resampled_length(x.size, rate, self.sample_rate)
        if rate != self.sample_rate:
            x = soxr.resample(x, rate, self.sample_rate, quality="HQ").astype(np.float32)
        if x.size < n:
            x = np.pad(x, (0, n - x.size))
        return np.ascontiguousarray(x[:n])

    def encode(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """Frames of one mono clip: tokens ``(n_codebooks, T)`` or latents ``(C, T)``."""
        return self.encode_many([audio], rate)[0]

    def encode_many(self, audios: Sequence[np.ndarray], rate: int, max_items: int = 8) -> list[np.ndarray]:
        """:meth:`encode` of several clips, batched by duration (accelerator.run_batched).

        Clips of equal length share a forward pass, unpadded, so a clip's frames never depend on padding.
        On the CPU each clip runs alone (``stack_batches`` None): the convolutions already use every
        core, and a clip's bytes then never depend on which clips it was batched with (engines batch
        differently). On CUDA stacked passes agree with single ones to float32 rounding (tokens: equal
        unless a distance ties at that rounding)."""
        prepared = [self.prepare(a, rate) for a in audios]
        return run_batched(prepared, self._encode_groups, durations=[x.size / self.sample_rate for x in prepared],
                           max_items=max_items)

    def _encode_groups(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(batch)
        stack = self.device.type != "cpu" if self.stack_batches is None else self.stack_batches
        groups = equal_length_groups(batch) if stack else [[i] for i in range(len(batch))]
        for idx in groups:
            stacked = torch.from_numpy(np.stack([batch[i] for i in idx])).to(self.device)
            with torch.inference_mode():
                frames = self._encode_batch(stacked)
            for i, f in zip(idx, frames, strict=True):
                expected = self.frames_for_samples(batch[i].size, self.sample_rate)
                if f.shape[-1] != expected:
                    raise RuntimeError(f"codec {self.name}: {f.shape[-1]} frames for {batch[i].size} samples, "
                                       f"the frame contract says {expected}")
                out[i] = f
        return out  # type: ignore[return-value]

    @abstractmethod
    def _encode_batch(self, x: torch.Tensor) -> list[np.ndarray]:
        """``x``: (B, n) float32 at the codec rate, all of one length; one frame array per row."""

    def decode(self, frames: np.ndarray) -> tuple[np.ndarray, int]:
        """Audio of ``T * hop_length`` samples (mono ``(n,)``, stereo ``(n, 2)``) and the codec's rate."""
        arr = np.asarray(frames)
        if arr.ndim != 2 or arr.shape[0] != self.frame_shape[0]:
            raise ValueError(f"codec {self.name}: expected {self.representation} of shape "
                             f"({self.frame_shape[0]}, T), got {arr.shape}")
        with torch.inference_mode():
            y = self._decode_one(arr).float().cpu().numpy()  # (channels, n)
        y = y[0] if y.shape[0] == 1 else y.T
        return np.ascontiguousarray(y, dtype=np.float32), self.sample_rate

    @abstractmethod
    def _decode_one(self, arr: np.ndarray) -> torch.Tensor:
        """(channels, n) audio from one frame array."""

    def manifest(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "model": self.model_id, "checksum": self.checksum,
                "sample_rate": self.sample_rate, "frame_rate": round(self.frame_rate, 6),
                "hop_length": self.hop_length, "representation": self.representation,
                "frame_shape": list(self.frame_shape), "dtype": self.dtype_name,
                "frames": "ceil(round(duration_s * sample_rate) / hop_length)"}

    @property
    @abstractmethod
    def dtype_name(self) -> str:
        """numpy dtype name of the encoded arrays."""


class _TokenCodec(NeuralCodec):
    representation = "tokens"
    n_codebooks: int
    codebook_size: int

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (self.n_codebooks,)

    @property
    def token_dtype(self) -> type[np.integer]:
        return np.int16 if self.codebook_size <= np.iinfo(np.int16).max + 1 else np.int32

    @property
    def dtype_name(self) -> str:
        return np.dtype(self.token_dtype).name

    def manifest(self) -> dict[str, Any]:
        return {**super().manifest(), "codebook_size": self.codebook_size}

    def _check_ids(self, arr: np.ndarray) -> torch.Tensor:
        if not np.issubdtype(arr.dtype, np.integer) or arr.size and (arr.min() < 0 or arr.max() >= self.codebook_size):
            raise ValueError(f"codec {self.name}: token ids must be integers in [0, {self.codebook_size})")
        return torch.from_numpy(arr.astype(np.int64)).to(self.device)


class EncodecCodec(_TokenCodec):
    """EnCodec 24 kHz (transformers ``EncodecModel``): 75 Hz frames, residual-VQ tokens.

    Bandwidth 6 kbps = 8 codebooks of 1024 (6000 / (75 Hz * 10 bits)). The lowest target (1.5 kbps,
    2 codebooks) is too lossy for music and singing; 6 kbps is the setting speech/singing LMs on
    EnCodec 24 kHz use (VALL-E, Bark). Residual VQ makes the first k codebooks of a 6 kbps encoding the
    encoding at the lower bandwidths, so trainers can still take 2 or 4 codebooks from the stored 8.
    Layout (facebook/encodec_24khz): config.json, model.safetensors, preprocessor_config.json.
    """

    kind = "encodec"

    def __init__(self, name: str, folder: Path, device: torch.device, bandwidth: float = ENCODEC_BANDWIDTH_KBPS,
                 **ids: Any) -> None:
        from transformers import EncodecFeatureExtractor, EncodecModel

        _expect_config(folder, name, "model_type", "encodec", self.kind)
        model = _checked(name, EncodecModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                            dtype=torch.float32, output_loading_info=True))
        features = EncodecFeatureExtractor.from_pretrained(folder, local_files_only=True)
        cfg = model.config
        if cfg.chunk_length_s is not None:
            raise ModelError(f"model {name}: chunked EnCodec layouts (chunk_length_s={cfg.chunk_length_s}, e.g. the "
                             f"48 kHz model) are not supported; use the 24 kHz model")
        if features.sampling_rate != cfg.sampling_rate or features.feature_size != cfg.audio_channels:
            raise ModelError(f"model {name}: preprocessor_config.json ({features.sampling_rate} Hz, "
                             f"{features.feature_size} ch) does not match config.json ({cfg.sampling_rate} Hz, "
                             f"{cfg.audio_channels} ch)")
        if bandwidth not in cfg.target_bandwidths:
            raise ModelError(f"model {name}: bandwidth {bandwidth} kbps is not one of its target bandwidths "
                             f"{cfg.target_bandwidths}")
        super().__init__(name, cfg.sampling_rate, cfg.audio_channels, cfg.hop_length, device, **ids)
        self.model = model.to(self.device).eval()
        self.bandwidth = float(bandwidth)
        self.n_codebooks = model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth)
        self.codebook_size = cfg.codebook_size

    def _encode_batch(self, x: torch.Tensor) -> list[np.ndarray]:
        x = x[:, None, :].expand(-1, self.channels, -1)  # a stereo layout gets the mono twice
        out = self.model.encode(x, bandwidth=self.bandwidth, return_dict=True)
        codes = out.audio_codes[0]  # (1 chunk, B, K, T) -> (B, K, T): unchunked layouts have one chunk
        return [c.cpu().numpy().astype(self.token_dtype) for c in codes]

    def _decode_one(self, arr: np.ndarray) -> torch.Tensor:
        codes = self._check_ids(arr)[None, None]  # (1 chunk, 1 item, K, T)
        return self.model.decode(codes, [None], return_dict=True).audio_values[0]

    def manifest(self) -> dict[str, Any]:
        return {**super().manifest(), "bandwidth_kbps": self.bandwidth}


class DacCodec(_TokenCodec):
    """Descript Audio Codec 44.1 kHz (transformers ``DacModel``): hop 512 = 86.13 Hz, 9 codebooks of 1024.

    Input is zero-padded on the right to a multiple of the hop, as ``DacFeatureExtractor`` does.
    Layout (descript/dac_44khz): config.json, model.safetensors, preprocessor_config.json.
    """

    kind = "dac"

    def __init__(self, name: str, folder: Path, device: torch.device, **ids: Any) -> None:
        from transformers import DacFeatureExtractor, DacModel

        _expect_config(folder, name, "model_type", "dac", self.kind)
        model = _checked(name, DacModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                        dtype=torch.float32, output_loading_info=True))
        features = DacFeatureExtractor.from_pretrained(folder, local_files_only=True)
        cfg = model.config
        hop = int(np.prod(cfg.downsampling_ratios))
        if features.sampling_rate != cfg.sampling_rate or features.hop_length != hop or cfg.hop_length != hop:
            raise ModelError(f"model {name}: preprocessor_config.json ({features.sampling_rate} Hz, hop "
                             f"{features.hop_length}) does not match config.json ({cfg.sampling_rate} Hz, "
                             f"hop {cfg.hop_length}, downsampling {cfg.downsampling_ratios})")
        super().__init__(name, cfg.sampling_rate, 1, hop, device, **ids)
        self.model = model.to(self.device).eval()
        self.n_codebooks = cfg.n_codebooks
        self.codebook_size = cfg.codebook_size
        self.padding_value = float(features.padding_value)

    def _encode_batch(self, x: torch.Tensor) -> list[np.ndarray]:
        pad = -x.shape[-1] % self.hop_length
        x = torch.nn.functional.pad(x, (0, pad), value=self.padding_value)[:, None, :]
        codes = self.model.encode(x, return_dict=True).audio_codes  # (B, K, T)
        return [c.cpu().numpy().astype(self.token_dtype) for c in codes]

    def _decode_one(self, arr: np.ndarray) -> torch.Tensor:
        return self.model.decode(audio_codes=self._check_ids(arr)[None], return_dict=True).audio_values


class OobleckVae(NeuralCodec):
    """Stable Audio Open 1.0's VAE (diffusers ``AutoencoderOobleck``): 64-channel latents at 44100/2048 Hz.

    The model is stereo: mono input is fed to both channels. Latents are the posterior mean
    (deterministic), not a sample. Input is zero-padded on the right to a multiple of the hop.
    Layout: the published repo's ``vae/config.json`` and ``vae/diffusion_pytorch_model.safetensors``
    are stored flat in the store folder (``config.json``, ``diffusion_pytorch_model.safetensors``),
    which is what ``from_pretrained(folder)`` reads; ``pull`` fetches them from the ``vae/`` URL.
    """

    kind = "oobleck"
    representation = "latents"

    def __init__(self, name: str, folder: Path, device: torch.device, **ids: Any) -> None:
        from diffusers import AutoencoderOobleck

        _expect_config(folder, name, "_class_name", "AutoencoderOobleck", self.kind)
        model = _checked(name, AutoencoderOobleck.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                                  torch_dtype=torch.float32, low_cpu_mem_usage=False,
                                                                  output_loading_info=True))
        cfg = model.config
        if cfg.encoder_hidden_size != 2 * cfg.decoder_input_channels:  # the encoder emits mean and scale
            raise ModelError(f"model {name}: encoder_hidden_size {cfg.encoder_hidden_size} is not twice "
                             f"decoder_input_channels {cfg.decoder_input_channels}")
        super().__init__(name, cfg.sampling_rate, cfg.audio_channels, model.hop_length, device, **ids)
        self.model = model.to(self.device).eval()
        self.latent_channels = int(cfg.decoder_input_channels)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (self.latent_channels,)

    @property
    def dtype_name(self) -> str:
        return "float32"

    def _encode_batch(self, x: torch.Tensor) -> list[np.ndarray]:
        pad = -x.shape[-1] % self.hop_length
        x = torch.nn.functional.pad(x, (0, pad))[:, None, :].expand(-1, self.channels, -1).contiguous()
        latents = self.model.encode(x).latent_dist.mean  # (B, C, T)
        return [z.float().cpu().numpy() for z in latents]

    def _decode_one(self, arr: np.ndarray) -> torch.Tensor:
        z = torch.from_numpy(np.asarray(arr, dtype=np.float32)).to(self.device)[None]
        return self.model.decode(z).sample[0]


CODEC_CLASSES: dict[str, type[NeuralCodec]] = {"encodec": EncodecCodec, "dac": DacCodec, "oobleck": OobleckVae}


def _expect_config(folder: Path, name: str, key: str, value: str, kind: str) -> None:
    """Refuse a folder whose config says another architecture before any weights are read."""
    found = _read_json(Path(folder) / "config.json").get(key)
    if found != value:
        raise ModelError(f"model {name} is registered as kind {kind}, but its config.json has {key}={found!r} "
                         f"(expected {value!r}); register it with the right --kind: songcorpus models list")


def _checked(name: str, loaded: tuple[Any, dict[str, Any]]) -> Any:
    """The model, if every weight of the architecture came from the file and every tensor in the file was
    used: a renamed or partial checkpoint would otherwise run with randomly initialised layers."""
    model, info = loaded
    problems = {k: sorted(info.get(k) or ()) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        detail = "; ".join(f"{k}: {', '.join(map(str, v[:5]))}{' ...' if len(v) > 5 else ''}" for k, v in problems.items())
        raise ModelError(f"model {name}: the weights do not fit the architecture its config describes ({detail})")
    return model


def load_codec(spec: StoreModel, folder: Path, device: torch.device | str = "cpu",
               encodec_bandwidth: float = ENCODEC_BANDWIDTH_KBPS) -> NeuralCodec:
    """The codec for a store model, by its kind; ``folder`` is the verified store folder."""
    cls = CODEC_CLASSES.get(spec.kind)
    if cls is None:
        raise ModelError(f"model {spec.name} is a {spec.kind or 'model of no kind'}, not a codec "
                         f"(codec kinds: {', '.join(CODEC_KINDS)}); set codecs.models to codec models "
                         f"(songcorpus models list)")
    ids = {"model_id": f"{spec.name}@{spec.version}", "checksum": spec.sha256}
    device = torch.device(device)
    if cls is EncodecCodec:
        return EncodecCodec(spec.name, Path(folder), device, bandwidth=encodec_bandwidth, **ids)
    return cls(spec.name, Path(folder), device, **ids)


def codec_specs(config: PipelineConfig) -> list[tuple[StoreModel, Path]]:
    """Each configured codec's store entry and verified folder; the error names the model and the command."""
    from songcorpus.transforms.models.store import load_registry, store_root

    root = store_root(config.models.store_dir)
    registry = load_registry(root)
    out = []
    for name in config.codecs.models:
        spec = registry.get(name)
        if spec is None:
            raise ModelError(f"codec model {name!r} is not in the model store {root}; register it with "
                             f"`songcorpus models add {name} DIR --kind {'|'.join(CODEC_KINDS)}` "
                             f"(known: songcorpus models list)")
        if spec.kind not in CODEC_KINDS:
            raise ModelError(f"codecs.models names {name}, a {spec.kind or 'model of no kind'}, not a codec "
                             f"(kinds {', '.join(CODEC_KINDS)}; songcorpus models list)")
        out.append((spec, spec.verified_folder(root)))
    return out


def load_codecs(config: PipelineConfig, device: torch.device | str = "cpu",
                encodec_bandwidth: float = ENCODEC_BANDWIDTH_KBPS) -> list[NeuralCodec]:
    """Every codec of ``config.codecs.models``, verified and loaded on ``device``."""
    return [load_codec(spec, folder, device, encodec_bandwidth) for spec, folder in codec_specs(config)]


def encode_window_fields(codecs: Sequence[NeuralCodec], stems: dict[str, np.ndarray], rate: int) -> dict[str, np.ndarray]:
    """``{"<stem>.<codec>_<tokens|latents>": array}`` for every stem and codec; stems are ``(n,)`` or
    ``(n, channels)`` (downmixed to mono by the mean). One batched pass per codec over all stems."""
    names = list(stems)
    monos = []
    for stem in names:
        x = np.asarray(stems[stem], dtype=np.float32)
        monos.append(x.mean(axis=1) if x.ndim == 2 else x)
    fields: dict[str, np.ndarray] = {}
    for codec in codecs:
        for stem, frames in zip(names, codec.encode_many(monos, rate), strict=True):
            fields[f"{stem}.{codec.field_suffix}"] = frames
    return fields


def codec_manifest(codecs: Sequence[NeuralCodec]) -> dict[str, dict[str, Any]]:
    """What the sample JSON says about each codec's arrays, keyed by codec name (JSON-serialisable)."""
    return {c.name: c.manifest() for c in codecs}


def frames_for(codec: NeuralCodec, duration_s: float) -> int:
    """Module-level alias of :meth:`NeuralCodec.frames_for`."""
    return codec.frames_for(duration_s)


__all__ = ["CODEC_CLASSES", "CODEC_KINDS", "DacCodec", "EncodecCodec", "NeuralCodec", "OobleckVae", "codec_manifest",
           "codec_specs", "encode_window_fields", "frames_for", "load_codec", "load_codecs"]
