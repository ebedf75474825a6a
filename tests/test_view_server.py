"""The view's server on a synthetic catalog (no audio), over real HTTP: loopback only by default, read-only, only the
corpus's own files (path traversal refused however it is encoded, a shard symlinked out of the corpus refused), a
4xx with one line for any malformed query (never a traceback or a 500), and the command's own behaviour: the URL
printed, a busy port said in one line, Ctrl-C stopping it cleanly; plus the static export's folder rules."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest

from songcorpus.cli import main
from songcorpus.testing.synthetic_catalog import write_synthetic_catalog
from songcorpus.view.corpus import Corpus
from songcorpus.view.errors import ViewError
from songcorpus.view.server import bind, running
from songcorpus.view.static_export import MARKER, export

SECRET_FILE_TEXT = "this file is outside the corpus"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = write_synthetic_catalog(tmp_path_factory.mktemp("view_server") / "corpus", 300)
    outside = out.parent / "outside.txt"
    outside.write_text(SECRET_FILE_TEXT)
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    offsets = json.loads(con.execute("SELECT offsets_json FROM windows ORDER BY key LIMIT 1").fetchone()[0])
    con.close()
    (out / "shards").mkdir()
    os.symlink(outside, out / "shards" / offsets["mix.flac"][0])  # a shard that is a symlink out of the corpus
    return out


@pytest.fixture(scope="module")
def served(synthetic):
    corpus = Corpus.open(synthetic)
    with running(corpus, []) as base:
        yield base, synthetic
    corpus.close()


def request(base: str, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, str, dict]:
    """A raw request: the path goes on the wire exactly as written (no client-side normalising)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", (headers or {}).pop("Host", f"{url.hostname}:{url.port}"))
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace"), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def first_key(out: Path) -> str:
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        return con.execute("SELECT key FROM windows ORDER BY key LIMIT 1").fetchone()[0]
    finally:
        con.close()


def test_pages_answer_and_carry_a_strict_policy(served):
    base, out = served
    for path in ("/", "/tracks", "/windows?augmented=yes", f"/window/{first_key(out)}", "/static/style.css"):
        status, body, headers = request(base, path)
        assert status == 200, (path, body[:300])
        assert "default-src 'none'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    status, body, _ = request(base, "/", "HEAD")
    assert status == 200 and body == ""


@pytest.mark.parametrize("path", [
    "/static/../catalog.duckdb", "/static/..%2f..%2fconfig.yaml", "/static/%2e%2e/%2e%2e/config.yaml",
    "/static/%252e%252e%252fconfig.yaml", "/static/..%5c..%5cconfig.yaml", "/window/..%2F..%2Fetc%2Fpasswd",
    "/audio/..%2f..%2fcatalog.duckdb/mix.flac", "/audio/KEY/..%2f..%2fconfig.yaml", "/audio/KEY/%2Fetc%2Fpasswd",
    "/drawing/%2e%2e%2f%2e%2e%2fconfig.yaml.png", "//etc/passwd", "/static//etc/passwd", "/static/%00style.css",
    "/eval/0/audio/model/..%2f..%2fx/mix.flac", "/catalog.duckdb", "/config.yaml", "/shards/", "/static/app.py",
    "/static/./style.css",
])
def test_paths_outside_the_corpus_are_refused(served, path):
    base, out = served
    status, body, _ = request(base, path.replace("KEY", first_key(out)))
    assert status in (400, 404), (path, status)
    assert "gates:" not in body and "DUCK" not in body and "root:" not in body and "Traceback" not in body


def test_a_shard_symlinked_out_of_the_corpus_is_not_read(served):
    base, out = served
    status, body, _ = request(base, f"/audio/{first_key(out)}/mix.flac", headers={"Range": "bytes=0-50"})
    assert status == 404 and "not inside the corpus" in body and SECRET_FILE_TEXT not in body


