# %% [markdown]
# # Evaluation overview: metrics against training step, per-song distributions, systems side by side
#
# An analyst's look at one or more `songcorpus evaluate --out EVAL` folders (their `metrics.parquet`). Give
# several EVAL folders of one run at different `--checkpoint` steps to see a metric move with training;
# the reference systems (ground_truth, codec_ceiling, floor, untrained) are drawn as the band a model's
# number is read in. It reads only the metric tables (and, with a corpus, its catalog, to group windows by song),
# never audio. `eval_overview.ipynb` is this notebook run on an evaluation of the demo corpus with its outputs kept;
# `eval_overview.py` is its source in the percent format, paired through jupytext (edit the `.py`, then re-run it
# with `python notebooks/refresh.py`). As a notebook it shows tables and plots inline; as a script it prints the
# tables and writes the plots as PNG files:
#
# ```
# python notebooks/eval_overview.py EVAL [EVAL ...] --figures FIGURES [--corpus CORPUS]
# ```
#
# Parameters (the next cell; a relative path is read from this folder, where Jupyter starts the kernel):
# `EVAL`, one folder written by `songcorpus evaluate --out` or a list of them; `CORPUS`, the corpus they were
# scored on (None: windows are grouped by the song part of their key); `FIGURES`, a folder to write the plots to as
# PNG files as well (None: shown only).

# %% tags=["parameters"]
EVAL = "../eval/samuel"
CORPUS = "../songcorpus-demo"
FIGURES = None

# %%
import argparse
import sys
from pathlib import Path

import duckdb
from matplotlib.figure import Figure

DPI = 100  # inline and in the PNG files: readable, and small enough to keep the executed notebook light
REFERENCE_STYLE = {"ground_truth": ("tab:green", "-"), "codec_ceiling": ("tab:blue", "--"),
                   "floor": ("tab:red", ":"), "untrained": ("tab:gray", "-.")}


def connect(evals: str | list[str], corpus: str | None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with every EVAL's rows as ``metrics`` (and the corpus catalog attached as ``corpus``)."""
    evals = [evals] if isinstance(evals, str | Path) else list(evals)
    files = [str(Path(e) / "metrics.parquet") for e in evals]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"no metrics.parquet in {', '.join(missing)}: run `songcorpus evaluate --out` first")
    con = duckdb.connect()
    con.read_parquet(files, union_by_name=True).create_view("metrics")
    if corpus:
        catalog = Path(corpus) / "catalog.duckdb"
        if not catalog.is_file():
            raise FileNotFoundError(f"no catalog.duckdb in {corpus}: give the corpus the evaluation scored "
                                    "(a folder written by `songcorpus curate --out`), or none")
        con.execute(f"ATTACH '{str(catalog).replace(chr(39), chr(39) * 2)}' AS corpus (READ_ONLY)")
    return con


def save(fig: Figure, figures: str | Path | None, name: str) -> Figure:
    """Write ``fig`` as FIGURES/name when a folder is given; hand it back so a notebook cell shows it."""
    if figures is not None:
        Path(figures).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(figures) / name, dpi=DPI)
    return fig


