"""Byte ranges of audio for the browser's ``<audio>``: HTTP Range requests (RFC 9110) over a shard member that lies
inside a tar at an offset, or over an evaluation's FLAC file.

Reads only the bytes asked for, through a ``read(start, length)`` function the caller resolved from the catalog
(corpus.py) or an evaluation's allow-list (evaluations.py); writes nothing. One range per request (a multi-range
request gets the first, as browsers only send one); no Range header gives the whole member. Fails with
:class:`RangeNotSatisfiable` for a range outside the member (the app answers 416 with ``Content-Range: bytes */N``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.responses import Response

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


class RangeNotSatisfiable(ValueError):
    def __init__(self, size: int, header: str) -> None:
        super().__init__(f"range {header!r} is outside the member's {size} bytes")
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of the one range ``header`` asks for; None for the whole member (no header, or
    one this server does not read: a unit other than bytes)."""
    if not header:
        return None
    first_range = header.split(",", 1)[0]
    m = _RANGE.match(first_range)
    if m is None:
        if header.strip().lower().startswith("bytes"):
            raise RangeNotSatisfiable(size, header)
        return None
    a, b = m.groups()
    if a == "" and b == "":
        raise RangeNotSatisfiable(size, header)
    if a == "":  # the last b bytes
        n = int(b)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size, header)
        return max(0, size - n), size - 1
    first = int(a)
    last = size - 1 if b == "" else min(int(b), size - 1)
    if first >= size or last < first:
        raise RangeNotSatisfiable(size, header)
    return first, last


def ranged(read: Callable[[int, int], bytes], size: int, content_type: str, range_header: str | None,
           head: bool = False) -> Response:
    """A 200 with the whole member, or a 206 with the asked range; ``Accept-Ranges`` either way, so the browser can
    seek. ``head``: the headers only."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600",
               "X-Content-Type-Options": "nosniff"}
    try:
        span = parse_range(range_header, size)
    except RangeNotSatisfiable as exc:
        return Response(f"{exc}\n", status_code=416, media_type="text/plain",
                        headers={**headers, "Content-Range": f"bytes */{exc.size}"})
    first, last = span if span is not None else (0, size - 1)
    length = max(0, last - first + 1)
    body = b"" if head else read(first, length)
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    response = Response(body, status_code=206 if span is not None else 200, media_type=content_type, headers=headers)
    response.headers["Content-Length"] = str(length)
    return response
