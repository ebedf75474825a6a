"""Which metrics a generator is judged by, and scoring one system's outputs on the held-out windows.

Reads: :class:`~songcorpus.train.eval.heldout.HeldOutWindow` (real stems, f0, caption, lyrics) and a system's
:class:`~songcorpus.train.eval.heldout.SystemOutput` per window; models from train/eval/metrics/ (the f0 tracker,
YAMNet, and from the model store Whisper, CLAP, ECAPA, SongEval / Audiobox-Aesthetics).
Writes: rows ``{system, key, metric, value, reason}``; ``key`` None for a metric of the whole set (FAD).

Metric groups (``--metrics`` takes group or metric names):
- ``melody``: rpa, rca, oa, voicing_recall, voicing_false_alarm, f0_correlation, f0_rmse_cents of the
  output's vocals (the curation tracker) against the window's f0 (the condition SongEcho follows);
- ``onset_f1``, ``chroma_cosine``, ``hpcp_similarity``: the output's accompaniment against the real one;
- ``fad``: YAMNet embeddings of the judged stem (the accompaniment for SAMUeL / LaDA-Band, the mix for the
  song generators) against the real ones: ``fad`` and ``fad_inf`` of the set, ``per_song_fad`` per window;
- ``kl``: ``kl_ref_gen`` / ``kl_gen_ref`` of YAMNet's 521-class distributions per window pair;
- ``per`` (Whisper from the store on the vocals against the window's lyrics), ``clap_score`` (the mix
  against the caption), ``speaker_similarity`` (ECAPA: the vocals against the window's real singer),
  ``aesthetics`` (SongEval and Audiobox-Aesthetics on the mix); ``rtf`` (generating systems only).
A metric that is undefined for a window is a row with value None and the reason; a store model that is
missing is one row per system and metric (key None) with the loader's message (name and how to get it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from songcorpus.train.eval.metrics.common import MetricResult, MetricUnavailable, measure

GROUPS: dict[str, tuple[str, ...]] = {
    "melody": ("rpa", "rca", "oa", "voicing_recall", "voicing_false_alarm", "f0_correlation", "f0_rmse_cents"),
    "onset_f1": ("onset_f1",),
    "chroma_cosine": ("chroma_cosine",),
    "hpcp_similarity": ("hpcp_similarity",),
    "fad": ("fad", "fad_inf", "per_song_fad"),
    "kl": ("kl_ref_gen", "kl_gen_ref"),
    "per": ("per",),
    "clap_score": ("clap_score",),
    "speaker_similarity": ("speaker_similarity",),
    "aesthetics": ("songeval_mean", "audiobox_pq", "audiobox_pc", "audiobox_ce", "audiobox_cu"),
    "rtf": ("rtf",),
}
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "samuel": ("onset_f1", "chroma_cosine", "hpcp_similarity", "fad", "kl", "rtf"),
    "lada_band": ("onset_f1", "chroma_cosine", "hpcp_similarity", "fad", "kl", "rtf"),
    "songecho": ("melody", "onset_f1", "chroma_cosine", "fad", "kl", "per", "clap_score", "rtf"),
    "songecho_melody": ("melody", "onset_f1", "chroma_cosine", "fad", "kl", "per", "clap_score", "rtf"),
    "unisinger": ("speaker_similarity", "melody", "per", "fad", "kl", "rtf"),
    "folder": ("melody", "onset_f1", "chroma_cosine", "hpcp_similarity", "fad", "kl", "per"),
}
# higher is better, except these (the printed table says which way each goes)
LOWER_IS_BETTER = {"fad", "fad_inf", "per_song_fad", "kl_ref_gen", "kl_gen_ref", "per", "f0_rmse_cents",
                   "voicing_false_alarm", "rtf"}
SET_METRICS = {"fad", "fad_inf"}


def choose_groups(model: str, metrics: Iterable[str] | None) -> tuple[str, ...]:
    """The metric groups to compute: the model's defaults, or the ``--metrics`` names (groups or metrics)."""
    if metrics is None:
        return DEFAULT_GROUPS[model]
    chosen: list[str] = []
    by_metric = {m: g for g, ms in GROUPS.items() for m in ms}
    for name in metrics:
        group = name if name in GROUPS else by_metric.get(name)
        if group is None:
            known = ", ".join(sorted({*GROUPS, *by_metric}))
            raise ValueError(f"unknown metric {name!r}; known: {known}")
        if group not in chosen:
            chosen.append(group)
    return tuple(chosen)


