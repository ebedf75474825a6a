"""AstContentClassifier: the full profile's ``classify`` stage, speech / singing / music from the Audio
Spectrogram Transformer fine-tuned on AudioSet (MIT/ast-finetuned-audioset-10-10-0.4593).

Reads: the standardised FLAC (``results.ingest.audio_file``), mixed to mono and resampled to 16 kHz (soxr HQ).
Provides: the lite classifier's fields with the same meaning (transforms/stages/classify_yamnet.py, ``content_fields``):
speech_prob, singing_prob, music_prob (mean sigmoid probability of the AudioSet classes Speech, Singing,
Music over the analysed patches), speech_fraction (share of patches where speech beats both music and
singing) and music_tags (the strongest genre, instrument and mood classes, transforms/dsp/music_tags.py), plus
classify_method ("ast:<model>@<version>"). A patch is AST's input, 10.24 s (1024 frames of
10 ms), so speech_fraction is coarser than YAMNet's (0.96 s patches): a 30 s track has 3 patches.
Needs: a store model of kind ``ast`` in the published layout (config.json, model.safetensors,
preprocessor_config.json), loaded with transformers from that folder only (local_files_only, safetensors);
its labels must hold the AudioSet names Speech, Singing and Music (checked at preflight). Batched on GPU
when ``device`` allows (autocast under ``device.mixed_precision``), CPU otherwise. Run it as an actor pool.
Fails when: the model is missing, altered, of another kind, or not an AudioSet tagger (preflight, before any
data); audio unreadable (failed).
Tracks longer than ``tagger.max_analysis_s`` are tagged on that many seconds of evenly spread patches.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.row import Row, audio_file, audio_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.dsp.music_tags import top_music_tags
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.stages.classify_yamnet import YamnetContentClassifier, content_fields, content_label_indices

MODEL_RATE = 16000
HOP = 160  # the Kaldi fbank's 10 ms frame shift at 16 kHz
MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
_MIN_SAMPLES = 400  # one 25 ms fbank window at 16 kHz


def patch_starts(n_samples: int, patch: int, max_patches: int) -> list[int]:
    """Starts of full-length patches covering ``n_samples`` (the last one flush with the end), at most
    ``max_patches`` of them evenly spread; one patch at 0 when the audio is shorter than a patch."""
    if n_samples <= patch:
        return [0]
    n = min(math.ceil(n_samples / patch), max(1, max_patches))
    return [int(s) for s in np.linspace(0, n_samples - patch, n).round().astype(np.int64)]


def model_labels(folder: Path) -> list[str]:
    """The class names of a transformers checkpoint folder (config.json ``id2label``, in index order)."""
    try:
        id2label = json.loads((Path(folder) / "config.json").read_text())["id2label"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder}/config.json has no readable id2label ({exc})") from None
    return [id2label[str(i)] for i in range(len(id2label))]


class AstTagger:
    """A loaded AST AudioSet tagger: 16 kHz mono patches in, sigmoid probabilities of chosen classes out."""

    def __init__(self, folder: Path, device: Any, mixed_precision: bool = True) -> None:
        import torch
        from transformers import ASTFeatureExtractor, ASTForAudioClassification

        self.extractor = ASTFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        if self.extractor.sampling_rate != MODEL_RATE:
            raise ModelError(f"{folder}: the feature extractor expects {self.extractor.sampling_rate} Hz, not 16 kHz")
        self.model = ASTForAudioClassification.from_pretrained(str(folder), local_files_only=True,
                                                               use_safetensors=True)
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.mixed_precision = mixed_precision
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.patch = int(self.extractor.max_length) * HOP  # 1024 frames: 10.24 s

    def probabilities(self, patches: list[np.ndarray], classes: list[int]) -> list[np.ndarray]:
        """Per patch, the sigmoid probability of each of ``classes`` (float64)."""
        import torch

        from songcorpus.transforms.models.accelerator import autocast

        feats = self.extractor(patches, sampling_rate=MODEL_RATE, return_tensors="pt")["input_values"]
        with torch.inference_mode(), autocast(self.device, self.mixed_precision):
            logits = self.model(input_values=feats.to(self.device)).logits
        probs = torch.sigmoid(logits.float()[:, classes]).cpu().numpy().astype(np.float64)
        return list(probs)


class AstContentClassifier(Stage):
    name = "classify"
    version = "2"  # 2: music_tags
    requires = YamnetContentClassifier.requires
    provides = (*YamnetContentClassifier.provides, "classify_method")
    resources = Resources(num_cpus=1.0, memory_mb=2048)
    uses_gpu = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tagger: AstTagger | None = None

    def model_name(self) -> str:
        return self.config.tagger.model

    def model_kind(self) -> str:
        return "ast"

    def preflight(self) -> None:
        self._checked_folder()

    def _checked_folder(self) -> Path:
        """The verified store folder of an ``ast`` model whose labels hold Speech, Singing and Music."""
        folder = self.model_path()
        try:
            content_label_indices(model_labels(folder))
        except ValueError as exc:
            raise ModelError(f"model {self.model_name()} is not an AudioSet tagger: {exc} "
                             f"(set tagger.model to an AudioSet AST: songcorpus models list)") from None
        return folder

    def config_digest(self) -> str:
        cfg = self.config.tagger.model_copy(update={"batch_size": 1})  # batching does not change results
        return cfg.digest() + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        return audio_sha256(row)

    def setup(self) -> None:
        from songcorpus.transforms.models.accelerator import pick_device

        folder = self._checked_folder()
        device = pick_device(self.config.device.name)
        self._tagger = AstTagger(folder, device, self.config.device.mixed_precision)
        self._classes = content_label_indices(self._tagger.labels)

    def _patches(self, row: Row) -> list[np.ndarray]:
        x, rate = read_standard_audio(self.store.path(audio_file(row)))
        mono = soxr.resample(x.mean(axis=1), rate, MODEL_RATE, quality="HQ").astype(np.float32)
        if mono.size < _MIN_SAMPLES:  # the fbank needs one 25 ms frame; AST pads the rest itself
            mono = np.pad(mono, (0, _MIN_SAMPLES - mono.size))
        patch = self._tagger.patch
        max_patches = int(self.config.tagger.max_analysis_s * MODEL_RATE) // patch
        return [mono[s : s + patch] for s in patch_starts(mono.size, patch, max_patches)]

    def process_one(self, row: Row) -> dict[str, Any]:
        from songcorpus.transforms.models.accelerator import run_batched

        if self._tagger is None:
            self.setup()
        patches = self._patches(row)
        every_class = list(range(len(self._tagger.labels)))
        probs = np.stack(run_batched(patches, lambda batch: self._tagger.probabilities(batch, every_class),
                                     max_items=self.config.tagger.batch_size))
        return {**content_fields(probs[:, self._classes]),
                "music_tags": top_music_tags(probs.mean(axis=0), self._tagger.labels),
                "classify_method": f"ast:{self.model_id()}"}
