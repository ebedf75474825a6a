# %% [markdown]
# # Evaluation overview: metrics against training step, per-song distributions, systems side by side
#
# An analyst's look at one or more `songcorpus evaluate --out EVAL` folders (their `metrics.parquet`). Give
# several EVAL folders of one run at different `--checkpoint` steps to see a metric move with training;
# the reference systems (ground_truth, codec_ceiling, floor, untrained) are drawn as the band a model's
# number is read in. A notebook in the percent format (Jupyter with jupytext, or VS Code) and a script:
#
# ```
# python notebooks/eval_overview.py EVAL [EVAL ...] --figures FIGURES [--corpus CORPUS]
# ```
#
# It reads only the metric tables (and, with `--corpus`, the corpus catalog for per-song grouping), never
# audio, and writes PNGs.

# %%
from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REFERENCE_STYLE = {"ground_truth": ("tab:green", "-"), "codec_ceiling": ("tab:blue", "--"),
                   "floor": ("tab:red", ":"), "untrained": ("tab:gray", "-.")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Plots and tables over `songcorpus evaluate` outputs.")
    p.add_argument("evals", nargs="+", help="folders written by `songcorpus evaluate --out`")
    p.add_argument("--figures", required=True, help="where to write the PNGs")
    p.add_argument("--corpus", help="the corpus folder, to group windows by song through its catalog")
    return p.parse_args(argv)


# %%
def connect(evals: list[str], corpus: str | None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with every EVAL's rows as ``metrics`` (and the corpus catalog as ``corpus``)."""
    con = duckdb.connect()
    files = [str(Path(e) / "metrics.parquet") for e in evals]
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise SystemExit(f"no metrics.parquet in {', '.join(missing)}: run `songcorpus evaluate --out` first")
    con.execute(f"CREATE VIEW metrics AS SELECT * FROM read_parquet({files!r}, union_by_name = true)")
    if corpus:
        con.execute(f"ATTACH '{Path(corpus) / 'catalog.duckdb'}' AS corpus (READ_ONLY)")
    return con


def by_step(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(metric, system, checkpoint_step, mean, n) of every windowed or set metric."""
    return con.execute("""
        SELECT metric, system, checkpoint_step, avg(value), count(value) FROM metrics
        WHERE value IS NOT NULL GROUP BY ALL ORDER BY metric, system, checkpoint_step""").fetchall()


def failures(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Why metrics are missing: (system, metric, reason, rows)."""
    return con.execute("""
        SELECT system, metric, reason, count(*) FROM metrics WHERE value IS NULL
        GROUP BY ALL ORDER BY system, metric""").fetchall()


def per_song(con: duckdb.DuckDBPyConnection, corpus: bool) -> list[tuple]:
    """(metric, system, song, mean over its windows) at the latest step: the spread a mean hides."""
    song = "w.track_id" if corpus else "split_part(m.key, '_', 1)"
    join = "JOIN corpus.windows w USING (key)" if corpus else ""
    return con.execute(f"""
        SELECT m.metric, m.system, {song} AS song, avg(m.value) FROM metrics m {join}
        WHERE m.key IS NOT NULL AND m.value IS NOT NULL
          AND coalesce(m.checkpoint_step, -1) = (SELECT coalesce(max(checkpoint_step), -1) FROM metrics)
        GROUP BY ALL ORDER BY 1, 2, 3""").fetchall()


# %%
def grid(n: int) -> tuple:
    """A figure with one panel per metric, three to a line."""
    cols = min(3, n) or 1
    lines = -(-n // cols) or 1
    return plt.subplots(lines, cols, figsize=(4.2 * cols, 3.0 * lines), squeeze=False)


def hide_unused(axes, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.axis("off")


def plot_by_step(rows: list[tuple], path: Path) -> None:
    metrics = sorted({r[0] for r in rows})
    fig, axes = grid(len(metrics))
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        for system in sorted({r[1] for r in rows if r[0] == metric}):
            pts = [(r[2], r[3]) for r in rows if r[0] == metric and r[1] == system and r[2] is not None]
            if system in REFERENCE_STYLE:
                color, style = REFERENCE_STYLE[system]
                mean = sum(p[1] for p in pts) / len(pts) if pts else None
                if mean is not None:
                    ax.axhline(mean, color=color, linestyle=style, label=system)
            elif pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=system)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("checkpoint step", fontsize=8)
    hide_unused(axes, len(metrics))
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_song(rows: list[tuple], path: Path) -> None:
    metrics = sorted({r[0] for r in rows})
    fig, axes = grid(len(metrics))
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        systems = sorted({r[1] for r in rows if r[0] == metric})
        ax.boxplot([[r[3] for r in rows if r[0] == metric and r[1] == s] for s in systems])
        ax.set_xticks(range(1, len(systems) + 1), systems, rotation=30, fontsize=7)
        ax.set_title(f"{metric} per song", fontsize=9)
    hide_unused(axes, len(metrics))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_systems(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Mean per system and metric at the latest step, with the spread of the windows (min-max whiskers)."""
    rows = con.execute("""
        SELECT metric, system, avg(value), min(value), max(value) FROM metrics
        WHERE value IS NOT NULL
          AND coalesce(checkpoint_step, -1) = (SELECT coalesce(max(checkpoint_step), -1) FROM metrics)
        GROUP BY ALL ORDER BY 1, 2""").fetchall()
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


# %%
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    con = connect(args.evals, args.corpus)
    try:
        report = {"by_step": by_step(con), "per_song": per_song(con, bool(args.corpus)), "failures": failures(con)}
        plot_by_step(report["by_step"], figures / "metrics_by_step.png")
        plot_per_song(report["per_song"], figures / "per_song.png")
        plot_systems(con, figures / "systems.png")
    finally:
        con.close()
    for name, rows in report.items():
        print(f"## {name}")
        for row in rows:
            print("  " + "  ".join("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return report


if __name__ == "__main__":
    main()
