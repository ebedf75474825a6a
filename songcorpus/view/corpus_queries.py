"""The view's DuckDB queries over a corpus's catalog: table pages (filter, sort, page), one track, one window, and the
overview's figures (funnel, score distributions against the gates, balance by split, language, genre, duration and
method).

Reads ``catalog.duckdb`` through an open :class:`~songcorpus.view.corpus.Corpus`; writes nothing. Only bound
parameters carry values; column names come from the allow-lists built here from the catalog's own schema
(:func:`table_specs`), so no request text becomes SQL. Paging is ``LIMIT``/``OFFSET`` in DuckDB with a count of the
filtered rows, so a page costs the same on a large catalog as on the demo (bench/bench_view_pages.py). The funnel is
the catalog's own ``funnel`` view, read as ``songcorpus report`` reads it. Fails with :class:`NotFound` for an
unknown track or window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from songcorpus.schemas.catalog import METHOD_COLUMNS, SCORE_COLUMNS, STATUSES
from songcorpus.view.corpus import Corpus
from songcorpus.view.errors import NotFound
from songcorpus.view.query_params import TableQuery, TableSpec

# a parameter whose column has another name
TRACK_PARAM_COLUMNS = {"reason": "reason_code", "group": "duplicate_group", "format": "source_format"}
WINDOW_PARAM_COLUMNS = {"track": "track_id"}
TRACK_SHOWN = ("source", "title", "artist", "status", "stage", "reason_code", "split", "duration_s", "n_windows",
               "language")
WINDOW_SHOWN = ("key", "track_id", "source", "split", "start_s", "duration_s", "f0_trust", "bytes", "shard",
                "reference_key", "augmentation_json")
WINDOW_OWN_RANGES = ("start_s", "duration_s", "f0_trust")  # window columns a range filters on (the rest: its track's)
TEXT_COLUMNS = ("title", "artist", "caption", "lyrics", "source")  # what ``q`` searches (those the catalog has)
HISTOGRAM_BINS = 24


@dataclass
class Page:
    """One page of a table: its rows (dicts of the shown columns), the filtered total and the paging figures."""

    rows: list[dict[str, Any]]
    total: int
    query: TableQuery
    columns: list[str]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per))

    @property
    def first(self) -> int:
        return 0 if self.total == 0 else (self.query.page - 1) * self.query.per + 1

    @property
    def last(self) -> int:
        return min(self.total, self.query.page * self.query.per)


def table_specs(corpus: Corpus) -> dict[str, TableSpec]:
    """What the tracks and windows pages let a user filter and sort by, from the columns this catalog has."""
    t, w = corpus.columns["tracks"], corpus.columns["windows"]
    scores = tuple(corpus.score_columns())
    categories = tuple(p for p in ("status", "stage", "reason", "split", "language", "format", *METHOD_COLUMNS)
                       if TRACK_PARAM_COLUMNS.get(p, p) in t)
    tracks = TableSpec("tracks", sorts=tuple(c for c in (*TRACK_SHOWN, "track_id") if c in t) + scores,
                       categories=categories, ranges=scores + tuple(c for c in ("n_windows",) if c in t),
                       ids=tuple(p for p in ("group",) if TRACK_PARAM_COLUMNS[p] in t))
    joined = tuple(s for s in scores if s != "duration_s")  # a window's duration_s is its own
    own = tuple(c for c in ("f0_trust",) if c in w)  # the window's own scores (catalogs from version 6)
    windows = TableSpec("windows", sorts=tuple(c for c in ("key", "source", "split", "start_s", "duration_s", "bytes",
                                                           "shard") if c in w) + own + joined,
                        categories=("split",), ranges=("start_s", "duration_s", *own, *joined), flags=("augmented",),
                        ids=("track",))
    return {"tracks": tracks, "windows": windows}


def known_values(corpus: Corpus) -> dict[str, set[str]]:
    """The values each categorical filter can take (the catalog's distinct values; statuses from the schema)."""
    cur = corpus.cursor()
    try:
        out: dict[str, set[str]] = {"status": set(STATUSES)}
        for param in ("stage", "reason", "split", "language", "format", *METHOD_COLUMNS):
            col = TRACK_PARAM_COLUMNS.get(param, param)
            if col in corpus.columns["tracks"]:
                out[param] = {v for (v,) in cur.execute(f'SELECT DISTINCT "{col}" FROM tracks WHERE "{col}" IS NOT NULL')
                              .fetchall()}
        out["split"] = out.get("split", set()) | {v for (v,) in cur.execute("SELECT DISTINCT split FROM windows")
                                                  .fetchall()}
        return out
    finally:
        cur.close()


def _where(query: TableQuery, corpus: Corpus, alias: str, track_alias: str | None) -> tuple[list[str], list[Any]]:
    """WHERE clauses and their bound values; column names only from the spec's allow-lists."""
    clauses: list[str] = []
    args: list[Any] = []
    windows = query.spec.table == "windows"
    names = WINDOW_PARAM_COLUMNS if windows else TRACK_PARAM_COLUMNS
    for param, value in (*query.categories, *query.ids):
        clauses.append(f'{alias}."{names.get(param, param)}" = ?')
        args.append(value)
    for flag, on in query.flags:
        if flag == "augmented":
            clauses.append(f"{alias}.augmentation_json IS {'NOT ' if on else ''}NULL")
    for col, lo, hi in query.ranges:
        owner = alias if not windows or col in WINDOW_OWN_RANGES else track_alias
        for bound, op in ((lo, ">="), (hi, "<=")):
            if bound is not None:
                clauses.append(f'{owner}."{col}" {op} ?')
                args.append(bound)
    if query.q:  # a literal, case-insensitive substring (no LIKE pattern: % and _ are characters here)
        fields = [c for c in TEXT_COLUMNS if c in corpus.columns["tracks"]]
        if windows:  # matched once per track, not once per window
            text = " OR ".join(f'contains(lower(tq."{c}"), ?)' for c in fields)
            clauses.append(f"({alias}.track_id IN (SELECT tq.track_id FROM tracks tq WHERE {text}) "
                           f"OR contains(lower({alias}.key), ?))")
            args += [query.q.lower()] * (len(fields) + 1)
        else:
            clauses.append("(" + " OR ".join(f'contains(lower({alias}."{c}"), ?)' for c in fields) + ")")
            args += [query.q.lower()] * len(fields)
    return clauses, args


def _needs_tracks(query: TableQuery) -> bool:
    """A windows page joins the tracks table only to filter or sort by a track's score."""
    own = {"key", "source", "split", "start_s", "duration_s", "bytes", "shard", "f0_trust"}
    return query.sort_column not in own or any(c not in WINDOW_OWN_RANGES for c, _, _ in query.ranges)


def table_page(corpus: Corpus, query: TableQuery) -> Page:
    """The rows of one page of the tracks or windows table, and how many rows the filters keep."""
    windows = query.spec.table == "windows"
    if windows:
        join = _needs_tracks(query)
        source = "windows w" + (" JOIN tracks t ON t.track_id = w.track_id" if join else "")
        clauses, args = _where(query, corpus, "w", "t" if join else None)
        shown = [c for c in WINDOW_SHOWN if c in corpus.columns["windows"]]
        score = query.sort_column if query.sort_column in SCORE_COLUMNS else None
        select = ", ".join([f'w."{c}"' for c in shown] + ([f't."{score}"'] if score else []))
        order_owner = "t" if score else "w"
        tiebreak = "w.key"
    else:
        source = "tracks t"
        clauses, args = _where(query, corpus, "t", None)
        shown = [c for c in ("track_id", *TRACK_SHOWN) if c in corpus.columns["tracks"]]
        extra = [c for c in [query.sort_column, *(c for c, _, _ in query.ranges)]
                 if c in SCORE_COLUMNS and c not in shown]
        score = None
        shown += list(dict.fromkeys(extra))
        select = ", ".join(f't."{c}"' for c in shown)
        order_owner = "t"
        tiebreak = "t.track_id"
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    direction = "DESC" if query.desc else "ASC"
    order = f'{order_owner}."{query.sort_column}" {direction} NULLS LAST, {tiebreak}'
    offset = (query.page - 1) * query.per
    row_id = "w.rowid" if windows else "t.rowid"
    cur = corpus.cursor()
    try:
        total = cur.execute(f"SELECT count(*) FROM {source}{where}", args).fetchone()[0]
        # the sort carries row ids only, then the page's rows are read: a deep page does not sort every column
        result = cur.execute(f"SELECT {select} FROM {source} WHERE {row_id} IN (SELECT {row_id} FROM {source}{where} "
                             f"ORDER BY {order} LIMIT ? OFFSET ?) ORDER BY {order}", [*args, query.per, offset])
        names = [d[0] for d in result.description]
        rows = [dict(zip(names, r, strict=True)) for r in result.fetchall()]
    finally:
        cur.close()
    if score:
        shown.append(score)
    return Page(rows, int(total), query, shown)


def _one(corpus: Corpus, sql: str, args: list[Any]) -> dict[str, Any] | None:
    cur = corpus.cursor()
    try:
        result = cur.execute(sql, args)
        row = result.fetchone()
        return None if row is None else dict(zip([d[0] for d in result.description], row, strict=True))
    finally:
        cur.close()


def _all(corpus: Corpus, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = corpus.cursor()
    try:
        result = cur.execute(sql, args or [])
        names = [d[0] for d in result.description]
        return [dict(zip(names, r, strict=True)) for r in result.fetchall()]
    finally:
        cur.close()


def track(corpus: Corpus, track_id: str) -> dict[str, Any]:
    """One track's row, its windows, and the other copies of its recording (its near-duplicate group)."""
    row = _one(corpus, "SELECT * FROM tracks WHERE track_id = ?", [track_id])
    if row is None:
        raise NotFound(f"no track {track_id!r} in this corpus")
    windows = _all(corpus, "SELECT key, split, start_s, duration_s, reference_key, augmentation_json IS NOT NULL "
                           "AS augmented FROM windows WHERE track_id = ? ORDER BY key", [track_id])
    group = row.get("duplicate_group") or (row.get("duplicate_of") if "duplicate_of" in row else None)
    copies: list[dict[str, Any]] = []
    if group and "duplicate_group" in corpus.columns["tracks"]:
        copies = _all(corpus, "SELECT track_id, source, status, reason_code, duration_s FROM tracks "
                              "WHERE (duplicate_group = ? OR track_id = ?) AND track_id <> ? ORDER BY source",
                      [group, group, track_id])
    return {"track": row, "windows": windows, "copies": copies, "group": group,
            "lineage": _json(row.get("lineage_json")), "extra": _json(row.get("extra_json"))}


def window(corpus: Corpus, key: str) -> dict[str, Any]:
    """One window's catalog row, its track's row, its neighbours in the track, and its reference window's row."""
    row = _one(corpus, "SELECT * FROM windows WHERE key = ?", [key])
    if row is None:
        raise NotFound(f"no sample {key!r} in this corpus")
    track_row = _one(corpus, "SELECT * FROM tracks WHERE track_id = ?", [row["track_id"]]) or {}
    keys = [r["key"] for r in _all(corpus, "SELECT key FROM windows WHERE track_id = ? ORDER BY key",
                                   [row["track_id"]])]
    at = keys.index(key)
    reference = None
    if row.get("reference_key"):
        reference = _one(corpus, "SELECT key, start_s, duration_s FROM windows WHERE key = ?", [row["reference_key"]])
    return {"window": row, "track": track_row, "previous": keys[at - 1] if at > 0 else None,
            "next": keys[at + 1] if at + 1 < len(keys) else None, "reference": reference,
            "reference_key": row.get("reference_key"), "augmentation": _json(row.get("augmentation_json"))}


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


# -- the overview ------------------------------------------------------------------------------------------


def funnel(corpus: Corpus) -> list[dict[str, Any]]:
    """The catalog's ``funnel`` view: (status, stage, reason_code, tracks, hours) per row."""
    from songcorpus.pipelines.sinks.catalog import funnel_rows

    cur = corpus.cursor()
    try:
        rows = funnel_rows(cur)
    finally:
        cur.close()
    return [{"status": s, "stage": st, "reason_code": r, "tracks": int(n), "hours": float(h)}
            for s, st, r, n, h in rows]


def totals(corpus: Corpus) -> dict[str, Any]:
    row = _one(corpus, "SELECT count(*) AS tracks, count(*) FILTER (WHERE status = 'accepted') AS accepted, "
                       "coalesce(sum(duration_s), 0) / 3600 AS hours, "
                       "coalesce(sum(duration_s) FILTER (WHERE status = 'accepted'), 0) / 3600 AS accepted_hours "
                       "FROM tracks", [])
    win = _one(corpus, "SELECT count(*) AS windows, coalesce(sum(duration_s), 0) / 3600 AS window_hours, "
                       "count(*) FILTER (WHERE augmentation_json IS NOT NULL) AS augmented, "
                       "coalesce(sum(bytes), 0) AS window_bytes FROM windows", [])
    shards = _one(corpus, "SELECT count(DISTINCT family) AS families, count(*) AS files, "
                          "coalesce(sum(bytes), 0) AS shard_bytes FROM shards", []) \
        if "family" in corpus.columns["shards"] else {"families": 0, "files": 0, "shard_bytes": 0}
    return {**(row or {}), **(win or {}), **(shards or {})}


def score_histograms(corpus: Corpus) -> list[dict[str, Any]]:
    """Per score column with values: its range, counts per bin for accepted and for other tracks, and the gates on
    it. Bins are equal-width over the observed range (a single value gets one bin)."""
    out = []
    gates_by_score: dict[str, list[Any]] = {}
    for g in corpus.gates:
        gates_by_score.setdefault(g.score, []).append(g)
    cur = corpus.cursor()
    try:
        for col in corpus.score_columns():
            if SCORE_COLUMNS[col][0].equals(pa.bool_()):
                continue
            lo, hi, n = cur.execute(f'SELECT min("{col}")::DOUBLE, max("{col}")::DOUBLE, count("{col}") FROM tracks '
                                    f'WHERE isfinite("{col}"::DOUBLE)').fetchone()
            if not n:
                continue
            width = (hi - lo) / HISTOGRAM_BINS if hi > lo else 1.0
            bins = cur.execute(
                f'SELECT least(floor(("{col}"::DOUBLE - ?) / ?), ?)::INTEGER AS b, '
                f"count(*) FILTER (WHERE status = 'accepted'), count(*) FILTER (WHERE status <> 'accepted') "
                f'FROM tracks WHERE isfinite("{col}"::DOUBLE) GROUP BY b ORDER BY b',
                [lo, width, HISTOGRAM_BINS - 1 if hi > lo else 0]).fetchall()
            counts = {int(b): (int(a), int(r)) for b, a, r in bins}
            nbins = HISTOGRAM_BINS if hi > lo else 1
            out.append({"column": col, "stage": SCORE_COLUMNS[col][1], "unit": SCORE_COLUMNS[col][2],
                        "lo": float(lo), "hi": float(hi if hi > lo else lo + 1.0), "n": int(n),
                        "bins": [counts.get(i, (0, 0)) for i in range(nbins)],
                        "gates": gates_by_score.get(col, [])})
    finally:
        cur.close()
    # gated scores first, in the config's order; then the rest in the schema's
    order = {g.score: i for i, g in enumerate(corpus.gates)}
    return sorted(out, key=lambda h: (h["column"] not in order, order.get(h["column"], 0)))


def balance(corpus: Corpus) -> dict[str, list[dict[str, Any]]]:
    """Accepted tracks (and their hours) by split, language, genre and each method column; windows by split."""
    t = corpus.columns["tracks"]
    out: dict[str, list[dict[str, Any]]] = {}
    groups = [("split", "split"), ("language", "language"), *((m, m) for m in METHOD_COLUMNS)]
    for name, col in groups:
        if col not in t:
            continue
        out[name] = _all(corpus, f'SELECT coalesce("{col}", \'(unknown)\') AS value, count(*) AS tracks, '
                                 f"coalesce(sum(duration_s), 0) / 3600 AS hours FROM tracks "
                                 f"WHERE status = 'accepted' GROUP BY ALL ORDER BY tracks DESC, value LIMIT 30")
    if "tags" in t:
        out["genre"] = _all(corpus, "SELECT trim(tag) AS value, count(*) AS tracks, "
                                    "coalesce(sum(duration_s), 0) / 3600 AS hours FROM "
                                    "(SELECT unnest(string_split(tags, ',')) AS tag, duration_s FROM tracks "
                                    "WHERE status = 'accepted' AND tags IS NOT NULL AND tags <> '') "
                                    "WHERE trim(tag) <> '' GROUP BY ALL ORDER BY tracks DESC, value LIMIT 30")
    out["windows by split"] = _all(corpus, "SELECT split AS value, count(*) AS tracks, "
                                           "coalesce(sum(duration_s), 0) / 3600 AS hours, "
                                           "count(*) FILTER (WHERE augmentation_json IS NOT NULL) AS augmented "
                                           "FROM windows GROUP BY ALL ORDER BY value")
    return out


def duration_histogram(corpus: Corpus) -> dict[str, Any] | None:
    """Accepted tracks' durations in minutes, binned (the balance's duration panel)."""
    lo, hi, n = _one(corpus, "SELECT min(duration_s) AS lo, max(duration_s) AS hi, count(duration_s) AS n FROM tracks "
                             "WHERE status = 'accepted'", []).values()
    if not n:
        return None
    width = (hi - lo) / HISTOGRAM_BINS if hi > lo else 1.0
    bins = _all(corpus, "SELECT least(floor((duration_s - ?) / ?), ?)::INTEGER AS b, count(*) AS n FROM tracks "
                        "WHERE status = 'accepted' AND duration_s IS NOT NULL GROUP BY b ORDER BY b",
                [lo, width, HISTOGRAM_BINS - 1 if hi > lo else 0])
    counts = {r["b"]: r["n"] for r in bins}
    nbins = HISTOGRAM_BINS if hi > lo else 1
    return {"column": "duration_s", "lo": float(lo), "hi": float(hi if hi > lo else lo + 1.0), "n": int(n),
            "bins": [(counts.get(i, 0), 0) for i in range(nbins)], "gates": []}
