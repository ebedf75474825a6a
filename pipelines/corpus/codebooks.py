"""The corpus codebooks (embedded-codec tokens, content units): k-means fitted on the train split's stored frames,
cached in the artefact store by what they were fitted on.

The fit runs in the driver between the analysis and samples phases, while the workers wait for it, so it takes as
many threads as the job has workers (no more than this machine's cores); the codebook's bytes do not depend on it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.corpus.splits import train_pool
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, has_result, result_field


def fit_cached_centroids(store: ArtefactStore, name: str, settings_digest: str, files: list[str],
                         fit: Callable[[Any], Any], max_rows: int, seed: int) -> dict[str, Any] | None:
    """k-means centroids over the concatenated frame files, stored as ``.npy``; cached under ``name`` by the
    settings and the frame files, so an unchanged corpus never refits. ``fit`` subsamples to ``max_rows`` rows
    with ``seed`` (``kmeans.subsample_rows``); that draw is made here over the files' row counts and only the rows
    drawn are read (:func:`gather_rows`), so the driver holds ``max_rows`` frames, not the corpus's."""
    from songcorpus.transforms.models.embedded_codec import codebook_bytes, codebook_sha256

    if not files:
        return None
    key = hashlib.sha256("\x1f".join([settings_digest, *files]).encode()).hexdigest()
    cached = store.get_result(name, key)
    if cached is not None and store.exists(cached["file"]):
        return cached
    frames, n_total = gather_rows(store, files, max_rows, seed)
    centroids = fit(frames)
    entry = {"file": store.put_blob(codebook_bytes(centroids), ".npy"), "sha256": codebook_sha256(centroids),
             "fit_frames": n_total}
    store.put_result(name, key, entry)
    return entry


def gather_rows(store: ArtefactStore, files: list[str], max_rows: int, seed: int) -> tuple[Any, int]:
    """The rows ``subsample_rows(concatenation of files, max_rows, seed)`` would keep, in order, read file by file
    (memory-mapped: a file's rows not drawn are never loaded), and the concatenation's row count."""
    import numpy as np

    arrays = [np.load(store.path(f), mmap_mode="r", allow_pickle=False) for f in files]
    n_total = sum(a.shape[0] for a in arrays)
    if n_total <= max_rows:
        return np.concatenate([np.asarray(a) for a in arrays]), n_total
    wanted = np.sort(np.random.default_rng(seed).choice(n_total, max_rows, replace=False))
    parts, start = [], 0
    for a in arrays:
        lo, hi = np.searchsorted(wanted, [start, start + a.shape[0]])
        if hi > lo:
            parts.append(np.asarray(a[wanted[lo:hi] - start]))
        start += a.shape[0]
    return np.concatenate(parts), n_total


def fit_threads(config: PipelineConfig) -> int:
    """Threads for a codebook fit: the job's workers, at most the cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core counts
    cores = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    return max(1, min(config.engine.workers, cores))


def fit_corpus_codebook(accepted: Iterable[Row], splits: Mapping[str, str], config: PipelineConfig,
                        store: ArtefactStore) -> dict[str, str] | None:
    """The embedded codec's codebook, fit on the train split's sampled frames (stage ``codec_frames``)."""
    from songcorpus.transforms.models.embedded_codec import fit_codebook

    files = [result_field(r, "codec_frames", "codec_frames_file") for r in train_pool(accepted, splits)]
    return fit_cached_centroids(store, "codebook", config.codec.digest(), files,
                                lambda frames: fit_codebook(frames, config.codec, fit_threads(config)),
                                config.codec.fit_max_frames,
                                config.codec.seed)


def fit_corpus_units(accepted: Iterable[Row], splits: Mapping[str, str], config: PipelineConfig,
                     store: ArtefactStore) -> dict[str, Any] | None:
    """Full profile: the content-unit k-means over the train split's sampled HuBERT frames (stage
    ``unit_frames``)."""
    from songcorpus.transforms.models.content_units import FIT_MAX_FRAMES, fit_unit_codebook

    cfg = config.content_units
    files = [result_field(r, "unit_frames", "unit_frames_file") for r in train_pool(accepted, splits)
             if has_result(r, "unit_frames")]
    return fit_cached_centroids(store, "unit_codebook", cfg.digest(), files,
                                lambda frames: fit_unit_codebook([frames], cfg.n_units, seed=0, threads=fit_threads(config)),
                                FIT_MAX_FRAMES, 0)
