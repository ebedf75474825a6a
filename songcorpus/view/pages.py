"""The pages' contents, built once for the server and the static export alike: the overview (funnel, scores against
the gates, balance), the tracks and windows tables, a track, a sample, an evaluation and the evaluations side by side.

Reads the corpus through corpus_queries.py and the evaluations through evaluations.py; renders the Jinja2 templates
in songcorpus/view/templates (autoescaped: every catalog value is escaped); writes nothing. A page's links come from
a links object (links.py), so the same template serves the live server and the exported files. Fails with
:class:`NotFound` or :class:`BadRequest` from the queries (the app turns them into a 404 or 400 page).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, Environment, FileSystemLoader, select_autoescape

from songcorpus.schemas.catalog import METHOD_COLUMNS, SCORE_COLUMNS
from songcorpus.view import charts, corpus_queries, formatting
from songcorpus.view.corpus import Corpus
from songcorpus.view.errors import NotFound
from songcorpus.view.evaluations import Evaluation, step_series
from songcorpus.view.query_params import PER_PAGE_CHOICES

TEMPLATES = Path(__file__).parent / "templates"
STEM_LABELS = {"mix.flac": "mix", "vocals.flac": "vocals", "accompaniment.flac": "accompaniment"}
PRIMARY_FILTERS = ("status", "stage", "reason", "split", "language")  # the rest fold under "methods and format"
COLUMN_LABELS = {"reason_code": "reason", "duration_s": "duration", "n_windows": "windows", "start_s": "start",
                 "track_id": "track", "augmentation_json": "augmentation", "reference_key": "reference"}


@cache
def environment() -> Environment:
    # a column an older catalog lacks renders as nothing (ChainableUndefined), not as an error page
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True),
                      undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    for name in ("hours", "duration", "seconds", "size", "number", "count", "interval", "signed"):
        env.filters[name] = getattr(formatting, name)
    env.filters["percent"] = formatting.percent
    env.globals["column_label"] = lambda c: COLUMN_LABELS.get(c, c.replace("_", " "))
    env.globals["score_unit"] = lambda c: SCORE_COLUMNS[c][2] if c in SCORE_COLUMNS else ""
    env.globals["per_page_choices"] = PER_PAGE_CHOICES
    return env


def render(template: str, context: dict[str, Any]) -> str:
    return environment().get_template(template).render(**context)


def _common(corpus: Corpus, evals: list[Evaluation], links: Any, title: str, section: str) -> dict[str, Any]:
    return {"corpus_name": corpus.name, "links": links, "title": title, "section": section,
            "evaluations": [{"index": e.index, "label": e.label} for e in evals]}


def overview_data(corpus: Corpus) -> dict[str, Any]:
    """The overview's figures (computed once per corpus: the corpus does not change while it is viewed)."""
    return {"totals": corpus_queries.totals(corpus), "funnel": corpus_queries.funnel(corpus),
            "histograms": corpus_queries.score_histograms(corpus), "balance": corpus_queries.balance(corpus),
            "durations": corpus_queries.duration_histogram(corpus)}


def overview(corpus: Corpus, evals: list[Evaluation], links: Any, data: dict[str, Any]) -> dict[str, Any]:
    funnel = data["funnel"]

    def funnel_href(r: dict[str, Any]) -> str:
        params = {"status": r["status"]} if r["status"] == "accepted" else \
            {"status": r["status"], "reason": r["reason_code"]}
        return links.filtered("tracks", **params) or ""

    total = sum(r["tracks"] for r in funnel)
    for r in funnel:
        r["href"] = funnel_href(r) or None
    histograms = []
    for h in data["histograms"]:
        histograms.append({**h, "svg": charts.histogram(h), "href": _sorted_by(links, h["column"])})
    balance = []
    for name, items in data["balance"].items():
        param = {"split": "split", "language": "language"}.get(name, name if name in METHOD_COLUMNS else "")

        def href(item: dict[str, Any], param: str = param) -> str:
            if not param or item["value"] == "(unknown)":
                return ""
            return links.filtered("tracks", status="accepted", **{param: str(item["value"])}) or ""

        hrefs = links.live and param
        balance.append({"name": name, "svg": charts.bars(items, href=href if hrefs else None,
                                                          note=lambda i: f"{formatting.count(i['tracks'])} · "
                                                                         f"{formatting.hours(i['hours'])}")})
    durations = data["durations"]
    return {**_common(corpus, evals, links, "Overview", "overview"), "totals": data["totals"], "funnel": funnel,
            "funnel_total": total, "funnel_hours": sum(r["hours"] for r in funnel),
            "funnel_svg": charts.funnel(funnel, lambda r: r["href"] or "#"), "histograms": histograms,
            "balance": balance, "durations_svg": charts.histogram(durations) if durations else None,
            "gates": corpus.gates}


