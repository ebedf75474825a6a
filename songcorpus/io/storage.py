"""URL I/O: local paths and object stores (``s3://``, ``gs://``, anything fsspec knows) behind one small API.

Every reader and writer that may meet a URL goes through here, so the rest of the code asks "where" and never
"which filesystem". Local paths keep their exact behaviour: writes go to a temporary file, are fsynced and
renamed (``transforms.artefacts.atomic_write_bytes``). On an object store a single PUT is atomic (an object
exists whole or not at all), but there is no rename and no directory to swap, so a *set* of objects (a corpus:
shards, index, catalog, state) is only done when its publication marker is: see :class:`OutputDir`.

Credentials and endpoints come from the standard environment and config files that the fsspec backends read
themselves (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL`` for an
S3-compatible server, ``~/.aws/config``; ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS, ``STORAGE_EMULATOR_HOST``
for a GCS-compatible server, with ``NO_GCE_CHECK=true`` and ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` where it
has no metadata server or storage control API, as tests/gcs_server.py sets them). Nothing here takes,
stores, logs or returns a credential: URLs are the only thing that travels (in rows, lineage, outputs), and a URL
given with one (``user:password@``, a presigned query) travels as :func:`redact_url`'s name, read through
:func:`remember_url`'s in-memory record of the URL as given.

API (``url`` is a local path or a URL; ``rel`` a POSIX path relative to a root):
  is_url, join, parent, basename, relative_to          naming
  redact_url, remember_url, scrub_text                 names without credentials (what is stored, logged, printed)
  exists, isdir, size, list_files, glob                looking
  read_bytes, read_range, open_read, sha256_of         reading (``read_range``/``open_read``: ranged reads)
  write_bytes, upload, download, remove                writing (atomic per object)
  OutputDir, read_published, PUBLISHED                 the publish protocol of a corpus
Fails: a missing object raises ``FileNotFoundError`` naming the URL; a store that cannot be reached raises
:class:`StorageError` (one line: the endpoint, why, what to check); other backend errors pass through unchanged,
except that none leaves this module quoting a credential (it is re-raised with its message scrubbed).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_plus

from songcorpus.io.atomic import atomic_write_bytes, commit_file, sha256_file
from songcorpus.io.fault_points import fault_point

# The marker a corpus is published by: written last, it lists every object of the corpus with its size and
# sha256; readers trust what it lists and nothing else (a run in progress or crashed has none).
PUBLISHED = "published.json"
PRIOR_PUBLISHED = ".published-before.json"  # an object store's last marker, kept while a new run writes
PUBLISHED_FORMAT = "songcorpus-published-v1"
STALE_SWEPT = "shards"  # the output folder whose objects a new publication removes when it no longer lists them
_REMOTE_OPTIONS = {"s3": {"use_listings_cache": False}, "gs": {"use_listings_cache": False},
                   "gcs": {"use_listings_cache": False}}


def is_url(path: str | Path) -> bool:
    """True for an object-store (or other non-local) URL; local paths and ``file://`` URLs are local."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def _local(path: str | Path) -> str:
    s = str(path)
    return s[len("file://"):] if s.startswith("file://") else s


def join(base: str | Path, *parts: str) -> str:
    """``base`` joined with POSIX ``parts`` (a URL stays a URL; a local path uses the OS's join)."""
    if is_url(base):
        out = str(base).rstrip("/")
        for p in parts:
            out = f"{out}/{p.strip('/')}" if p else out
        return out
    return os.path.join(_local(base), *parts)


def parent(url: str | Path) -> str:
    return posixpath.dirname(str(url).rstrip("/")) if is_url(url) else os.path.dirname(_local(url))


def basename(url: str | Path) -> str:
    return posixpath.basename(str(url).rstrip("/")) if is_url(url) else os.path.basename(_local(url))


