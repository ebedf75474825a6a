"""How much of a model's target the pitch can explain at all, and how much pitch UniSinger's content input already
carries: linear reads of the corpus, no model. A small use of pitch by a trained model (probes/f0_use.py) reads
differently against a small available share than against a large one, and content that explains the pitch makes
the f0 modality redundant.

Reads: one or two splits of a corpus through the training loader (train/data.py): the f0 and the vocal latents,
normalised with a run's latent statistics (``load_run(run).stats``); UniSinger's content frames by the model's own
:func:`songcorpus.train.models.unisinger.content_frames`. Writes nothing. Fails: the loader's DataError for a split
or field the corpus lacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PitchShare:
    """Held-out R² of the normalised vocal latents read linearly from voicing alone and from voicing plus pitch
    bins; ``pitch`` is what the pitch adds. A small ``pitch`` means an MSE-trained model gains little from
    following the melody until everything larger is learned: why short runs learn voicing first."""

    voicing: float
    voicing_and_pitch: float
    frames: tuple[int, int]  # (fitted, read) latent frames, voiced or not

    @property
    def pitch(self) -> float:
        return self.voicing_and_pitch - self.voicing


def ridge_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             ridge: float = 1e-3) -> float:
    """R² on (test_x, test_y) of a ridge regression fitted on the train pair (rows = frames; an intercept is
    added): 1 - SSE / SST summed over every output column, SST about the train mean."""
    def with_bias(x: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((len(x), 1)), x])

    a, b = with_bias(train_x), with_bias(test_x)
    w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ train_y)
    sse = float(((test_y - b @ w) ** 2).sum())
    sst = float(((test_y - train_y.mean(axis=0)) ** 2).sum())
    return 1.0 - sse / sst


def voicing_pitch_features(f0: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """f0 (..., T) Hz -> (the voiced flag (..., T', 1), the flag and the pitch bins (..., T', bins + 1)), read as
    the models read it: ``melody_input(f0, "bins")``, then ``resample_time`` to ``length`` frames (T' = length,
    or T when None)."""
    from songcorpus.train.models.blocks import melody_input, resample_time

    hz = torch.from_numpy(np.asarray(f0, dtype=np.float32))
    features = melody_input(hz.reshape(-1, hz.shape[-1]), "bins")  # (rows, bins + 1, T)
    if length is not None:
        features = resample_time(features, length)
    bins = features.transpose(1, 2).double().numpy().reshape(*hz.shape[:-1], features.shape[2], features.shape[1])
    return bins[..., -1:], bins


def _vocal_batches(view, stats: dict, batches: int, batch_size: int, seed: int) -> Iterator[dict]:
    """Up to ``batches`` batches (f0, normalised vocal latents, mask) of ``view``, in the seeded step order."""
    from songcorpus.train.data import BatchBuilder, ShardStream, StepOrder

    stream = ShardStream(BatchBuilder(view, latent_stats=stats), StepOrder(len(view), seed, batch_size))
    for i in range(min(batches, max(1, len(view) // batch_size))):
        yield stream.batch(i)


def _frames(view, stats: dict, batches: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(voicing and pitch-bin features per latent frame (N, bins + 1), normalised vocal latents (N, C)) of
    ``batches`` batches, padding dropped."""
    features, latents = [], []
    for batch in _vocal_batches(view, stats, batches, batch_size, seed):
        lat, mask = np.asarray(batch["vocals_latents"], dtype=np.float64), np.asarray(batch["mask"]) > 0
        _, bins = voicing_pitch_features(batch["f0"], lat.shape[1])
        features.append(bins[mask])
        latents.append(lat[mask])
    return np.concatenate(features), np.concatenate(latents)


def pitch_share(corpus: str, latent_stats: dict, window_s: float, splits: tuple[str, str] = ("train", "test"),
                batches: int = 12, batch_size: int = 8, seed: int = 0) -> PitchShare:
    """:class:`PitchShare` of ``corpus``: fitted on ``splits[0]``, read on ``splits[1]``. ``latent_stats`` is a
    run's (``load_run(run).stats``), so the latents are the ones that run's loss sees."""
    from songcorpus.train.data import CorpusView

    keys = ["f0", "vocals_latents"]
    (fit_x, fit_y), (read_x, read_y) = (
        _frames(CorpusView(corpus, split, keys, window_s=window_s), latent_stats, batches, batch_size, seed)
        for split in splits)
    voicing = ridge_r2(fit_x[:, -1:], fit_y, read_x[:, -1:], read_y)
    return PitchShare(voicing, ridge_r2(fit_x, fit_y, read_x, read_y), (len(fit_y), len(read_y)))


