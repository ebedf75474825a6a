"""Shard families (sample spec 4): one tar per field group with the same keys in the same order, deterministic
bytes, and a loader that opens only the groups a model needs (so a token model never touches the FLAC)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from songcorpus.pipelines.sinks.shard_writer import Sample, describe_shard, write_shard
from songcorpus.schemas.sample import FIELD_GROUPS, field_group, split_group_file
from songcorpus.train.data import CorpusView, DataError, bytes_per_sample, read_members

FRAMES = 100  # 4 s at 25 Hz


def npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def synthetic(i: int) -> Sample:
    rng = np.random.default_rng(i)
    fields = ["accompaniment.embedded_latents.npy", "accompaniment.embedded_tokens.npy", "accompaniment.flac",
              "f0.npy", "json", "vocals.embedded_latents.npy", "vocals.embedded_tokens.npy", "vocals.flac"]
    meta = {"key": f"t{i:04d}_0000", "duration_s": 4.0, "reference_key": None, "fields": fields,
            "embedded_codec": {"latent_rate_hz": 25.0, "token_rate_hz": 25.0}}
    members: dict[str, bytes | Path] = {"json": json.dumps(meta).encode(),
                                        "f0.npy": npy_bytes(rng.uniform(0, 400, 400).astype(np.float32))}
    for stem in ("vocals", "accompaniment"):
        members[f"{stem}.flac"] = rng.bytes(50_000)  # stands in for FLAC: the loader under test never decodes it
        members[f"{stem}.embedded_latents.npy"] = npy_bytes(rng.normal(size=(FRAMES, 8)).astype(np.float32))
        members[f"{stem}.embedded_tokens.npy"] = npy_bytes(rng.integers(0, 64, FRAMES).astype(np.int32))
    return Sample(meta["key"], members)


@pytest.fixture()
def family(tmp_path: Path) -> tuple[Path, list[Sample]]:
    samples = [synthetic(i) for i in range(5)]
    write_shard(tmp_path, "shard-train-000000", samples)
    return tmp_path, samples


def test_field_groups_name_every_member() -> None:
    assert [field_group(s) for s in ("json", "f0.npy", "vocals.units.npy", "speaker.npy", "mix.flac",
                                     "vocals.embedded_tokens.npy", "accompaniment.sao_vae_latents.npy")] == \
        ["meta", "meta", "meta", "meta", "audio", "tokens", "latents"]
    assert split_group_file("shard-train-000003.tokens.tar") == ("shard-train-000003", "tokens")
    assert split_group_file("shard-train-000003.tar") == ("shard-train-000003", None)  # a plain (spec-3) tar


def test_a_family_is_one_webdataset_shard_per_group_with_the_same_keys(family: tuple[Path, list[Sample]]) -> None:
    folder, samples = family
    files = sorted(p.name for p in folder.glob("*.tar"))
    assert files == sorted(f"shard-train-000000.{g}.tar" for g in FIELD_GROUPS)
    keys = {}
    for name in files:
        group = split_group_file(name)[1]
        got = list(wds.WebDataset(str(folder / name), shardshuffle=False))
        keys[group] = [s["__key__"] for s in got]
        for sample, s in zip(samples, got, strict=True):  # each group holds exactly its members, byte for byte
            want = {k: v for k, v in sample.loaded().items() if field_group(k) == group}
            assert {k: v for k, v in s.items() if not k.startswith("__")} == want
    assert len({tuple(k) for k in keys.values()}) == 1 and keys["meta"] == [s.key for s in samples]


def test_family_bytes_and_offsets_are_deterministic(family: tuple[Path, list[Sample]], tmp_path: Path) -> None:
    folder, samples = family
    again = tmp_path / "again"
    again.mkdir()
    a = describe_shard(folder, "shard-train-000000", list(FIELD_GROUPS))
    b = write_shard(again, "shard-train-000000", samples)
    assert a.sha256 == b.sha256 and a.files == b.files and a.offsets == b.offsets
    for sample in samples:  # every member where the offsets say
        for suffix, (file, offset, size) in a.offsets[sample.key].items():
            with open(folder / file, "rb") as fh:
                fh.seek(offset)
                assert fh.read(size) == sample.loaded()[suffix]


def test_a_token_model_never_opens_the_audio_or_latent_files(family: tuple[Path, list[Sample]]) -> None:
    folder, samples = family
    files = sorted(str(p) for p in folder.glob("*.tar"))
    full = CorpusView(files, "train", ["vocals_tokens", "accompaniment_tokens", "f0"])
    (folder / "shard-train-000000.audio.tar").unlink()  # gone: a token view must not need them
    (folder / "shard-train-000000.latents.tar").unlink()
    view = CorpusView(files, "train", ["vocals_tokens", "accompaniment_tokens", "f0"])
    assert sorted(Path(s).name for s in view.index.shards) == ["shard-train-000000.meta.tar",
                                                                "shard-train-000000.tokens.tar"]
    assert [s.key for s in view.index.samples] == [s.key for s in samples]
    ref = view.index.samples[2]
    suffixes = ["json", *view.suffixes.values()]
    got = read_members(ref, suffixes)
    assert got == {k: samples[2].loaded()[k] for k in suffixes} == read_members(full.index.samples[2], suffixes)
    # what it reads per sample: the JSON, f0 and two token arrays, not the 100 KB of audio beside them
    assert bytes_per_sample(ref, suffixes) == sum(len(samples[2].loaded()[k]) for k in suffixes) < 5_000
    with pytest.raises(DataError, match=r"shard-train-000000.latents.tar does not exist"):
        CorpusView(files, "train", ["vocals_latents"])
    with pytest.raises(DataError, match=r"no file of its field group latents was given"):
        CorpusView([f for f in files if "latents" not in f], "train", ["vocals_latents"])


def test_a_plain_tar_with_every_member_still_loads(tmp_path: Path) -> None:
    """A spec-3 shard (or another tool's): one tar holds every member of a sample."""
    samples = [synthetic(i) for i in range(3)]
    path = tmp_path / "shard-train-000000.tar"
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for suffix, data in sorted(sample.loaded().items()):
                info = tarfile.TarInfo(f"{sample.key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    view = CorpusView([str(path)], "train", ["vocals_latents", "accompaniment_tokens"])
    assert view.index.shards == [str(path)] and len(view) == 3
    ref = view.index.samples[1]
    assert read_members(ref, ["vocals.embedded_latents.npy"]) == \
        {"vocals.embedded_latents.npy": samples[1].loaded()["vocals.embedded_latents.npy"]}
