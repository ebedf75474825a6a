from __future__ import annotations

import pytest

from songcorpus.schemas.config import ConfigError, load_config


def test_lite_profile_loads_with_gates():
    config = load_config()
    assert config.profile == "lite" and config.engine.name == "ray"
    assert "speech_dominant" in [g.name for g in config.gates]


def test_unknown_key_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  sample_rat: 16000\n")
    with pytest.raises(ConfigError, match=r"unknown key 'ingest.sample_rat'"):
        load_config(path=bad)


def test_invalid_value_names_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("splits: {train: 0.5, valid: 0.1, test: 0.1}\n")
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(path=bad)


def test_gate_needs_a_bound():
    with pytest.raises(ConfigError, match="needs a min or a max"):
        load_config(overrides={"gates": [{"name": "x", "score": "snr_db"}]})


def test_section_digests_change_only_with_their_section():
    a, b = load_config(), load_config(overrides={"shards": {"max_samples": 7}})
    assert a.ingest.digest() == b.ingest.digest()
    assert a.shards.digest() != b.shards.digest()