def _sorted_by(links: Any, column: str) -> str | None:
    if not links.live:
        return None
    return f"{links.table('tracks')}?sort={column}&order=desc"


def table(corpus: Corpus, evals: list[Evaluation], links: Any, page: corpus_queries.Page,
          known: dict[str, set[str]]) -> dict[str, Any]:
    q = page.query
    tracks = q.spec.table == "tracks"
    filters = [{"name": c, "label": COLUMN_LABELS.get(c, c).replace("_", " "), "value": q.value(c),
                "options": sorted(known.get(c, set())), "primary": c in PRIMARY_FILTERS} for c in q.spec.categories]
    ranges = [{"column": c, "min": q.bound(c, "min"), "max": q.bound(c, "max")} for c, _, _ in q.ranges]
    columns = [c for c in page.columns if c not in ("track_id",) or not tracks]
    if not tracks:
        columns = [c for c in columns if c not in ("reference_key", "shard", "bytes")]
    headers = []
    for c in columns:
        sortable = c in q.spec.sorts
        desc_next = not q.desc if q.sort_column == c else c in SCORE_COLUMNS
        headers.append({"column": c, "sorted": q.sort_column == c, "desc": q.desc,
                        "href": links.table(q.spec.table, q, sort=c, desc=desc_next, page=1) if sortable else None})
    pager = {"previous": links.table(q.spec.table, q, page=q.page - 1) if q.page > 1 else None,
             "next": links.table(q.spec.table, q, page=q.page + 1) if q.page < page.pages else None,
             "first": links.table(q.spec.table, q, page=1) if q.page > 1 else None,
             "last": links.table(q.spec.table, q, page=page.pages) if q.page < page.pages else None}
    chips = []
    if links.live:
        t = q.spec.table
        chips += [{"text": f"{k} = {v}", "remove": links.table(t, q, categories=tuple(c for c in q.categories
                                                                                       if c != (k, v)), page=1)}
                  for k, v in q.categories]
        chips += [{"text": f"{k} = {v}", "remove": links.table(t, q, ids=tuple(c for c in q.ids if c != (k, v)),
                                                               page=1)} for k, v in q.ids]
        chips += [{"text": f"{k}: {'yes' if v else 'no'}", "remove": links.table(t, q, flags=tuple(
            c for c in q.flags if c != (k, v)), page=1)} for k, v in q.flags]
        for col, lo, hi in q.ranges:
            text = " ".join(p for p in (f"{lo:g} \u2264" if lo is not None else "", col,
                                        f"\u2264 {hi:g}" if hi is not None else "") if p)
            chips.append({"text": text, "remove": links.table(t, q, ranges=tuple(r for r in q.ranges if r[0] != col),
                                                              page=1)})
        if q.q:
            chips.append({"text": f"text: {q.q}", "remove": links.table(t, q, q="", page=1)})
    return {**_common(corpus, evals, links, q.spec.table.capitalize(), q.spec.table), "page": page, "query": q,
            "chips": chips,
            "columns": columns, "headers": headers, "filters": filters, "ranges": ranges, "pager": pager,
            "range_columns": q.spec.ranges, "table_name": q.spec.table, "is_tracks": tracks,
            "flags": [{"name": f, "value": q.value(f)} for f in q.spec.flags],
            "ids": [{"name": i, "value": q.value(i)} for i in q.spec.ids]}


def track(corpus: Corpus, evals: list[Evaluation], links: Any, track_id: str) -> dict[str, Any]:
    data = corpus_queries.track(corpus, track_id)
    row = data["track"]
    gates = {}
    for g in corpus.gates:
        gates.setdefault(g.score, []).append(g)
    scores = []
    for col in corpus.score_columns():
        value = row.get(col)
        verdicts = []
        for g in gates.get(col, []):
            fails = value is not None and ((g.min is not None and value < g.min) or (g.max is not None and value > g.max))
            bound = (f"\u2265 {formatting.number(g.min)}" if g.min is not None else "") + \
                (" and " if g.min is not None and g.max is not None else "") + \
                (f"\u2264 {formatting.number(g.max)}" if g.max is not None else "")
            verdicts.append({"name": g.name, "bound": bound, "fails": fails})
        if value is None and not verdicts:
            continue
        scores.append({"column": col, "value": value, "stage": SCORE_COLUMNS[col][1], "unit": SCORE_COLUMNS[col][2],
                       "gates": verdicts})
    methods = [(m, row.get(m)) for m in METHOD_COLUMNS if m in row]
    return {**_common(corpus, evals, links, f"Track {row.get('title') or row['source']}", "tracks"), **data,
            "row": row, "scores": scores, "methods": methods,
            "lineage_text": json.dumps(data["lineage"], indent=1, sort_keys=True) if data["lineage"] else None,
            "extra_text": json.dumps(data["extra"], indent=1, sort_keys=True) if data["extra"] else None}


