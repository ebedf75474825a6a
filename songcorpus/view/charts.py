"""Charts drawn on the server as inline SVG: the funnel, score histograms with the gates' thresholds, balance bars,
systems with their intervals per metric, and a metric against the checkpoint step.

Pure functions from figures to SVG markup (no JavaScript, no CDN: a page and its static export draw the same
without a network). Every text in a chart is escaped; colours come from classes in static/style.css. Reads and
writes nothing; empty input draws an empty chart with a note, never fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup, escape

from songcorpus.view.formatting import count, hours, number

FONT = 11


def _svg(width: float, height: float, body: list[str], label: str) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
                  f'height="{height:.0f}" role="img" aria-label="{escape(label)}" '
                  f'xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "start") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{escape(text)}</text>')


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def funnel(rows: Sequence[dict[str, Any]], href: Callable[[dict[str, Any]], str], width: int = 640) -> Markup:
    """One bar per funnel row (status, stage, reason), as long as its tracks, labelled with tracks and hours; each bar
    links to the tracks it counts."""
    if not rows:
        return _svg(width, 30, [_text(4, 18, "no tracks", "note")], "funnel: no tracks")
    label_w, bar_h, gap = 230, 18, 6
    most = max(r["tracks"] for r in rows) or 1
    room = width - label_w - 150
    body = []
    for i, r in enumerate(rows):
        y = i * (bar_h + gap) + 4
        w = max(2.0, room * r["tracks"] / most)
        what = "accepted" if r["status"] == "accepted" else f'{r["status"]}: {r["stage"]} / {r["reason_code"]}'
        tip = f'{what}: {count(r["tracks"])} tracks, {hours(r["hours"])}'
        shown = f"{count(r['tracks'])} · {hours(r['hours'])}"
        body.append(f'<a href="{escape(href(r))}"><title>{escape(tip)}</title>'
                    f'{_text(label_w - 6, y + 13, what, "label", "end")}'
                    f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" class="bar bar-{escape(r["status"])}"/>'
                    f'{_text(label_w + w + 6, y + 13, shown, "value")}</a>')
    return _svg(width, len(rows) * (bar_h + gap) + 8, body, "funnel: tracks per status, stage and reason")


def histogram(h: dict[str, Any], width: int = 300, height: int = 130) -> Markup:
    """Stacked bars (accepted below, rejected or failed above) over a score's range, with each gate's threshold as a
    dashed line labelled with its name; a threshold outside the data widens the axis to show it."""
    bins = h["bins"]
    marks = [(g.min, "min", g.name) for g in h["gates"] if g.min is not None] + \
            [(g.max, "max", g.name) for g in h["gates"] if g.max is not None]
    lo, hi = h["lo"], h["hi"]
    dlo, dhi = min([lo, *(m[0] for m in marks)]), max([hi, *(m[0] for m in marks)])
    if dhi <= dlo:
        dhi = dlo + 1.0
    pad_l, pad_r, pad_t, pad_b = 34, 8, 16, 22
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(v: float) -> float:
        return pad_l + plot_w * (v - dlo) / (dhi - dlo)

    tallest = max((a + r for a, r in bins), default=0) or 1
    step = (hi - lo) / len(bins)
    body = [f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" class="axis"/>']
    for i, (acc, other) in enumerate(bins):
        x0, x1 = x(lo + i * step), x(lo + (i + 1) * step)
        ya = plot_h * acc / tallest
        yo = plot_h * other / tallest
        tip = f"{number(lo + i * step)} to {number(lo + (i + 1) * step)}: {acc} accepted, {other} rejected or failed"
        body.append(f"<g><title>{escape(tip)}</title>"
                    f'<rect x="{x0:.1f}" y="{pad_t + plot_h - ya:.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" '
                    f'height="{ya:.1f}" class="bar bar-accepted"/>'
                    f'<rect x="{x0:.1f}" y="{pad_t + plot_h - ya - yo:.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" '
                    f'height="{yo:.1f}" class="bar bar-rejected"/></g>')
    for t in _ticks(dlo, dhi):
        body.append(_text(x(t), height - 6, number(t), "tick", "middle"))
    body.append(_text(pad_l - 4, pad_t + 8, count(tallest), "tick", "end"))
    for i, (v, which, name) in enumerate(marks):
        xv = x(v)
        sign = "\u2265" if which == "min" else "\u2264"
        left = xv < width * 0.6
        label = _text(xv + (3 if left else -3), pad_t + 6 + 11 * i, f"{name} {sign} {number(v)}", "gate-label",
                      "start" if left else "end")
        body.append(f'<g class="gate"><title>{escape(f"gate {name}: keep {sign} {number(v)}")}</title>'
                    f'<line x1="{xv:.1f}" y1="{pad_t - 4}" x2="{xv:.1f}" y2="{pad_t + plot_h}" class="gate-line"/>'
                    f"{label}</g>")
    return _svg(width, height, body, f"distribution of {h['column']}")


def bars(items: Sequence[dict[str, Any]], value: str = "tracks", width: int = 320,
         href: Callable[[dict[str, Any]], str] | None = None, note: Callable[[dict[str, Any]], str] | None = None
         ) -> Markup:
    """Horizontal bars, one per item (``item["value"]`` its label, ``item[value]`` its length)."""
    if not items:
        return _svg(width, 24, [_text(4, 16, "none", "note")], "no values")
    label_w, bar_h, gap = 110, 14, 5
    most = max(float(i[value] or 0) for i in items) or 1.0
    room = width - label_w - 90
    body = []
    for k, item in enumerate(items):
        y = k * (bar_h + gap) + 2
        w = max(1.5, room * float(item[value] or 0) / most)
        label = str(item["value"])
        shown = label if len(label) <= 18 else label[:17] + "\u2026"
        extra = note(item) if note else count(item[value])
        bar = (f'<title>{escape(label)}: {escape(extra)}</title>{_text(label_w - 4, y + 11, shown, "label", "end")}'
               f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" class="bar bar-neutral"/>'
               f'{_text(label_w + w + 4, y + 11, extra, "value")}')
        body.append(f'<a href="{escape(href(item))}">{bar}</a>' if href else f"<g>{bar}</g>")
    return _svg(width, len(items) * (bar_h + gap) + 4, body, "counts")


def intervals(rows: Sequence[dict[str, Any]], width: int = 360) -> Markup:
    """One line per system: its mean as a dot, its 95 % interval as a whisker, on one axis per metric."""
    rows = [r for r in rows if r.get("mean") is not None and math.isfinite(r["mean"])]
    if not rows:
        return _svg(width, 24, [_text(4, 16, "no values", "note")], "no values")
    values = [v for r in rows for v in (r["mean"], r.get("ci_low"), r.get("ci_high"))
              if v is not None and math.isfinite(v)]
    lo, hi = min(values), max(values)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    label_w, row_h = 100, 18
    plot_w = width - label_w - 12

    def x(v: float) -> float:
        return label_w + plot_w * (v - lo) / (hi - lo)

    body = []
    for k, r in enumerate(rows):
        y = k * row_h + 10
        cls = "model" if r["system"] == "model" else "reference"
        tip = f"{r['system']}: {number(r['mean'])} [{number(r.get('ci_low'))}, {number(r.get('ci_high'))}]"
        body.append(f'<g class="{cls}"><title>{escape(tip)}</title>{_text(label_w - 6, y + 4, r["system"], "label", "end")}')
        if r.get("ci_low") is not None and r.get("ci_high") is not None:
            body.append(f'<line x1="{x(r["ci_low"]):.1f}" y1="{y}" x2="{x(r["ci_high"]):.1f}" y2="{y}" class="whisker"/>')
        body.append(f'<circle cx="{x(r["mean"]):.1f}" cy="{y}" r="4" class="dot"/></g>')
    axis_y = len(rows) * row_h + 6
    body.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" class="axis"/>')
    for t in _ticks(lo, hi):
        body.append(_text(x(t), axis_y + 13, number(t), "tick", "middle"))
    return _svg(width, axis_y + 18, body, "systems with their 95 % intervals")


def against_step(series: Sequence[dict[str, Any]], width: int = 360, height: int = 150) -> Markup:
    """A metric against the checkpoint step: one line per run, each point with its interval."""
    points = [p for s in series for p in s["points"] if p["mean"] is not None and math.isfinite(p["mean"])]
    if not points:
        return _svg(width, 24, [_text(4, 16, "no values", "note")], "no values")
    xs = [p["step"] for p in points]
    ys = [v for p in points for v in (p["mean"], p.get("ci_low"), p.get("ci_high")) if v is not None]
    xlo, xhi = min(xs), max(xs)
    if xhi <= xlo:
        xlo, xhi = xlo - 1, xhi + 1
    ylo, yhi = min(ys), max(ys)
    if yhi <= ylo:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    pad_l, pad_r, pad_t, pad_b = 44, 10, 10, 24
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def px(v: float) -> float:
        return pad_l + pw * (v - xlo) / (xhi - xlo)

    def py(v: float) -> float:
        return pad_t + ph * (1 - (v - ylo) / (yhi - ylo))

    body = [f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" class="axis"/>',
            f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" class="axis"/>']
    steps = sorted(set(xs))
    for t in steps if len(steps) <= 8 else sorted({round(t) for t in _ticks(xlo, xhi)}):  # steps are whole numbers
        body.append(_text(px(t), height - 8, count(t), "tick", "middle"))
    for t in _ticks(ylo, yhi, 3):
        body.append(_text(pad_l - 4, py(t) + 4, number(t), "tick", "end"))
    for k, s in enumerate(series):
        pts = sorted((p for p in s["points"] if p["mean"] is not None and math.isfinite(p["mean"])),
                     key=lambda p: p["step"])
        cls = f"series series-{k % 4}"
        if len(pts) > 1:
            path = " ".join(f"{px(p['step']):.1f},{py(p['mean']):.1f}" for p in pts)
            body.append(f'<polyline points="{path}" class="{cls} line"/>')
        for p in pts:
            if p.get("ci_low") is not None and p.get("ci_high") is not None:
                body.append(f'<line x1="{px(p["step"]):.1f}" y1="{py(p["ci_low"]):.1f}" x2="{px(p["step"]):.1f}" '
                            f'y2="{py(p["ci_high"]):.1f}" class="{cls} whisker"/>')
            body.append(f'<circle cx="{px(p["step"]):.1f}" cy="{py(p["mean"]):.1f}" r="3.5" class="{cls} dot">'
                        f'<title>{escape(s["label"])} step {p["step"]}: {escape(number(p["mean"]))}</title></circle>')
    return _svg(width, height, body, "metric against checkpoint step")
