"""The view's web app (Starlette): read-only pages over one corpus and its evaluations, audio by byte range, the
``inspect`` drawing, and the guards every request passes first.

Reads what corpus.py and evaluations.py resolve (catalog rows, shard members at their offsets, kept evaluation
audio, the packaged stylesheet); writes nothing, anywhere. Guards: GET and HEAD only (405 otherwise); a path with a
``..`` or ``.`` segment, a backslash or a NUL, decoded once or twice, is refused (400) before routing; on loopback
only Host names of this machine are served (no DNS rebinding); a query parameter that is unknown, ill-typed, off an
allow-list or too long is a 400 with one line saying what is accepted; a key the catalog does not hold is a 404.
Every response carries a Content-Security-Policy that allows nothing from elsewhere and no script. An unexpected
error is a 500 page with one line (its traceback goes to the server's log, never to the browser).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from songcorpus.view import corpus_queries, pages
from songcorpus.view.corpus import AUDIO_TYPES, Corpus
from songcorpus.view.drawing import drawing_png
from songcorpus.view.errors import BadRequest, NotFound
from songcorpus.view.evaluations import Evaluation
from songcorpus.view.links import ServerLinks
from songcorpus.view.media import ranged
from songcorpus.view.query_params import parse_table_query

log = logging.getLogger("songcorpus.view")
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"style.css": "text/css; charset=utf-8"}  # the only files served from the package
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class Guard:
    """ASGI middleware before routing: methods, path segments, and the security headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode().lower() not in {h.lower() for h in SECURITY_HEADERS}]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)

    @staticmethod
    def _refusal(scope: Scope) -> Response | None:
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse("this view is read-only: GET and HEAD only\n", status_code=405,
                                     headers={"Allow": "GET, HEAD"})
        raw = scope.get("raw_path") or scope["path"].encode()
        text = raw.decode("latin-1").split("?", 1)[0]
        for form in (scope["path"], unquote(text), unquote(unquote(text))):
            if "\\" in form or "\x00" in form or any(seg in (".", "..") for seg in form.split("/")):
                return PlainTextResponse("refused: the path leaves the corpus or is not a plain path\n",
                                         status_code=400)
        return None


class ViewApp:
    """The routes' state: the corpus, its evaluations, and the overview's figures once computed."""

    def __init__(self, corpus: Corpus, evals: list[Evaluation]) -> None:
        self.corpus = corpus
        self.evals = evals
        self.links = ServerLinks()
        self.specs = corpus_queries.table_specs(corpus)
        self.known = corpus_queries.known_values(corpus)
        self._overview: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def overview_data(self) -> dict[str, Any]:
        with self._lock:
            if self._overview is None:
                self._overview = pages.overview_data(self.corpus)
            return self._overview

    def html(self, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        return HTMLResponse(pages.render(template, context), status_code=status)

    # -- pages --------------------------------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        return self.html("overview.html", pages.overview(self.corpus, self.evals, self.links, self.overview_data()))

    def table(self, request: Request) -> Response:
        name = request.url.path.strip("/")
        query = parse_table_query(self.specs[name], request.query_params.multi_items(), self.known)
        page = corpus_queries.table_page(self.corpus, query)
        return self.html("table.html", pages.table(self.corpus, self.evals, self.links, page, self.known))

    def track(self, request: Request) -> Response:
        return self.html("track.html", pages.track(self.corpus, self.evals, self.links,
                                                   request.path_params["track_id"]))

    def window(self, request: Request) -> Response:
        return self.html("window.html", pages.window(self.corpus, self.evals, self.links, request.path_params["key"]))

    def evaluations(self, request: Request) -> Response:
        if not self.evals:
            raise NotFound("no evaluation was given (songcorpus view OUT --eval EVAL)")
        return self.html("evals.html", pages.evaluations(self.corpus, self.evals, self.links))

    def evaluation(self, request: Request) -> Response:
        return self.html("eval.html", pages.evaluation(self.corpus, self.evals, self.links,
                                                       self._eval(request.path_params["index"])))

    # -- media --------------------------------------------------------------------------------------------
    def audio(self, request: Request) -> Response:
        key, suffix = request.path_params["key"], request.path_params["member"]
        if not suffix.endswith(tuple(AUDIO_TYPES)):
            raise NotFound(f"{suffix!r} is not an audio member")
        member = self.corpus.member(key, suffix)
        return ranged(lambda start, n: self.corpus.read(member, start, n), member.size, member.content_type,
                      request.headers.get("range"), head=request.method == "HEAD")

    def drawing(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not name.endswith(".png"):
            raise NotFound(f"no drawing {name!r}")
        key = name[: -len(".png")]
        members = self.corpus.members(key)
        png = drawing_png((self.corpus.name, key), members)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    def eval_audio(self, request: Request) -> Response:
        ev = self._eval(request.path_params["index"])
        stem = request.path_params["stem"]
        if not stem.endswith(".flac"):
            raise NotFound(f"no audio {stem!r}")
        path = ev.audio_file(request.path_params["system"], request.path_params["key"], stem[: -len(".flac")])
        size = path.stat().st_size

        def read(start: int, n: int) -> bytes:
            with open(path, "rb") as fh:
                fh.seek(start)
                return fh.read(n)

        return ranged(read, size, "audio/flac", request.headers.get("range"), head=request.method == "HEAD")

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            raise NotFound(f"no file {name!r}")
        return Response((STATIC / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "private, max-age=600"})

    def _eval(self, index: str) -> Evaluation:
        if not index.isascii() or not index.isdigit() or int(index) >= len(self.evals):
            raise NotFound(f"no evaluation {index!r}; there are {len(self.evals)}")
        return self.evals[int(index)]

    # -- errors -------------------------------------------------------------------------------------------
    def error_page(self, request: Request, status: int, heading: str, message: str) -> Response:
        context = {"corpus_name": self.corpus.name, "links": self.links, "title": heading, "section": "",
                   "evaluations": [{"index": e.index, "label": e.label} for e in self.evals], "status": status,
                   "heading": heading, "message": message}
        return self.html("error.html", context, status)


def create_app(corpus: Corpus, evals: list[Evaluation], loopback: bool = True) -> Starlette:
    """The app over an open corpus and evaluations; ``loopback``: serve only requests naming this machine."""
    view = ViewApp(corpus, evals)
    routes = [
        Route("/", view.overview),
        Route("/tracks", view.table),
        Route("/windows", view.table),
        Route("/track/{track_id}", view.track),
        Route("/window/{key}", view.window),
        Route("/audio/{key}/{member}", view.audio),
        Route("/drawing/{name}", view.drawing),
        Route("/evals", view.evaluations),
        Route("/eval/{index}", view.evaluation),
        Route("/eval/{index}/audio/{system}/{key}/{stem}", view.eval_audio),
        Route("/static/{name}", view.static),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
    ]

    async def bad_request(request: Request, exc: Exception) -> Response:
        return view.error_page(request, 400, "Bad request", str(exc))

    async def not_found(request: Request, exc: Exception) -> Response:
        return view.error_page(request, 404, "Not found", str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return PlainTextResponse("this view is read-only: GET and HEAD only\n", status_code=405,
                                     headers={"Allow": "GET, HEAD"})
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return view.error_page(request, exc.status_code, "Not found" if exc.status_code == 404 else "Error", message)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return PlainTextResponse("internal error while making this page; the server's log says why\n",
                                 status_code=500)

    middleware = [Middleware(Guard)]
    if loopback:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={BadRequest: bad_request, NotFound: not_found, HTTPException: http_error,
                                         Exception: server_error})
