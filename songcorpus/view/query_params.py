"""A table page's URL parameters, parsed against allow-lists into a :class:`TableQuery` (and back into a URL).

Reads a request's query pairs; writes nothing. Every column a parameter names is checked against the table's
allow-list (:class:`TableSpec`); categorical values against the values the catalog holds; numbers must be finite and
in range; text is length-limited. SQL is never built from a value here: corpus_queries.py binds them. Fails with
:class:`BadRequest` naming the parameter and what it accepts (the app answers 400 with that line).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from songcorpus.view.errors import BadRequest

PER_PAGE = 50
PER_PAGE_CHOICES = (10, 25, 50, 100, 200, 500)
MAX_PAGE = 10_000_000
MAX_TEXT = 200


@dataclass(frozen=True)
class TableSpec:
    """What one table page lets a user filter and sort by."""

    table: str  # "tracks" or "windows"
    sorts: tuple[str, ...]  # columns a page may be sorted by (the first is the default)
    categories: tuple[str, ...]  # exact-match filters: parameter name = column name
    ranges: tuple[str, ...]  # numeric columns with min.<col> / max.<col>
    flags: tuple[str, ...] = ()  # yes/no filters
    ids: tuple[str, ...] = ()  # free identifiers matched exactly (a track id, a duplicate group)


@dataclass(frozen=True)
class TableQuery:
    """One table page as asked for: filters, sort and page; :meth:`params` gives it back as URL pairs."""

    spec: TableSpec
    categories: tuple[tuple[str, str], ...] = ()
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    flags: tuple[tuple[str, bool], ...] = ()
    ids: tuple[tuple[str, str], ...] = ()
    q: str = ""
    sort: str = ""
    desc: bool = False
    page: int = 1
    per: int = PER_PAGE
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def sort_column(self) -> str:
        return self.sort or self.spec.sorts[0]

    def params(self, **changes: object) -> list[tuple[str, str]]:
        """URL pairs of this query with ``changes`` (page, sort, desc, per) applied; defaults left out."""
        q = replace(self, **changes) if changes else self
        pairs: list[tuple[str, str]] = [(k, v) for k, v in q.categories]
        pairs += [(k, v) for k, v in q.ids]
        pairs += [(k, "yes" if v else "no") for k, v in q.flags]
        for col, lo, hi in q.ranges:
            if lo is not None:
                pairs.append((f"min.{col}", f"{lo:g}"))
            if hi is not None:
                pairs.append((f"max.{col}", f"{hi:g}"))
        if q.q:
            pairs.append(("q", q.q))
        if q.sort and q.sort != q.spec.sorts[0]:
            pairs.append(("sort", q.sort))
        if q.desc:
            pairs.append(("order", "desc"))
        if q.per != PER_PAGE:
            pairs.append(("per", str(q.per)))
        if q.page != 1:
            pairs.append(("page", str(q.page)))
        return pairs

    def query_string(self, **changes: object) -> str:
        return urlencode(self.params(**changes))

    def filtered(self) -> bool:
        return bool(self.categories or self.ranges or self.flags or self.ids or self.q)

    def value(self, name: str) -> str:
        """The filter value of ``name`` as shown in the form ("" when unset)."""
        for pairs in (self.categories, self.ids):
            for k, v in pairs:
                if k == name:
                    return v
        for k, flag in self.flags:
            if k == name:
                return "yes" if flag else "no"
        return ""

    def bound(self, col: str, which: str) -> str:
        for c, lo, hi in self.ranges:
            if c == col:
                v = lo if which == "min" else hi
                return "" if v is None else f"{v:g}"
        return ""


def parse_table_query(spec: TableSpec, pairs: Iterable[tuple[str, str]],
                      known_values: Mapping[str, set[str]]) -> TableQuery:
    """``pairs`` (a request's query) as a :class:`TableQuery`; ``known_values``: the values each categorical column
    holds in the catalog. Empty values are unset (a form sends every field)."""
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key in seen:
            raise BadRequest(f"parameter {key!r} given twice; give it once")
        seen[key] = value
    categories, ids, flags, ranges = [], [], [], {}
    q, sort, desc, page, per = "", "", False, 1, PER_PAGE
    form_score = seen.pop("score", "").strip()  # the form's way to add a range: score=COL&min=A&max=B
    form_bounds = {k: seen.pop(k).strip() for k in ("min", "max") if k in seen}
    if form_score:
        for which, value in form_bounds.items():
            if value:
                seen.setdefault(f"{which}.{form_score}", value)
    for key, value in seen.items():
        value = value.strip()
        if _bad_text(value):
            raise BadRequest(f"parameter {key!r} is longer than {MAX_TEXT} characters or holds control characters")
        if value == "":
            continue
        if key in spec.categories:
            known = known_values.get(key, set())
            if value not in known:
                shown = ", ".join(sorted(known)[:20]) or "(none)"
                raise BadRequest(f"{key}={value!r} is not a value this corpus holds; it holds: {shown}")
            categories.append((key, value))
        elif key in spec.ids:
            ids.append((key, value))
        elif key in spec.flags:
            if value not in ("yes", "no"):
                raise BadRequest(f"{key} must be yes or no, not {value!r}")
            flags.append((key, value == "yes"))
        elif key.startswith(("min.", "max.")):
            which, _, col = key.partition(".")
            if col not in spec.ranges:
                raise BadRequest(f"{key!r}: {col!r} is not a numeric column of {spec.table}; ranges apply to "
                                 f"{', '.join(spec.ranges)}")
            lo, hi = ranges.get(col, (None, None))
            number = _float(key, value)
            ranges[col] = (number, hi) if which == "min" else (lo, number)
        elif key == "q":
            q = value
        elif key == "sort":
            if value not in spec.sorts:
                raise BadRequest(f"sort={value!r} is not a column {spec.table} can be sorted by; choose one of "
                                 f"{', '.join(spec.sorts)}")
            sort = value
        elif key == "order":
            if value not in ("asc", "desc"):
                raise BadRequest(f"order must be asc or desc, not {value!r}")
            desc = value == "desc"
        elif key == "page":
            page = _int(key, value, 1, MAX_PAGE)
        elif key == "per":
            per = _int(key, value, 1, max(PER_PAGE_CHOICES))
            if per not in PER_PAGE_CHOICES:
                raise BadRequest(f"per must be one of {', '.join(map(str, PER_PAGE_CHOICES))}, not {per}")
        else:
            known = ["q", "sort", "order", "page", "per", *spec.categories, *spec.ids, *spec.flags,
                     "min.<column>", "max.<column>", "score with min and max"]
            raise BadRequest(f"unknown parameter {key!r} for {spec.table}; known: {', '.join(known)}")
    for col, (lo, hi) in ranges.items():
        if lo is not None and hi is not None and lo > hi:
            raise BadRequest(f"min.{col}={lo:g} is above max.{col}={hi:g}")
    return TableQuery(spec, tuple(categories), tuple((c, lo, hi) for c, (lo, hi) in ranges.items()), tuple(flags),
                      tuple(ids), q, sort, desc, page, per)


def _bad_text(value: str) -> bool:
    return len(value) > MAX_TEXT or any(ord(ch) < 32 or ord(ch) == 127 for ch in value)


def _int(key: str, value: str, lo: int, hi: int) -> int:
    if not value.isascii() or not value.isdigit():
        raise BadRequest(f"{key} must be a whole number from {lo} to {hi}, not {value!r}")
    number = int(value)
    if not lo <= number <= hi:
        raise BadRequest(f"{key} must be from {lo} to {hi}, not {number}")
    return number


def _float(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{key} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise BadRequest(f"{key} must be a finite number, not {value!r}")
    return number
