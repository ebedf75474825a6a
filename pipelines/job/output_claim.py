"""The output folder's two rules: it is songcorpus's own, and one run writes it at a time.

Reads and writes (both hidden, so neither is part of the published corpus):
  OUT/.songcorpus-output.json   the ownership marker, written by the first run into an empty or new folder;
  OUT/.songcorpus.lock          on a local disk: an exclusive ``flock`` held for the whole run, with the holder
                                (host, pid, command, start time) written inside for the next run's message;
  OUT/.songcorpus.lease         on an object store (no locks there): the holder and an expiry, renewed by a
                                background thread while the run lives and deleted at its end.
(``OUT/progress.json``, the running job's figures, ``pipelines/job/progress.py``, is the output's own file too.)
:func:`output_holder` tells a reader (``songcorpus report --follow``) whether a run holds the folder now.

Rules:
- A folder that is neither empty nor marked (nor a corpus an earlier songcorpus published: ``published.json``) is
  refused, naming a few of its files: curate never deletes or overwrites a file it did not write.
- A second run while the first holds the lock is refused, naming the holder (after :data:`LOCK_WAIT_S`). A local
  lock dies with its process (even under kill -9), so the same command resumes at once. An object-store lease of a
  dead run expires after :data:`LEASE_TTL_S`; one held by a process of this machine that no longer exists is taken
  over at once.
Fails: :class:`OutputClaimError` (a ``ConfigError``: the command line's fault, exit 2) for both refusals; an OSError
(a read-only or full disk) as it is, which the job's fault handling reports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from songcorpus.io import storage
from songcorpus.io.atomic import atomic_write_bytes
from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.progress import PROGRESS_FILE

MARKER = ".songcorpus-output.json"
LOCK = ".songcorpus.lock"
LEASE = ".songcorpus.lease"
LEASE_TTL_S = 120.0
MARKER_BYTES = (json.dumps({"format": "songcorpus-output", "version": 1}, sort_keys=True) + "\n").encode()
OWN_NAMES = {MARKER, LOCK, LEASE, PROGRESS_FILE}  # the output's own files, none of them part of the corpus


class OutputClaimError(ConfigError):
    """The output folder cannot be used by this run (not ours, or another run holds it)."""


def holder_info(command: str) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def describe_holder(info: dict[str, Any]) -> str:
    return (f"songcorpus {info.get('command', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"started {info.get('started', '?')})")


@contextlib.contextmanager
def claim_output(out: str | Path, command: str = "curate") -> Iterator[None]:
    """Hold ``out`` for this run: refuse a folder songcorpus did not write, take the lock (or lease), mark the
    folder as ours; release the lock at the end, whatever happens."""
    if storage.is_url(out):
        with _remote_claim(storage.remember_url(str(out)).rstrip("/"), command):
            yield
        return
    root = Path(out)
    _check_ours_local(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _lock_exclusive(fd):
            raise OutputClaimError(f"{root} is being written by another run: {describe_holder(_read_holder(fd))}; "
                                   f"wait for it to finish, or choose another --out")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_info(command), sort_keys=True) + "\n").encode(), 0)
        _check_ours_local(root)  # again, under the lock: a run that started beside this one may have written
        if not (root / MARKER).exists():
            atomic_write_bytes(root / MARKER, MARKER_BYTES)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# How long a run waits for the lock before it is refused: a reader (:func:`output_holder`) holds it shared for an
# instant, which must not refuse a run that starts in that instant.
LOCK_WAIT_S = 0.5


def _lock_exclusive(fd: int) -> bool:
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def output_holder(out: str | Path) -> dict[str, Any] | None:
    """The run holding ``out`` now (its host, pid, command and start, as far as it wrote them), or None when no run
    does. Locally it asks the lock itself (a shared lock tried and dropped at once: a holder's exclusive lock refuses
    it); on an object store, the lease (live, and not of a dead process of this machine)."""
    if storage.is_url(out):
        lease = _read_lease(storage.join(storage.remember_url(str(out)).rstrip("/"), LEASE))
        return lease if lease and lease.get("expires", 0) > time.time() and _holder_alive(lease) else None
    try:
        fd = os.open(Path(out) / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _check_ours_local(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise OutputClaimError(f"--out {root} is a file, not a folder")
    if (root / MARKER).is_file() or _published_by_songcorpus(root):
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name not in OWN_NAMES)
    if foreign:
        raise OutputClaimError(_not_ours_message(str(root), foreign))


def _published_by_songcorpus(out: str | Path) -> bool:
    """A corpus published before the ownership marker existed: its ``published.json`` is songcorpus's."""
    try:
        return storage.read_published(out) is not None
    except (ValueError, OSError):
        return False