@dataclass(frozen=True)
class ContentPitch:
    """Held-out R² of a linear read of UniSinger's lite SVC content (the frames its bottleneck sees), per lifter
    width (0 = unliftered): for the pitch bins and for log f0 on voiced frames, and for the voiced flag on all
    frames. Content that explains the pitch makes the f0 modality redundant: a model learns pitch from whichever
    input gives it first, and ignores f0."""

    pitch_bins: dict[int, float]
    log_f0: dict[int, float]
    voicing: dict[int, float]
    frames: tuple[int, int]

    def table(self) -> str:
        lines = [f"{'content lifter':>14s} {'pitch bins R²':>14s} {'log f0 R²':>10s} {'voicing R²':>11s}"]
        for k in self.pitch_bins:
            lines.append(f"{k or 'off':>14} {self.pitch_bins[k]:14.3f} {self.log_f0[k]:10.3f} {self.voicing[k]:11.3f}")
        return "\n".join(lines)


def content_pitch(corpus: str, latent_stats: dict, window_s: float, lifters: tuple[int, ...] = (0, 20),
                  splits: tuple[str, str] = ("train", "test"), batches: int = 12, batch_size: int = 8,
                  seed: int = 0) -> ContentPitch:
    """:class:`ContentPitch` of ``corpus``, fitted on ``splits[0]`` and read on ``splits[1]``, with the content
    computed by the model's own :func:`songcorpus.train.models.unisinger.content_frames`. The pitch bins are
    :func:`voicing_pitch_features`'s; log f0 is the f0 frame nearest each latent frame."""
    from songcorpus.train.data import CorpusView
    from songcorpus.train.models.blocks import dct_basis
    from songcorpus.train.models.unisinger import content_frames

    def read(split: str) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
        view = CorpusView(corpus, split, ["f0", "vocals_latents"], window_s=window_s)
        content: dict[int, list[np.ndarray]] = {k: [] for k in lifters}
        bins_all, hz_all = [], []
        for batch in _vocal_batches(view, latent_stats, batches, batch_size, seed):
            lat = torch.as_tensor(np.asarray(batch["vocals_latents"], dtype=np.float32))
            mask = torch.as_tensor(np.asarray(batch["mask"]) > 0)
            f0 = np.asarray(batch["f0"], dtype=np.float64)
            _, bins = voicing_pitch_features(f0, lat.shape[1])
            nearest = np.minimum((np.arange(lat.shape[1]) + 0.5) * f0.shape[1] / lat.shape[1], f0.shape[1] - 1)
            bins_all.append(bins[mask.numpy()])
            hz_all.append(f0[:, nearest.astype(np.int64)][mask.numpy()])
            for k in lifters:
                frames = content_frames(lat, mask, dct_basis(lat.shape[-1], k) if k else None)
                content[k].append(frames[mask].double().numpy())
        return {k: np.concatenate(v) for k, v in content.items()}, np.concatenate(bins_all), np.concatenate(hz_all)

    (fit_c, fit_b, fit_hz), (read_c, read_b, read_hz) = read(splits[0]), read(splits[1])
    fit_v, read_v = fit_hz > 0, read_hz > 0
    fit_lf, read_lf = np.log(fit_hz[fit_v])[:, None], np.log(read_hz[read_v])[:, None]
    bins = {k: ridge_r2(fit_c[k][fit_v], fit_b[fit_v, :-1], read_c[k][read_v], read_b[read_v, :-1]) for k in lifters}
    log_f0 = {k: ridge_r2(fit_c[k][fit_v], fit_lf, read_c[k][read_v], read_lf) for k in lifters}
    voicing = {k: ridge_r2(fit_c[k], fit_b[:, -1:], read_c[k], read_b[:, -1:]) for k in lifters}
    return ContentPitch(bins, log_f0, voicing, (len(fit_b), len(read_b)))