@pytest.mark.parametrize("query", [
    "/tracks?page=abc", "/tracks?page=-1", "/tracks?page=99999999999999999999", "/tracks?per=3",
    "/tracks?sort=title%3BDROP%20TABLE%20tracks", "/tracks?sort=bogus", "/tracks?status=%27%20OR%201%3D1--",
    "/tracks?min.snr_db=1e309", "/tracks?min.snr_db=abc", "/tracks?colour=red", "/tracks?q=" + "x" * 400,
    "/tracks?status=accepted&status=rejected", "/windows?augmented=maybe", "/tracks?order=up", "/tracks?q=%00",
    "/tracks?min.duration_s=5&max.duration_s=1", "/tracks?%ff%fe=1", "/windows?sort=snr_db%27",
])
def test_malformed_queries_are_a_4xx_with_one_line(served, query):
    base, _ = served
    status, body, _ = request(base, query)
    assert status == 400, (query, status)
    message = re.search(r'id="error-message">([^<]*)<', body)
    assert message and message.group(1).strip() and "Traceback" not in body


def test_read_only_and_loopback_host_names_only(served):
    base, _ = served
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, _, headers = request(base, "/tracks", method)
        assert status == 405 and headers["allow"] == "GET, HEAD"
    assert request(base, "/", headers={"Host": "evil.example"})[0] == 400  # a rebinding page cannot read it
    assert request(base, "/", headers={"Host": "localhost"})[0] == 200
    assert request(base, "/no/such/page")[0] == 404
    assert request(base, "/eval/0")[0] == 404


def test_the_command_prints_its_url_binds_loopback_and_stops_on_ctrl_c(synthetic):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "songcorpus.cli", "view", str(synthetic), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://([0-9.]+):(\d+)/)", line)
        assert m and m.group(2) == "127.0.0.1", line
        status, body, _ = request(m.group(1).rstrip("/"), "/")
        assert status == 200 and "Funnel" in body
        with pytest.raises(ViewError, match=f"port {m.group(3)} on 127.0.0.1 is in use"):
            bind("127.0.0.1", int(m.group(3)))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "stopped" in out and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_command_line_errors_are_one_line(synthetic, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an export")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        for args, says in ((["view", str(tmp_path / "missing")], "is not a folder"),
                           (["view", str(tmp_path)], "has no catalog.duckdb"),
                           (["view", str(synthetic), "--eval", str(tmp_path)], "no metrics.duckdb there"),
                           (["view", str(synthetic), "--port", port], f"port {port} on 127.0.0.1 is in use"),
                           (["view", str(synthetic), "--static", str(synthetic / "share")], "inside the corpus"),
                           (["view", str(synthetic), "--static", str(tmp_path)], "did not write")):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert says in err and err.count("\n") == 1, err


def test_static_export_refuses_a_folder_it_did_not_write_and_replaces_its_own(synthetic, tmp_path):
    corpus = Corpus.open(synthetic)
    try:
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        (foreign / "notes.txt").write_text("mine")
        with pytest.raises(ViewError, match="did not write"):
            export(corpus, [], foreign, clips=0)
        assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

        share = tmp_path / "share"
        first = export(corpus, [], share, clips=0)
        listed = json.loads((share / MARKER).read_text())["files"]
        assert first["files"] == len(listed) + 1 and "index.html" in listed
        (share / "tracks" / "kept-by-the-user.txt").write_text("not the export's")
        export(corpus, [], share, clips=0)  # again over its own export: its old files go, nothing else
        assert (share / "tracks" / "kept-by-the-user.txt").read_text() == "not the export's"
        assert json.loads((share / MARKER).read_text())["files"] == listed
        for page in share.rglob("*.html"):  # every relative link of every page resolves to a written file
            for target in re.findall(r'(?:href|src)="([^"#?]+)"', page.read_text()):
                assert not target.startswith(("/", "http")), (page, target)
                assert (page.parent / target).resolve().is_file(), (page, target)
    finally:
        corpus.close()


@pytest.mark.parametrize("header, size, span", [
    (None, 100, None), ("bytes=0-9", 100, (0, 9)), ("bytes=90-", 100, (90, 99)), ("bytes=-10", 100, (90, 99)),
    ("bytes=50-500", 100, (50, 99)), ("bytes=0-9,20-29", 100, (0, 9)), ("items=0-9", 100, None),
    ("bytes=100-", 100, "416"), ("bytes=9-3", 100, "416"), ("bytes=-0", 100, "416"), ("bytes=-", 100, "416"),
    ("bytes=abc", 100, "416"),
])
def test_byte_ranges(header, size, span):
    from songcorpus.view.media import RangeNotSatisfiable, parse_range

    if span == "416":
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == span
