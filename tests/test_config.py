from __future__ import annotations

import hashlib
import inspect

import pytest
from pydantic import BaseModel

from songcorpus.schemas import config, config_base, train_models, training
from songcorpus.schemas.config import load_config
from songcorpus.schemas.config_base import ConfigError, ConfigModel, deep_merge
from songcorpus.schemas.train_models import MODEL_CONFIGS, SamuelConfig, SongEchoMelodyConfig
from songcorpus.schemas.training import load_train_config


def test_lite_profile_loads_with_gates():
    config = load_config()
    assert config.profile == "lite" and config.engine.name == "ray"
    assert "speech_dominant" in [g.name for g in config.gates]


def test_unknown_key_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  sample_rat: 16000\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: ingest.sample_rat: unknown key \(did you mean 'sample_rate'\?\)$"):
        load_config(path=bad)


def test_invalid_value_names_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("splits: {train: 0.5, valid: 0.1, test: 0.1}\n")
    with pytest.raises(ConfigError, match="bad.yaml: splits: split fractions .* sum to 1$"):
        load_config(path=bad)


def test_gate_needs_a_bound():
    with pytest.raises(ConfigError, match="^overrides: gates.0: gate 'x' needs a min or a max$"):
        load_config(overrides={"gates": [{"name": "x", "score": "snr_db"}]})


def test_section_digests_change_only_with_their_section():
    a, b = load_config(), load_config(overrides={"shards": {"max_samples": 7}})
    assert a.ingest.digest() == b.ingest.digest()
    assert a.shards.digest() != b.shards.digest()


# Digests and YAML dumps of the default configs, computed before the config models shared one base class (the stems
# section, and so the whole config's, again when it gained ``evaluate_separator_share``; the f0 section when it
# gained ``precision``; the augment section when its default stretcher became the Rubber Band library). Cache
# keys, lineage, run folders and checkpoints name configs by these: a change here invalidates every cache and
# refuses every resumed run, so it must be deliberate.
PIPELINE_DIGESTS = {"lite": "890cf5eda7fb3bba", "full": "d45fbf39713abcce"}
PIPELINE_DUMP_SHA = {"lite": "e97584d143840ee0", "full": "d69552bc124d30ed"}
SECTION_DIGESTS = {  # section: (lite, full)
    "ingest": ("bb05e70438931a90", "bb05e70438931a90"),
    "quality": ("5eca01da9219dc96", "5eca01da9219dc96"),
    "classify": ("815ff4823433ab40", "815ff4823433ab40"),
    "fingerprint": ("85d949088c1f9246", "85d949088c1f9246"),
    "near_duplicates": ("d2a7f485d65590ee", "d2a7f485d65590ee"),
    "shards": ("7da1e510e705cc87", "7da1e510e705cc87"),
    "splits": ("a3a074e3c65d6e4b", "a3a074e3c65d6e4b"),
    "engine": ("9d6f1f7fda7efd6f", "9d6f1f7fda7efd6f"),
    "stems": ("48c874845cb1617d", "65ca4e2e88aa33b2"),
    "vad": ("e9a60b95ff1e2ec5", "e9a60b95ff1e2ec5"),
    "f0": ("27f24608ce0b7f77", "b76d12b51d69a8e9"),
    "structure": ("e8b9ef6b0f64331f", "e8b9ef6b0f64331f"),
    "key": ("246ddabb94eccd83", "246ddabb94eccd83"),
    "caption": ("e1c2f079a37ca561", "e1c2f079a37ca561"),
    "windows": ("6eda2457bd442afd", "6eda2457bd442afd"),
    "augment": ("8805d83187cccdf9", "8805d83187cccdf9"),
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
    assert _sha16(config.to_yaml()) == PIPELINE_DUMP_SHA[profile]
    column = ("lite", "full").index(profile)
    assert {name: getattr(config, name).digest() for name in SECTION_DIGESTS} == {
        name: pair[column] for name, pair in SECTION_DIGESTS.items()}


@pytest.mark.parametrize("model", sorted(TRAIN_DIGESTS))
def test_training_and_model_config_digests_and_dump_are_pinned(model):
    config = load_train_config(model)
    cls = MODEL_CONFIGS[model]
    assert (config.digest(), cls().digest(), cls.paper().digest(), _sha16(config.to_yaml())) == TRAIN_DIGESTS[model]
    assert set(TRAIN_DIGESTS) == set(MODEL_CONFIGS)


# ---------------------------------------------------------------------------------------------
# one base, one loader, one merge, one error format for the pipeline, training and model configs
# ---------------------------------------------------------------------------------------------

def test_every_config_model_derives_from_the_one_base():
    found = [cls for module in (config, training, train_models) for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, BaseModel) and cls.__module__ == module.__name__]
    names = {cls.__name__ for cls in found}
    assert {"PipelineConfig", "Gate", "TrainConfig", "OptimConfig", "SamuelConfig", "UniSingerConfig"} <= names
    assert [cls.__name__ for cls in found if not issubclass(cls, ConfigModel)] == []
    for name in ("hashlib", "_deep_merge", "_merge", "TrainConfigError", "ValidationError"):  # no second copy
        assert not any(hasattr(module, name) for module in (config, training, train_models)), name
    assert config.ConfigError is config_base.ConfigError and training.ConfigError is config_base.ConfigError