def relative_to(url: str, root: str) -> str:
    """``url`` named from ``root`` in POSIX form."""
    if is_url(url):
        return posixpath.relpath(url.split("://", 1)[1], root.rstrip("/").split("://", 1)[1])
    return Path(os.path.relpath(_local(url), _local(root))).as_posix()


# -- names without credentials ------------------------------------------------------------------------------
# A URL may carry a credential: ``user:password@`` before its host, or a presigned / SAS / token query. Every name
# the project stores, logs or prints is :func:`redact_url`'s form; the URL as given is kept in memory only (and in
# this process's environment, which the engine's local workers inherit, as they inherit AWS_* variables), so reads
# through this module still use it.

# Query parameters that carry a credential or belong to a signature (presigned S3 and GCS URLs, Azure SAS,
# CloudFront, OAuth and API tokens), matched case-insensitively; names starting with a prefix below go too. The
# signature's companions (date, expiry, algorithm) go with it, so the name is the same for every presigning.
SECRET_PARAMS = frozenset(
    "awsaccesskeyid signature expires policy key-pair-id sig se sp sv st spr sr srt ss si skoid sktid skt ske sks "
    "skv sdd saoid suoid scid token access_token id_token refresh_token auth_token session_token security_token "
    "api_key apikey key password passwd pwd secret client_secret auth authorization credential credentials "
    "googleaccessid".split())
SECRET_PARAM_PREFIXES = ("x-amz-", "x-goog-")
READ_URLS_ENV = "SONGCORPUS_READ_URLS"  # scrubbed name -> URL as given (JSON), for this process's workers
READ_URLS_ENV_MAX = 96 * 1024  # one environment string must stay under Linux's 128 KiB (MAX_ARG_STRLEN)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
_GIVEN: dict[str, str] = {}  # scrubbed name -> the URL as given, in memory only
_SECRET_VALUES: set[str] = set()  # what scrubbing removed, so an error message quoting it can be scrubbed too
_SHARED = {"loaded": "", "size": 2, "overflow": False}
log = logging.getLogger("songcorpus")


class StorageError(Exception):
    """A store that cannot be reached, or a store error whose message had to be scrubbed of a credential: one line
    that names the scrubbed URL (the CLI prints it and exits 2)."""


def _secret_param(segment: str) -> bool:
    name = unquote_plus(segment.partition("=")[0]).strip().lower()
    return name in SECRET_PARAMS or name.startswith(SECRET_PARAM_PREFIXES)


def _scrub_params(text: str, dropped: list[str]) -> str | None:
    """``a=1&b=2`` without its secret parameters (None when none is left); what went is added to ``dropped``."""
    keep = []
    for seg in text.split("&"):
        if _secret_param(seg):
            dropped.append(seg.partition("=")[2])
        else:
            keep.append(seg)
    return "&".join(keep) if keep else None