def judged_stem(model: str) -> str:
    """The stem the distribution metrics embed: what the generator makes."""
    return "accompaniment" if model in ("samuel", "lada_band") else "mix"


@dataclass
class Row:
    system: str
    key: str | None
    metric: str
    value: float | None
    reason: str | None = None


@dataclass
class SetAccumulator:
    """The per-window embeddings of one system, for the set-level Frechet distances."""

    frames: dict[str, np.ndarray] = field(default_factory=dict)


class Scorer:
    """Loads each metric's model once (lazily) and scores outputs window by window."""

    def __init__(self, model: str, groups: tuple[str, ...], store_dir: str | None = None, device: str = "cpu",
                 speaker_model: str | None = None) -> None:
        self.model = model
        self.speaker_model = speaker_model
        self.groups = groups
        self.store_dir = store_dir
        self.device = device
        self._loaded: dict[str, Any] = {}
        self._load_errors: dict[str, str] = {}
        self._reference: dict[str, dict[str, Any]] = {}  # window key -> the real stem's embeddings, f0...
        self._ref_stats_cache: Any = None  # EmbeddingStats of the reference set (set_reference)

    # --- models, each loaded once; a failure is remembered as the metric's reason ---------------------
    def metric_model(self, what: str) -> Any:
        """The model ``what`` (f0, yamnet, asr, clap, speaker, aesthetics), loaded on first use; None when it could
        not be loaded (the reason is kept for :meth:`missing_model_rows`)."""
        if what in self._loaded:
            return self._loaded[what]
        if what in self._load_errors:
            return None
        from songcorpus.transforms.models.registry import ModelError

        try:
            if what == "f0":
                from songcorpus.schemas.config import F0Config
                from songcorpus.transforms.stages.f0 import load_f0_model

                obj = load_f0_model(F0Config().method)
            elif what == "yamnet":
                from songcorpus.train.eval.metrics.embeddings import Yamnet

                obj = Yamnet()
            elif what == "asr":
                from songcorpus.train.eval.metrics.text import load_asr

                obj = load_asr(store_dir=self.store_dir, device=self.device)
            elif what == "clap":
                from songcorpus.train.eval.metrics.embeddings import load_clap

                obj = load_clap(store_dir=self.store_dir, device=self.device)
            elif what == "speaker":
                from songcorpus.train.eval.metrics.singer import load_speaker_encoder

                obj = load_speaker_encoder(self.speaker_model, store_dir=self.store_dir, device=self.device)
            elif what == "aesthetics":
                from songcorpus.train.eval.metrics.aesthetics import load_aesthetic_scorers

                obj = load_aesthetic_scorers(store_dir=self.store_dir, device=self.device)
            else:
                raise KeyError(what)
        except (ModelError, ImportError, OSError) as exc:
            self._load_errors[what] = f"{type(exc).__name__}: {exc}"
            return None
        self._loaded[what] = obj
        return obj

    def missing_model_rows(self, system: str) -> list[Row]:
        """One row per metric whose model could not be loaded (key None, the loader's message)."""
        needs = {"per": "asr", "clap_score": "clap", "speaker_similarity": "speaker", "aesthetics": "aesthetics"}
        rows = []
        for group in self.groups:
            what = needs.get(group)
            if what and self.metric_model(what) is None:
                rows += [Row(system, None, m, None, self._load_errors[what]) for m in GROUPS[group]]
        return rows

    # --- the reference side, once per window -----------------------------------------------------------
    def reference(self, w: Any) -> dict[str, Any]:
        if w.key not in self._reference:
            ref: dict[str, Any] = {}
            if {"fad", "kl"} & set(self.groups):
                yam = self.metric_model("yamnet")
                logits, emb = yam.run(w.stems[judged_stem(self.model)], w.rate)
                from songcorpus.train.eval.metrics.distribution import softmax

                ref["frames"] = emb
                ref["probs"] = softmax(logits).mean(axis=0)
            self._reference[w.key] = ref
        return self._reference[w.key]

    def reference_frames(self, keys: Iterable[str]) -> np.ndarray:
        return np.concatenate([self._reference[k]["frames"] for k in keys])

    # --- one window of one system ----------------------------------------------------------------------
    def score(self, system: str, w: Any, out: Any, acc: SetAccumulator) -> list[Row]:
        rows: list[Row] = []

        def add(results: Iterable[MetricResult]) -> None:
            rows.extend(Row(system, w.key, r.metric, r.value, r.reason) for r in results)

        rate = w.rate
        ref_stems, gen = w.stems, out.stems
        for group in self.groups:
            if group == "melody":
                add(self._melody(w, gen["vocals"]))
            elif group == "onset_f1":
                from songcorpus.train.eval.metrics.rhythm import onset_f1_audio

                add([measure("onset_f1", onset_f1_audio, ref_stems["accompaniment"], rate, gen["accompaniment"], rate)])
            elif group == "chroma_cosine":
                from songcorpus.train.eval.metrics.harmony import chroma_cosine_similarity

                add([measure("chroma_cosine", _silent_guard(chroma_cosine_similarity, "chroma_cosine"),
                             ref_stems["accompaniment"], rate, gen["accompaniment"], rate)])
            elif group == "hpcp_similarity":
                from songcorpus.train.eval.metrics.harmony import hpcp_similarity

                add([measure("hpcp_similarity", hpcp_similarity, ref_stems["accompaniment"], rate,
                             gen["accompaniment"], rate)])
            elif group in ("fad", "kl"):
                add(self._distribution(group, w, gen[judged_stem(self.model)], acc))
            elif group == "per":
                asr = self.metric_model("asr")
                if asr is not None:
                    from songcorpus.train.eval.metrics.text import lyrics_per

                    if not w.lyrics.strip():
                        add([MetricResult.unavailable("per", "the window has no lyrics")])
                    else:
                        lang = (w.language or "en").split("-")[0]
                        add([measure("per", lyrics_per, asr, gen["vocals"], rate, w.lyrics, lang)])
            elif group == "clap_score":
                clap = self.metric_model("clap")
                if clap is not None:
                    from songcorpus.train.eval.metrics.text import clap_score

                    add([measure("clap_score", clap_score, clap, gen["mix"], rate, w.caption)])
            elif group == "speaker_similarity":
                enc = self.metric_model("speaker")
                if enc is not None:
                    from songcorpus.train.eval.metrics.singer import speaker_similarity

                    add([measure("speaker_similarity", speaker_similarity, enc, ref_stems["vocals"], rate,
                                 gen["vocals"], rate)])
            elif group == "aesthetics":
                scorers = self.metric_model("aesthetics")
                if scorers is not None:
                    from songcorpus.train.eval.metrics.aesthetics import aesthetic_scores

                    scores = aesthetic_scores(scorers, gen["mix"], rate)
                    add([MetricResult.of(m, scores[m]) if m in scores else
                         MetricResult.unavailable(m, "its scorer is not loaded") for m in GROUPS["aesthetics"]])
            elif group == "rtf":
                if out.phases:
                    add([MetricResult.of("rtf", sum(out.phases.values()) / w.duration_s)])
        return rows

    def _melody(self, w: Any, vocals: np.ndarray) -> list[MetricResult]:
        from songcorpus.train.eval.metrics.melody import f0_correlation, f0_of_vocals, f0_rmse_cents, melody_accuracy

        if not np.any(w.f0 > 0):
            reason = "the window's reference f0 has no voiced frame"
            return [MetricResult.unavailable(m, reason) for m in GROUPS["melody"]]
        f0 = f0_of_vocals(vocals, w.rate, model=self.metric_model("f0"))
        acc = melody_accuracy(w.f0, f0)
        return [*acc.values(), measure("f0_correlation", f0_correlation, w.f0, f0),
                measure("f0_rmse_cents", f0_rmse_cents, w.f0, f0)]

    def _distribution(self, group: str, w: Any, audio: np.ndarray, acc: SetAccumulator) -> list[MetricResult]:
        from songcorpus.train.eval.metrics.distribution import kl_divergence, per_song_fad, softmax

        ref = self.reference(w)
        if not np.any(audio):
            if group == "fad":
                return [MetricResult.unavailable("per_song_fad", "the output is silent")]
            return [MetricResult.unavailable(m, "the output is silent") for m in GROUPS["kl"]]
        logits, emb = self.metric_model("yamnet").run(audio, w.rate)
        if group == "fad":
            acc.frames[w.key] = emb
            ref_stats = self._ref_stats()
            if ref_stats is None:
                return [MetricResult.unavailable("per_song_fad", "the reference set has fewer than 2 frames")]
            return [measure("per_song_fad", lambda: per_song_fad(ref_stats, emb))]
        probs = softmax(logits).mean(axis=0)
        return [MetricResult.of("kl_ref_gen", float(kl_divergence(ref["probs"], probs))),
                MetricResult.of("kl_gen_ref", float(kl_divergence(probs, ref["probs"])))]

    def set_reference(self, keys: list[str]) -> None:
        """Fix the reference set (every evaluated window's real stem) before any per-song FAD."""
        from songcorpus.train.eval.metrics.distribution import embedding_stats

        for k in keys:
            if k not in self._reference:
                raise KeyError(k)
        frames = self.reference_frames(keys) if keys else np.zeros((0, 1))
        try:
            self._ref_stats_cache = embedding_stats(frames)
        except MetricUnavailable:
            self._ref_stats_cache = None

    def _ref_stats(self) -> Any:
        return self._ref_stats_cache

    # --- the set-level metrics of one system -----------------------------------------------------------
    def set_rows(self, system: str, acc: SetAccumulator, keys: list[str], resamples: int, seed: int
                 ) -> tuple[list[Row], dict[str, tuple[float, float]]]:
        """FAD and FAD-inf of the system's frames against the reference set, and a bootstrap interval of FAD
        over windows (``resamples`` draws of the windows with replacement, seeded)."""
        from songcorpus.train.eval.metrics.distribution import embedding_stats, fad_inf, frechet_distance

        if "fad" not in self.groups:
            return [], {}
        have = [k for k in keys if k in acc.frames]
        if len(have) < len(keys):
            missing = len(keys) - len(have)
            reason_tail = f" ({missing} of {len(keys)} windows had no output frames)"
        else:
            reason_tail = ""
        ref_stats = self._ref_stats()
        if ref_stats is None or not have:
            reason = "no frames to compare" + reason_tail
            return [Row(system, None, "fad", None, reason), Row(system, None, "fad_inf", None, reason)], {}
        frames = np.concatenate([acc.frames[k] for k in have])
        rows = []
        fad = measure("fad", lambda: frechet_distance(ref_stats, embedding_stats(frames)))
        rows.append(Row(system, None, "fad", fad.value, fad.reason))
        inf = measure("fad_inf", lambda: fad_inf(ref_stats, frames, seed=seed).score)
        rows.append(Row(system, None, "fad_inf", inf.value, inf.reason))
        interval: dict[str, tuple[float, float]] = {}
        if fad.ok and resamples > 0 and len(have) > 1:
            rng = np.random.default_rng([seed, 7])
            ref_by = {k: self._reference[k]["frames"] for k in have}
            values = []
            for _ in range(resamples):
                pick = rng.integers(0, len(have), size=len(have))
                gen = np.concatenate([acc.frames[have[i]] for i in pick])
                ref = np.concatenate([ref_by[have[i]] for i in pick])
                try:
                    values.append(frechet_distance(embedding_stats(ref), embedding_stats(gen)))
                except MetricUnavailable:
                    continue
            if values:
                # FAD of a resampled set is biased upward (repeated windows shrink the covariance's rank), so the
                # percentile interval is re-centred on the estimate: its width is the bootstrap's, its centre FAD's
                shift = float(fad.value) - float(np.median(values))
                interval["fad"] = (max(0.0, float(np.percentile(values, 2.5)) + shift),
                                   float(np.percentile(values, 97.5)) + shift)
        return rows, interval


def _silent_guard(fn: Any, metric: str) -> Any:
    """A pitch-class metric is undefined when either side is silent (no strongest pitch class)."""
    def wrapped(reference: np.ndarray, reference_rate: int, generated: np.ndarray, generated_rate: int) -> float:
        if not np.any(reference):
            raise MetricUnavailable(metric, "the reference is silent")
        if not np.any(generated):
            raise MetricUnavailable(metric, "the output is silent")
        return fn(reference, reference_rate, generated, generated_rate)
    return wrapped
