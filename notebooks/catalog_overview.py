# %% [markdown]
# # Catalog overview: the funnel, score distributions, balance and lineage of a curated corpus
#
# An analyst's first look at `OUT/catalog.duckdb`. It reads only the catalog (Parquet + DuckDB), never the audio.
# `catalog_overview.ipynb` is this notebook run on the demo corpus with its outputs kept; `catalog_overview.py` is
# its source in the percent format, paired through jupytext (edit either in Jupyter with jupytext, or edit the `.py`
# and re-run it with `python notebooks/refresh.py`). As a notebook it shows tables and plots inline; as a script it
# prints the tables and writes the plots as PNG files:
#
# ```
# python notebooks/catalog_overview.py songcorpus-demo --figures songcorpus-demo/figures
# ```
#
# Parameters (the next cell; a relative path is read from this folder, where Jupyter starts the kernel):
# `OUT`, a folder written by `songcorpus curate --out` (`songcorpus demo` in the repository root writes
# `songcorpus-demo`); `FIGURES`, a folder to write the plots to as PNG files as well (None: shown only).

# %% tags=["parameters"]
OUT = "../songcorpus-demo"
FIGURES = None

# %%
import argparse
import json
import sys
from pathlib import Path

import duckdb
from matplotlib.figure import Figure

DPI = 100  # inline and in the PNG files: readable, and small enough to keep the executed notebook light
SCORES = ["duration_s", "snr_db", "speech_fraction", "vocal_activity", "f0_voiced_fraction", "tempo_bpm"]
STATUS_COLOURS = {"accepted": "tab:green", "rejected": "tab:orange", "failed": "tab:red"}


def open_catalog(out: str | Path) -> duckdb.DuckDBPyConnection:
    """The corpus catalog, read-only: a notebook never changes the corpus it looks at."""
    path = Path(out) / "catalog.duckdb"
    if not path.is_file():
        raise FileNotFoundError(f"no catalog.duckdb in {out}: point OUT at a folder written by "
                                "`songcorpus curate --out` (`songcorpus demo` writes songcorpus-demo)")
    return duckdb.connect(str(path), read_only=True)


def save(fig: Figure, figures: str | Path | None, name: str) -> Figure:
    """Write ``fig`` as FIGURES/name when a folder is given; hand it back so a notebook cell shows it."""
    if figures is not None:
        Path(figures).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(figures) / name, dpi=DPI)
    return fig


# %% tags=["active-ipynb"]
# %matplotlib inline
# import pandas as pd
#
# pd.set_option("display.max_rows", 200)
# pd.set_option("display.float_format", "{:.4g}".format)
# pd.set_option("display.max_colwidth", None)  # method names are lineage: show them whole
# con = open_catalog(OUT)

# %% [markdown]
# ## The funnel
#
# Every input is one row of `tracks`, whatever happened to it. The `funnel` view counts the inputs (and their hours)
# by status, the stage that decided and the reason: what each gate took out, accepted last.

