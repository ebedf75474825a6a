"""Distribution metrics: Frechet distance on a pluggable embedding (FAD, per-song FAD, FAD-inf) and the
KL divergence of tagger class distributions.

Reads: embedding frames as numpy arrays, (frames, dim), from any embedder in train/eval/metrics/embeddings.py
(YAMNet by default, CLAP from the model store); class-probability vectors, (clips, classes), from any
tagger there (YAMNet's 521 AudioSet classes by default, AST from the store).
Needs: numpy and scipy only; the embedders and taggers are the caller's choice (FAD numbers are only
comparable on the same embedding, so the evaluator records which one).
Unavailable (MetricUnavailable): fewer than two frames for a covariance; FAD-inf with fewer frames than
its smallest n (500); non-finite covariances.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from songcorpus.train.eval.metrics.common import MetricUnavailable

FAD_INF_MIN_N = 500
FAD_INF_STEPS = 25
KL_EPS = 1e-6


@dataclass(frozen=True)
class EmbeddingStats:
    """Mean and covariance of an embedding set (``np.cov`` with ddof 1), and its frame count. ``factor``: for a
    set with fewer frames than dimensions, the centred frames / sqrt(n - 1), so ``cov = factor.T @ factor``
    (a per-song covariance of a few frames has rank n - 1; the Frechet trace is then an n x n problem)."""

    mu: np.ndarray
    cov: np.ndarray
    n: int
    factor: np.ndarray | None = None

    @cached_property
    def cov_root(self) -> np.ndarray:
        """The symmetric square root of the covariance (computed once: a reference set is compared many times)."""
        return psd_sqrt(self.cov)


def psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (round-off negatives clipped to 0)."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def embedding_stats(frames: np.ndarray, metric: str = "fad") -> EmbeddingStats:
    """Statistics of (frames, dim) embeddings; fewer than two frames give no covariance."""
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (frames, dim), got shape {x.shape}")
    if x.shape[0] < 2:
        raise MetricUnavailable(metric, f"{x.shape[0]} embedding frames; a covariance needs at least 2")
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold non-finite values")
    mu = x.mean(axis=0)
    factor = (x - mu) / np.sqrt(x.shape[0] - 1) if x.shape[0] < x.shape[1] else None
    return EmbeddingStats(mu, np.atleast_2d(np.cov(x, rowvar=False)), int(x.shape[0]), factor)


def trace_sqrt_product(a: np.ndarray, b: np.ndarray, a_root: np.ndarray | None = None,
                       b_factor: np.ndarray | None = None) -> float:
    """``tr((A B)^(1/2))`` for symmetric positive semi-definite A, B: the eigenvalues of ``A B`` are those of the
    symmetric ``A^(1/2) B A^(1/2)``, so the trace is the sum of the square roots of the latter's eigenvalues
    (two ``eigh`` calls; round-off negatives clipped to 0). Equal to the trace of ``scipy.linalg.sqrtm(A @ B)``
    (pytorch-fid / fadtk) where that is real, about 3-4x faster at 1024 dimensions and never complex, which the
    evaluator's bootstrap of FAD needs. ``a_root``: A's square root when already known. ``b_factor``: F with
    ``B = F.T F`` and fewer rows than dimensions; then ``A^(1/2) B A^(1/2)`` has the non-zero eigenvalues of
    the small ``F A F.T``, and no square root of A is needed at all."""
    if b_factor is not None:
        w = np.linalg.eigvalsh(b_factor @ a @ b_factor.T)
        return float(np.sqrt(np.clip(w, 0.0, None)).sum())
    root = psd_sqrt(a) if a_root is None else a_root
    w = np.linalg.eigvalsh(root @ b @ root)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(a: EmbeddingStats, b: EmbeddingStats, metric: str = "fad") -> float:
    """Frechet distance between the Gaussians N(mu_a, C_a) and N(mu_b, C_b) (Dowson & Landau 1982; FAD,
    Kilgour et al. 2019): ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``, the trace of the square
    root by :func:`trace_sqrt_product` (fadtk takes ``scipy.linalg.sqrtm`` of the product, with an ``eps``
    retry: the same value where sqrtm is real). Unavailable for non-finite statistics. Clipped at 0 (round-off
    can make identical sets score -1e-12)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"embedding dimensions differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    if not (np.isfinite(a.cov).all() and np.isfinite(b.cov).all()):
        raise MetricUnavailable(metric, "a covariance holds non-finite values")
    diff = a.mu - b.mu
    if b.factor is not None and (a.factor is None or b.n <= a.n):
        cross = trace_sqrt_product(a.cov, b.cov, b_factor=b.factor)
    elif a.factor is not None:  # tr sqrt(AB) = tr sqrt(BA)
        cross = trace_sqrt_product(b.cov, a.cov, b_factor=a.factor)
    else:
        cross = trace_sqrt_product(a.cov, b.cov, a.cov_root)
    value = float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * cross)
    return max(value, 0.0)