def _authority_end(rest: str) -> int:
    """Where the authority of a URL (``rest``: after its ``://``) ends: at the first ``/ ? #``; but a ``user:password@``
    whose password holds a raw ``/`` (AWS secret keys may) runs to the host after its ``@``."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    head = rest[:end]
    _, colon, after = head.partition(":")
    at = rest.find("@", end)
    if colon and at >= 0 and "@" not in head and not after.isdigit() and not head.startswith("["):
        return at + 1 + _authority_end(rest[at + 1:])
    return end


def _split_url(name: str) -> tuple[str, str, str, str | None, str | None] | None:
    """(scheme and anything before it, authority, path, query, fragment) of the first URL in ``name``."""
    m = _SCHEME.search(name)
    if m is None:
        return None
    head, rest = name[:m.end()], name[m.end():]
    end = _authority_end(rest)
    authority, tail = rest[:end], rest[end:]
    tail, hash_, fragment = tail.partition("#")
    path, qmark, query = tail.partition("?")
    return head, authority, path, query if qmark else None, fragment if hash_ else None


def _redact(name: str, dropped: list[str]) -> str:
    parts = _split_url(name)
    if parts is None:
        return name
    head, authority, path, query, fragment = parts
    userinfo, at, host = authority.rpartition("@")
    if at:
        dropped += [userinfo, userinfo.partition(":")[2]]
        authority = host
    if query is not None:
        query = _scrub_params(query, dropped)
    if fragment is not None and "=" in fragment:
        fragment = _scrub_params(fragment, dropped)
    if not dropped:
        return name
    return (f"{head}{authority}{path}{'' if query is None else '?' + query}"
            f"{'' if fragment is None else '#' + fragment}")


def redact_url(name: str | Path) -> str:
    """``name`` without credentials: no ``user:password@``, no query (or fragment) parameter that is a credential
    or part of a signature (:data:`SECRET_PARAMS`), everything else as written (scheme, host, path, other
    parameters), so it still names the object and is the same however the URL was signed. Local paths, and URLs
    without credentials, come back unchanged; ``hfrow:`` references are scrubbed inside."""
    return _redact(str(name), [])


def redact_values(values: dict[str, Any]) -> dict[str, Any]:
    """Text values that hold a URL, without its credentials (a manifest's or a dataset's extra columns)."""
    return {k: redact_url(v) if isinstance(v, str) and "://" in v else v for k, v in values.items()}


def scrub_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it redacted and every secret removed from a URL
    this process remembered replaced by ``***``."""
    text = _URL_TOKEN.sub(lambda m: redact_url(m.group()), text)
    for value in _SECRET_VALUES:
        if value in text:
            text = text.replace(value, "***")
    return text


def remember_url(url: str) -> str:
    """The name to store for ``url`` (:func:`redact_url`); when that differs, ``url`` itself is kept in memory (and
    in this process's environment, for the workers it starts), so reading the name through this module reads it."""
    s = str(url)
    name = redact_url(s)
    if name != s and _GIVEN.get(name) != s:
        _GIVEN[name] = s
        _SECRET_VALUES.update(v for v in _redact_dropped(s) if len(v) >= 6)
        _share(name, s)
    return name


def _share(name: str, given: str) -> None:
    """Put the remembered URLs in the environment the engine's workers inherit, while it stays small enough to
    start a process with; past that only this process can read them (said once)."""
    if _SHARED["overflow"]:
        return
    _SHARED["size"] += len(json.dumps(name)) + len(json.dumps(given)) + 2
    if _SHARED["size"] > READ_URLS_ENV_MAX:
        _SHARED["overflow"] = True
        os.environ.pop(READ_URLS_ENV, None)
        log.warning("%d input URLs carry credentials, too many to hand to worker processes: only this process can "
                    "read them (give the store's credentials through its standard environment instead)", len(_GIVEN))
        return
    text = json.dumps(_GIVEN, sort_keys=True)
    os.environ[READ_URLS_ENV] = text
    _SHARED["loaded"] = text


def _given(url: str) -> str:
    """The URL as given for a name :func:`remember_url` returned, here or in the process that started this one."""
    hit = _GIVEN.get(url)
    if hit is not None:
        return hit
    shared = os.environ.get(READ_URLS_ENV)
    if shared and shared != _SHARED["loaded"]:
        _SHARED["loaded"] = shared
        for name, given in json.loads(shared).items():
            _GIVEN.setdefault(name, given)
            _SECRET_VALUES.update(v for v in _redact_dropped(given) if len(v) >= 6)
        return _GIVEN.get(url, url)
    return url


def _redact_dropped(url: str) -> list[str]:
    """What :func:`redact_url` removes from ``url``, as written and percent-decoded."""
    dropped: list[str] = []
    _redact(url, dropped)
    return dropped + [unquote_plus(v) for v in dropped]


