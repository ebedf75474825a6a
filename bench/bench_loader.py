"""Loader benchmark: samples/s and bytes read per sample for each model's fields, songcorpus's loader
against plain webdataset and Hugging Face datasets streaming, on the same shards, in one run.

    .venv/bin/python bench/bench_loader.py CORPUS [--copies 20] [--seconds 20]

CORPUS is a curated folder (``songcorpus demo`` writes one). Its train samples are copied ``--copies`` times
under fresh keys into bench/out/loader_shards/, twice: as shard families (spec 4: one tar per field group, what
``curate`` writes) and as single tars holding every member of a sample (the spec-3 layout, what WebDataset
writers make by default). Readers:
- songcorpus: ``train/data.py`` on the families (opens only the groups the fields need, reads by offset);
- webdataset and HF datasets streaming on the same families: one pipeline per needed group file, zipped;
- webdataset on the single tars: every byte of every sample streamed.
Every reader decodes exactly the members a model needs (npy -> numpy, json -> dict; FLAC -> numpy when the
field set includes audio). One process, one core each, so the ratio is what matters on a noisy machine.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from songcorpus.pipelines.sinks.shard_writer import Sample, write_shard
from songcorpus.schemas.sample import field_group
from songcorpus.train.data import (
    BatchBuilder,
    CorpusView,
    ShardIndex,
    ShardStream,
    StepOrder,
    bytes_per_sample,
    read_members,
    resolve_shards,
)

FIELD_SETS = {
    "lada_band (tokens)": ["vocals_tokens", "accompaniment_tokens"],
    "samuel (latents)": ["vocals_latents", "accompaniment_latents"],
    "songecho (latents + f0)": ["vocals_latents", "accompaniment_latents", "f0"],
    "latents + FLAC stems": ["vocals_latents", "accompaniment_latents"],
}
FLAC = ["vocals.flac", "accompaniment.flac"]
STARTUP: dict[str, float] = {}  # reader -> its longest time to the first sample (not in the rates)


def replicate(corpus: Path, copies: int, out: Path) -> tuple[list[str], list[str]]:
    """(family files, single tars) of ``copies`` re-keyed copies of the corpus's train split."""
    if out.exists():
        shutil.rmtree(out)
    (out / "families").mkdir(parents=True)
    (out / "single").mkdir()
    index = ShardIndex.scan(resolve_shards(str(corpus), "train"))
    originals = [(ref.key, read_members(ref, sorted(ref.members))) for ref in index.samples]
    singles = []
    for c in range(copies):
        samples = []
        for key, members in originals:
            meta = json.loads(members["json"])
            meta["key"] = f"{key}c{c:03d}"
            samples.append(Sample(meta["key"], {**members, "json": json.dumps(meta).encode()}))
        write_shard(out / "families", f"copy{c:03d}", samples)
        single = out / "single" / f"copy{c:03d}.tar"
        with tarfile.open(single, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                for suffix, data in sorted(sample.loaded().items()):
                    info = tarfile.TarInfo(f"{sample.key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        singles.append(str(single))
    for features in (corpus / "shards").glob("features*.json"):  # the same member set: the corpus's own features
        shutil.copyfile(features, out / "families" / features.name)
    return sorted(str(p) for p in (out / "families").glob("*.tar")), singles


def suffixes(keys: list[str]) -> list[str]:
    from songcorpus.train.data import TENSOR_FIELDS

    return [TENSOR_FIELDS[k][0].format(codec="embedded") for k in keys]


def decode(suffix: str, data: bytes):
    if suffix.endswith(".npy"):
        return np.load(io.BytesIO(data))
    if suffix.endswith(".flac"):
        return sf.read(io.BytesIO(data), dtype="float32")[0]
    return json.loads(data)


def group_files(families: list[str], wanted: list[str]) -> dict[str, list[str]]:
    """group -> its files, for the groups that hold ``wanted``."""
    groups = sorted({field_group(s) for s in wanted})
    return {g: [f for f in families if f.endswith(f".{g}.tar")] for g in groups}


def bench_songcorpus(families: list[str], keys: list[str], flac: bool, seconds: float) -> tuple[float, float]:
    view = CorpusView(families, "train", keys, extra_groups=["audio"] if flac else [])
    builder = BatchBuilder(view)
    order = StepOrder(len(view), seed=0, global_batch=8)
    stream = ShardStream(builder, order)
    extra = FLAC if flac else []
    stream.batch(0)  # warm, as the other readers are timed from their first sample
    n, t0, step = 0, time.perf_counter(), 0
    nbytes = 0
    while time.perf_counter() - t0 < seconds:
        batch = stream.batch(step)
        if extra:
            for key in batch["keys"]:
                ref = view.index.samples[view.key_index[key]]
                for s, d in read_members(ref, extra).items():
                    decode(s, d)
        for key in batch["keys"]:
            ref = view.index.samples[view.key_index[key]]
            nbytes += bytes_per_sample(ref, ["json", *view.suffixes.values(), *extra])
        n += len(batch["keys"])
        step += 1
    return n / (time.perf_counter() - t0), nbytes / n


def n_samples(tar_paths: list[str]) -> int:
    return sum(1 for s in tar_paths for m in tarfile.open(s).getmembers() if m.name.endswith(".json"))


def bench_webdataset(files: dict[str, list[str]], wanted: list[str], seconds: float) -> tuple[float, float]:
    """One webdataset pipeline per group, zipped by key (a single tar: one group holding everything)."""
    import webdataset as wds

    total_bytes = sum(Path(f).stat().st_size for fs in files.values() for f in fs)
    n_total = n_samples(next(iter(files.values())) if "meta" not in files else files["meta"])
    n, t0, start = 0, time.perf_counter(), None  # timed from the first sample: start-up apart
    pipes = [wds.WebDataset(fs, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False)
             for fs in files.values()]  # built once, iterated once per pass
    while start is None or time.perf_counter() - start < seconds:
        for parts in zip(*pipes, strict=True):
            sample = {k: v for p in parts for k, v in p.items()}
            for s in wanted:
                decode(s, sample[s])
            if start is None:
                start, startup = time.perf_counter(), time.perf_counter() - t0
                continue
            n += 1
            if time.perf_counter() - start >= seconds:
                break
    STARTUP["webdataset"] = max(STARTUP.get("webdataset", 0.0), startup)
    return n / (time.perf_counter() - start), total_bytes / n_total


def bench_hf(files: dict[str, list[str]], wanted: list[str], seconds: float) -> tuple[float, float]:
    """HF datasets streaming, one dataset per group file set (its features.<group>.json), zipped."""
    import datasets

    total_bytes = sum(Path(f).stat().st_size for fs in files.values() for f in fs)
    n_total = n_samples(files["meta"])
    n, t0, start = 0, time.perf_counter(), None  # timed from the first sample: start-up apart
    dss = []  # loaded once, iterated once per pass
    for g, fs in files.items():
        features = datasets.Features.from_dict(json.loads((Path(fs[0]).parent / f"features.{g}.json").read_text()))
        dss.append(datasets.load_dataset("webdataset", data_files={"train": fs}, split="train", streaming=True,
                                         features=features))
    while start is None or time.perf_counter() - start < seconds:
        for parts in zip(*dss, strict=True):
            sample = {k: v for p in parts for k, v in p.items()}
            for s in wanted:
                value = sample[s]
                if s.endswith(".flac"):  # the Audio feature decodes on access (torchcodec)
                    value.get_all_samples()
                elif s.endswith(".npy"):
                    np.asarray(value)
            if start is None:
                start, startup = time.perf_counter(), time.perf_counter() - t0
                continue
            n += 1
            if time.perf_counter() - start >= seconds:
                break
    STARTUP["hf"] = max(STARTUP.get("hf", 0.0), startup)
    return n / (time.perf_counter() - start), total_bytes / n_total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    out = Path(__file__).parent / "out" / "loader_shards"
    families, singles = replicate(Path(args.corpus), args.copies, out)
    print(f"{len(families)} family files, {len(singles)} single tars")
    print("| fields | songcorpus | webdataset (groups) | HF streaming (groups) | webdataset (single tar) | "
          "vs wds groups | vs HF | vs wds single | bytes/sample: songcorpus / groups / single tar |")
    for name, keys in FIELD_SETS.items():
        flac = "FLAC" in name
        wanted = ["json", *suffixes(keys), *(FLAC if flac else [])]
        files = group_files(families, wanted)
        ours = bench_songcorpus(families, keys, flac, args.seconds)
        groups = bench_webdataset({"meta": files["meta"], **files}, wanted, args.seconds)
        hf = (float("nan"), float("nan")) if args.skip_hf else bench_hf({"meta": files["meta"], **files}, wanted,
                                                                         args.seconds)
        single = bench_webdataset({"all": singles}, wanted, args.seconds)
        print(f"| {name} | {ours[0]:.0f} | {groups[0]:.0f} | {hf[0]:.0f} | {single[0]:.0f} | "
              f"{ours[0] / groups[0]:.1f}x | {ours[0] / hf[0]:.1f}x | {ours[0] / single[0]:.1f}x | "
              f"{ours[1] / 1e3:.1f} KB / {groups[1] / 1e3:.1f} KB / {single[1] / 1e3:.0f} KB |", flush=True)
    print("time to the first sample (not in the rates): " + ", ".join(f"{k} {v:.1f} s"
                                                                     for k, v in STARTUP.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
