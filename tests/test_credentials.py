"""No credential given in a URL is ever stored, logged or printed, and the URL still reads.

An input URL may carry ``user:password@`` or a presigned query (S3's X-Amz-*, GCS's X-Goog-*, Azure's SAS, a
token). A local HTTP server on 127.0.0.1 that refuses any request without the credential serves two clips: one
by HTTP basic authentication, one by a signature in the query. A manifest names them (and a missing and a refused
object); the curate must read both, and no file it writes (corpus, state, cache, its exchange folders), no log
record and nothing it prints may hold a secret. Errors from a store name the scrubbed URL; an unreachable store is
one line and exit status 2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from songcorpus.io import storage

from conftest import DEMO_DIR, LogLines, curate_with, tracks

USER, PASSWORD = "reader", "pA55w0rd-never-stored-4e1f"
SIGNATURE = "5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ff"
KEY_ID = "AKIAPRESIGNEDTEST123"
CREDENTIAL = f"{KEY_ID}%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
SECRETS = (PASSWORD, SIGNATURE, KEY_ID)
CLIPS = {"a/speech_00.flac": DEMO_DIR / "speech_00" / "mix.flac", "b/speech_01.flac": DEMO_DIR / "speech_01" / "mix.flac",
         "a/song_03.flac": DEMO_DIR / "song_03" / "mix.flac"}  # the shortest song (27 s): accepted, so in the shards


def presigned(base: str, rel: str, signature: str = SIGNATURE) -> str:
    """``rel`` on the server as an S3 presigned URL (SigV4's query parameters)."""
    return (f"{base}/{rel}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CREDENTIAL}&X-Amz-Date=20250101T000000Z"
            f"&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}&x-id=GetObject")


class _Handler(BaseHTTPRequestHandler):
    """Files of CLIPS; 403 unless the request carries the basic credentials or the signature."""

    def log_message(self, *args: object) -> None:  # no request lines on stderr
        pass

    def _serve(self, body: bool) -> None:
        url = urlsplit(self.path)
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        signed = parse_qs(url.query).get("X-Amz-Signature") == [SIGNATURE]
        if self.headers.get("Authorization") != basic and not signed:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        clip = CLIPS.get(url.path.lstrip("/"))
        if clip is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = clip.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "audio/flac")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._serve(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(False)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that wants credentials for every request."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _no_secret(text: str | bytes, where: str) -> None:
    for secret in SECRETS:
        needle = secret.encode() if isinstance(text, bytes) else secret
        assert needle not in text, f"{secret!r} in {where}"


@pytest.mark.parametrize(("given", "name"), [
    ("s3://AKIAXX:s3cr3t/with+slash@bucket/a/b.flac", "s3://bucket/a/b.flac"),
    ("https://user:pw@host.example:8443/x.flac#t=1", "https://host.example:8443/x.flac#t=1"),
    (f"https://h/b.flac?X-Amz-Credential={CREDENTIAL}&X-Amz-Signature=abc&X-AMZ-SECURITY-TOKEN=t&versionId=7",
     "https://h/b.flac?versionId=7"),
    ("https://h/o?AWSAccessKeyId=AKIA&Signature=s%2Bg&Expires=1700000000", "https://h/o"),
    ("https://storage.googleapis.com/b/o.wav?X-Goog-Algorithm=GOOG4&X-Goog-Credential=sa%40p&X-Goog-Signature=ab",
     "https://storage.googleapis.com/b/o.wav"),
    ("https://acct.blob.core.windows.net/c/x.wav?sv=2022-11-02&se=2030&sp=r&sig=Zm9v%3D&comp=blob",
     "https://acct.blob.core.windows.net/c/x.wav?comp=blob"),
    ("https://h/x.mp3?Token=t&ACCESS_TOKEN=a&api_key=k&format=mp3", "https://h/x.mp3?format=mp3"),
    ("hfrow:s3://u:p@b/ds/data/train.parquet#pq:0:3:audio", "hfrow:s3://b/ds/data/train.parquet#pq:0:3:audio"),
    ("s3://bucket/plain/name.flac", "s3://bucket/plain/name.flac"),
    ("/data/songs/a?b@c.flac", "/data/songs/a?b@c.flac"),
])
def test_redact_url_keeps_the_name_and_drops_every_credential(given, name):
    assert storage.redact_url(given) == name
    assert storage.redact_url(name) == name  # idempotent: a scrubbed name is a name


def test_sources_name_and_store_urls_without_credentials(tmp_path, server):
    """The records a manifest and a command-line URL give name their URLs without credentials, and reading those
    names through storage reads the URL as given (the server refuses the bare name)."""
    from songcorpus.pipelines.sources.inputs import expand_inputs

    authed = server.replace("://", f"://{USER}:{PASSWORD}@")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": f"{authed}/a/speech_00.flac", "homepage": presigned(server, "x")}) + "\n"
                        + json.dumps({"path": presigned(server, "b/speech_01.flac")}) + "\n")
    records = expand_inputs([str(manifest)], tmp_path / "m")
    assert [r.source for r in records] == [f"{server}/a/speech_00.flac", f"{server}/b/speech_01.flac?x-id=GetObject"]
    assert [r.path for r in records] == [r.source for r in records]
    assert records[0].extra["homepage"] == f"{server}/x?x-id=GetObject"
    for rec in records:
        _no_secret(json.dumps(rec.to_dict()), rec.source)
        clip = CLIPS[urlsplit(rec.path).path.lstrip("/")]
        assert storage.read_bytes(rec.path) == clip.read_bytes()
    [single] = expand_inputs([presigned(server, "a/speech_00.flac")], tmp_path / "m")
    assert (single.source, single.path) == ("speech_00.flac", f"{server}/a/speech_00.flac?x-id=GetObject")
    assert storage.sha256_of(single.path)[0] == hashlib.sha256(CLIPS["a/speech_00.flac"].read_bytes()).hexdigest()


