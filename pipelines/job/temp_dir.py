"""One private temporary folder per job, removed when the job ends: nothing it or its engine writes to "temp" stays.

Ray keeps a session folder of logs and sockets under ``/tmp/ray`` after it stops, and Beam's local runner leaves
``beam-temp*`` and ``tmp*`` folders in the system temp; a month of curation runs would pile them up. The job
points ``tempfile``, ``$TMPDIR`` (inherited by Beam's worker processes and Ray's) and Ray's ``_temp_dir`` at
``<system temp>/songcorpus-<pid>-<random>/`` (short: Ray's socket paths under it must stay within Linux's
108 bytes) and removes it at the end, whatever happened. A job killed with
kill -9 cannot clean up, so the next job removes folders of this form whose process is gone.

Reads and writes: only that folder. Fails: never because of its own cleanup (a folder it cannot remove is left).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "songcorpus-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")


@contextlib.contextmanager
def job_temp_dir() -> Iterator[Path]:
    """The job's temp folder, set as this process's and its children's temp for the duration."""
    system = Path(tempfile.gettempdir())
    remove_orphans(system)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=system))
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)


def remove_orphans(system: Path) -> None:
    """Remove job temp folders whose process no longer exists (a job killed before it could clean up)."""
    try:
        entries = list(system.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _NAME.match(entry.name)
        if match and entry.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["job_temp_dir", "remove_orphans"]
