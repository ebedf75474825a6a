"""songcorpus/io/storage.py on a local folder and on the local S3 server: the same calls, the same bytes, and the
publish protocol (a corpus counts as done only once its marker, written last, lists it)."""

from __future__ import annotations

import hashlib
import json

import pytest

from songcorpus.io import storage


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3") + "/root"


def test_read_write_list_and_ranges(root):
    a, b = storage.join(root, "x", "a.bin"), storage.join(root, "x", "y", "b.txt")
    storage.write_bytes(a, bytes(range(256)) * 10)
    storage.write_bytes(b, b"hello")
    assert storage.exists(a) and not storage.exists(storage.join(root, "nope"))
    assert storage.isdir(storage.join(root, "x"))
    assert storage.size(a) == 2560
    assert storage.read_range(a, 300, 4) == bytes([44, 45, 46, 47])
    with storage.open_read(a) as fh:
        fh.seek(2559)
        assert fh.read() == bytes([255])
    assert storage.list_files(storage.join(root, "x")) == [a, b]
    assert storage.glob(storage.join(root, "**", "*.txt")) == [b]
    assert storage.relative_to(b, root) == "x/y/b.txt"
    assert storage.sha256_of(a) == (hashlib.sha256(storage.read_bytes(a)).hexdigest(), 2560)
    storage.remove(a)
    storage.remove(a)  # missing: not an error
    assert not storage.exists(a)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(a)


def test_publish_protocol(root, tmp_path):
    out = storage.OutputDir(root)
    out.begin()
    (out.local / "shards").mkdir(parents=True, exist_ok=True)
    (out.local / "shards" / "s-0.tar").write_bytes(b"shard zero")
    out.commit("shards/s-0.tar")
    (out.local / "catalog.duckdb").write_bytes(b"db")
    assert storage.read_published(root) is None  # written, not yet published: readers see no corpus
    listed = out.publish(["shards", "catalog.duckdb"])
    assert sorted(listed) == ["catalog.duckdb", "shards/s-0.tar"]
    marker = storage.read_published(root)
    assert marker["objects"]["shards/s-0.tar"] == {"bytes": 10, "sha256": hashlib.sha256(b"shard zero").hexdigest()}
    assert storage.read_bytes(storage.join(root, "shards", "s-0.tar")) == b"shard zero"
    out.close()

    again = storage.OutputDir(root)  # a second run starts: the old corpus is unpublished before anything changes
    again.begin()
    assert storage.read_published(root) is None
    assert again.fetch("shards/s-0.tar").read_bytes() == b"shard zero"
    assert again.names("shards") == ["s-0.tar"]
    again.close()


def test_marker_bytes_do_not_depend_on_the_store(tmp_path, s3):
    markers = []
    for root in (str(tmp_path / "here"), s3 + "/there"):
        out = storage.OutputDir(root)
        out.begin()
        (out.local / "state").mkdir(parents=True, exist_ok=True)
        (out.local / "state" / "rows.jsonl").write_bytes(b"{}\n")
        out.publish(["state"])
        markers.append(storage.read_bytes(storage.join(root, storage.PUBLISHED)))
        out.close()
    assert markers[0] == markers[1]
    assert json.loads(markers[0])["format"] == storage.PUBLISHED_FORMAT


def test_a_resumed_run_does_not_upload_what_the_store_holds(s3, monkeypatch):
    root = s3 + "/corpus"
    first = storage.OutputDir(root)
    first.begin()
    (first.local / "shards").mkdir(parents=True, exist_ok=True)
    for name, data in (("a.tar", b"unchanged"), ("b.tar", b"old")):
        (first.local / "shards" / name).write_bytes(data)
        first.commit(f"shards/{name}")
    first.publish(["shards"])
    first.close()

    uploads = []
    real = storage.upload
    monkeypatch.setattr(storage, "upload", lambda local, url: (uploads.append(url), real(local, url)))
    again = storage.OutputDir(root)
    again.begin()
    for name, data in (("a.tar", b"unchanged"), ("b.tar", b"new")):
        again.fetch(f"shards/{name}")  # what a resumed shard writer checks against its plan
        (again.local / "shards" / name).write_bytes(data)
        again.settle(f"shards/{name}", hashlib.sha256(data).hexdigest(), len(data))
        assert not (again.local / "shards" / name).exists()  # staging holds no finished shard
    assert uploads == [f"{root}/shards/b.tar"]
    assert sorted(again.publish(["shards"])) == ["shards/a.tar", "shards/b.tar"]
    assert storage.read_bytes(f"{root}/shards/b.tar") == b"new"
    again.close()
