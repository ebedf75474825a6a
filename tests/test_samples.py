"""Training samples read back from the demo shards: alignment, references, splits, stems as given,
and augmentation that keeps f0 true to the augmented audio."""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections import defaultdict
from pathlib import Path

import duckdb
import mir_eval
import numpy as np
import pytest
import soundfile as sf

from songcorpus.schemas.sample import JSON_REQUIRED_KEYS, STEMS

from conftest import DEMO_DIR, curate_with


def shard_samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, suffix = m.name.split(".", 1)
                samples[key][suffix] = tar.extractfile(m).read()
    return dict(samples)


def test_every_sample_is_aligned_and_complete(demo_ray: Path) -> None:
    samples = shard_samples(demo_ray)
    assert samples
    for key, members in samples.items():
        meta = json.loads(members["json"])
        assert set(JSON_REQUIRED_KEYS) <= set(meta) and meta["key"] == key
        assert sorted(members) == meta["fields"]
        dur, rate = meta["duration_s"], meta["sample_rate"]
        n = round(dur * rate)
        for stem in ("mix", *STEMS):
            audio, r = sf.read(io.BytesIO(members[f"{stem}.flac"]), dtype="float32")
            assert r == rate and audio.shape[0] == n, (key, stem)
        f0 = np.load(io.BytesIO(members["f0.npy"]))
        assert f0.dtype == np.float32 and f0.shape == (math.ceil(dur * 100 - 1e-9),)
        codec = meta["embedded_codec"]
        assert codec["codec"] == "embedded-mel"
        for stem in STEMS:
            lat = np.load(io.BytesIO(members[f"{stem}.embedded_latents.npy"]))
            tok = np.load(io.BytesIO(members[f"{stem}.embedded_tokens.npy"]))
            assert lat.shape == (math.ceil(dur * codec["latent_rate_hz"] - 1e-9), codec["n_mels"])
            assert tok.dtype == np.int32 and tok.shape == (math.ceil(dur * codec["token_rate_hz"] - 1e-9),)
        labels = meta["labels"]
        spans = labels["vad_segments"] + labels["sections"]
        stamps = [t for span in spans for t in (span["start_s"], span["end_s"])] + labels["beats"] + labels["downbeats"]
        assert all(0 <= t <= dur + 1e-6 for t in stamps), key


def test_references_are_other_windows_of_the_same_song_that_never_overlap(demo_ray: Path) -> None:
    samples = {k: json.loads(m["json"]) for k, m in shard_samples(demo_ray).items()}
    with_ref = [m for m in samples.values() if m["reference_key"]]
    assert with_ref, "the demo songs are long enough for a window and a reference"
    for meta in samples.values():
        ref = samples[meta["reference_key"]]  # the reference is itself a sample of the corpus
        assert ref["track_id"] == meta["track_id"] and ref["split"] == meta["split"] and ref["key"] != meta["key"]
        a0, a1 = meta["start_s"], meta["start_s"] + meta["duration_s"] * _speed(meta)
        b0, b1 = ref["start_s"], ref["start_s"] + ref["duration_s"] * _speed(ref)
        assert a1 <= b0 + 1e-6 or b1 <= a0 + 1e-6, (meta["key"], ref["key"])


def _speed(meta: dict) -> float:
    return meta["augmentation"]["song_op"]["speed"]


def test_no_song_spans_two_splits_and_stems_are_used_as_given(demo_ray: Path) -> None:
    con = duckdb.connect(str(demo_ray / "catalog.duckdb"), read_only=True)
    spread = con.execute("SELECT track_id FROM windows GROUP BY track_id HAVING count(DISTINCT split) > 1").fetchall()
    assert spread == []
    # the demo manifest holds songs out by composition and voice: song_00 valid, song_05 test, the rest train
    splits = dict(con.execute("SELECT DISTINCT source, split FROM windows").fetchall())
    given = {r["path"]: r.get("split") for r in map(json.loads, (DEMO_DIR / "manifest.jsonl").read_text().splitlines())}
    assert {Path(s).parent.name: sp for s, sp in splits.items() if Path(s).parent.name.startswith("song")} == {
        "song_00": "valid", "song_01": "train", "song_03": "train", "song_05": "test", "song_07": "train"}
    assert all(sp == given[next(p for p in given if s.endswith(p))] for s, sp in splits.items())
    methods = dict(con.execute("SELECT source, stems_method FROM tracks WHERE status = 'accepted'").fetchall())
    con.close()
    for source, method in methods.items():
        clip = Path(source).parent.name
        assert method == ("source" if clip.startswith("song") else "repet-sim"), source
    # a plain window's vocals are the given stem's samples at that time
    for members in shard_samples(demo_ray).values():
        meta = json.loads(members["json"])
        aug = meta["augmentation"]
        if not (aug["song_op"]["applied"] or aug["eq"]["applied"]) and Path(meta["source"]).parent.name.startswith("song"):
            given, rate = sf.read(DEMO_DIR / Path(meta["source"]).parent / "vocals.flac", dtype="int16")
            got, _ = sf.read(io.BytesIO(members["vocals.flac"]), dtype="int16")
            s0 = round(meta["start_s"] * rate)
            np.testing.assert_array_equal(got, given[s0:s0 + got.shape[0]])
            break
    else:
        pytest.fail("no plain song window found")


