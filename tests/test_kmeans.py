"""The corpus codebooks' k-means (transforms/dsp/kmeans.py): the same bytes on any number of threads, and as good
a clustering as scikit-learn's Lloyd k-means on the same frames."""

from __future__ import annotations

import numpy as np
import pytest

from songcorpus.transforms.dsp import kmeans
from songcorpus.transforms.dsp.kmeans import fit_kmeans


def blobs(n: int, k: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames around ``k`` well-separated centres, and the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, (k, dim))
    return centres[rng.integers(0, k, n)] + rng.normal(0.0, 1.0, (n, dim)), centres


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    c = centroids.astype(np.float64)
    return float((((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)).min(axis=1).sum())


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_same_bytes_on_any_number_of_threads(monkeypatch, threads):
    # small blocks, so every step has many blocks for the threads to finish in any order
    monkeypatch.setattr(kmeans, "LLOYD_BLOCK", 97)
    monkeypatch.setattr(kmeans, "SEED_BLOCK", 131)
    x = np.random.default_rng(3).normal(size=(3000, 6))  # no clusters: many Lloyd steps, centroids keep moving
    one = fit_kmeans(x, 40, seed=5, max_frames=10_000, max_iter=50, threads=1)
    assert fit_kmeans(x, 40, seed=5, max_frames=10_000, max_iter=50, threads=threads).tobytes() == one.tobytes()
    assert fit_kmeans(x, 40, seed=6, max_frames=10_000, max_iter=50, threads=threads).tobytes() != one.tobytes()


def test_finds_well_separated_clusters():
    x, centres = blobs(4000, 12, 5, seed=1)
    found = fit_kmeans(x, 12, seed=0, max_frames=10_000, max_iter=100, threads=2).astype(np.float64)
    # every true centre has a centroid within the noise of its blob's mean
    nearest = np.sqrt(((centres[:, None, :] - found[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    assert nearest.max() < 0.2


def test_as_good_as_scikit_learn_on_unclustered_frames():
    from sklearn.cluster import KMeans

    x = np.random.default_rng(7).normal(size=(6000, 16))
    ours = np.mean([inertia(x, fit_kmeans(x, 64, seed=s, max_frames=10_000, max_iter=100, threads=2))
                    for s in range(3)])
    theirs = np.mean([inertia(x, KMeans(64, init="k-means++", n_init=1, max_iter=100, random_state=s)
                              .fit(x).cluster_centers_) for s in range(3)])
    assert ours < theirs * 1.01


def test_an_empty_cluster_takes_the_farthest_frame():
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    labels = np.array([0, 0, 0, 0])  # cluster 1 lost every frame
    dist = np.array([4.0, 1.0, 0.0, 100.0])
    centres = kmeans._centroids(x, labels, dist, np.array([[3.0], [50.0]]))
    assert centres.tolist() == [[3.25], [10.0]]


def test_fewer_distinct_frames_than_k_gives_those_frames():
    x = np.repeat(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), 50, axis=0)
    assert fit_kmeans(x, 8, seed=0, max_frames=1000, max_iter=10, threads=2).tolist() == [[1, 2], [3, 4], [5, 6]]


def test_the_fit_takes_the_jobs_workers_threads_at_most_the_cores(monkeypatch):
    import os

    from songcorpus.pipelines.corpus.codebooks import fit_threads
    from songcorpus.schemas.config import load_config

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert fit_threads(load_config(overrides={"engine": {"workers": 2}})) == 2
    assert fit_threads(load_config(overrides={"engine": {"workers": 16}})) == 3
    monkeypatch.delattr(os, "sched_getaffinity")  # not on every OS
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert fit_threads(load_config(overrides={"engine": {"workers": 16}})) == 4


def test_nearest_centroid_gives_cdists_ids_even_on_ties():
    """The matrix-product ranking must give exactly the ids of argmin over scipy's cdist (ties to the lowest id):
    duplicated centroids, frames on a centroid, frames halfway between two, and a grid of exact ties."""
    from scipy.spatial.distance import cdist

    from songcorpus.transforms.dsp.kmeans import BLOCK, nearest_centroid

    rng = np.random.default_rng(3)
    cases = []
    for k, d, n, scale in [(3, 3, 50, 1.0), (300, 16, 2 * BLOCK + 7, 100.0), (1024, 128, 1500, 0.01)]:
        c = rng.normal(size=(k, d)) * scale
        x = rng.normal(size=(n, d)) * scale
        c[k // 2] = c[0]  # a duplicate: its ties go to the lower id
        x[:5] = c[0]
        x[6] = (c[1] + c[2]) / 2
        cases.append((x, c))
    grid_c = np.round(rng.normal(size=(64, 4)) * 2)
    cases.append((np.round(rng.normal(size=(3000, 4)) * 2), grid_c))  # many exact ties on an integer grid
    for x, c in cases:
        want = np.argmin(cdist(x, c, metric="sqeuclidean"), axis=1)
        got = nearest_centroid(x, c, np.int32)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
    assert nearest_centroid(np.zeros((3, 2)), np.ones((1, 2)), np.int32).tolist() == [0, 0, 0]
