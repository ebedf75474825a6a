"""The evaluator's outputs: ``metrics.parquet``, ``metrics.duckdb`` (table ``metrics``, table ``intervals``,
view ``summary``) and the printed table.

Reads: metric rows (train/eval/scoring.py ``Row``) and the run's identity (run, checkpoint step, model, split).
Writes (atomically: a temporary name, then a rename, so a crash leaves the old report or the new):
- ``EVAL/metrics.parquet``: one row per (system, key, metric): run, checkpoint_step, model, system, split,
  key (the corpus sample key; NULL for a metric of the whole set such as FAD), metric, value (NULL when
  the metric could not be computed) and reason (why not). Joinable with the corpus catalog on ``key``.
- ``EVAL/metrics.duckdb``: ``metrics`` (the same rows), ``intervals`` (the 95% bootstrap interval per
  system and metric: percentiles 2.5 / 97.5 of the mean over windows drawn with replacement, seeded; for
  FAD, of FAD recomputed on windows drawn with replacement, re-centred on the estimate) and the view
  ``summary``: per system and metric the mean, its interval, the window count and the failures; ``paired``:
  per metric, the model's mean per-window difference from the untrained model and from the floor on the
  windows both scored, with its bootstrap interval (``paired_table``).
Bootstrap draws are seeded from (seed, system, metric), so the same rows give the same intervals.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.io.atomic import commit_file

SYSTEM_ORDER = ("model", "untrained", "floor", "codec_ceiling", "ground_truth")


def bootstrap_mean_interval(values: Sequence[float], resamples: int, seed: int, label: str) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over ``resamples`` draws with replacement."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1 or resamples <= 0:
        return float(x[0] if x.size == 1 else x.mean()), float(x[0] if x.size == 1 else x.mean())
    rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def metrics_table(rows: list[Any], identity: dict[str, Any]) -> Any:
    """The rows as an Arrow table with the stated column types (sorted: system, metric, key)."""
    import pyarrow as pa

    order = {s: i for i, s in enumerate(SYSTEM_ORDER)}
    rows = sorted(rows, key=lambda r: (order.get(r.system, len(order)), r.system, r.metric, r.key or ""))
    schema = pa.schema([("run", pa.string()), ("checkpoint_step", pa.int64()), ("model", pa.string()),
                        ("system", pa.string()), ("split", pa.string()), ("key", pa.string()),
                        ("metric", pa.string()), ("value", pa.float64()), ("reason", pa.string())])
    n = len(rows)
    cols = {"run": [identity["run"]] * n, "checkpoint_step": [identity.get("checkpoint_step")] * n,
            "model": [identity["model"]] * n, "system": [r.system for r in rows], "split": [identity["split"]] * n,
            "key": [r.key for r in rows], "metric": [r.metric for r in rows],
            "value": [None if r.value is None or not np.isfinite(r.value) else float(r.value) for r in rows],
            "reason": [r.reason if r.value is not None and np.isfinite(r.value) else
                       (r.reason or "not finite") for r in rows]}
    return pa.table(cols, schema=schema)


def intervals_table(table: Any, set_intervals: dict[tuple[str, str], tuple[float, float]], resamples: int,
                    seed: int) -> Any:
    """Bootstrap intervals per (system, metric): of the per-window mean, or the set metric's own draws."""
    import pyarrow as pa

    groups: dict[tuple[str, str], list[float]] = {}
    for system, metric, key, value in zip(table["system"].to_pylist(), table["metric"].to_pylist(),
                                          table["key"].to_pylist(), table["value"].to_pylist(), strict=True):
        if key is not None and value is not None:
            groups.setdefault((system, metric), []).append(value)
    out = {k: bootstrap_mean_interval(v, resamples, seed, f"{k[0]}/{k[1]}") for k, v in sorted(groups.items())}
    out.update(set_intervals)
    keys = sorted(out)
    return pa.table({"system": [k[0] for k in keys], "metric": [k[1] for k in keys],
                     "ci_low": [out[k][0] for k in keys], "ci_high": [out[k][1] for k in keys]},
                    schema=pa.schema([("system", pa.string()), ("metric", pa.string()),
                                      ("ci_low", pa.float64()), ("ci_high", pa.float64())]))


PAIRED_BASELINES = ("untrained", "floor")


