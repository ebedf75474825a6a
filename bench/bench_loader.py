"""Loader benchmark: samples/s and bytes read per sample for each model's fields, songcorpus's loader
against plain webdataset and Hugging Face datasets streaming, on the same shards, in one run.

    .venv/bin/python bench/bench_loader.py CORPUS [--copies 20] [--seconds 20]

CORPUS is a curated folder (``songcorpus demo`` writes one). Its train shards are copied ``--copies`` times
under fresh keys into bench/out/loader_shards/ so each reader streams a few hundred samples. Every reader
decodes exactly the members a model needs (npy -> numpy, json -> dict; FLAC -> numpy with soundfile when
the field set includes audio). One process, one core each, so the ratio is what matters on a noisy machine.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from songcorpus.train.data import BatchBuilder, CorpusView, ShardStream, StepOrder, resolve_shards

FIELD_SETS = {
    "lada_band (tokens)": ["vocals_tokens", "accompaniment_tokens"],
    "samuel (latents)": ["vocals_latents", "accompaniment_latents"],
    "songecho (latents + f0)": ["vocals_latents", "accompaniment_latents", "f0"],
    "latents + FLAC stems": ["vocals_latents", "accompaniment_latents"],
}
FLAC = ["vocals.flac", "accompaniment.flac"]


def replicate(corpus: Path, copies: int, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for c in range(copies):
        for src in resolve_shards(str(corpus), "train"):
            dst = out / f"copy{c:03d}-{Path(src).name}"
            if not dst.exists():
                with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
                    for m in tin.getmembers():
                        data = tin.extractfile(m).read()
                        key, _, suffix = m.name.partition(".")
                        if suffix == "json":
                            meta = json.loads(data)
                            meta["key"] = f"{key}c{c:03d}"
                            data = json.dumps(meta).encode()
                        info = tarfile.TarInfo(f"{key}c{c:03d}.{suffix}")
                        info.size = len(data)
                        tout.addfile(info, io.BytesIO(data))
            shards.append(str(dst))
    return shards


def suffixes(keys: list[str]) -> list[str]:
    from songcorpus.train.data import TENSOR_FIELDS

    return [TENSOR_FIELDS[k][0].format(codec="embedded") for k in keys]


def decode(suffix: str, data: bytes):
    if suffix.endswith(".npy"):
        return np.load(io.BytesIO(data))
    if suffix.endswith(".flac"):
        return sf.read(io.BytesIO(data), dtype="float32")[0]
    return json.loads(data)


def bench_songcorpus(shards: list[str], keys: list[str], flac: bool, seconds: float) -> tuple[float, float]:
    view = CorpusView(shards, "train", keys)
    builder = BatchBuilder(view)
    order = StepOrder(len(view), seed=0, global_batch=8)
    stream = ShardStream(builder, order)
    extra = FLAC if flac else []
    n, t0, step = 0, time.perf_counter(), 0
    nbytes = 0
    while time.perf_counter() - t0 < seconds:
        batch = stream.batch(step)
        if extra:
            from songcorpus.train.data import read_members

            for key in batch["keys"]:
                ref = view.index.samples[view.key_index[key]]
                for s, d in read_members(ref, extra).items():
                    decode(s, d)
        for key in batch["keys"]:
            ref = view.index.samples[view.key_index[key]]
            nbytes += sum(ref.members[s][1] for s in ["json", *view.suffixes.values(), *extra])
        n += len(batch["keys"])
        step += 1
    return n / (time.perf_counter() - t0), nbytes / n


def bench_webdataset(shards: list[str], keys: list[str], flac: bool, seconds: float) -> tuple[float, float]:
    import webdataset as wds

    wanted = ["json", *suffixes(keys), *(FLAC if flac else [])]
    total_bytes = sum(Path(s).stat().st_size for s in shards)
    n_total = sum(1 for s in shards for m in tarfile.open(s).getmembers() if m.name.endswith(".json"))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds = wds.WebDataset(shards, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False)
        for sample in ds:
            for s in wanted:
                decode(s, sample[s])
            n += 1
            if time.perf_counter() - t0 >= seconds:
                break
    return n / (time.perf_counter() - t0), total_bytes / n_total


def bench_hf(shards: list[str], keys: list[str], flac: bool, seconds: float) -> tuple[float, float]:
    import datasets

    wanted = ["json", *suffixes(keys), *(FLAC if flac else [])]
    features = datasets.Features.from_dict(json.loads((Path(shards[0]).parent / "features.json").read_text()))
    total_bytes = sum(Path(s).stat().st_size for s in shards)
    n_total = sum(1 for s in shards for m in tarfile.open(s).getmembers() if m.name.endswith(".json"))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train", streaming=True,
                                   features=features)
        for sample in ds:
            for s in wanted:
                value = sample[s]
                if s.endswith(".flac"):  # the Audio feature decodes on access (torchcodec)
                    value.get_all_samples()
                elif s.endswith(".npy"):
                    np.asarray(value)
            n += 1
            if time.perf_counter() - t0 >= seconds:
                break
    return n / (time.perf_counter() - t0), total_bytes / n_total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    out = Path(__file__).parent / "out" / "loader_shards"
    shards = replicate(Path(args.corpus), args.copies, out)
    (out / "features.json").write_bytes((Path(args.corpus) / "shards" / "features.json").read_bytes())
    print(f"{len(shards)} shards")
    rows = []
    for name, keys in FIELD_SETS.items():
        flac = "FLAC" in name
        ours = bench_songcorpus(shards, keys, flac, args.seconds)
        plain = bench_webdataset(shards, keys, flac, args.seconds)
        hf = (float("nan"), float("nan")) if args.skip_hf else bench_hf(shards, keys, flac, args.seconds)
        rows.append((name, ours, plain, hf))
        print(f"| {name} | {ours[0]:.0f} | {plain[0]:.0f} | {hf[0]:.0f} | {ours[0] / plain[0]:.1f}x | "
              f"{ours[0] / hf[0]:.1f}x | {ours[1] / 1e3:.1f} KB | {plain[1] / 1e3:.0f} KB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
