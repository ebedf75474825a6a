"""An evaluation folder (``songcorpus evaluate --out EVAL``) opened read-only: what was evaluated, its summary with
intervals, the paired differences, the per-window scores and the audio it kept for listening.

Reads EVAL/eval.json, EVAL/metrics.duckdb (train/eval/tables.py reads its summary and paired tables) and, on request,
EVAL/audio/<system>/<key>.<stem>.flac for the keys eval.json lists (train/eval/evaluate.py keeps them); writes
nothing. An audio file is served only when its system, key and stem are on that list and its real path stays under
EVAL/audio. Fails with :class:`ViewError` for a folder without metrics.duckdb, :class:`NotFound` for audio it did
not keep.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from songcorpus.view.errors import NotFound, ViewError

STEMS = ("mix", "vocals", "accompaniment")
REFERENCE_SYSTEMS = ("untrained", "floor", "codec_ceiling", "ground_truth")


@dataclass
class Evaluation:
    index: int  # its place on the command line (the page /eval/<index>)
    folder: Path
    info: dict[str, Any]
    summary: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    audio_keys: dict[str, list[str]]
    lower_is_better: set[str]
    _con: Any = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, folder: str | Path, index: int) -> Evaluation:
        import duckdb

        from songcorpus.train.eval.scoring import LOWER_IS_BETTER
        from songcorpus.train.eval.tables import paired_rows, summary_rows

        path = Path(folder)
        db = path / "metrics.duckdb"
        if not db.is_file():
            raise ViewError(f"--eval {folder}: no metrics.duckdb there; give a folder written by "
                            f"`songcorpus evaluate ... --out EVAL`")
        try:
            info = json.loads((path / "eval.json").read_text()) if (path / "eval.json").is_file() else {}
        except ValueError:
            raise ViewError(f"--eval {folder}: eval.json is not JSON; run `songcorpus evaluate` again") from None
        summary = [dict(zip(("system", "metric", "mean", "ci_low", "ci_high", "n", "failures", "reasons"), r,
                            strict=True)) for r in summary_rows(db)]
        paired = [dict(zip(("baseline", "metric", "mean_difference", "ci_low", "ci_high", "n"), r, strict=True))
                  for r in paired_rows(db)]
        con = duckdb.connect(str(db), read_only=True)
        identity = con.execute("SELECT any_value(run), any_value(checkpoint_step), any_value(model), "
                               "any_value(split) FROM metrics").fetchone()
        info = {**info, **dict(zip(("run", "checkpoint_step", "model", "split"), identity, strict=True))}
        audio = info.get("audio") or {}
        keys = {str(s): [str(k) for k in ks] for s, ks in (audio.get("keys") or {}).items()}
        return cls(index, path, info, summary, paired, keys, set(LOWER_IS_BETTER), con)

    def close(self) -> None:
        self._con.close()

    @property
    def label(self) -> str:
        run = Path(str(self.info.get("run") or self.folder)).name
        step = self.info.get("checkpoint_step")
        return f"{run}" + (f" @ step {step}" if step is not None else "") + f" ({self.folder.name})"

    def metrics(self) -> list[str]:
        return sorted({r["metric"] for r in self.summary})

    def systems(self) -> list[str]:
        from songcorpus.train.eval.tables import SYSTEM_ORDER

        found = {r["system"] for r in self.summary}
        return [s for s in SYSTEM_ORDER if s in found] + sorted(found - set(SYSTEM_ORDER))

    def _rows(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._con.cursor()
        try:
            return cur.execute(sql, args).fetchall()
        finally:
            cur.close()

    @property
    def evaluated(self) -> str:
        """The system under evaluation: ``model`` for a run, the folder's system name for a folder of outputs."""
        found = self.systems()
        return "model" if "model" in found else next((s for s in found if s not in REFERENCE_SYSTEMS), "model")

    def per_window(self) -> tuple[list[str], list[dict[str, Any]]]:
        """(metrics, rows): per window key, the evaluated system's value of each per-window metric and the ground
        truth's, for the page's per-window table."""
        rows = self._rows("SELECT key, metric, system, value FROM metrics WHERE key IS NOT NULL AND system IN (?, ?) "
                          "ORDER BY key, metric", [self.evaluated, "ground_truth"])
        metrics = sorted({m for _, m, _, _ in rows})
        by_key: dict[str, dict[str, Any]] = {}
        for key, metric, system, value in rows:
            entry = by_key.setdefault(key, {"key": key, "model": {}, "ground_truth": {}})
            entry["ground_truth" if system == "ground_truth" else "model"][metric] = value
        return metrics, list(by_key.values())

    def window_scores(self, key: str) -> dict[str, dict[str, Any]]:
        """metric -> system -> value (or the reason) for one window."""
        out: dict[str, dict[str, Any]] = {}
        for metric, system, value, reason in self._rows("SELECT metric, system, value, reason FROM metrics "
                                                        "WHERE key = ? ORDER BY metric", [key]):
            out.setdefault(metric, {})[system] = value if value is not None else (reason or "failed")
        return out

    def has_key(self, key: str) -> bool:
        return bool(self._rows("SELECT 1 FROM metrics WHERE key = ? LIMIT 1", [key]))

    def kept_stems(self, system: str, key: str) -> list[str]:
        """The stems kept for listening for ``system`` on window ``key`` (files that are there)."""
        if key not in self.audio_keys.get(system, []):
            return []
        return [s for s in STEMS if (self.folder / "audio" / system / f"{key}.{s}.flac").is_file()]

    def audio_file(self, system: str, key: str, stem: str) -> Path:
        """The kept FLAC of ``system``'s ``stem`` on window ``key``: only what eval.json lists, inside EVAL/audio."""
        if system not in self.audio_keys or key not in self.audio_keys[system] or stem not in STEMS:
            raise NotFound(f"evaluation {self.index} kept no {stem} of {system} for {key!r}")
        root = os.path.realpath(self.folder / "audio")
        real = os.path.realpath(self.folder / "audio" / system / f"{key}.{stem}.flac")
        if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
            raise NotFound(f"evaluation {self.index} has no file for the {stem} of {system} on {key!r}")
        return Path(real)


def step_series(evals: list[Evaluation]) -> dict[str, list[dict[str, Any]]]:
    """metric -> one series per run: the evaluated system's mean and interval at each checkpoint step given."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for ev in evals:
        step = ev.info.get("checkpoint_step")
        if step is None:
            continue
        run = str(ev.info.get("run") or ev.folder)
        for r in ev.summary:
            if r["system"] != "model":
                continue
            series = out.setdefault(r["metric"], {}).setdefault(run, {"label": Path(run).name, "points": []})
            series["points"].append({"step": int(step), "mean": r["mean"], "ci_low": r["ci_low"],
                                     "ci_high": r["ci_high"], "eval": ev.index})
    return {m: list(s.values()) for m, s in sorted(out.items())}