def test_worker_processes_read_the_url_as_given(server):
    """A process the driver starts after the scan (an engine's worker) reads a scrubbed name too: the URL as given
    travels in its inherited environment, never in a file."""
    name = storage.remember_url(presigned(server, "b/speech_01.flac"))
    code = ("import sys; from songcorpus.io import storage; "
            "sys.stdout.write(storage.sha256_of(sys.argv[1])[0])")
    done = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout == hashlib.sha256(CLIPS["b/speech_01.flac"].read_bytes()).hexdigest()


def test_store_errors_name_the_scrubbed_url(server):
    missing = presigned(server, "nope.flac")
    with pytest.raises(FileNotFoundError) as err:
        storage.read_bytes(missing)
    assert "nope.flac" in str(err.value)
    _no_secret(str(err.value), "the missing object's error")
    forged = presigned(server, "a/speech_00.flac", signature="0" * 64)
    with pytest.raises(PermissionError) as err:  # the input's fault (an expired or wrong signature), named
        storage.read_bytes(forged)
    assert "HTTP 403" in str(err.value) and "a/speech_00.flac" in str(err.value)
    _no_secret(str(err.value), "the refused object's error")
    with pytest.raises(FileNotFoundError) as err:
        storage.read_bytes(server.replace("://", f"://{USER}:{PASSWORD}@") + "/gone.flac")
    _no_secret(str(err.value), "an error on a URL with user:password@")


def test_curate_reads_credentialed_urls_and_writes_no_credential(tmp_path, server, capfd):
    authed = server.replace("://", f"://{USER}:{PASSWORD}@")
    rows = [{"path": f"{authed}/a/song_03.flac", "title": "basic"},
            {"path": presigned(server, "b/speech_01.flac"), "title": "presigned"},
            {"path": presigned(server, "c/missing.flac"), "title": "missing"},
            {"path": presigned(server, "a/speech_00.flac", signature="f" * 64), "title": "refused"}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    handler = LogLines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # what --verbose shows; the project's own records at every level
    logging.getLogger("songcorpus").setLevel(logging.DEBUG)
    try:
        out = curate_with("beam", [str(manifest)], tmp_path / "out", workers=1,
                          cache_dir=str(tmp_path / "cache"))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        logging.getLogger("songcorpus").setLevel(logging.NOTSET)
    by_title = {r["title"]: r for r in tracks(out)}
    assert sorted(by_title) == ["basic", "missing", "presigned", "refused"]
    # read with their credentials: decoded and decided like any input
    assert by_title["basic"]["status"] == "accepted", by_title["basic"]
    row = by_title["presigned"]
    assert (row["status"], row["stage"], row["reason_code"]) == ("rejected", "classify", "speech_dominant"), row
    assert by_title["basic"]["source"] == f"{server}/a/song_03.flac"
    assert by_title["presigned"]["source"] == f"{server}/b/speech_01.flac?x-id=GetObject"
    assert (by_title["missing"]["status"], by_title["missing"]["reason_code"]) == ("failed", "missing")
    assert (by_title["refused"]["status"], by_title["refused"]["reason_code"]) == ("failed", "unreadable")
    assert "HTTP 403" in by_title["refused"]["reason"]
    files = [p for root_dir in (out, tmp_path / "cache") for p in root_dir.rglob("*") if p.is_file()]
    assert {"rows.jsonl", "tracks.parquet", "windows.parquet", "published.json"} <= {p.name for p in files}
    assert any(p.suffix == ".tar" for p in files)  # every sample's JSON names its source
    assert any(p.suffix == ".flac" for p in files) and any("results" in p.parts for p in files)  # the cache
    for p in files:
        _no_secret(p.read_bytes(), str(p))
    captured = capfd.readouterr()
    _no_secret(captured.out + captured.err, "stdout/stderr")
    assert handler.lines, "the run logged nothing: the capture is broken"
    _no_secret("\n".join(handler.lines), "the log")


def test_an_unreachable_store_is_one_line_and_exit_status_2(tmp_path, monkeypatch, capsys):
    from songcorpus.cli import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PASSWORD)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for given, named in (("s3://raw/songs/", "s3://raw/songs/"),
                         (f"s3://{KEY_ID}:{SIGNATURE}@raw/x.flac", "s3://raw/x.flac")):
        assert main(["curate", given, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert lines == [f"songcorpus: cannot reach the object store at http://127.0.0.1:1 for {named} "
                         f"(connection refused): check AWS_ENDPOINT_URL / network"], captured.err
        _no_secret(captured.out + captured.err, "the CLI's output")



def test_a_store_with_no_credentials_is_one_line_saying_how_to_give_them(tmp_path, monkeypatch, capsys):
    """No key in the environment, no profile, no instance metadata: one line naming the URL and the variables to
    set, exit 2 (it was botocore's traceback and exit 1)."""
    from songcorpus.cli import main
    from songcorpus.io import storage

    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(storage, "_FILESYSTEMS", {})
    assert main(["report", "s3://some-bucket/corpus"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["songcorpus: no credentials for s3://some-bucket/corpus/published.json: set AWS_ACCESS_KEY_ID "
                     "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or give s3://KEY:SECRET@bucket/..."], lines