# Exceptions (anywhere in the chain) that say the store was not reached at all.
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ProxyConnectionError",
                "ClientConnectorError", "ServerDisconnectedError", "ConnectionRefusedError", "gaierror",
                "ClientConnectorDNSError", "ServerTimeoutError")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in out:
        out.append(node)
        err = getattr(node, "kwargs", None)  # botocore keeps the underlying error in kwargs, not as the cause
        inner = err.get("error") if isinstance(err, dict) else None
        node = inner if isinstance(inner, BaseException) and inner not in out else (node.__cause__ or node.__context__)
    return out


def _unreachable(exc: BaseException, url: str) -> StorageError | None:
    """A :class:`StorageError` naming the endpoint and why, when ``exc`` says the store was never reached."""
    chain = _chain(exc)
    names = {c.__name__ for e in chain for c in type(e).__mro__}
    if not names & set(_UNREACHABLE) and not any(isinstance(e, ConnectionRefusedError) for e in chain):
        return None
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        why = "connection refused"
    elif names & {"gaierror", "ClientConnectorDNSError"}:
        why = "host name not found"
    elif any("Timeout" in n for n in names) or any(isinstance(e, TimeoutError) for e in chain):
        why = "timed out"
    else:
        why = "connection failed"
    scheme = str(url).split("://", 1)[0]
    endpoint = next((e.kwargs["endpoint_url"] for e in chain if isinstance(getattr(e, "kwargs", None), dict)
                     and e.kwargs.get("endpoint_url")), None)
    if endpoint is None:
        endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")) if scheme == "s3" \
            else os.environ.get("STORAGE_EMULATOR_HOST") if scheme in ("gs", "gcs") else None
    parts = _split_url(redact_url(endpoint)) if endpoint else None
    where = f"{parts[0]}{parts[1]}" if parts else f"{scheme}://"
    hint = {"s3": "AWS_ENDPOINT_URL", "gs": "STORAGE_EMULATOR_HOST", "gcs": "STORAGE_EMULATOR_HOST"}.get(scheme,
                                                                                                        "the URL")
    return StorageError(f"cannot reach the object store at {where} for {redact_url(url)} ({why}): check {hint} / "
                        f"network")


def _scrubbed(exc: BaseException, url: str) -> BaseException | None:
    """``exc`` again with its message scrubbed, when the message names a credential (None when it does not): an
    object the store says is missing stays a FileNotFoundError, one it refuses (HTTP 401/403) a PermissionError (the
    input's fault), anything else a :class:`StorageError`."""
    text = str(exc)
    clean = scrub_text(text)
    status = getattr(exc, "status", None)
    if isinstance(exc, FileNotFoundError) or status in (404, 410):
        return FileNotFoundError(errno.ENOENT, "no such object", redact_url(url)) if clean != text else None
    if status in (401, 403):
        return PermissionError(errno.EACCES, f"access denied (HTTP {status})", redact_url(url))
    if clean == text:
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        return type(exc)(exc.errno, scrub_text(exc.strerror or clean), redact_url(url))
    return StorageError(f"{type(exc).__name__}: {' '.join(clean.split())}")


# Backends' "no identity found" errors, by class name (so neither botocore nor google-auth is imported here).
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError")
_CREDENTIAL_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or give s3://KEY:SECRET@bucket/...",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run gcloud auth "
          "application-default login",
}


def _no_credentials(exc: BaseException, url: str) -> StorageError | None:
    """A :class:`StorageError` saying how to give the store an identity, when the backend found none."""
    names = {c.__name__ for e in _chain(exc) for c in type(e).__mro__}
    if not names & set(_NO_CREDENTIALS):
        return None
    scheme = str(url).split("://", 1)[0]
    hint = _CREDENTIAL_HINT.get("gs" if scheme == "gcs" else scheme, "give the store's credentials in the environment")
    return StorageError(f"no credentials for {redact_url(url)}: {hint}")