@pytest.fixture(scope="module", params=["speed", "pitch"])
def augmented(request, tmp_path_factory) -> Path:
    """song_00 with every song augmented by one op (x1.2 time stretch, or +2 semitones) and the EQ always on."""
    manifest = tmp_path_factory.mktemp("aug_in") / "m.jsonl"
    rows = [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines() if line.strip()]
    song = next(r for r in rows if r["path"].startswith("song_00/"))
    for k in ("path", "vocals", "accompaniment"):
        song[k] = str(DEMO_DIR / song[k])
    manifest.write_text(json.dumps(song) + "\n")
    ops = {"speeds": [1.2], "semitones": []} if request.param == "speed" else {"speeds": [], "semitones": [2]}
    return curate_with("beam", [str(manifest)], tmp_path_factory.mktemp("aug_out"), workers=1,
                       augment={"fraction": 1.0, "eq_probability": 1.0, **ops})


def test_augmented_f0_matches_the_f0_of_the_augmented_audio(augmented: Path) -> None:
    """The stored (moved) f0 against f0 re-extracted from the augmented vocals: raw pitch accuracy in the
    MIREX sense (the re-extraction gives a pitch on every frame; scored on frames the label calls voiced)."""
    from songcorpus.schemas.config import load_config
    from songcorpus.transforms.stages.f0 import estimate_f0

    cfg = load_config().f0.model_copy(update={"only_vocal_activity": False, "voicing_threshold": 0.0})
    rpa, chroma = [], []
    for members in shard_samples(augmented).values():
        meta = json.loads(members["json"])
        if not meta["augmentation"]["song_op"]["applied"]:
            continue
        assert meta["augmentation"]["eq"]["applied"]  # eq_probability 1.0
        vocals, rate = sf.read(io.BytesIO(members["vocals.flac"]), dtype="float32")
        stored = np.load(io.BytesIO(members["f0.npy"]))
        fresh, _ = estimate_f0(vocals, rate, cfg)
        t = np.arange(stored.size) / 100.0
        voicing = mir_eval.melody.to_cent_voicing(t, stored, t, fresh[: stored.size])
        rpa.append(mir_eval.melody.raw_pitch_accuracy(*voicing))
        chroma.append(mir_eval.melody.raw_chroma_accuracy(*voicing))
    assert len(rpa) >= 2, "fraction 1.0 augments the song"
    print("augmented windows: raw pitch accuracy", np.round(rpa, 3), "chroma", np.round(chroma, 3))
    # every window, not a mean: with Rubber Band's R3 engine the tracker reads the moved label back on
    # each one (with librosa's phase vocoder a single x1.2 window fell to 0.73 through octave slips)
    assert min(rpa) >= 0.8 and min(chroma) >= 0.9, (rpa, chroma)


def test_an_augmented_mix_is_the_sum_of_its_augmented_stems(augmented: Path) -> None:
    """After a song op the stored mix is the stored vocals plus the stored (EQ'd) accompaniment, to 16-bit precision,
    at every sample (the demo's given stems leave under -60 dB of the mix out; no sample is clipped); stretching the mix
    on its own would not add up."""
    lsb = 1 / 32768
    checked = 0
    for members in shard_samples(augmented).values():
        meta = json.loads(members["json"])
        if not meta["augmentation"]["song_op"]["applied"]:
            continue
        mix, vocals, acc = (sf.read(io.BytesIO(members[f"{name}.flac"]), dtype="float64")[0]
                            for name in ("mix", "vocals", "accompaniment"))
        total = vocals + acc  # everywhere: an EQ'd accompaniment is lowered where the rebuilt mix would clip
        assert np.abs(mix - total).max() <= 1.5 * lsb + 1e-12, meta["key"]
        checked += 1
    assert checked >= 2


def test_an_audible_residual_is_moved_with_the_stems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the stems leave an audible part of the mix out, the stretcher runs on it too and the augmented mix is
    the three augmented parts' sum; without the op the mix is cut as it is."""
    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.schemas.config import load_config
    from songcorpus.transforms.dsp import augment
    from songcorpus.transforms.dsp.augment import SongAugmentation
    from songcorpus.transforms.dsp.windows import Window
    from songcorpus.transforms.stages.samples_lite import SampleStage

    rate = 16000
    t = np.arange(3 * rate) / rate
    vocals = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    acc = (0.2 * np.sin(2 * np.pi * 110 * t)).astype(np.float32)
    residual = (0.1 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32)
    audio = {"mix": vocals + acc + residual, "vocals": vocals, "accompaniment": acc, "residual": residual}
    runs = []
    real = augment._stretched
    monkeypatch.setattr(augment, "_stretched", lambda x, *a: runs.append(x.size) or real(x, *a))
    stage = SampleStage(load_config(), ArtefactStore(tmp_path))
    w = Window(index=0, start_s=1.0, duration_s=1.0)
    cut = stage._cuts(audio, w, SongAugmentation("pitch", 2.0), rate)
    assert len(runs) == 3  # vocals, accompaniment, residual: never the mix itself
    moved_residual = stage._cut(residual, w, SongAugmentation("pitch", 2.0), rate)
    np.testing.assert_allclose(cut["mix"], cut["vocals"] + cut["accompaniment"] + moved_residual, atol=1e-6)
    plain = stage._cuts(audio, w, None, rate)
    assert sorted(plain) == ["accompaniment", "mix", "vocals"]
    np.testing.assert_array_equal(plain["mix"], audio["mix"][rate:2 * rate])
