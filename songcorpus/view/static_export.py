"""``songcorpus view OUT --static DIR``: the view's pages written as static HTML that opens from disk (file://), for
sharing without a server: the overview, the tracks and samples tables (the first pages of each, and of each funnel
row), the pages of up to ``clips`` samples with their audio and drawing, their tracks and some rejected ones, and the
evaluations.

Reads the corpus and evaluations as the server does; writes only under DIR: the pages, style.css, the samples' audio
members as they are stored (FLAC), their drawings (PNG), the kept evaluation audio of those samples, and
``.songcorpus-view-export.json`` (the marker: every file written). Links are relative and point only at what was
written. DIR must be new, empty, or an export this command wrote before (its marker present); then the files that
marker lists are removed first and nothing else is touched. Fails with :class:`ViewError` for any other DIR, a DIR
inside the corpus, or a DIR on an object store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from songcorpus.io import storage
from songcorpus.view import corpus_queries, pages
from songcorpus.view.corpus import Corpus
from songcorpus.view.drawing import drawing_png
from songcorpus.view.errors import ViewError
from songcorpus.view.evaluations import Evaluation
from songcorpus.view.links import StaticLinks, StaticPlan, safe_name
from songcorpus.view.query_params import PER_PAGE, TableQuery

MARKER = ".songcorpus-view-export.json"
MARKER_FORMAT = "songcorpus-view-export-v1"
CLIPS = 50  # samples whose audio and drawing are exported, by default
MAX_TABLE_PAGES = 20  # pages of each table view (1,000 rows at 50 a page); the server shows them all
AUDIO_MEMBERS = ("mix.flac", "vocals.flac", "accompaniment.flac")


class _Writer:
    """Files under one root, each recorded for the marker; a path that would leave the root is refused."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.written: list[str] = []

    def write(self, rel: str, data: bytes | str) -> None:
        path = (self.root / rel).resolve()
        if os.path.commonpath([self.root, path]) != str(self.root):
            raise ViewError(f"refusing to write {rel!r}: outside {self.root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.written.append(Path(rel).as_posix())


def prepare(out_dir: Path) -> None:
    """Make ``out_dir`` ready: new, empty, or a previous export (whose listed files are removed)."""
    if storage.is_url(str(out_dir)):
        raise ViewError(f"--static {out_dir}: a static export is written to a local folder; give a path")
    if out_dir.exists() and not out_dir.is_dir():
        raise ViewError(f"--static {out_dir} is a file; give a new or empty folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        out_dir.mkdir(parents=True, exist_ok=True)
        return
    marker = out_dir / MARKER
    if not marker.is_file():
        raise ViewError(f"--static {out_dir} holds files this command did not write (no {MARKER}); give a new or "
                        f"empty folder")
    try:
        listed = json.loads(marker.read_text())
        assert listed.get("format") == MARKER_FORMAT
        files = [str(f) for f in listed["files"]]
    except (ValueError, AssertionError, KeyError, TypeError):
        raise ViewError(f"--static {out_dir}: {MARKER} is not an export marker; give a new or empty folder") from None
    root = out_dir.resolve()
    for rel in files:
        path = (root / rel).resolve()
        if os.path.commonpath([root, path]) == str(root) and path.is_file() and not path.is_symlink():
            path.unlink()
    marker.unlink()
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _choose_windows(corpus: Corpus, evals: list[Evaluation], clips: int) -> list[str]:
    """Up to ``clips`` sample keys: the evaluations' listened windows first, then the first window of each accepted
    track, one augmented copy, then the rest in key order."""
    cur = corpus.cursor()
    try:
        keys = [k for (k,) in cur.execute("SELECT key FROM windows ORDER BY key").fetchall()] if clips else []
        firsts = [k for (k,) in cur.execute("SELECT min(key) FROM windows WHERE augmentation_json IS NULL "
                                            "GROUP BY track_id ORDER BY 1").fetchall()]
        augmented = [k for (k,) in cur.execute("SELECT key FROM windows WHERE augmentation_json IS NOT NULL "
                                               "ORDER BY key LIMIT 1").fetchall()]
    finally:
        cur.close()
    present = set(keys)
    heard = [k for ev in evals for k in ev.audio_keys.get(ev.evaluated, []) if k in present]
    chosen: list[str] = []
    for k in [*heard, *firsts, *augmented, *keys]:
        if len(chosen) >= clips:
            break
        if k not in chosen:
            chosen.append(k)
    return chosen


def _plan_tables(corpus: Corpus, plan: StaticPlan, specs: dict[str, Any], funnel: list[dict[str, Any]]) -> list:
    views: list[tuple[str, str, TableQuery]] = []

    def add(table: str, name: str, filters: tuple[tuple[str, str], ...]) -> None:
        query = TableQuery(specs[table], categories=filters)
        total = corpus_queries.table_page(corpus, TableQuery(specs[table], categories=filters, per=10)).total
        plan.views[(table, tuple(sorted(filters)))] = name
        plan.pages[(table, name)] = min(MAX_TABLE_PAGES, max(1, -(-total // PER_PAGE)))
        views.append((table, name, query))

    add("tracks", "all", ())
    add("windows", "all", ())
    for r in funnel:
        filters = (("status", r["status"]),) if r["status"] == "accepted" else \
            (("reason", r["reason_code"]), ("status", r["status"]))
        add("tracks", safe_name("-".join(v for _, v in filters)), filters)
    return views


def export(corpus: Corpus, evals: list[Evaluation], out_dir: str | Path, clips: int = CLIPS) -> dict[str, Any]:
    """Write the static export; returns what it wrote (counts and the folder)."""
    out = Path(out_dir)
    if not corpus.is_remote:
        root, target = os.path.realpath(corpus.location), os.path.realpath(out)
        if os.path.commonpath([root, target]) == root:
            raise ViewError(f"--static {out_dir} is inside the corpus {corpus.name}; give a folder outside it (the "
                            f"corpus folder holds only what curate wrote)")
    prepare(out)
    writer = _Writer(out)
    plan = StaticPlan()
    specs = corpus_queries.table_specs(corpus)
    known = corpus_queries.known_values(corpus)
    data = pages.overview_data(corpus)
    chosen = _choose_windows(corpus, evals, max(0, clips))
    plan.windows.update(chosen)
    cur = corpus.cursor()
    try:
        plan.tracks.update(t for (t,) in cur.execute(
            "SELECT DISTINCT track_id FROM windows WHERE list_contains(?, key)", [chosen]).fetchall())
        plan.tracks.update(t for (t,) in cur.execute(
            "SELECT track_id FROM tracks WHERE status <> 'accepted' ORDER BY status, reason_code, source LIMIT ?",
            [max(0, clips)]).fetchall())
    finally:
        cur.close()
    for ev in evals:
        for system, keys in ev.audio_keys.items():
            if system != ev.evaluated:
                continue
            for k in keys:  # a corpus window's if its page is exported; a folder evaluation's up to the cap
                if k in plan.windows or (len(plan.eval_audio) < clips and not _in_corpus(corpus, k)):
                    plan.eval_audio.add((ev.index, system, k))
    views = _plan_tables(corpus, plan, specs, data["funnel"])
    links = StaticLinks(0, plan)

    writer.write("style.css", (Path(__file__).parent / "static" / "style.css").read_bytes())
    writer.write("index.html", pages.render("overview.html", pages.overview(corpus, evals, links, data)))
    for table, name, query in views:
        for page_no in range(1, plan.pages[(table, name)] + 1):
            page = corpus_queries.table_page(corpus, TableQuery(query.spec, categories=query.categories, page=page_no))
            context = pages.table(corpus, evals, links.at(1), page, known)
            writer.write(f"{table}/{name}-{page_no:04d}.html", pages.render("table.html", context))
    for track_id in sorted(plan.tracks):
        writer.write(f"track/{safe_name(track_id)}.html",
                     pages.render("track.html", pages.track(corpus, evals, links.at(1), track_id)))
    for key in chosen:
        writer.write(f"window/{safe_name(key)}.html",
                     pages.render("window.html", pages.window(corpus, evals, links.at(1), key)))
        members = corpus.members(key)
        for suffix in AUDIO_MEMBERS:
            if suffix in members:
                writer.write(f"audio/{safe_name(key)}.{suffix}", members[suffix])
        writer.write(f"drawing/{safe_name(key)}.png", drawing_png((corpus.name, key), members))
    if evals:
        writer.write("evals.html", pages.render("evals.html", pages.evaluations(corpus, evals, links)))
    for ev in evals:
        writer.write(f"eval/{ev.index}.html", pages.render("eval.html", pages.evaluation(corpus, evals, links.at(1), ev)))
        for index, system, key in sorted(plan.eval_audio):
            if index != ev.index:
                continue
            for stem in ev.kept_stems(system, key):
                writer.write(f"eval/{index}/{safe_name(system)}/{safe_name(key)}.{stem}.flac",
                             ev.audio_file(system, key, stem).read_bytes())
    marker = {"format": MARKER_FORMAT, "corpus": corpus.name, "files": sorted(writer.written)}
    writer.write(MARKER, json.dumps(marker, indent=1) + "\n")
    return {"folder": str(out), "files": len(writer.written), "samples": len(chosen), "tracks": len(plan.tracks),
            "evaluations": len(evals)}


def _in_corpus(corpus: Corpus, key: str) -> bool:
    cur = corpus.cursor()
    try:
        return cur.execute("SELECT 1 FROM windows WHERE key = ?", [key]).fetchone() is not None
    finally:
        cur.close()

