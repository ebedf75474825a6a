"""CodecFramesStage: a seeded sample of each song's embedded-codec frames, for fitting the corpus codebook.

Reads: the vocal and accompaniment stems (``results.stems``).
Writes: one ``.npy`` of at most ``FRAMES_PER_TRACK`` log-mel frames per song (both stems, at the token
rate), drawn by a generator seeded from the stems' content, so the corpus-level k-means fit reads small
arrays instead of decoding every song again on the driver.
Provides: codec_frames_file, codec_frames (how many frames).
Needs: nothing beyond numpy/scipy (the embedded codec has no weights).
Fails when: a stem cannot be read (failed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.row import Row, accompaniment_file, accompaniment_sha256, vocals_file, vocals_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.dsp.kmeans import subsample_rows
from songcorpus.transforms.models.embedded_codec import EmbeddedCodec

FRAMES_PER_TRACK = 2000


class CodecFramesStage(Stage):
    name = "codec_frames"
    version = "1"
    requires = ("vocals_file", "accompaniment_file")
    provides = ("codec_frames_file", "codec_frames")
    resources = Resources(num_cpus=1.0, memory_mb=1024)
    batch_size = 4

    def config_digest(self) -> str:
        cfg = self.config.codec
        return cfg.model_copy(update={"codebook_size": 0, "fit_max_frames": 0}).digest() + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        return f"{vocals_sha256(row)}:{accompaniment_sha256(row)}"

    def process_one(self, row: Row) -> dict[str, Any]:
        parts = []
        codec = None
        for stem in (vocals_file(row), accompaniment_file(row)):
            x, rate = read_standard_audio(self.store.path(stem))
            codec = codec or EmbeddedCodec(self.config.codec, rate)
            parts.append(codec.encode_latents(x.mean(axis=1), rate=codec.token_rate))
        frames = np.concatenate(parts)
        frames = subsample_rows(frames, FRAMES_PER_TRACK, int(vocals_sha256(row)[:16], 16) ^ self.config.codec.seed)
        return {"codec_frames_file": self.store.put_array(frames.astype(np.float32)), "codec_frames": int(frames.shape[0])}
