from __future__ import annotations

import hashlib

import pytest

from songcorpus.schemas.config import ConfigError, dump_config, load_config
from songcorpus.schemas.train_models import MODEL_CONFIGS
from songcorpus.schemas.training import dump_train_config, load_train_config


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


# Digests and YAML dumps of the default configs, computed before the config models shared one base class. Cache
# keys, lineage, run folders and checkpoints name configs by these: a change here invalidates every cache and
# refuses every resumed run, so it must be deliberate.
PIPELINE_DIGESTS = {"lite": "d345034a45f7d574", "full": "dd9d4870ff6913ae"}
PIPELINE_DUMP_SHA = {"lite": "54c5711180141be9", "full": "c0709de21b6643cf"}
SECTION_DIGESTS = {  # section: (lite, full)
    "ingest": ("bb05e70438931a90", "bb05e70438931a90"),
    "quality": ("5eca01da9219dc96", "5eca01da9219dc96"),
    "classify": ("815ff4823433ab40", "815ff4823433ab40"),
    "fingerprint": ("85d949088c1f9246", "85d949088c1f9246"),
    "near_duplicates": ("d2a7f485d65590ee", "d2a7f485d65590ee"),
    "shards": ("7da1e510e705cc87", "7da1e510e705cc87"),
    "splits": ("a3a074e3c65d6e4b", "a3a074e3c65d6e4b"),
    "engine": ("9d6f1f7fda7efd6f", "9d6f1f7fda7efd6f"),
    "stems": ("7100c5a5a5904f8d", "2a05e9aa7ab13f52"),
    "vad": ("e9a60b95ff1e2ec5", "e9a60b95ff1e2ec5"),
    "f0": ("11b39209ea626f38", "11b39209ea626f38"),
    "structure": ("e8b9ef6b0f64331f", "e8b9ef6b0f64331f"),
    "key": ("246ddabb94eccd83", "246ddabb94eccd83"),
    "caption": ("e1c2f079a37ca561", "e1c2f079a37ca561"),
    "windows": ("bbfbd07264f7c701", "bbfbd07264f7c701"),
    "augment": ("2f7f14f233ec8996", "2f7f14f233ec8996"),
    "codec": ("6ad1496b767a5811", "6ad1496b767a5811"),
    "models": ("375762b6f1a11d1e", "375762b6f1a11d1e"),
    "device": ("78ba54b869b7d7e8", "78ba54b869b7d7e8"),
    "separation": ("757c78cae803cf33", "757c78cae803cf33"),
    "lyrics": ("51b116c64b921a82", "51b116c64b921a82"),
    "aesthetics": ("cf5c67864e6a0420", "cf5c67864e6a0420"),
    "tagger": ("7250f39b50386559", "7250f39b50386559"),
    "codecs": ("78116864beb6bb16", "25fd884419323015"),
    "speaker": ("52b0b46a41c16a71", "52b0b46a41c16a71"),
    "content_units": ("23376e6144e08312", "23376e6144e08312"),
}
# model: (default training config, model config, model config at paper size, sha of the training config's YAML dump)
TRAIN_DIGESTS = {
    "lada_band": ("21e9bbe999d3e35f", "64d38d8b44c8981f", "6e06a19ac0be73b0", "69c0f02b30086ce1"),
    "samuel": ("7bd43786d490c631", "204f93e44f002813", "ffbe59af03a2fb62", "7634b2cd68ad346b"),
    "songecho": ("cf583803778110b5", "c393fd86eef44bee", "d4ff1dfbad797d2b", "ba46407ac0629d73"),
    "songecho_melody": ("1ca487b6b638e6c1", "618305e4aced2069", "aec7569bddbe8c5d", "aded4e6ea106fd30"),
    "unisinger": ("d566de9b2f874311", "ca08df98aeded814", "825a9b8ba39e6252", "b61e9c0616f33025"),
}


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("profile", ["lite", "full"])
def test_pipeline_config_digests_and_dump_are_pinned(profile):
    config = load_config(profile)
    assert config.digest() == PIPELINE_DIGESTS[profile]
    assert _sha16(dump_config(config)) == PIPELINE_DUMP_SHA[profile]
    column = ("lite", "full").index(profile)
    assert {name: getattr(config, name).digest() for name in SECTION_DIGESTS} == {
        name: pair[column] for name, pair in SECTION_DIGESTS.items()}


@pytest.mark.parametrize("model", sorted(TRAIN_DIGESTS))
def test_training_and_model_config_digests_and_dump_are_pinned(model):
    config = load_train_config(model)
    cls = MODEL_CONFIGS[model]
    assert (config.digest(), cls().digest(), cls.paper().digest(), _sha16(dump_train_config(config))) == TRAIN_DIGESTS[model]
    assert set(TRAIN_DIGESTS) == set(MODEL_CONFIGS)
