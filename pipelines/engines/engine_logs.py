"""The engines' own output, shown only under ``--verbose``: Ray's and Beam's INFO/WARNING lines, Ray Data's progress
blocks and bars, Ray's C++ core warnings (``core_worker.cc``), what Ray's workers print, Beam's runner logs. A job of
hours then logs songcorpus's own few lines (the command line's progress lines and summary); errors still reach the
user, as the job's one fault line (an engine error that stops the job: ``schemas/failures.py``) or as an input's row.

The switch is the ``songcorpus`` logger's level: INFO (what ``songcorpus -v`` sets) lets the engines talk; a library
caller that leaves logging alone gets the quiet engines. Reads: that level. Writes: the environment default Ray's
C++ core reads when it starts (``RAY_BACKEND_LOG_LEVEL``, left alone when set), the level of the Python loggers the
engines configure for themselves on import (``ray.data`` resets its own, so it is set again after); while Ray
starts, the process's stderr (through a temporary file, replayed without Ray's announcement of that level); while a
local Beam job runs worker processes, their ``PYTHONPATH`` (a ``sitecustomize`` in a temporary folder, removed after).
Fails: never.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENGINE_LOGGERS = ("ray", "ray.data", "apache_beam")


def engine_logs_wanted() -> bool:
    """Whether the engines' own logs are shown: the ``songcorpus`` logger at INFO (``--verbose``)."""
    return logging.getLogger("songcorpus").isEnabledFor(logging.INFO)


# What Ray's C++ core writes to stderr when it starts with RAY_BACKEND_LOG_LEVEL set, at any level
RAY_LEVEL_ANNOUNCEMENT = b"Set ray log level from environment variable RAY_BACKEND_LOG_LEVEL"


@contextmanager
def quiet_ray_core() -> Iterator[None]:
    """Around ``ray.init``: Ray's C++ core (the driver's and the raylet's) logs only fatal errors unless the engines'
    logs are wanted; its warnings (Ray Data's actor pools make every actor warn that its constructor arguments sit in
    the object store) are not the user's to act on. The core announces that level on stderr as it starts; that one
    line is dropped, anything else written to stderr meanwhile is passed on."""
    if engine_logs_wanted():
        yield
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught:
                if RAY_LEVEL_ANNOUNCEMENT not in line:
                    os.write(2, line)


def quiet_engine_loggers() -> None:
    """After an engine's import (which configures its loggers): its Python loggers say nothing unless wanted. A
    worker's error reaches the user once, as the job's own message, not also as the engine's logged traceback."""
    if not engine_logs_wanted():
        for name in ENGINE_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def quiet_engine_import() -> Iterator[None]:
    """Around an engine's first import: what it logs on the root logger (Beam warns that optional Google Cloud
    clients are missing) is shown only when wanted; errors still are."""
    root = logging.getLogger()
    level = root.level
    if not engine_logs_wanted():
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# What a quiet local Beam job's worker processes run first (see quiet_beam_workers)
QUIET_WORKER_SITE = '''"""A Beam SDK worker of a songcorpus job run without --verbose: its logs go to the runner, not to the
stderr it shares with the job (a handler on the root logger, so logging never adds its own stderr handler)."""
import logging

logging.getLogger().addHandler(logging.NullHandler())
'''


@contextmanager
def quiet_beam_workers(local_processes: bool) -> Iterator[None]:
    """Around a Beam job whose runner starts worker processes on this machine (``local_processes``: the local
    runner in multi-processing mode): unless the engines' logs are wanted, those processes start with a
    ``sitecustomize`` that gives their root logger a handler printing nothing. Beam's SDK harness logs at INFO from
    its first line (before any pipeline option could lower it), and Beam's import warns through the root logger,
    which would otherwise print to the stderr the workers inherit from the job."""
    if not local_processes or engine_logs_wanted():
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="songcorpus-beam-workers-"))
    (folder / "sitecustomize.py").write_text(QUIET_WORKER_SITE)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *([saved] if saved else [])])
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["ENGINE_LOGGERS", "QUIET_WORKER_SITE", "RAY_LEVEL_ANNOUNCEMENT", "engine_logs_wanted", "quiet_beam_workers",
           "quiet_engine_import", "quiet_engine_loggers", "quiet_ray_core"]
