"""StemStage: given stems are used as they are; otherwise REPET-SIM separates; mismatched stems fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.audio import DecodeError, read_standard_audio
from songcorpus.schemas.config import load_config
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.stems import StemStage

from conftest import DEMO_DIR


def _row(store: ArtefactStore, mix: Path, **stems: str) -> dict:
    config = load_config()
    row = {"track": {"path": str(mix), **stems}, "results": {}}
    row["results"]["ingest"] = IngestStage(config, store).process_one(row)
    return row


def test_given_stems_are_used_as_given_and_scored(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    song = DEMO_DIR / "song_01"
    row = _row(store, song / "mix.flac", vocals=str(song / "vocals.flac"), accompaniment=str(song / "accompaniment.flac"))
    out = StemStage(load_config(overrides={"stems": {"evaluate_separator_share": 1.0}}), store).process_one(row)
    assert out["stems_method"] == "source"
    for stem in ("vocals", "accompaniment"):
        given, _ = sf.read(song / f"{stem}.flac", dtype="int16")
        stored, _ = sf.read(store.root / out[f"{stem}_file"], dtype="int16")
        np.testing.assert_array_equal(stored[:, 0] if stored.ndim == 2 else stored, given)  # sample for sample
    assert out["has_vocals"] and 0.05 < out["vocal_energy_ratio"] < 1.0
    assert out["stem_residual_db"] is None or out["stem_residual_db"] < -40  # the demo's stems sum to its mix
    # the lite separator is scored against the given stems, so a better separator is a measured improvement
    assert out["separator_sdr_vocals"] is not None and -20 < out["separator_sdr_vocals"] < 30


def test_separator_runs_when_the_source_has_no_stems(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    song = DEMO_DIR / "song_00"
    row = _row(store, song / "mix.flac")
    out = StemStage(load_config(), store).process_one(row)
    assert out["stems_method"] == "repet-sim" and out["separator_sdr_vocals"] is None
    mix, _ = read_standard_audio(store.root / row["results"]["ingest"]["audio_file"])
    voc, _ = read_standard_audio(store.root / out["vocals_file"])
    acc, _ = read_standard_audio(store.root / out["accompaniment_file"])
    assert voc.shape == acc.shape == mix.shape
    assert np.max(np.abs(mix - (voc + acc))) < 2.5 / 32768  # the two stems sum to the mix (up to rounding)
    # the estimate follows the true vocal more than the accompaniment does
    true_v, _ = sf.read(song / "vocals.flac", dtype="float32")
    assert np.corrcoef(voc[:, 0], true_v)[0, 1] > np.corrcoef(acc[:, 0], true_v)[0, 1]


def test_a_stem_that_does_not_belong_to_the_mix_fails(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    row = _row(store, DEMO_DIR / "song_00" / "mix.flac", vocals=str(DEMO_DIR / "song_01" / "vocals.flac"))
    with pytest.raises(DecodeError, match="does not belong to this mix"):
        StemStage(load_config(), store).process_one(row)


def test_separator_scores_do_not_depend_on_the_worker_thread_count() -> None:
    """A worker that ran another stage first has called torch.set_num_threads (silero-vad's import does); torch's
    batched CPU LU then runs MKL's dgetrf concurrently and fails or returns wrong filters. The scores must be
    those of a single-threaded solve whatever the thread count."""
    import torch

    from songcorpus.transforms.stages.stems import bss_scores

    song = DEMO_DIR / "song_01"
    vocals, rate = sf.read(song / "vocals.flac", dtype="float32")
    acc, _ = sf.read(song / "accompaniment.flac", dtype="float32")
    vocals, acc = vocals[: rate * 8], acc[: rate * 8]
    est_v, est_a = 0.9 * vocals + 0.05 * acc, 0.8 * acc + 0.1 * vocals
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = bss_scores(vocals, acc, est_v, est_a, rate)
        torch.set_num_threads(2)
        threaded = bss_scores(vocals, acc, est_v, est_a, rate)
    finally:
        torch.set_num_threads(before)
    assert threaded == single
    assert single["separator_sdr_vocals"] > 15 and single["separator_sdr_accompaniment"] > 10


def test_the_separator_is_scored_on_a_fixed_share_of_songs_with_stems(tmp_path: Path) -> None:
    """``stems.evaluate_separator_share``: a sample chosen by the mix's sha256 (the same songs on every run, growing
    by inclusion), the others' scores None and their stems exactly as with full scoring."""
    from songcorpus.transforms.stages.stems import in_share

    hashes = [f"{i:016x}" + "0" * 48 for i in range(0, 2**64, 2**58)]  # 64 spread over the hash space
    assert [in_share(h, 1.0) for h in hashes] == [True] * len(hashes)
    quarter = {h for h in hashes if in_share(h, 0.25)}
    half = {h for h in hashes if in_share(h, 0.5)}
    assert quarter < half and len(quarter) == 16 and len(half) == 32  # a growing share keeps its earlier songs

    store = ArtefactStore(tmp_path)
    song = DEMO_DIR / "song_01"
    row = _row(store, song / "mix.flac", vocals=str(song / "vocals.flac"), accompaniment=str(song / "accompaniment.flac"))
    sha = row["results"]["ingest"]["audio_sha256"]
    share = (int(sha[:16], 16) / 16**16) * 0.5  # a share this song falls just outside of
    assert not in_share(sha, share)
    skipped = StemStage(load_config(overrides={"stems": {"evaluate_separator_share": share}}), store).process_one(row)
    scored = StemStage(load_config(overrides={"stems": {"evaluate_separator_share": 1.0}}), store).process_one(row)
    assert skipped["separator_sdr_vocals"] is None and scored["separator_sdr_vocals"] is not None
    same = {k: v for k, v in skipped.items() if not k.startswith("separator_")}
    assert same == {k: v for k, v in scored.items() if not k.startswith("separator_")}


def test_given_stems_are_standardised_without_a_loudness_measure(tmp_path: Path, monkeypatch) -> None:
    """Only the mix's loudness is stored; BS.1770 on each given stem was a sixth of the stage's time."""
    from songcorpus.transforms.stages import ingest

    measured = []
    real = ingest.integrated_loudness
    monkeypatch.setattr(ingest, "integrated_loudness", lambda pcm, rate: measured.append(pcm.shape) or real(pcm, rate))
    store = ArtefactStore(tmp_path)
    song = DEMO_DIR / "song_01"
    row = _row(store, song / "mix.flac", vocals=str(song / "vocals.flac"), accompaniment=str(song / "accompaniment.flac"))
    assert len(measured) == 1 and row["results"]["ingest"]["loudness_lufs"] is not None  # the mix's
    out = StemStage(load_config(overrides={"stems": {"evaluate_separator": False}}), store).process_one(row)
    assert out["stems_method"] == "source" and len(measured) == 1