@contextmanager
def _remote(url: str | Path) -> Iterator[None]:
    """Around every call into a store's backend: an unreachable store becomes one :class:`StorageError` line, and
    no error leaves this module quoting a credential (the backend saw the URL as given)."""
    try:
        yield
    except Exception as exc:
        translated = _unreachable(exc, str(url)) or _no_credentials(exc, str(url)) or _scrubbed(exc, str(url))
        if translated is None:
            raise
        raise translated from None


_FILESYSTEMS: dict[tuple[Any, ...], Any] = {}


def filesystem(url: str | Path) -> tuple[Any, str]:
    """(fsspec filesystem, backend path) for ``url`` (a name :func:`remember_url` returned is read as the URL it was
    given as). One instance per process, protocol and endpoint; listings are not cached, since other workers write
    the same prefixes. The cache key holds a digest of the environment the backend reads its endpoint and identity
    from (in memory only), so a changed endpoint or key gets a fresh client. An ``s3://KEY:SECRET@bucket/...`` URL
    gets a client of its own with that key (s3fs reads none from a URL)."""
    import fsspec

    s = _given(str(url))
    protocol = s.split("://", 1)[0] if is_url(s) else "file"
    options = dict(_REMOTE_OPTIONS.get(protocol, {}))
    userinfo = ""
    if protocol == "s3" and (parts := _split_url(s)) and "@" in parts[1]:
        userinfo = parts[1].rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        options.update(key=unquote_plus(user), secret=unquote_plus(password))
        s = redact_url(s)
    env = hashlib.sha256("\x1f".join([userinfo, *(f"{k}={v}" for k, v in sorted(os.environ.items())
                                      if k.startswith(("AWS_", "GOOGLE_", "GCS", "STORAGE_EMULATOR_HOST")))]).encode()
                         ).hexdigest()
    key = (protocol, os.getpid(), env)
    fs = _FILESYSTEMS.get(key)
    if fs is None:
        fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
        _FILESYSTEMS[key] = fs
    return fs, fs._strip_protocol(s) if is_url(s) else _local(s)


def _url_of(fs: Any, path: str, like: str) -> str:
    """A backend path back as a URL with ``like``'s scheme."""
    return f"{like.split('://', 1)[0]}://{path}"


def exists(url: str | Path) -> bool:
    if not is_url(url):
        return os.path.exists(_local(url))
    fs, path = filesystem(url)
    with _remote(url):
        return bool(fs.exists(path))


def isdir(url: str | Path) -> bool:
    """A local folder, or a URL prefix with at least one object under it."""
    if not is_url(url):
        return os.path.isdir(_local(url))
    fs, path = filesystem(url)
    with _remote(url):
        return bool(fs.isdir(path))


def size(url: str | Path) -> int:
    if not is_url(url):
        return os.path.getsize(_local(url))
    fs, path = filesystem(url)
    with _remote(url):
        return int(fs.info(path)["size"])


def list_files(url: str | Path) -> list[str]:
    """Every file under a folder or prefix, recursively, sorted, as full paths or URLs (without credentials)."""
    if not is_url(url):
        root = _local(url)
        return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)
    fs, path = filesystem(url)
    with _remote(url):
        found = fs.find(path)
    return sorted(redact_url(_url_of(fs, p, str(url))) for p in found)


def glob(pattern: str) -> list[str]:
    """Matches of a glob (``**`` recursive), sorted; on an object store only objects (no pseudo-folders)."""
    if not is_url(pattern):
        import glob as globlib

        return sorted(globlib.glob(_local(pattern), recursive=True))
    fs, path = filesystem(pattern)
    with _remote(pattern):
        found = fs.glob(path, detail=True)
    return sorted(redact_url(_url_of(fs, p, pattern)) for p, info in found.items() if info.get("type") == "file")


def read_bytes(url: str | Path) -> bytes:
    if not is_url(url):
        return Path(_local(url)).read_bytes()
    fs, path = filesystem(url)
    with _remote(url):
        return bytes(fs.cat_file(path))