# %%
def funnel(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    """How many inputs (and hours) each stage and reason took out; accepted last."""
    return con.sql("SELECT status, stage, reason_code, tracks, hours FROM funnel")


def plot_funnel(rows: list[tuple]) -> Figure:
    fig = Figure(figsize=(8, 0.4 * len(rows) + 1.2), dpi=DPI)
    ax = fig.subplots()
    ax.barh([f"{s}: {st}/{c}" for s, st, c, _, _ in rows], [r[3] for r in rows],
            color=[STATUS_COLOURS.get(r[0], "tab:gray") for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("inputs")
    ax.set_title("funnel")
    fig.tight_layout()
    return fig


# %% tags=["active-ipynb"]
# display(funnel(con).df())
# save(plot_funnel(funnel(con).fetchall()), FIGURES, "funnel.png")

# %% [markdown]
# ## Score distributions
#
# Quantiles of each stored score over every input that has it, and its histogram for accepted and rejected inputs:
# the ground for choosing a gate's threshold (`songcorpus rebuild` re-applies a changed one without a model run).

# %%
def score_summary(con: duckdb.DuckDBPyConnection, columns: list[str]) -> duckdb.DuckDBPyRelation:
    """(score, inputs that have it, 5th, 50th and 95th percentile), one row per score."""
    return con.sql(" UNION ALL ".join(
        f"SELECT '{col}' AS score, count({col}) AS inputs, quantile_cont({col}, 0.05) AS p05, "
        f"quantile_cont({col}, 0.5) AS p50, quantile_cont({col}, 0.95) AS p95 FROM tracks" for col in columns))


def plot_scores(con: duckdb.DuckDBPyConnection, columns: list[str]) -> Figure:
    fig = Figure(figsize=(3.2 * len(columns), 2.8), dpi=DPI)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, col in zip(axes, columns, strict=True):
        for status in ("accepted", "rejected"):
            values = [v for (v,) in con.execute(f"SELECT {col} FROM tracks WHERE status = ? AND {col} IS NOT NULL",
                                                [status]).fetchall()]
            if values:
                ax.hist(values, bins=20, alpha=0.6, color=STATUS_COLOURS[status], label=status)
        ax.set_title(col, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# %% tags=["active-ipynb"]
# display(score_summary(con, SCORES).df())
# save(plot_scores(con, SCORES), FIGURES, "scores.png")

# %% [markdown]
# ## Balance of the splits
#
# Windows (the training samples), songs and hours in each split; splits are by song, so no song's windows leak
# across them. `augmented` counts the windows made by a song-level augmentation (time stretch, pitch shift).

# %%
def windows_by_split(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    return con.sql("""
        SELECT split, count(*) AS samples, count(DISTINCT track_id) AS songs,
               round(sum(duration_s) / 3600, 4) AS hours,
               count(*) FILTER (WHERE augmentation_json LIKE '%"song_op":{%') AS augmented
        FROM windows GROUP BY split ORDER BY split""")


# %% tags=["active-ipynb"]
# windows_by_split(con).df()

# %% [markdown]
# ## Lineage: which method made each field
#
# The accepted songs grouped by the method behind their stems, f0, structure, key and caption: a corpus never mixes
# methods silently, and a generated caption is never passed off as a human one.

# %%
def methods(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    return con.sql("""
        SELECT stems_method, f0_method, structure_method, key_method, caption_method, count(*) AS songs FROM tracks
        WHERE status = 'accepted' GROUP BY ALL ORDER BY ALL""")


# %% tags=["active-ipynb"]
# methods(con).df()

# %% tags=["active-ipynb"]
# con.close()

# %% [markdown]
# ## As a script
#
# `main(argv)` prints the same tables and writes `funnel.png` and `scores.png` (to `--figures`, by default
# `OUT/figures`); it returns the tables as lists of rows. A folder without a catalog is refused in one line (exit 2).

# %%
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Plots and tables over a curated corpus's catalog.")
    p.add_argument("out", nargs="?", default="songcorpus-demo", help="a folder written by `songcorpus curate --out`")
    p.add_argument("--figures", default=None, help="where to write the PNGs (default: OUT/figures)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    figures = Path(args.figures) if args.figures else Path(args.out) / "figures"
    try:
        con = open_catalog(args.out)
    except FileNotFoundError as e:
        print(f"catalog_overview: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        report = {"funnel": funnel(con).fetchall(), "scores": score_summary(con, SCORES).fetchall(),
                  "splits": windows_by_split(con).fetchall(), "methods": methods(con).fetchall()}
        save(plot_funnel(report["funnel"]), figures, "funnel.png")
        save(plot_scores(con, SCORES), figures, "scores.png")
    finally:
        con.close()
    for name, rows in report.items():
        print(f"## {name}")
        for row in rows:
            print("  " + json.dumps(row, default=str))
    print(f"figures in {figures}")
    return report


# %% tags=["active-py"]
if __name__ == "__main__":
    main()
