"""Where a page's links point: the server's URLs (every filter and page live), or the static export's relative file
names (only the pages it wrote; a link to anything else is left out, so a shared export has no dead links).

Pure naming: reads and writes nothing. Every path part that comes from the catalog (a key, a track id) is
percent-quoted for a URL and, for a file name, kept only when it is made of safe characters (else its hash names
the file), so no catalog value can name a path outside the export.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, urlencode

from songcorpus.view.query_params import TableQuery

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,150}$")


def safe_name(value: str) -> str:
    """``value`` as one file name: itself when made of letters, digits, ``_ . -`` (no leading dot), else a hash."""
    return value if _SAFE.match(value) and ".." not in value else "h" + hashlib.sha256(value.encode()).hexdigest()[:32]


class ServerLinks:
    """The server's URLs; everything is reachable, filters and sorting are live."""

    live = True

    def home(self) -> str:
        return "/"

    def static(self, name: str) -> str:
        return f"/static/{name}"

    def table(self, table: str, query: TableQuery | None = None, **changes: object) -> str | None:
        qs = query.query_string(**changes) if query is not None else ""
        return f"/{table}" + (f"?{qs}" if qs else "")

    def filtered(self, table: str, **params: str) -> str | None:
        pairs = [(k, v) for k, v in params.items() if v not in (None, "")]
        return f"/{table}" + (f"?{urlencode(pairs)}" if pairs else "")

    def track(self, track_id: str) -> str | None:
        return f"/track/{quote(track_id, safe='')}"

    def window(self, key: str) -> str | None:
        return f"/window/{quote(key, safe='')}"

    def audio(self, key: str, suffix: str) -> str | None:
        return f"/audio/{quote(key, safe='')}/{quote(suffix, safe='')}"

    def drawing(self, key: str) -> str | None:
        return f"/drawing/{quote(key, safe='')}.png"

    def evals(self) -> str:
        return "/evals"

    def evaluation(self, index: int) -> str:
        return f"/eval/{index}"

    def eval_audio(self, index: int, system: str, key: str, stem: str) -> str | None:
        return f"/eval/{index}/audio/{quote(system, safe='')}/{quote(key, safe='')}/{quote(stem, safe='')}.flac"


class StaticLinks:
    """The export's relative file names, from a page ``depth`` folders below the export's root; only what was
    written is linked (the writer records it here as it plans)."""

    live = False

    def __init__(self, depth: int = 0, plan: StaticPlan | None = None) -> None:
        self.up = "../" * depth
        self.plan = plan or StaticPlan()

    def at(self, depth: int) -> StaticLinks:
        return StaticLinks(depth, self.plan)

    def home(self) -> str:
        return f"{self.up}index.html"

    def static(self, name: str) -> str:
        return f"{self.up}{name}"

    def table(self, table: str, query: TableQuery | None = None, **changes: object) -> str | None:
        page = int(changes.get("page", query.page if query else 1))  # type: ignore[call-overload]
        view = self.plan.view_of(table, query)
        if view is None or page > self.plan.pages.get((table, view), 0):
            return None
        return f"{self.up}{table}/{view}-{page:04d}.html"

    def filtered(self, table: str, **params: str) -> str | None:
        view = self.plan.views.get((table, tuple(sorted((k, v) for k, v in params.items() if v))))
        return None if view is None else f"{self.up}{table}/{view}-0001.html"

    def track(self, track_id: str) -> str | None:
        return f"{self.up}track/{safe_name(track_id)}.html" if track_id in self.plan.tracks else None

    def window(self, key: str) -> str | None:
        return f"{self.up}window/{safe_name(key)}.html" if key in self.plan.windows else None

    def audio(self, key: str, suffix: str) -> str | None:
        return f"{self.up}audio/{safe_name(key)}.{suffix}" if key in self.plan.windows else None

    def drawing(self, key: str) -> str | None:
        return f"{self.up}drawing/{safe_name(key)}.png" if key in self.plan.windows else None

    def evals(self) -> str:
        return f"{self.up}evals.html"

    def evaluation(self, index: int) -> str:
        return f"{self.up}eval/{index}.html"

    def eval_audio(self, index: int, system: str, key: str, stem: str) -> str | None:
        if (index, system, key) not in self.plan.eval_audio:
            return None
        return f"{self.up}eval/{index}/{safe_name(system)}/{safe_name(key)}.{stem}.flac"


class StaticPlan:
    """What a static export holds: table views and their page counts, the tracks and windows with pages, and the
    evaluation audio copied."""

    def __init__(self) -> None:
        self.views: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}  # (table, filters) -> view name
        self.pages: dict[tuple[str, str], int] = {}  # (table, view) -> pages
        self.tracks: set[str] = set()
        self.windows: set[str] = set()
        self.eval_audio: set[tuple[int, str, str]] = set()

    def view_of(self, table: str, query: TableQuery | None) -> str | None:
        filters: tuple[tuple[str, str], ...] = ()
        if query is not None:
            if query.ranges or query.flags or query.q or query.sort or query.desc:
                return None
            filters = tuple(sorted((*query.categories, *query.ids)))
        return self.views.get((table, filters))
