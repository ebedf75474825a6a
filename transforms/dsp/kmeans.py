"""Deterministic k-means for the corpus codebooks (embedded-codec tokens, content units).

Same frames and seed, same bytes: frames beyond ``max_frames`` are subsampled with a generator seeded
by ``seed``; with fewer distinct frames than ``k`` the codebook is those frames (K shrinks, so no
centroid is a duplicate); Lloyd k-means (k-means++ init, one run) on one thread, because multi-threaded
reductions are not bitwise reproducible. Assignment is exact (float64 squared distances, ties to the
lowest id), in blocks so long songs stay within memory.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

BLOCK = 1024  # frames per block while assigning


def subsample_rows(frames: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` rows, drawn without replacement by a generator seeded with ``seed``, in order."""
    if frames.shape[0] <= max_rows:
        return frames
    return frames[np.sort(np.random.default_rng(seed).choice(frames.shape[0], max_rows, replace=False))]


def fit_kmeans(frames: np.ndarray, k: int, seed: int, max_frames: int, max_iter: int) -> np.ndarray:
    """Centroids ``(K, D)`` float32 of ``frames`` ``(n, D)`` (callers validate shapes and values)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    frames = subsample_rows(np.asarray(frames, dtype=np.float64), max_frames, seed)
    distinct = np.unique(frames, axis=0)
    if distinct.shape[0] <= k:
        return distinct.astype(np.float32)
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=max_iter, random_state=seed, algorithm="lloyd")
    with threadpool_limits(limits=1):
        km.fit(frames)
    return km.cluster_centers_.astype(np.float32)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, dtype: type[np.integer]) -> np.ndarray:
    """Id ``(T,)`` of each row's nearest centroid (callers validate shapes)."""
    x = np.asarray(x, dtype=np.float64)
    centroids = np.asarray(centroids, dtype=np.float64)
    ids = np.empty(x.shape[0], dtype=dtype)
    for start in range(0, x.shape[0], BLOCK):
        ids[start:start + BLOCK] = np.argmin(cdist(x[start:start + BLOCK], centroids, metric="sqeuclidean"), axis=1)
    return ids
