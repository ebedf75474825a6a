"""Numbers for the eye: hours, durations as m:ss, byte sizes, scores to a few significant digits.

Pure functions (Jinja2 filters, registered by pages.py); read and write nothing; never fail on a missing value
(``None``, NaN, a template's undefined or a non-number show as an en dash).
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "\u2013"


def _missing(x: Any) -> bool:
    """Nothing to show: None, NaN or infinity, a template's undefined, anything that is not a number."""
    if isinstance(x, bool):
        return False
    try:
        return not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def hours(h: Any) -> str:
    """1.25 -> "1.25 h"; under an hour in minutes ("42.0 min"), under a minute in seconds."""
    if _missing(h):
        return MISSING
    h = float(h)
    if h >= 1:
        return f"{h:,.2f} h"
    if h * 60 >= 1:
        return f"{h * 60:.1f} min"
    return f"{h * 3600:.1f} s"


def duration(s: Any) -> str:
    """Seconds as m:ss (h:mm:ss past an hour); tenths under ten seconds, where they matter."""
    if _missing(s):
        return MISSING
    s = float(s)
    if s < 10:
        return f"0:{s:04.1f}"
    total = int(round(s))
    h, rest = divmod(total, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def seconds(s: Any) -> str:
    return MISSING if _missing(s) else f"{float(s):.2f} s"


def size(n: Any) -> str:
    if _missing(n):
        return MISSING
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def number(x: Any, digits: int = 3) -> str:
    """A score: integers with thousands separators, others to ``digits`` significant digits."""
    if _missing(x):
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def count(n: Any) -> str:
    return MISSING if _missing(n) else f"{int(n):,}"


def percent(part: Any, whole: Any) -> str:
    if _missing(part) or _missing(whole) or not whole:
        return MISSING
    return f"{100.0 * float(part) / float(whole):.1f} %"


def interval(mean: Any, lo: Any, hi: Any) -> str:
    """``0.412 [0.380, 0.447]``, or the mean alone when there is no interval."""
    if _missing(mean):
        return MISSING
    if _missing(lo) or _missing(hi) or (lo == hi == mean):
        return number(mean)
    return f"{number(mean)} [{number(lo)}, {number(hi)}]"


def signed(x: Any) -> str:
    """A difference, with its sign: +0.0156, -0.109."""
    return MISSING if _missing(x) else ("+" if float(x) >= 0 else "") + number(x)