def _write(path, text):
    path.write_text(text)
    return path


# (kind, YAML the file holds, how to load it, the problem it has)
BAD_VALUES = [
    ("pipeline", "ingest: {sample_rate: 100}\n", lambda p: load_config(path=p),
     "ingest.sample_rate: Input should be greater than or equal to 8000"),
    ("training", "optim: {lr: 0}\n", lambda p: load_train_config("samuel", p), "optim.lr: Input should be greater than 0"),
    ("model", "model: {base_channels: 4}\n", lambda p: load_train_config("samuel", p),
     "model.base_channels: Input should be greater than or equal to 8"),
]


@pytest.mark.parametrize("kind, text, load, problem", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_bad_value_names_file_key_and_problem_the_same_way_for_every_kind(kind, text, load, problem, tmp_path):
    path = _write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: {problem}"


UNKNOWN_KEYS = [  # the tag pydantic puts in a tagged union's location (model.samuel.x) is not part of the key
    ("pipeline", "shards: {max_sample: 3}\n", lambda p: load_config(path=p), "shards.max_sample", "max_samples"),
    ("training", "optim: {lrr: 0.1}\n", lambda p: load_train_config("samuel", p), "optim.lrr", "lr"),
    ("model", "model: {base_chanels: 16}\n", lambda p: load_train_config("samuel", p), "model.base_chanels", "base_channels"),
    ("nested model", "model: {backbone: {n_layer: 2}}\n", lambda p: load_train_config("songecho_melody", p),
     "model.backbone.n_layer", "n_layers"),
]


@pytest.mark.parametrize("kind, text, load, key, known", UNKNOWN_KEYS, ids=[u[0] for u in UNKNOWN_KEYS])
def test_an_unknown_key_is_named_with_the_known_key_it_may_mean(kind, text, load, key, known, tmp_path):
    path = _write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: {key}: unknown key (did you mean '{known}'?)"


def test_an_unknown_key_with_nothing_close_is_named_alone(tmp_path):
    path = _write(tmp_path / "config.yaml", "ingest: {zzz: 1}\nqqq: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path=path)
    assert str(info.value) == f"{path}: ingest.zzz: unknown key; {path}: qqq: unknown key"
    path = _write(tmp_path / "t.yaml", "data: {zzz: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_train_config("samuel", path)
    assert str(info.value) == f"{path}: data.zzz: unknown key"


def test_model_configs_at_paper_size_go_through_the_same_loader():
    with pytest.raises(ConfigError) as info:
        SamuelConfig.paper(base_channels=4, heds=2)
    assert str(info.value) == ("SamuelConfig.paper() overrides: base_channels: Input should be greater than or equal "
                               "to 8; SamuelConfig.paper() overrides: heds: unknown key (did you mean 'heads'?)")
    # overrides replace the paper's settings key by key, as before the shared loader (a dict does not merge into
    # the paper-size backbone, it replaces it)
    assert SongEchoMelodyConfig.paper(backbone={"dim": 64}).backbone.n_layers == SongEchoMelodyConfig().backbone.n_layers
    assert SamuelConfig.paper(latent_channels=64) == SamuelConfig(base_channels=64, time_dim=512, latent_channels=64)


def test_a_problem_is_named_by_the_layer_that_set_the_key(tmp_path):
    path = _write(tmp_path / "c.yaml", "shards: {max_samples: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path=path, overrides={"engine": {"workers": 0}})
    assert str(info.value) == (f"{path}: shards.max_samples: Input should be greater than or equal to 1; "
                               "overrides: engine.workers: Input should be greater than or equal to 1")
    # a list replaces the profile's whole list: a gate missing its score is the overrides', not the profile's
    with pytest.raises(ConfigError, match="^overrides: gates.0.score: Field required$"):
        load_config(overrides={"gates": [{"name": "x", "min": 1}]})
    # a check of the whole config names the file
    batch = _write(tmp_path / "b.yaml", "global_batch: 6\ngrad_accum: 4\n")
    with pytest.raises(ConfigError) as info:
        load_train_config("samuel", batch, {"steps": 3})
    assert str(info.value) == f"{batch}: global_batch 6 is not a multiple of grad_accum 4"
    with pytest.raises(ConfigError, match="^overrides: model: content_lifter 20 keeps more DCT"):
        load_train_config("unisinger", overrides={"model": {"latent_channels": 4}})


@pytest.mark.parametrize("load", [lambda p: load_config(path=p), lambda p: load_train_config("samuel", p)],
                         ids=["pipeline", "training"])
def test_an_unreadable_file_is_named_on_one_line_by_both_loaders(load, tmp_path):
    malformed = _write(tmp_path / "bad.yaml", "model:\n  name: samuel\nsteps: [1, 2\noptim: {lr: 1e-3}\n")
    with pytest.raises(ConfigError) as info:
        load(malformed)
    assert str(info.value).startswith(f"{malformed}: cannot read: line 4, column 6: ") and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'missing.yaml'}: cannot read: No such file or directory$"):
        load(tmp_path / "missing.yaml")
    listed = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match=f"^{listed}: must be a YAML mapping, got list$"):
        load(listed)
    assert load(_write(tmp_path / "empty.yaml", "")).digest() == load(None).digest()


def test_a_training_file_for_another_model_is_refused_by_name(tmp_path):
    path = _write(tmp_path / "t.yaml", "model: {name: lada_band}\n")
    with pytest.raises(ConfigError) as info:
        load_train_config("samuel", path)
    assert str(info.value) == f"{path}: model.name: configures model 'lada_band', the command trains 'samuel'"
    with pytest.raises(ConfigError, match="^unknown model 'nope'; choose one of lada_band, samuel, "):
        load_train_config("nope")
    with pytest.raises(ConfigError, match="^unknown profile 'medium'; available: lite, full$"):
        load_config("medium")


def test_one_merge_for_every_config(tmp_path):
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    over = {"a": {"y": [3], "z": {"k": 1}}, "c": None}
    assert deep_merge(base, over) == {"a": {"x": 1, "y": [3], "z": {"k": 1}}, "b": 1, "c": None}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1} and over == {"a": {"y": [3], "z": {"k": 1}}, "c": None}
    # a user file over the profile, then overrides over both: nested keys merge, lists replace
    path = _write(tmp_path / "c.yaml", "engine: {workers: 3}\n")
    merged = load_config(path=path, overrides={"engine": {"name": "beam"}, "gates": []})
    assert (merged.engine.workers, merged.engine.name, merged.gates) == (3, "beam", [])
    assert merged.ingest == load_config().ingest
    trained = load_train_config("samuel", _write(tmp_path / "t.yaml", "optim: {lr: 0.01}\n"), {"optim": {"grad_clip": 2.0}})
    assert (trained.optim.lr, trained.optim.grad_clip, trained.optim.warmup_steps) == (0.01, 2.0, 100)