def read_range(url: str | Path, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``: one ranged GET on an object store, one seek and read locally."""
    if not is_url(url):
        with open(_local(url), "rb") as fh:
            fh.seek(offset)
            return fh.read(length)
    fs, path = filesystem(url)
    with _remote(url):
        return bytes(fs.cat_file(path, start=offset, end=offset + length))


def open_read(url: str | Path, exact: bool = False) -> IO[bytes]:
    """A seekable binary file; on an object store reads are ranged GETs (fsspec's readahead cache, or with
    ``exact`` no cache: each read fetches exactly the bytes asked for, for readers that seek to what they need,
    such as Parquet's column chunks)."""
    if not is_url(url):
        return open(_local(url), "rb")
    fs, path = filesystem(url)
    with _remote(url):
        return fs.open(path, "rb", cache_type="none") if exact else fs.open(path, "rb")


def sha256_of(url: str | Path) -> tuple[str, int]:
    """sha256 and size of a file or object, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    with open_read(url) as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def write_bytes(url: str | Path, data: bytes) -> None:
    """Atomic per object: locally tmp + fsync + rename; on an object store one PUT."""
    if not is_url(url):
        atomic_write_bytes(Path(_local(url)), data)
        return
    fs, path = filesystem(url)
    with _remote(url):
        fs.pipe_file(path, data)


def upload(local: Path, url: str | Path) -> None:
    """Copy a finished local file to ``url`` (a PUT, multipart for large files: visible only once complete)."""
    if not is_url(url):
        dest = Path(_local(url))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(local, tmp)
        commit_file(tmp, dest)
        return
    fs, path = filesystem(url)
    with _remote(url):
        fs.put_file(str(local), path)


def download(url: str | Path, local: Path) -> None:
    """Copy ``url`` to the local file ``local`` atomically (temporary name, then rename)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
    os.close(fd)
    try:
        if is_url(url):
            fs, path = filesystem(url)
            with _remote(url):
                fs.get_file(path, tmp)
        else:
            shutil.copyfile(_local(url), tmp)
        os.replace(tmp, local)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove(url: str | Path) -> None:
    """Delete a file or object; a missing one is not an error."""
    if not is_url(url):
        Path(_local(url)).unlink(missing_ok=True)
        return
    fs, path = filesystem(url)
    try:
        with _remote(url):
            fs.rm_file(path)
    except FileNotFoundError:
        pass


def sweep_uploads(url: str) -> None:
    """Abort unfinished multipart uploads under an S3 prefix (the only "temporary keys" an S3 PUT leaves:
    invisible to readers, but stored and billed until aborted)."""
    if not str(url).startswith("s3://"):
        return
    fs, path = filesystem(url)
    bucket, _, prefix = path.partition("/")
    try:
        uploads = fs.list_multipart_uploads(bucket)
    except Exception:  # noqa: BLE001 - a store without the call (or the permission) just keeps them
        return
    for up in uploads:
        if up.get("Key", "").startswith(prefix):
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])


# -- the publish protocol -----------------------------------------------------------------------------------


def read_published(out: str | Path) -> dict[str, Any] | None:
    """The publication marker of the corpus at ``out`` (its ``objects``: rel -> {bytes, sha256}), or None when
    the corpus is not published (being written, crashed, or curated before markers existed)."""
    url = join(out, PUBLISHED)
    try:
        marker = json.loads(read_bytes(url))
    except FileNotFoundError:
        return None
    if marker.get("format") != PUBLISHED_FORMAT:
        raise ValueError(f"{url}: not a songcorpus publication marker")
    return marker


def _marker_bytes(objects: dict[str, dict[str, Any]]) -> bytes:
    doc = {"format": PUBLISHED_FORMAT, "objects": {k: objects[k] for k in sorted(objects)}}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _file_digest(path: Path) -> tuple[str, int]:
    return sha256_file(path)


