"""The GE2E speaker encoder (train/eval/metrics/ge2e.py) from a random checkpoint in Resemblyzer's published layout
(``pretrained.pt``: ``{"step", "model_state", "optimizer_state"}``, the real architecture's shapes), through the
store and the evaluator's loader; its partial-utterance arithmetic against Resemblyzer's formula; the
refusals. The real weights give the same embeddings as Resemblyzer itself to 1.5e-8
(bench/ge2e_against_resemblyzer.py, bench/RESULTS.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.train.eval.metrics.ge2e import Ge2eNet, Ge2eSpeakerEncoder, partial_slices, raise_level
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.models.store import register_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DEMO_DIR = Path(demo_manifest()).parent


def make_ge2e(folder: Path, seed: int = 0, state: dict | None = None) -> Path:
    """A random GE2E encoder saved as Resemblyzer saves its own."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if state is None:
        state = {**Ge2eNet().state_dict(), "similarity_weight": torch.tensor([10.0]),
                 "similarity_bias": torch.tensor([-5.0])}
    torch.save({"step": 1000, "model_state": state, "optimizer_state": {}}, folder / "pretrained.pt")
    return folder


def vocals(song: str, start_s: float, dur_s: float) -> tuple[np.ndarray, int]:
    info = sf.info(str(DEMO_DIR / song / "vocals.flac"))
    x, rate = sf.read(str(DEMO_DIR / song / "vocals.flac"), dtype="float32", start=int(start_s * info.samplerate),
                      frames=int(dur_s * info.samplerate))
    return x, rate


def test_partial_utterances_follow_resemblyzer_s_formula():
    # 4 s: 401 frames, a partial every 77; the fifth (from frame 308) covers 57.5% of its 1.6 s and is dropped
    assert [(s.start, s.stop) for s in partial_slices(64000)] == [(0, 160), (77, 237), (154, 314), (231, 391)]
    assert [s.start for s in partial_slices(32000)] == [0, 77]  # 2 s: the second covers 76.9%, kept
    assert [s.start for s in partial_slices(16000)] == [0]      # shorter than one partial: one, zero-padded


def test_level_is_raised_to_minus_30_dbfs_never_lowered():
    x = (0.001 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    up = raise_level(x)
    assert 20 * np.log10(np.sqrt(np.mean(up.astype(np.float64) ** 2))) == pytest.approx(-30.0, abs=1e-3)
    loud = (0.5 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    assert raise_level(loud) is loud and raise_level(np.zeros(10, np.float32)).sum() == 0


def test_ge2e_encoder_through_the_store_and_the_evaluator(tmp_path: Path):
    from songcorpus.train.eval.metrics.singer import load_speaker_encoder, speaker_similarity
    from songcorpus.train.eval.scoring import Scorer

    root = tmp_path / "store"
    register_model("tiny-ge2e", make_ge2e(tmp_path / "ge2e"), root, kind="ge2e", version="t1")
    encoder = load_speaker_encoder("tiny-ge2e", store_dir=root)
    assert isinstance(encoder, Ge2eSpeakerEncoder) and encoder.dim == 256
    a, rate = vocals("song_00", 10.0, 4.0)
    b, _ = vocals("song_01", 10.0, 4.0)
    ea = encoder.embed(a, rate)
    assert ea.shape == (256,) and ea.dtype == np.float32 and (ea >= 0).all()
    assert np.linalg.norm(ea) == pytest.approx(1.0, abs=1e-5)
    assert speaker_similarity(encoder, a, rate, a, rate) == pytest.approx(1.0, abs=1e-5)
    assert speaker_similarity(encoder, a, rate, b, rate) < 1.0 - 1e-4
    # two quiet copies are both raised to -30 dBFS: the same embedding; the stereo copy is averaged to mono
    assert np.allclose(encoder.embed(0.001 * a, rate), encoder.embed(0.002 * a, rate), atol=1e-5)
    assert np.allclose(encoder.embed(np.stack([a, a], axis=1), rate), ea, atol=1e-6)
    # a different random model gives different embeddings: the weights are what is read
    register_model("tiny-ge2e-2", make_ge2e(tmp_path / "ge2e2", seed=1), root, kind="ge2e", version="t1")
    assert not np.allclose(load_speaker_encoder("tiny-ge2e-2", store_dir=root).embed(a, rate), ea, atol=1e-3)
    scorer = Scorer("unisinger", ("speaker_similarity",), str(root), speaker_model="tiny-ge2e")
    assert isinstance(scorer.metric_model("speaker"), Ge2eSpeakerEncoder)
    with pytest.raises(ValueError, match="non-empty"):
        encoder.embed(np.zeros(0, np.float32), rate)


def test_ge2e_refusals_name_the_file(tmp_path: Path):
    from songcorpus.train.eval.metrics.singer import load_speaker_encoder

    root = tmp_path / "store"
    bad = Ge2eNet().state_dict()
    bad["linear.weight"] = torch.zeros(128, 256)
    register_model("bad-shape", make_ge2e(tmp_path / "bad", state=bad), root, kind="ge2e", version="t1")
    with pytest.raises(ModelError, match=r"pretrained.pt: its tensors do not fit"):
        load_speaker_encoder("bad-shape", store_dir=root)
    (tmp_path / "nostate").mkdir()
    torch.save({"weights": {}}, tmp_path / "nostate" / "pretrained.pt")
    register_model("no-state", tmp_path / "nostate", root, kind="ge2e", version="t1")
    with pytest.raises(ModelError, match="no 'model_state'"):
        load_speaker_encoder("no-state", store_dir=root)
    register_model("ge2e-as-clap", tmp_path / "bad", root, kind="clap", version="t1")
    with pytest.raises(ModelError, match="loads ecapa or ge2e models"):
        load_speaker_encoder("ge2e-as-clap", store_dir=root)