def fad(reference_frames: np.ndarray, generated_frames: np.ndarray) -> float:
    """Frechet Audio Distance (Kilgour et al. 2019; fadtk ``score``): the Frechet distance between the
    statistics of all reference and all generated embedding frames (each set stacked over its clips)."""
    return frechet_distance(embedding_stats(reference_frames), embedding_stats(generated_frames))


def per_song_fad(reference: EmbeddingStats, song_frames: np.ndarray) -> float:
    """Per-song FAD (fadtk ``score_individual``, Gui et al. 2024): one generated song's own embedding
    frames (its mean and covariance) against the whole reference set's statistics."""
    return frechet_distance(reference, embedding_stats(song_frames, "per_song_fad"), metric="per_song_fad")


@dataclass(frozen=True)
class FadInf:
    """FAD-inf: the intercept of FAD(n) regressed on 1/n, its slope, the fit's R^2 and the (n, FAD) points."""

    score: float
    slope: float
    r2: float
    points: tuple[tuple[int, float], ...]


def fad_inf(reference: EmbeddingStats, generated_frames: np.ndarray, steps: int = FAD_INF_STEPS,
            min_n: int = FAD_INF_MIN_N, seed: int = 0) -> FadInf:
    """FAD-inf (fadtk ``score_inf``, Gui et al. 2024, after Chong & Forsyth's FID-inf): for each n in
    ``int(linspace(min_n, N, steps))`` (N = generated frames), FAD of n frames drawn with replacement
    against the reference statistics; a least-squares line FAD = slope / n + intercept; the intercept
    (FAD at infinitely many frames) is the score, reported with R^2. The draws are seeded (``seed``),
    so the same frames give the same number. Unavailable below ``min_n`` frames."""
    x = np.asarray(generated_frames, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (frames, dim), got shape {x.shape}")
    if x.shape[0] < min_n:
        raise MetricUnavailable("fad_inf", f"{x.shape[0]} generated embedding frames; FAD-inf starts at n = {min_n}")
    rng = np.random.default_rng(seed)
    ns = [int(n) for n in np.linspace(min_n, x.shape[0], steps)]
    points = []
    for n in ns:
        sample = x[rng.integers(0, x.shape[0], size=n)]
        points.append((n, frechet_distance(reference, embedding_stats(sample, "fad_inf"), metric="fad_inf")))
    inv = 1.0 / np.asarray(ns, dtype=np.float64)
    ys = np.asarray([p[1] for p in points])
    slope, intercept = np.polyfit(inv, ys, 1)
    total = np.sum((ys - ys.mean()) ** 2)
    r2 = 1.0 - np.sum((ys - (slope * inv + intercept)) ** 2) / total if total > 0 else 1.0
    return FadInf(float(intercept), float(slope), float(r2), tuple(points))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (float64), how audiocraft turns PaSST's logits into a label distribution."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = KL_EPS) -> np.ndarray:
    """KL(p || q) = sum_c p_c (log p_c - log(q_c + eps)) per row, as audiocraft's ``kl_divergence``
    (torch ``kl_div(log(q + eps), p)``; 0 log 0 = 0). The eps makes identical distributions score slightly
    below 0, by at most ``classes * eps`` (5e-4 for 521 classes); ``eps=0`` gives the exact divergence."""
    from scipy.special import xlogy

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    return np.sum(xlogy(p, p) - p * np.log(q + eps), axis=-1)


@dataclass(frozen=True)
class KLScores:
    """Mean KL divergences over clip pairs, both directions: ``reference_to_generated`` = KL(ref || gen)
    (audiocraft's ``kld``/``kld_pq``), ``generated_to_reference`` = KL(gen || ref) (``kld_qp``)."""

    reference_to_generated: float
    generated_to_reference: float
    pairs: int

    @property
    def both(self) -> float:
        return self.reference_to_generated + self.generated_to_reference


def tagger_kl(reference_probs: np.ndarray, generated_probs: np.ndarray, eps: float = KL_EPS) -> KLScores:
    """KL divergence of tagger class distributions (audiocraft ``KLDivergenceMetric``; AudioLDM, MusicGen):
    row i of each array is one clip's class distribution (a softmax over the tagger's classes, averaged
    over the clip's segments: ``AudioTagger.class_distribution``), the generated clip paired with its
    reference; the mean over pairs of KL(ref || gen) and of KL(gen || ref)."""
    ref = np.atleast_2d(np.asarray(reference_probs, dtype=np.float64))
    gen = np.atleast_2d(np.asarray(generated_probs, dtype=np.float64))
    if ref.shape != gen.shape:
        raise ValueError(f"reference and generated distributions differ in shape: {ref.shape} vs {gen.shape}")
    if ref.shape[0] == 0:
        raise MetricUnavailable("kl", "no clip pairs")
    for name, x in (("reference", ref), ("generated", gen)):
        if (x < 0).any() or not np.allclose(x.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError(f"{name} rows must be probability distributions (non-negative, summing to 1)")
    return KLScores(float(kl_divergence(ref, gen, eps).mean()), float(kl_divergence(gen, ref, eps).mean()),
                    int(ref.shape[0]))