def paired_table(table: Any, resamples: int, seed: int) -> Any:
    """Per metric with per-window values and per baseline of :data:`PAIRED_BASELINES`: the mean over windows of
    (model - baseline) on the windows both scored, its 95% bootstrap interval (windows drawn with replacement,
    the pair kept together) and the window count. Pairing removes what the windows share (a hard song is hard
    for both systems), so a difference can be resolved where the two systems' own intervals overlap."""
    import pyarrow as pa

    values: dict[tuple[str, str], dict[str, float]] = {}
    for system, metric, key, value in zip(table["system"].to_pylist(), table["metric"].to_pylist(),
                                          table["key"].to_pylist(), table["value"].to_pylist(), strict=True):
        if key is not None and value is not None:
            values.setdefault((system, metric), {})[key] = value
    rows = []
    for (system, metric), model in sorted(values.items()):
        if system != "model":
            continue
        for base in PAIRED_BASELINES:
            other = values.get((base, metric), {})
            keys = sorted(set(model) & set(other))
            if not keys:
                continue
            diffs = [model[k] - other[k] for k in keys]
            lo, hi = bootstrap_mean_interval(diffs, resamples, seed, f"model-{base}/{metric}")
            rows.append((base, metric, float(np.mean(diffs)), lo, hi, len(keys)))
    names = ("baseline", "metric", "mean_difference", "ci_low", "ci_high", "n")
    types = (pa.string(), pa.string(), pa.float64(), pa.float64(), pa.float64(), pa.int64())
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)},
                    schema=pa.schema(list(zip(names, types, strict=True))))


SUMMARY_VIEW = """
CREATE VIEW summary AS
SELECT m.run, m.checkpoint_step, m.model, m.split, m.system, m.metric,
       avg(m.value) AS mean,
       any_value(i.ci_low) AS ci_low, any_value(i.ci_high) AS ci_high,
       count(m.value) AS n, count(*) - count(m.value) AS failures,
       string_agg(DISTINCT m.reason, '; ') AS reasons
FROM metrics m LEFT JOIN intervals i ON i.system = m.system AND i.metric = m.metric
GROUP BY ALL
"""


def write_report(out: Path, table: Any, intervals: Any, paired: Any | None = None) -> dict[str, Path]:
    """``metrics.parquet`` and ``metrics.duckdb`` in ``out``, each written under a temporary name first
    (``paired``: :func:`paired_table`, written as table ``paired`` when given)."""
    import duckdb
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    parquet, db = out / "metrics.parquet", out / "metrics.duckdb"
    tmp_parquet, tmp_db = out / ".metrics.parquet.tmp", out / ".metrics.duckdb.tmp"
    pq.write_table(table, tmp_parquet)
    if tmp_db.exists():
        tmp_db.unlink()
    con = duckdb.connect(str(tmp_db))
    try:
        con.register("metrics_arrow", table)
        con.register("intervals_arrow", intervals)
        con.execute("CREATE TABLE metrics AS SELECT * FROM metrics_arrow")
        con.execute("CREATE TABLE intervals AS SELECT * FROM intervals_arrow")
        if paired is not None:
            con.register("paired_arrow", paired)
            con.execute("CREATE TABLE paired AS SELECT * FROM paired_arrow")
        con.execute(SUMMARY_VIEW)
    finally:
        con.close()
    commit_file(tmp_parquet, parquet)
    commit_file(tmp_db, db)
    return {"parquet": parquet, "duckdb": db}


def summary_rows(db: Path) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT system, metric, mean, ci_low, ci_high, n, failures, reasons FROM summary "
                           "ORDER BY metric, system").fetchall()
    finally:
        con.close()


def paired_rows(db: Path) -> list[tuple]:
    """(baseline, metric, mean difference, low, high, n) of the ``paired`` table; none in a report without it."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'paired'").fetchone()[0]:
            return []
        return con.execute("SELECT baseline, metric, mean_difference, ci_low, ci_high, n FROM paired "
                           "ORDER BY metric, baseline").fetchall()
    finally:
        con.close()


def format_summary(db: Path, lower_is_better: set[str]) -> str:
    """A metric x system table: ``mean [low, high]`` (n windows), failures counted; then the model's paired
    difference from the untrained model and the floor, ``+diff [low, high]``. Which way is better is stated."""
    rows = summary_rows(db)
    systems = [s for s in SYSTEM_ORDER if any(r[0] == s for r in rows)]
    systems += sorted({r[0] for r in rows} - set(systems))
    metrics = sorted({r[1] for r in rows})
    cell: dict[tuple[str, str], str] = {}
    for system, metric, mean, lo, hi, n, failures, _ in rows:
        if mean is None:
            text = f"- ({failures} failed)"
        elif lo is None or (n <= 1 and lo == hi):
            text = f"{mean:.3f}" + (f" ({failures} failed)" if failures else "")
        else:
            text = f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" + (f" n={n}" if n > 1 else "") + \
                (f" ({failures} failed)" if failures else "")
        cell[(metric, system)] = text
    paired = paired_rows(db)
    bases = [b for b in PAIRED_BASELINES if any(r[0] == b for r in paired)]
    for base, metric, diff, lo, hi, _n in paired:
        cell[(metric, f"model - {base}")] = f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    columns = systems + [f"model - {b}" for b in bases]
    head = ["metric"] + columns
    lines = [[f"{m} {'(lower better)' if m in lower_is_better else '(higher better)'}"]
             + [cell.get((m, s), "") for s in columns] for m in metrics]
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in lines])
