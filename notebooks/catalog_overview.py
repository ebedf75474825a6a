# %% [markdown]
# # Catalog overview: the funnel, score distributions, balance and lineage of a curated corpus
#
# An analyst's first look at `OUT/catalog.duckdb`. The file is a notebook in the percent format (open it
# in Jupyter with jupytext, or VS Code), and also a plain script:
#
# ```
# python notebooks/catalog_overview.py songcorpus-demo --figures songcorpus-demo/figures
# ```
#
# It only reads the catalog (Parquet + DuckDB), never the audio, and writes its plots as PNG files.

# %%
from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Plots and tables over a curated corpus's catalog.")
    p.add_argument("out", nargs="?", default="songcorpus-demo", help="a folder written by `songcorpus curate --out`")
    p.add_argument("--figures", default=None, help="where to write the PNGs (default: OUT/figures)")
    return p.parse_args(argv)


# %%
def funnel(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """How many inputs (and hours) each stage and reason took out; accepted last."""
    return con.execute("SELECT status, stage, reason_code, tracks, hours FROM funnel").fetchall()


def score_summary(con: duckdb.DuckDBPyConnection, columns: list[str]) -> list[tuple]:
    """Quantiles of each stored score over all inputs that have it (the ground for choosing a gate)."""
    rows = []
    for col in columns:
        q = con.execute(f"SELECT count({col}), quantile_cont({col}, [0.05, 0.5, 0.95]) FROM tracks").fetchone()
        rows.append((col, q[0], *(q[1] or [None, None, None])))
    return rows


def windows_by_split(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("""
        SELECT split, count(*) AS samples, count(DISTINCT track_id) AS songs,
               round(sum(duration_s) / 3600, 4) AS hours,
               count(*) FILTER (WHERE augmentation_json LIKE '%"song_op":{%') AS augmented
        FROM windows GROUP BY split ORDER BY split""").fetchall()


def methods(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Which method made each field (the caption's too: generated captions are never passed off as human ones)."""
    return con.execute("""
        SELECT stems_method, f0_method, structure_method, key_method, caption_method, count(*) FROM tracks
        WHERE status = 'accepted' GROUP BY ALL ORDER BY ALL""").fetchall()


# %%
def plot_funnel(rows: list[tuple], path: Path) -> None:
    labels = [f"{s}: {st}/{c}" for s, st, c, _, _ in rows]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
    ax.barh(labels, [r[3] for r in rows], color=["tab:red" if r[0] == "failed" else "tab:orange" if r[0] == "rejected"
                                                  else "tab:green" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("inputs")
    ax.set_title("funnel")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scores(con: duckdb.DuckDBPyConnection, columns: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 2.8))
    for ax, col in zip(axes, columns, strict=True):
        for status, color in (("accepted", "tab:green"), ("rejected", "tab:orange")):
            values = [v for (v,) in con.execute(f"SELECT {col} FROM tracks WHERE status = ? AND {col} IS NOT NULL",
                                                [status]).fetchall()]
            if values:
                ax.hist(values, bins=20, alpha=0.6, color=color, label=status)
        ax.set_title(col, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# %%
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    figures = Path(args.figures) if args.figures else out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        scores = ["duration_s", "snr_db", "speech_fraction", "vocal_activity", "f0_voiced_fraction", "tempo_bpm"]
        report = {"funnel": funnel(con), "scores": score_summary(con, scores), "splits": windows_by_split(con),
                  "methods": methods(con)}
        plot_funnel(report["funnel"], figures / "funnel.png")
        plot_scores(con, scores, figures / "scores.png")
    finally:
        con.close()
    for name, rows in report.items():
        print(f"## {name}")
        for row in rows:
            print("  " + json.dumps(row, default=str))
    print(f"figures in {figures}")
    return report


if __name__ == "__main__":
    main()
