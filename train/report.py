"""``songcorpus train-report``: a run's log.jsonl drawn against the step, and a short summary table.

Reads: ``RUN/log.jsonl`` (train/trainer.py writes one JSON line per logged step: ``step``, the loss terms of
the model, ``lr``, ``grad_norm``, ``samples_per_s``, ``data_wait_frac``).
Writes: one PNG (matplotlib, Agg backend, no display needed): a panel of every loss term, then lr, grad norm,
samples/s and the data-wait fraction, all against the step.
Fails: :class:`ReportError` for a run with no log, or a log with no readable line (a truncated last line, as
a killed run can leave, is skipped and counted).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SYSTEM_KEYS = ("lr", "grad_norm", "samples_per_s", "data_wait_frac")


class ReportError(ValueError):
    """A run whose log cannot be reported on, named."""


def read_log(run: Path) -> tuple[list[dict[str, Any]], int]:
    """The log's records sorted by step (the last record of a step wins) and how many lines were unreadable."""
    path = run / "log.jsonl"
    if not path.exists():
        raise ReportError(f"{run} has no log.jsonl; is it a run folder of `songcorpus train`?")
    by_step: dict[int, dict[str, Any]] = {}
    bad = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            by_step[int(rec["step"])] = rec
        except (ValueError, KeyError, TypeError):
            bad += 1
    if not by_step:
        raise ReportError(f"{path} holds no logged step yet")
    return [by_step[s] for s in sorted(by_step)], bad


def loss_terms(records: list[dict[str, Any]]) -> list[str]:
    """Every numeric key that is not a system metric, "loss" first."""
    keys = dict.fromkeys(k for r in records for k, v in r.items()
                         if k not in ("step", *SYSTEM_KEYS) and isinstance(v, int | float))
    return sorted(keys, key=lambda k: (k != "loss", k))


def series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    arr = np.array(pts, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def summary(records: list[dict[str, Any]]) -> list[tuple[str, float, float, float, float]]:
    """(metric, first, last, min, mean) per metric, losses first."""
    rows = []
    for key in (*loss_terms(records), *SYSTEM_KEYS):
        _, y = series(records, key)
        if y.size:
            rows.append((key, float(y[0]), float(y[-1]), float(y.min()), float(y.mean())))
    return rows


def draw(records: list[dict[str, Any]], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = loss_terms(records)
    panels: list[tuple[str, list[str]]] = [("loss terms", losses)] + [(k, [k]) for k in SYSTEM_KEYS]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True)
    for ax, (label, keys) in zip(axes, panels, strict=True):
        for key in keys:
            x, y = series(records, key)
            if y.size:
                ax.plot(x, y, lw=1.2, marker="." if y.size < 50 else None, label=key)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if label == "loss terms" and keys:
            ax.legend(loc="upper right", fontsize=8, ncol=min(4, len(keys)))
        if label == "data_wait_frac":
            ax.set_ylim(-0.02, 1.02)
    axes[-1].set_xlabel("optimiser step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def train_report(run: str | Path, png: Path | None) -> str:
    """Draw ``png`` (when given) and return the summary table as text."""
    run = Path(run)
    records, bad = read_log(run)
    name = ""
    if (run / "config.yaml").exists():
        import yaml

        name = ((yaml.safe_load((run / "config.yaml").read_text()) or {}).get("model") or {}).get("name", "")
    steps = [r["step"] for r in records]
    head = f"{run} ({name or 'unknown model'}): {len(records)} logged steps, {steps[0]}..{steps[-1]}"
    if bad:
        head += f" ({bad} unreadable line(s) skipped)"
    lines = [head, f"{'metric':<16} {'first':>11} {'last':>11} {'min':>11} {'mean':>11}"]
    lines += [f"{k:<16} {a:>11.5g} {b:>11.5g} {c:>11.5g} {d:>11.5g}" for k, a, b, c, d in summary(records)]
    if png is not None:
        draw(records, png, head)
    return "\n".join(lines)
