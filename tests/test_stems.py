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


def test_separator_scores_match_torchmetrics_on_real_stems() -> None:
    """The stage's own BSS Eval SDR and SI-SDR (numpy and scipy, no torch on the pipeline's path) give torchmetrics'
    numbers on real stems and realistic estimates: leakage, added noise, a delayed and quieter voice."""
    import torch
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio, signal_distortion_ratio

    from songcorpus.transforms.dsp.separation_scores import scale_invariant_sdr
    from songcorpus.transforms.dsp.separation_scores import signal_distortion_ratio as sdr

    song = DEMO_DIR / "song_01"
    vocals, rate = sf.read(song / "vocals.flac", dtype="float64")
    acc, _ = sf.read(song / "accompaniment.flac", dtype="float64")
    vocals, acc = vocals[: rate * 4], acc[: rate * 4]  # the demo's stems are mono
    noise = np.random.default_rng(0).standard_normal(vocals.size) * 0.01
    for est in (0.9 * vocals + 0.05 * acc, vocals + noise, 0.5 * np.roll(vocals, 40) + 0.2 * acc):
        ours = (sdr(est, vocals), scale_invariant_sdr(est, vocals))
        theirs = (float(signal_distortion_ratio(torch.from_numpy(est), torch.from_numpy(vocals))),
                  float(scale_invariant_signal_distortion_ratio(torch.from_numpy(est), torch.from_numpy(vocals))))
        assert ours == pytest.approx(theirs, abs=1e-4)


def test_separator_scores_on_known_cases() -> None:
    """SI-SDR of a reference plus orthogonal noise 20 dB down is 20 dB; the distortion filter absorbs a short
    delay (SDR stays high) where SI-SDR, with no filter, falls; mismatched shapes are refused."""
    from songcorpus.transforms.dsp.separation_scores import scale_invariant_sdr, signal_distortion_ratio

    rng = np.random.default_rng(1)
    ref = rng.standard_normal(16000)
    noise = rng.standard_normal(16000)
    noise -= (noise @ ref) / (ref @ ref) * ref  # orthogonal to the reference
    noise *= np.linalg.norm(ref) / np.linalg.norm(noise) * 0.1
    assert scale_invariant_sdr(ref + noise, ref) == pytest.approx(20.0, abs=1e-6)
    delayed = np.roll(ref, 5)
    assert signal_distortion_ratio(delayed, ref) > 30.0 and scale_invariant_sdr(delayed, ref) < 0.0
    with pytest.raises(ValueError, match="1-D signals of one length"):
        signal_distortion_ratio(ref[:100], ref)


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


def test_given_stems_are_read_in_memory_and_stored_once(tmp_path: Path, monkeypatch) -> None:
    """A given stem is decoded and standardised in memory, once: no standardised copy is written and read back
    before the mono stem this stage keeps is written (a FLAC encode and decode per stem, a tenth of the stage)."""
    from songcorpus.transforms.stages import stems

    store = ArtefactStore(tmp_path)
    song = DEMO_DIR / "song_01"
    row = _row(store, song / "mix.flac", vocals=str(song / "vocals.flac"), accompaniment=str(song / "accompaniment.flac"))
    read: list[str] = []
    real = stems.read_standard_audio
    monkeypatch.setattr(stems, "read_standard_audio", lambda path: read.append(str(path)) or real(path))
    out = StemStage(load_config(overrides={"stems": {"evaluate_separator": False}}), store).process_one(row)
    assert read == [str(store.path(row["results"]["ingest"]["audio_file"]))]  # the mix only
    for stem in ("vocals", "accompaniment"):
        given, _ = sf.read(song / f"{stem}.flac", dtype="int16")
        stored, _ = sf.read(store.root / out[f"{stem}_file"], dtype="int16", always_2d=True)
        np.testing.assert_array_equal(stored[:, 0], given)
