"""The ``songcorpus inspect`` drawing of one sample as PNG bytes, for the sample page (pipelines/readers/inspect_sample.py
draws it; this module only hands it a temporary file, turns the PNG into a 128-colour one, about a third of the
size and the same to the eye, and keeps the last few in memory).

Reads the sample's members (given as bytes); writes one PNG into a temporary folder and removes it. Matplotlib's
pyplot is not thread-safe, so one drawing is made at a time. Fails as ``draw_sample`` does on a sample without its
JSON member (the app answers 404 for a key the catalog does not hold before it gets here).
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

KEPT = 32  # drawings kept in memory (about 400 KB each)
COLOURS = 128

_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()


def drawing_png(key: tuple[str, str], members: dict[str, bytes]) -> bytes:
    """The PNG of a sample from its ``members``; ``key`` (corpus name, sample key) finds a recent one in memory."""
    from songcorpus.pipelines.readers.inspect_sample import draw_sample

    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        with tempfile.TemporaryDirectory(prefix="songcorpus-view-") as tmp:
            png = Path(tmp) / "sample.png"
            draw_sample(members, png)
            data = _palette(png.read_bytes())
        _cache[key] = data
        while len(_cache) > KEPT:
            _cache.popitem(last=False)
        return data


def _palette(png: bytes) -> bytes:
    """``png`` with a palette of :data:`COLOURS` colours (the spectrograms' colour map has few that matter)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
