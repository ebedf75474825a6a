"""Named points where a curate can be killed on purpose, to prove that a kill anywhere loses nothing.

A kill -9 from outside lands wherever the job happens to be; on a small corpus the short phases (shard writing,
the catalog build, publication) are over before a poller can see them. With ``SONGCORPUS_KILL_AT=NAME`` (or
``NAME:N``, the N-th time the point is reached) the driver sends itself SIGKILL exactly there: no cleanup, no
``finally``, as a power cut would. The fault suite (``tests/test_kill_points.py``) kills at each point on both
engines and checks that the same command then gives the bytes of an uninterrupted run; an operator can rehearse
a recovery the same way. Unset (the normal case) a point costs one dictionary lookup.

Points, in the order a job reaches them:
  analysis-row   an analysed input's row was streamed into the state file
  samples-chunk  a chunk of songs came back from the samples phase
  shard-part     a written shard's catalog part came back from the shard writer
  catalog        the catalog's Parquet tables are written, catalog.duckdb is not
  publish        everything is written but the publication marker
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

ENV = "SONGCORPUS_KILL_AT"
POINTS = ("analysis-row", "samples-chunk", "shard-part", "catalog", "publish")
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if ``$SONGCORPUS_KILL_AT`` names this point (and this is its N-th hit)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def passing(items: Iterable[T], name: str) -> Iterator[T]:
    """``items`` unchanged, with the point ``name`` reached after each one was handed on."""
    for item in items:
        yield item
        fault_point(name)


__all__ = ["ENV", "POINTS", "fault_point", "passing"]
