"""What can go wrong in the view, said once: a command-line input it cannot open, a bad request, a missing page.

Reads and writes nothing. ``ViewError`` reaches the user as one line and exit 2 (songcorpus/cli/view.py declares
it); ``BadRequest`` and ``NotFound`` become a 400 or 404 page with their one-line message (songcorpus/view/app.py),
never a traceback.
"""

from __future__ import annotations


class ViewError(Exception):
    """A corpus or evaluation folder that cannot be opened, a busy port, a refused export folder."""


class BadRequest(ValueError):
    """A malformed request: an unknown or ill-typed query parameter, a sort column off the allow-list."""


class NotFound(LookupError):
    """A sample, track, member or file the corpus does not hold."""