def _not_ours_message(out: str, foreign: list[str]) -> str:
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (f"--out {out} already holds files songcorpus did not write ({shown}); songcorpus never deletes or "
            f"overwrites files it did not write: choose a new or empty folder (or one an earlier songcorpus run "
            f"wrote, which holds {MARKER})")


# ---- object stores: a lease object with an expiry --------------------------------------------------------


@contextlib.contextmanager
def _remote_claim(url: str, command: str) -> Iterator[None]:
    names = [storage.relative_to(u, url) for u in storage.list_files(url)] if storage.isdir(url) else []
    if MARKER not in names and not _published_by_songcorpus(url):
        foreign = sorted(n for n in names if n.split("/")[0] not in OWN_NAMES and not n.startswith(".cache/"))
        if foreign:
            raise OutputClaimError(_not_ours_message(url, foreign))
    lease_url = storage.join(url, LEASE)
    token = uuid.uuid4().hex
    _take_lease(lease_url, token, command)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lease_url, token, command, stop), daemon=True,
                               name="songcorpus-lease")
    renewer.start()
    try:
        if MARKER not in names:
            storage.write_bytes(storage.join(url, MARKER), MARKER_BYTES)
        yield
    finally:
        stop.set()
        renewer.join(timeout=10)
        with contextlib.suppress(OSError, ValueError):
            if _read_lease(lease_url).get("token") == token:
                storage.remove(lease_url)


def _read_lease(lease_url: str) -> dict[str, Any]:
    try:
        return json.loads(storage.read_bytes(lease_url))
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}


def _lease_bytes(token: str, command: str) -> bytes:
    return (json.dumps({**holder_info(command), "token": token, "expires": time.time() + LEASE_TTL_S},
                       sort_keys=True) + "\n").encode()


def _holder_alive(lease: dict[str, Any]) -> bool:
    """False only when the lease names a process of this machine that no longer exists."""
    if lease.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(lease.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _take_lease(lease_url: str, token: str, command: str) -> None:
    lease = _read_lease(lease_url)
    if lease and lease.get("expires", 0) > time.time() and _holder_alive(lease):
        until = time.strftime("%H:%M:%SZ", time.gmtime(lease["expires"]))
        raise OutputClaimError(f"{storage.parent(lease_url)} is being written by another run: {describe_holder(lease)} "
                               f"holds its lease until {until} and renews it while it runs; wait for it to finish, "
                               f"or choose another --out (a lease of a run that died expires by itself)")
    storage.write_bytes(lease_url, _lease_bytes(token, command))
    time.sleep(0.2)  # object stores have no compare-and-swap here: the last writer wins, so read back
    if _read_lease(lease_url).get("token") != token:
        raise OutputClaimError(f"{storage.parent(lease_url)} was claimed by another run at the same moment: "
                               f"{describe_holder(_read_lease(lease_url))}; choose another --out or retry later")


def _renew(lease_url: str, token: str, command: str, stop: threading.Event) -> None:
    while not stop.wait(LEASE_TTL_S / 4):
        try:
            if _read_lease(lease_url).get("token") != token:
                print(f"songcorpus: the lease {lease_url} was taken by another run", file=sys.stderr)
                return
            storage.write_bytes(lease_url, _lease_bytes(token, command))
        except Exception:  # noqa: BLE001 - a dropped connection: the next renewal tries again; the job's own I/O fails
            continue


__all__ = ["LEASE", "LOCK", "MARKER", "OutputClaimError", "claim_output", "output_holder"]
