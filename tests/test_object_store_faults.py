"""An object store that drops the connection in the middle of an upload (the local S3 server behind a proxy that
resets connections, tests/flaky_proxy.py): the job stops with one message, publishes nothing, and the same command
completes once the store is reachable again, with the objects of a local run. The lease that keeps a second run
out of an object-store output, and its take-over from a run that died."""

from __future__ import annotations

import json
import os
import time
from urllib.parse import urlparse

import pytest

from songcorpus.io import storage
from songcorpus.pipelines.job.output_claim import LEASE, OutputClaimError, claim_output
from songcorpus.schemas.failures import JobFault

from conftest import curate_with, song_folder

BEAM = {"windows": {"length_s": 4.0}}


@pytest.fixture
def clip_dir(tmp_path):
    return song_folder(tmp_path / "in")


@pytest.fixture
def flaky(s3, s3_endpoint, monkeypatch):
    """The bucket of ``s3``, reached through a proxy that can drop connections."""
    from flaky_proxy import FlakyProxy

    proxy = FlakyProxy(urlparse(s3_endpoint).port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's retries: a dropped store fails in seconds, not minutes
    try:
        yield s3, proxy
    finally:
        proxy.close()


def test_a_store_that_drops_uploads_stops_the_job_and_the_same_command_completes(clip_dir, flaky, tmp_path):
    bucket, proxy = flaky
    out = f"{bucket}/corpus"
    proxy.drop = f"PUT /{urlparse(bucket).netloc}/corpus/shards/".encode()
    with pytest.raises(JobFault) as fault:
        curate_with("beam", [str(clip_dir)], out, workers=1, **BEAM)
    assert proxy.dropped > 0
    message = str(fault.value)
    node = fault.value
    while node is not None:
        print("CHAIN", type(node).__mro__[:3], str(node)[:300])
        node = node.__cause__ or node.__context__
    assert "nothing was published" in message and "\n" not in message
    assert "cannot reach the object store" in message and "/corpus/shards/" in message
    assert storage.read_published(out) is None
    assert not storage.exists(storage.join(out, LEASE))  # released on the way out

    proxy.drop = None
    curate_with("beam", [str(clip_dir)], out, workers=1, **BEAM)
    local = curate_with("beam", [str(clip_dir)], tmp_path / "local", workers=1, **BEAM)
    remote = storage.read_published(out)["objects"]
    expected = storage.read_published(local)["objects"]
    assert {k: v for k, v in remote.items() if k != "catalog.duckdb"} == \
        {k: v for k, v in expected.items() if k != "catalog.duckdb"}


def test_a_held_lease_refuses_a_second_run_and_a_dead_runs_lease_is_taken_over(s3):
    out = f"{s3}/held"
    with claim_output(out, "curate"):
        lease = json.loads(storage.read_bytes(storage.join(out, LEASE)))
        assert lease["pid"] == os.getpid() and lease["expires"] > time.time()
        with pytest.raises(OutputClaimError, match=rf"pid {os.getpid()}.*holds its lease until"):
            with claim_output(out, "curate"):
                pass
    assert not storage.exists(storage.join(out, LEASE))
    # a run of this machine that died with kill -9 left its lease: not alive, so taken over at once
    storage.write_bytes(storage.join(out, LEASE), json.dumps(
        {**lease, "pid": 2**22 + 12345, "token": "dead", "expires": time.time() + 600}).encode())
    with claim_output(out, "curate"):
        assert json.loads(storage.read_bytes(storage.join(out, LEASE)))["pid"] == os.getpid()
    # one held elsewhere (another host) is respected until it expires
    storage.write_bytes(storage.join(out, LEASE), json.dumps(
        {**lease, "host": "another-host", "token": "other", "expires": time.time() + 600}).encode())
    with pytest.raises(OutputClaimError, match="another-host"):
        with claim_output(out, "curate"):
            pass
    storage.write_bytes(storage.join(out, LEASE), json.dumps(
        {**lease, "host": "another-host", "token": "other", "expires": time.time() - 1}).encode())
    with claim_output(out, "curate"):
        pass


def test_objects_songcorpus_did_not_write_keep_a_prefix_from_being_used(s3, clip_dir):
    out = f"{s3}/theirs"
    storage.write_bytes(storage.join(out, "shards", "mine.tar"), b"someone else's")
    with pytest.raises(OutputClaimError, match="did not write"):
        curate_with("beam", [str(clip_dir)], out, workers=1, **BEAM)
    assert storage.read_bytes(storage.join(out, "shards", "mine.tar")) == b"someone else's"