def grid(n: int) -> tuple[Figure, object]:
    """A figure with one panel per metric, three to a line."""
    cols = min(3, n) or 1
    lines = -(-n // cols) or 1
    fig = Figure(figsize=(4.2 * cols, 3.0 * lines), dpi=DPI)
    return fig, fig.subplots(lines, cols, squeeze=False)


def hide_unused(axes, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.axis("off")


# %% tags=["active-ipynb"]
# %matplotlib inline
# import pandas as pd
#
# pd.set_option("display.max_rows", 200)
# pd.set_option("display.float_format", "{:.4g}".format)
# pd.set_option("display.max_colwidth", None)  # a reason is shown whole
# con = connect(EVAL, CORPUS)

# %% [markdown]
# ## Metrics against training step
#
# The mean of every windowed or set metric per system and checkpoint step; a reference system is drawn as a
# horizontal line (its mean over the steps), the model as points joined by step.

# %%
def by_step(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    """(metric, system, checkpoint_step, mean, n) of every windowed or set metric."""
    return con.sql("""
        SELECT metric, system, checkpoint_step, avg(value) AS mean, count(value) AS n FROM metrics
        WHERE value IS NOT NULL GROUP BY ALL ORDER BY metric, system, checkpoint_step""")


def plot_by_step(rows: list[tuple]) -> Figure:
    metrics = sorted({r[0] for r in rows})
    fig, axes = grid(len(metrics))
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        for system in sorted({r[1] for r in rows if r[0] == metric}):
            pts = [(r[2], r[3]) for r in rows if r[0] == metric and r[1] == system and r[2] is not None]
            if system in REFERENCE_STYLE:
                color, style = REFERENCE_STYLE[system]
                if pts:
                    ax.axhline(sum(p[1] for p in pts) / len(pts), color=color, linestyle=style, label=system)
            elif pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=system)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("checkpoint step", fontsize=8)
    hide_unused(axes, len(metrics))
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# %% tags=["active-ipynb"]
# display(by_step(con).df())
# save(plot_by_step(by_step(con).fetchall()), FIGURES, "metrics_by_step.png")

# %% [markdown]
# ## Per song
#
# Each song's mean over its windows at the latest step, per metric and system: the spread a mean over all windows
# hides. Songs are the corpus catalog's track ids when a corpus is given.

# %%
def per_song(con: duckdb.DuckDBPyConnection, corpus: bool) -> duckdb.DuckDBPyRelation:
    """(metric, system, song, mean over its windows) at the latest step."""
    song = "w.track_id" if corpus else "split_part(m.key, '_', 1)"
    join = "JOIN corpus.windows w USING (key)" if corpus else ""
    return con.sql(f"""
        SELECT m.metric, m.system, {song} AS song, avg(m.value) AS mean FROM metrics m {join}
        WHERE m.key IS NOT NULL AND m.value IS NOT NULL
          AND coalesce(m.checkpoint_step, -1) = (SELECT coalesce(max(checkpoint_step), -1) FROM metrics)
        GROUP BY ALL ORDER BY 1, 2, 3""")


def plot_per_song(rows: list[tuple]) -> Figure:
    metrics = sorted({r[0] for r in rows})
    fig, axes = grid(len(metrics))
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        systems = sorted({r[1] for r in rows if r[0] == metric})
        ax.boxplot([[r[3] for r in rows if r[0] == metric and r[1] == s] for s in systems])
        ax.set_xticks(range(1, len(systems) + 1), systems, rotation=30, fontsize=7)
        ax.set_title(f"{metric} per song", fontsize=9)
    hide_unused(axes, len(metrics))
    fig.tight_layout()
    return fig


# %% tags=["active-ipynb"]
# songs = per_song(con, bool(CORPUS)).df()
# display(songs.pivot_table(index=["metric", "song"], columns="system", values="mean").reset_index()
#         .rename_axis(columns=None))
# save(plot_per_song(per_song(con, bool(CORPUS)).fetchall()), FIGURES, "per_song.png")

# %% [markdown]
# ## Systems side by side
#
# The mean per system and metric at the latest step, with the spread of the windows (min-max whiskers): where the
# model sits between the floor and the ground truth or codec ceiling.

# %%
def latest_by_system(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    """(metric, system, mean, min, max) over the windows at the latest step."""
    return con.sql("""
        SELECT metric, system, avg(value) AS mean, min(value) AS min, max(value) AS max FROM metrics
        WHERE value IS NOT NULL
          AND coalesce(checkpoint_step, -1) = (SELECT coalesce(max(checkpoint_step), -1) FROM metrics)
        GROUP BY ALL ORDER BY 1, 2""")


def plot_systems(rows: list[tuple]) -> Figure:
    metrics = sorted({r[0] for r in rows})
    fig, axes = grid(len(metrics))
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        sel = [r for r in rows if r[0] == metric]
        xs = range(len(sel))
        ax.bar(xs, [r[2] for r in sel], color=[REFERENCE_STYLE.get(r[1], ("tab:purple", ""))[0] for r in sel])
        ax.errorbar(xs, [r[2] for r in sel], yerr=[[r[2] - r[3] for r in sel], [r[4] - r[2] for r in sel]],
                    fmt="none", ecolor="black", capsize=3)
        ax.set_xticks(list(xs), [r[1] for r in sel], rotation=30, fontsize=7)
        ax.set_title(metric, fontsize=9)
    hide_unused(axes, len(metrics))
    fig.tight_layout()
    return fig


# %% tags=["active-ipynb"]
# display(latest_by_system(con).df().pivot(index="metric", columns="system", values="mean").reset_index()
#         .rename_axis(columns=None))
# save(plot_systems(latest_by_system(con).fetchall()), FIGURES, "systems.png")

# %% [markdown]
# ## Missing values and why
#
# A metric that is undefined for a window, or whose model is not in the model store, is a row with no value and
# the reason: how many rows each system and metric lost, and to what.

# %%
def failures(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    """Why metrics are missing: (system, metric, reason, rows)."""
    return con.sql("""
        SELECT system, metric, reason, count(*) AS rows FROM metrics WHERE value IS NULL
        GROUP BY ALL ORDER BY system, metric""")


# %% tags=["active-ipynb"]
# failures(con).df()

# %% tags=["active-ipynb"]
# con.close()

# %% [markdown]
# ## As a script
#
# `main(argv)` prints the same tables and writes `metrics_by_step.png`, `per_song.png` and `systems.png` to
# `--figures`; it returns the tables as lists of rows. A folder without metrics is refused in one line (exit 2).

# %%
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Plots and tables over `songcorpus evaluate` outputs.")
    p.add_argument("evals", nargs="+", help="folders written by `songcorpus evaluate --out`")
    p.add_argument("--figures", required=True, help="where to write the PNGs")
    p.add_argument("--corpus", help="the corpus folder, to group windows by song through its catalog")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        con = connect(args.evals, args.corpus)
    except FileNotFoundError as e:
        print(f"eval_overview: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        report = {"by_step": by_step(con).fetchall(), "per_song": per_song(con, bool(args.corpus)).fetchall(),
                  "failures": failures(con).fetchall()}
        save(plot_by_step(report["by_step"]), args.figures, "metrics_by_step.png")
        save(plot_per_song(report["per_song"]), args.figures, "per_song.png")
        save(plot_systems(latest_by_system(con).fetchall()), args.figures, "systems.png")
    finally:
        con.close()
    for name, rows in report.items():
        print(f"## {name}")
        for row in rows:
            print("  " + "  ".join("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return report


# %% tags=["active-py"]
if __name__ == "__main__":
    main()