def window(corpus: Corpus, evals: list[Evaluation], links: Any, key: str) -> dict[str, Any]:
    from songcorpus.pipelines.readers.inspect_sample import describe_augmentation

    data = corpus_queries.window(corpus, key)
    row = data["window"]
    offsets = corpus.offsets(key)
    unreadable = None  # a catalog without its shards (copied alone) still shows what the catalog knows
    try:
        meta = json.loads(corpus.read(corpus.member(key, "json"))) if "json" in offsets else {}
    except (NotFound, OSError) as exc:
        meta, unreadable = {}, str(exc)
    augmentation = meta.get("augmentation")
    augmented = row.get("augmentation_json") is not None
    described = describe_augmentation(augmentation) if augmented and augmentation else None
    players = [{"suffix": s, "label": STEM_LABELS[s], "src": links.audio(key, s)} for s in STEM_LABELS
               if s in offsets and unreadable is None]
    labels = meta.get("labels") or {}
    heard = []
    for ev in evals:
        if not ev.has_key(key):
            continue
        kept = ev.kept_stems(ev.evaluated, key)
        heard.append({"index": ev.index, "label": ev.label, "scores": ev.window_scores(key), "systems": ev.systems(),
                      "evaluated": ev.evaluated,
                      "players": [{"label": f"{ev.evaluated} {s}", "src": links.eval_audio(ev.index, ev.evaluated,
                                                                                          key, s)} for s in kept],
                      "lower_is_better": ev.lower_is_better})
    lineage = meta.get("lineage") or []
    return {**_common(corpus, evals, links, f"Sample {key}", "windows"), **data, "row": row, "meta": meta,
            "players": players, "augmented": augmented, "augmentation_text": described,
            "labels": labels, "sections": labels.get("sections") or [], "vad": labels.get("vad_segments") or [],
            "beats": len(labels.get("beats") or []), "downbeats": len(labels.get("downbeats") or []),
            "tempo": labels.get("tempo_bpm"), "caption": (meta.get("metadata") or {}).get("caption"),
            "caption_method": meta.get("caption_method"), "lineage": lineage,
            "drawing": links.drawing(key) if unreadable is None else None,
            "evals_here": heard, "metadata": meta.get("metadata") or {}, "unreadable": unreadable,
            "group": (data["track"] or {}).get("duplicate_group"), "members": sorted(offsets)}


def evaluation(corpus: Corpus, evals: list[Evaluation], links: Any, ev: Evaluation) -> dict[str, Any]:
    systems = ev.systems()
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for r in ev.summary:
        cells.setdefault(r["metric"], {})[r["system"]] = r
    paired: dict[str, dict[str, dict[str, Any]]] = {}
    for r in ev.paired:
        paired.setdefault(r["metric"], {})[r["baseline"]] = r
    baselines = sorted({r["baseline"] for r in ev.paired}, key=lambda b: ("untrained", "floor").index(b)
                       if b in ("untrained", "floor") else 9)
    metrics = []
    for m in ev.metrics():
        rows = [dict(cells[m][s]) for s in systems if s in cells[m]]
        metrics.append({"metric": m, "cells": cells[m], "paired": paired.get(m, {}),
                        "lower": m in ev.lower_is_better, "svg": charts.intervals(rows)})
    window_metrics, per_window = ev.per_window()
    for w in per_window:
        w["href"] = links.window(w["key"])
        w["players"] = [{"label": f"{ev.evaluated} {s}", "src": links.eval_audio(ev.index, ev.evaluated, w["key"], s)}
                        for s in ev.kept_stems(ev.evaluated, w["key"])] if w["href"] is None else []
    steps = {m: charts.against_step(series) for m, series in step_series([e for e in evals
                                                                            if e.info.get("run") == ev.info.get("run")]).items()}
    return {**_common(corpus, evals, links, f"Evaluation {ev.label}", "evals"), "ev": ev, "systems": systems,
            "metrics": metrics, "baselines": baselines, "window_metrics": window_metrics, "per_window": per_window,
            "steps": steps, "info": ev.info}


def evaluations(corpus: Corpus, evals: list[Evaluation], links: Any) -> dict[str, Any]:
    metrics = sorted({m for e in evals for m in e.metrics()})
    rows = []
    for m in metrics:
        cells = []
        for e in evals:
            hit = next((r for r in e.summary if r["metric"] == m and r["system"] == e.evaluated), None)
            cells.append(hit)
        rows.append({"metric": m, "cells": cells, "lower": any(m in e.lower_is_better for e in evals)})
    steps = {m: charts.against_step(series) for m, series in step_series(evals).items()}
    return {**_common(corpus, evals, links, "Evaluations", "evals"), "evals": evals, "rows": rows, "steps": steps}
