"""The full profile's samples: the lite sample plus neural-codec tokens/latents, content units and a
speaker embedding (UniSinger, SongEcho, SAMUeL), and the analysis stage that feeds the unit k-means.

UnitFramesStage (analysis) reads the vocal stem (``results.stems``) and writes a seeded sample of at
most ``content_units.fit_frames_per_track`` self-supervised feature frames (HuBERT layer
``content_units.layer``) as ``.npy``; the corpus builder fits the unit k-means on the train split's
frames (pipelines/corpus/codebooks.py: ``fit_corpus_units``) the way it fits the embedded codec's codebook.

FullSampleStage (samples) adds to every lite sample, through :meth:`SampleStage.extra_fields`:
- ``{stem}.{codec}_tokens.npy`` / ``{stem}.{codec}_latents.npy`` for each codec of ``codecs.models``
  and stem of ``codecs.stems``, and ``codecs`` in the JSON: one fixed-shape entry per codec (name, kind,
  rate, frame rate, frame count...);
- ``vocals.units.npy``: int16 k-means ids of the window's vocal features (50 Hz), ``units`` in the JSON;
- ``speaker.npy``: the speaker embedding of the *reference* window's vocals (a different window of the
  same singer, never overlapping the target), ``speaker`` in the JSON; no reference: zeros, and
  ``speaker.from_reference`` false (every sample has the same members and JSON keys).
The JSON conforms to ``schemas.sample.sample_json_schema(full_profile=True)`` (lyric word timings too).
Every model comes from the store, verified at preflight; lineage names each with its checksum.
Fails when: a codec or unit field has another frame count than its frame rate implies for the window
(MisalignedSample: the song fails, nothing of it is stored), or a model is missing (preflight).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.row import Row, canonical_json, optional_result, vocals_file, vocals_sha256
from songcorpus.schemas.sample import MisalignedSample, sample_json_schema
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.dsp.augment import SongAugmentation
from songcorpus.transforms.dsp.kmeans import subsample_rows
from songcorpus.transforms.dsp.windows import Window
from songcorpus.transforms.stages.samples_lite import SampleStage

CODEC_KINDS = ("encodec", "dac", "oobleck")
UNIT_CHUNK_S = 30.0  # features of long songs are computed in chunks (memory bound)


class UnitFramesStage(Stage):
    name = "unit_frames"
    version = "1"
    requires = ("vocals_file", "vocals_sha256")
    provides = ("unit_frames_file", "unit_frames")
    resources = Resources(num_cpus=1.0, memory_mb=3072)
    uses_gpu = True

    def model_name(self) -> str:
        return self.config.content_units.model

    def model_kind(self) -> str:
        return "hubert"

    def preflight(self) -> None:
        """The model is verified, and its config must have the configured layer (a setup error would fail
        every song one by one)."""
        import json

        from songcorpus.transforms.models.registry import ModelError

        folder = self.model_path()
        layers = json.loads((folder / "config.json").read_text()).get("num_hidden_layers", 0)
        if not 0 <= self.config.content_units.layer <= layers:
            raise ModelError(f"model {self.model_name()} has {layers} layers; content_units.layer "
                             f"{self.config.content_units.layer} is not in 0..{layers} (set content_units.layer)")

    def config_digest(self) -> str:
        cfg = self.config.content_units
        return cfg.model_copy(update={"n_units": 0}).digest() + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        return vocals_sha256(row)

    def setup(self) -> None:
        from songcorpus.transforms.models.accelerator import pick_device
        from songcorpus.transforms.models.content_units import load_content_encoder

        spec, folder = self.store_model(self.model_name(), ("hubert",))
        self._encoder = load_content_encoder(spec, folder, pick_device(self.config.device.name),
                                             self.config.content_units.layer)

    def process_one(self, row: Row) -> dict[str, Any]:
        x, rate = read_standard_audio(self.store.path(vocals_file(row)))
        vocals = x.mean(axis=1)
        step = int(UNIT_CHUNK_S * rate)
        feats = [self._encoder.features(vocals[i:i + step], rate) for i in range(0, max(1, vocals.size), step)
                 if vocals[i:i + step].size >= rate // 10]
        frames = np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)
        frames = subsample_rows(frames, self.config.content_units.fit_frames_per_track, int(vocals_sha256(row)[:16], 16))
        return {"unit_frames_file": self.store.put_array(frames.astype(np.float32)), "unit_frames": int(frames.shape[0])}


class FullSampleStage(SampleStage):
    requires = (*SampleStage.requires, "unit_codebook")
    resources = Resources(num_cpus=1.0, memory_mb=4096)
    uses_gpu = True

    def _model_names(self) -> list[tuple[str, tuple[str, ...]]]:
        c = self.config
        return [*((m, CODEC_KINDS) for m in c.codecs.models), (c.content_units.model, ("hubert",)),
                (c.speaker.model, ("ecapa",))]

    def preflight(self) -> None:
        super().preflight()
        self.store_models(self._model_names())

    def _specs(self) -> list[Any]:
        from songcorpus.transforms.models.store import store_model

        return [store_model(name, self.store_registry()) for name, _ in self._model_names()]

    def model_id(self) -> str:
        return " + ".join(["embedded-mel-codec", *(f"{s.name}@{s.version}" for s in self._specs())])

    def model_checksum(self) -> str:
        return hashlib.sha256("\n".join(s.sha256 for s in self._specs()).encode()).hexdigest()

    def config_digest(self) -> str:
        c = self.config
        codecs = c.codecs.model_copy(update={"batch_size": 0})  # batching never changes an encoding
        return super().config_digest() + "".join(s.digest() for s in (codecs, c.content_units, c.speaker))

    def input_identity(self, row: Row) -> str:
        extra = canonical_json({"unit_codebook": row["unit_codebook"], "lyrics": optional_result(row, "lyrics")})
        return hashlib.sha256((super().input_identity(row) + extra).encode()).hexdigest()

    def setup(self) -> None:
        from songcorpus.transforms.models.accelerator import pick_device
        from songcorpus.transforms.models.content_units import load_content_encoder
        from songcorpus.transforms.models.neural_codecs import load_codec
        from songcorpus.transforms.models.speaker import load_speaker_encoder

        c = self.config
        device = pick_device(c.device.name)
        self._codecs = []
        for name in c.codecs.models:
            spec, folder = self.store_model(name, CODEC_KINDS)
            self._codecs.append(load_codec(spec, folder, device, encodec_bandwidth=c.codecs.encodec_bandwidth_kbps))
        spec, folder = self.store_model(c.content_units.model, ("hubert",))
        self._content = load_content_encoder(spec, folder, device, c.content_units.layer)
        spec, folder = self.store_model(c.speaker.model, ("ecapa",))
        self._speaker = load_speaker_encoder(spec, folder, device)
        self._centroids: dict[str, np.ndarray] = {}

    def json_schema(self) -> pa.Schema:
        return sample_json_schema(full_profile=True)

    def _unit_centroids(self, row: Row) -> np.ndarray:
        entry = row["unit_codebook"]
        if entry["sha256"] not in self._centroids:
            from songcorpus.transforms.models.embedded_codec import load_codebook

            self._centroids[entry["sha256"]] = load_codebook(self.store.path(entry["file"]), entry["sha256"])
        return self._centroids[entry["sha256"]]

    def extra_fields(self, row: Row, key: str, w: Window, ref_window: Window | None, aug: SongAugmentation | None,
                     audio: dict[str, np.ndarray], cut: dict[str, np.ndarray],
                     rate: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from songcorpus.transforms.models.content_units import assign_units, unit_frames_for
        from songcorpus.transforms.models.neural_codecs import codec_manifest, encode_window_fields

        c = self.config
        arrays = encode_window_fields(self._codecs, {s: cut[s] for s in c.codecs.stems}, rate)
        for codec in self._codecs:
            want = codec.frames_for(w.duration_s)
            for s in c.codecs.stems:
                for name, arr in arrays.items():
                    if name.startswith(f"{s}.{codec.name}_") and arr.shape[-1] != want:
                        raise MisalignedSample(f"{key}: {name} has {arr.shape[-1]} frames, {codec.name} at "
                                               f"{codec.frame_rate:g} Hz needs {want} for {w.duration_s:g} s")
        units = assign_units(self._content.features(cut["vocals"], rate), self._unit_centroids(row))
        want = unit_frames_for(w.duration_s)
        if units.shape[0] != want:
            raise MisalignedSample(f"{key}: vocals.units has {units.shape[0]} frames, {want} expected for {w.duration_s:g} s")
        arrays["vocals.units"] = units.astype(np.int16)
        meta: dict[str, Any] = {
            "codecs": [codec_entry(entry, codec.frames_for(w.duration_s))
                       for entry, codec in zip(codec_manifest(self._codecs).values(), self._codecs, strict=True)],
            "units": {"model": self.config.content_units.model, "layer": c.content_units.layer,
                      "n_units": int(self._unit_centroids(row).shape[0]), "frame_rate": 50.0,
                      "first_frame_centre_s": 0.0125,  # HuBERT frame i covers samples [320 i, 320 i + 400) at 16 kHz
                      "codebook_sha256": row["unit_codebook"]["sha256"]},
        }
        if ref_window is not None:
            ref_vocals = self._cut(audio["vocals"], ref_window, aug, rate)
            arrays["speaker"] = np.asarray(self._speaker.embed(ref_vocals, rate), dtype=np.float32)
            span = {"start_s": round(ref_window.start_s, 3), "end_s": round(ref_window.end_s, 3)}
        else:  # a unit-norm embedding is never all zeros, so zeros cannot be mistaken for a singer
            arrays["speaker"] = np.zeros(self._speaker.dim, dtype=np.float32)
            span = {"start_s": 0.0, "end_s": 0.0}
        meta["speaker"] = {"from_reference": ref_window is not None, "model": c.speaker.model, "from_window_s": span,
                           "dim": int(arrays["speaker"].shape[0])}
        return arrays, meta


def codec_entry(manifest: dict[str, Any], n_frames: int) -> dict[str, Any]:
    """One codec's ``codecs`` entry in the sample JSON: the codec's manifest with the keys only some codecs have
    filled in (``codebook_size`` 0 for continuous latents, ``bandwidth_kbps`` 0.0 where there is no such
    setting), so every entry has one shape (schemas.sample.CODEC_ENTRY)."""
    return {**manifest, "n_frames": int(n_frames), "codebook_size": int(manifest.get("codebook_size", 0)),
            "bandwidth_kbps": float(manifest.get("bandwidth_kbps", 0.0))}