class OutputDir:
    """Where a corpus is written, local or on an object store, with one commit protocol for both.

    Writers write files into ``local`` with the usual atomic local writes: for a local path it *is* the output
    folder; for a URL it is a private staging folder on this machine. Then:
      1. ``begin()`` removes the publication marker first, so from now until ``publish()`` readers see the corpus
         as unpublished (a crash in between leaves it so: nothing half-written is ever counted as done), and
         aborts unfinished multipart uploads left by a crashed run;
      2. ``fetch(rel)`` gives a local copy of an existing output file (resume: a shard whose planned content
         is unchanged is verified, not rewritten or re-uploaded);
      3. ``commit(rel, ...)`` marks a finished file: on an object store it is uploaded (one PUT) and the staged
         copy deleted (a shard writer that commits each shard as it finishes keeps one shard staged at a time);
         ``keep(rel, ...)`` records one the store holds already, ``settle`` picks between the two;
      4. ``publish(parts)`` uploads whatever is still staged (catalog, DuckDB built locally, state), then writes
         ``published.json`` LAST, listing every object with size and sha256. Its bytes depend only on the
         outputs, so a corpus gives the same marker locally and on S3.
    Files and keys under names starting with "." (the default cache ``.cache``, temporary files) are not part
    of the corpus."""

    def __init__(self, url: str | Path, staging: Path | None = None) -> None:
        self.url = remember_url(str(url)) if is_url(url) else str(url)  # named (and printed) without credentials
        self.remote = is_url(self.url)
        if self.remote:
            self.local = staging or Path(tempfile.mkdtemp(prefix="songcorpus-out-"))
            self._own_staging = staging is None
        else:
            self.local = Path(_local(self.url))
            self._own_staging = False
        self.local.mkdir(parents=True, exist_ok=True)
        self._known: dict[str, dict[str, Any]] = {}
        self._prior: set[str] = set()
        self._fetched: dict[str, str] = {}  # rel -> sha256 of what the store holds (remote: no re-upload)

    def target(self, rel: str) -> str:
        return join(self.url, rel)

    def begin(self) -> None:
        if self.remote:  # what the last publication listed is ours to sweep; kept aside until the next one, so a
            # crash between here and publish() does not forget it
            prior = read_published(self.url)
            if prior is not None:
                write_bytes(self.target(PRIOR_PUBLISHED), _marker_bytes(prior["objects"]))
            else:
                try:
                    prior = json.loads(read_bytes(self.target(PRIOR_PUBLISHED)))
                except FileNotFoundError:
                    prior = {}
            self._prior = set(prior.get("objects", {}))
        remove(self.target(PUBLISHED))
        if self.remote:
            sweep_uploads(self.url)

    def fetch(self, rel: str) -> Path | None:
        path = self.local / rel
        if not self.remote:
            return path if path.is_file() else None
        try:
            download(self.target(rel), path)
        except FileNotFoundError:
            return None
        self._fetched[rel] = _file_digest(path)[0]
        return path

    def fetch_if_missing(self, rel: str) -> Path | None:
        """A staged copy of ``rel``, downloaded only when not staged already."""
        path = self.local / rel
        return path if path.is_file() else self.fetch(rel)

    def commit(self, rel: str, sha256: str | None = None, nbytes: int | None = None) -> None:
        path = self.local / rel
        if sha256 is None or nbytes is None:
            sha256, nbytes = _file_digest(path)
        self._known[rel] = {"bytes": nbytes, "sha256": sha256}
        if self.remote:
            upload(path, self.target(rel))
            path.unlink()

    def settle(self, rel: str, sha256: str, nbytes: int) -> None:
        """A finished staged file: uploaded (and its staged copy deleted) unless the store already holds these very
        bytes, as a resumed run's unchanged shard, fetched for checking, does."""
        if self.remote and self._fetched.get(rel) == sha256:
            self.keep(rel, sha256, nbytes)
        else:
            self.commit(rel, sha256, nbytes)

    def keep(self, rel: str, sha256: str, nbytes: int) -> None:
        """``rel`` is already in place with these bytes (verified by the caller): record it, upload nothing."""
        self._known[rel] = {"bytes": nbytes, "sha256": sha256}
        if self.remote:
            (self.local / rel).unlink(missing_ok=True)

    def names(self, rel_dir: str) -> list[str]:
        """File names directly inside ``rel_dir`` of the output (as stored, not staged)."""
        if not self.remote:
            d = self.local / rel_dir
            return sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []
        prefix = self.target(rel_dir)
        fs, path = filesystem(prefix)
        try:
            with _remote(prefix):
                entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"]) for e in entries if e.get("type") == "file")

    def remove(self, rel: str) -> None:
        self._known.pop(rel, None)
        (self.local / rel).unlink(missing_ok=True)
        if self.remote:
            remove(self.target(rel))

    def _staged(self, parts: Iterable[str]) -> list[str]:
        out = []
        for part in parts:
            top = self.local / part
            if top.is_file():
                out.append(part)
                continue
            for dirpath, dirnames, files in os.walk(top):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith(".") and not f.endswith(".tmp"):
                        out.append(Path(os.path.relpath(os.path.join(dirpath, f), self.local)).as_posix())
        return sorted(out)

    def publish(self, parts: Iterable[str], digests: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """Commit every file staged under ``parts`` (folders or files of the output; ``digests``: sha256s already
        known, e.g. of shards just written, so they are not read again), remove stored objects under ``shards/``
        that the new corpus no longer has, then write the marker last. Returns what it lists."""
        parts = list(parts)
        digests = digests or {}
        for rel in self._staged(parts):
            if rel in self._known and not self.remote:
                continue
            path = self.local / rel
            self.settle(rel, digests.get(rel) or _file_digest(path)[0], path.stat().st_size)
        if self.remote:  # shards (and their index) a smaller corpus no longer has, as a local rebuild removes them;
            # only objects an earlier publication listed: an object songcorpus did not write is never removed
            for url in list_files(self.target(STALE_SWEPT)):
                rel = relative_to(url, self.url)
                if rel not in self._known and rel in self._prior:
                    remove(url)
        fault_point("publish")
        write_bytes(self.target(PUBLISHED), _marker_bytes(self._known))
        if self.remote:
            remove(self.target(PRIOR_PUBLISHED))
        return dict(self._known)

    def close(self) -> None:
        """Remove a staging folder this object made (nothing on a local output)."""
        if self._own_staging:
            shutil.rmtree(self.local, ignore_errors=True)


def fetch_published(out: str | Path, rels: Iterable[str], into: Path) -> dict[str, Path]:
    """Local copies of published objects of the corpus at ``out``, each checked against the marker's sha256
    (a local corpus without a marker, curated before markers existed, is read as it is)."""
    marker = read_published(out)
    if marker is None and is_url(out):
        raise FileNotFoundError(f"{out} holds no published corpus (no {PUBLISHED}: never curated, or a curate "
                                f"there is running or crashed; run `songcorpus curate` again to finish it)")
    objects = (marker or {}).get("objects", {})
    got: dict[str, Path] = {}
    for rel in rels:
        if not is_url(out):
            got[rel] = Path(_local(out)) / rel
            continue
        if rel not in objects:
            raise FileNotFoundError(f"{join(out, rel)} is not part of the published corpus at {out}")
        dest = into / rel
        download(join(out, rel), dest)
        digest, n = _file_digest(dest)
        if digest != objects[rel]["sha256"]:
            raise ValueError(f"{join(out, rel)} does not match its published sha256 (changed since publication; "
                             f"run `songcorpus curate` again)")
        got[rel] = dest
    return got
