"""Speaker (ECAPA-TDNN) and content-unit (HuBERT + k-means) encoders, loaded from a model store.

Tiny random models of the real architectures are saved in the published layouts (speechbrain's
``hyperparams.yaml`` + ``embedding_model.ckpt`` + ``mean_var_norm_emb.ckpt``; transformers'
``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``), registered in a temporary
store and loaded through the same calls the full-profile stages make.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import load_config
from songcorpus.transforms.models.content_units import (
    assign_units,
    conv_frames,
    fit_unit_codebook,
    load_content_encoder,
    unit_frames_for,
)
from songcorpus.transforms.models.registry import MODELS, ModelError
from songcorpus.transforms.models.speaker import load_speaker_encoder, read_hparams
from songcorpus.transforms.models.store import load_registry, register_model
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.samples_full import UnitFramesStage
from songcorpus.transforms.stages.stems import StemStage

from conftest import DEMO_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_MELS = 80
TINY_CHANNELS = [32, 32, 32, 32, 96]
HUBERT_LAYER = 2

# the published file's structure (speechbrain/spkrec-ecapa-voxceleb), with tiny channel counts
HPARAMS = """\
# Model: ECAPA for speaker verification (tiny test copy of the published layout)
n_mels: {n_mels}
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
out_n_neurons: 3

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    se_channels: 16
    lin_neurons: 192

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
"""


def make_ecapa(folder: Path, seed: int = 0, channels: list[int] = TINY_CHANNELS) -> Path:
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    model = ECAPA_TDNN(N_MELS, channels=channels, attention_channels=16, se_channels=16, lin_neurons=192)
    for m in model.modules():  # non-trivial BatchNorm statistics, as a trained model has
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    (folder / "hyperparams.yaml").write_text(HPARAMS.format(n_mels=N_MELS, channels=channels))
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    torch.save({"count": 3, "glob_mean": torch.randn(192) * 0.1, "glob_std": torch.ones(192)},
               folder / "mean_var_norm_emb.ckpt")
    return folder


def make_hubert(folder: Path, seed: int = 0) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    HubertModel(cfg).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0, "return_attention_mask": False, "sampling_rate": 16000}))
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    src = tmp_path_factory.mktemp("src")
    register_model("tiny-ecapa", make_ecapa(src / "ecapa"), root, kind="ecapa", version="t1")
    register_model("tiny-ecapa-b", make_ecapa(src / "ecapa_b", seed=1), root, kind="ecapa", version="t1")
    register_model("tiny-hubert", make_hubert(src / "hubert"), root, kind="hubert", version="t1")
    return root


def config_for(root: Path, **over):
    base = {"models": {"store_dir": str(root)}, "stems": {"evaluate_separator": False},
            "content_units": {"model": "tiny-hubert", "layer": HUBERT_LAYER, "n_units": 8},
            "speaker": {"model": "tiny-ecapa"}}
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v}
    return load_config(profile="lite", overrides=base)


def vocals(song: str, start_s: float, dur_s: float) -> tuple[np.ndarray, int]:
    x, rate = sf.read(str(DEMO_DIR / song / "vocals.flac"), dtype="float32", start=int(start_s * 44100),
                      frames=int(dur_s * 44100))
    return x, rate


def speaker(root: Path, cache: Path, name: str = "tiny-ecapa", **kw):
    """The speaker encoder the way FullSampleStage.setup gets it: store_model (kind checked, files verified)."""
    stage = UnitFramesStage(config_for(root), ArtefactStore(cache))
    spec, folder = stage.store_model(name, ("ecapa",))
    return load_speaker_encoder(spec, folder, "cpu", **kw)


# ---------------------------------------------------------------------------------------------
# speaker
# ---------------------------------------------------------------------------------------------

def test_hparams_are_read_as_data_never_instantiated(tmp_path: Path) -> None:
    folder = make_ecapa(tmp_path / "m")
    hp = read_hparams(folder / "hyperparams.yaml")
    assert hp.ecapa["input_size"] == N_MELS and hp.ecapa["channels"] == TINY_CHANNELS and hp.lin_neurons == 192
    assert hp.fbank == {"n_mels": N_MELS}
    assert hp.norm == {"norm_type": "sentence", "std_norm": False}
    # an embedding model of another class, an unknown setting or a python tag are refused, not built
    text = (folder / "hyperparams.yaml").read_text()
    for bad in (text.replace("speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN", "os.system"),
                text.replace("    lin_neurons: 192", "    lin_neurons: 192\n    activation: !name:os.system"),
                text.replace(f"n_mels: {N_MELS}", "n_mels: !!python/object/apply:os.getcwd []")):
        (folder / "hyperparams.yaml").write_text(bad)
        with pytest.raises(ModelError, match="hyperparams.yaml"):
            read_hparams(folder / "hyperparams.yaml")


def test_speaker_embeddings_from_the_store(store: Path, tmp_path: Path) -> None:
    enc = speaker(store, tmp_path)
    a, rate = vocals("song_00", 8.0, 3.0)
    b, _ = vocals("song_00", 20.0, 3.0)
    ea, eb = enc.embed(a, rate), enc.embed(b, rate)
    assert ea.shape == eb.shape == (192,) and ea.dtype == np.float32
    assert abs(float(np.linalg.norm(ea)) - 1.0) < 1e-5 and abs(float(np.linalg.norm(eb)) - 1.0) < 1e-5
    np.testing.assert_array_equal(enc.embed(a, rate), ea)  # deterministic
    assert float(ea @ eb) < 0.99999  # two windows: two embeddings
    # the weights reach the output: another checkpoint of the same architecture embeds differently
    other = speaker(store, tmp_path, "tiny-ecapa-b").embed(a, rate)
    assert float(ea @ other) < 0.999
    # batched = one at a time, whatever the lengths (equal-length clips share a forward pass)
    c, _ = vocals("song_01", 5.0, 2.5)
    many = enc.embed_many([(a, rate), (c, rate), (b, rate)], max_items=3)
    for got, want in zip(many, [ea, enc.embed(c, rate), eb], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # any input rate: 16 kHz input is used as is, 44.1 kHz is resampled to it
    import soxr

    np.testing.assert_allclose(enc.embed(soxr.resample(a, rate, 16000), 16000), ea, atol=1e-3)
    # the published global embedding mean, when asked for, changes the embedding
    centred = speaker(store, tmp_path, subtract_embedding_mean=True).embed(a, rate)
    assert abs(float(np.linalg.norm(centred)) - 1.0) < 1e-5 and not np.allclose(centred, ea, atol=1e-4)
    with pytest.raises(ValueError, match="empty"):
        enc.embed(np.zeros(0, np.float32), rate)


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    folder = make_ecapa(tmp_path / "m")
    small = make_ecapa(tmp_path / "small", channels=[16, 16, 16, 16, 48])
    (folder / "embedding_model.ckpt").write_bytes((small / "embedding_model.ckpt").read_bytes())
    root = tmp_path / "store"
    register_model("mismatched-ecapa", folder, root, kind="ecapa", version="t1")
    spec = load_registry(root)["mismatched-ecapa"]
    with pytest.raises(ModelError, match="embedding_model.ckpt does not fit"):
        load_speaker_encoder(spec, spec.verified_folder(root), "cpu")


def test_missing_speaker_model_is_named(store: Path, tmp_path: Path) -> None:
    stage = UnitFramesStage(config_for(tmp_path / "empty"), ArtefactStore(tmp_path / "cache"))
    with pytest.raises(ModelError) as err:
        stage.store_model("ecapa-voxceleb", ("ecapa",))
    assert "ecapa-voxceleb" in str(err.value)
    if "ecapa-voxceleb" in MODELS:  # built-in entry: the error says how to get it
        assert "songcorpus models" in str(err.value)
    # a registered model whose weights left the store: named, with the command that brings them back
    root = tmp_path / "store"
    register_model("gone-ecapa", make_ecapa(tmp_path / "gone"), root, kind="ecapa", version="t1")
    (root / "gone-ecapa" / "t1" / "embedding_model.ckpt").unlink()
    stage = UnitFramesStage(config_for(root), ArtefactStore(tmp_path / "cache2"))
    with pytest.raises(ModelError, match=r"gone-ecapa.*songcorpus models add gone-ecapa"):
        stage.store_model("gone-ecapa", ("ecapa",))


def test_wrong_kind_is_refused(store: Path, tmp_path: Path) -> None:
    registry = load_registry(store)
    folder_h = registry["tiny-hubert"].verified_folder(store)
    folder_e = registry["tiny-ecapa"].verified_folder(store)
    with pytest.raises(ModelError, match="tiny-hubert.*ecapa"):
        load_speaker_encoder(registry["tiny-hubert"], folder_h, "cpu")
    with pytest.raises(ModelError, match="tiny-ecapa.*hubert"):
        load_content_encoder(registry["tiny-ecapa"], folder_e, "cpu", 1)
    stage = UnitFramesStage(config_for(store, content_units={"model": "tiny-ecapa"}), ArtefactStore(tmp_path / "c"))
    with pytest.raises(ModelError, match="tiny-ecapa"):
        stage.preflight()


# ---------------------------------------------------------------------------------------------
# content units
# ---------------------------------------------------------------------------------------------

def test_frame_count_formula() -> None:
    from transformers import HubertConfig, HubertModel

    ns = [*range(0, 2000), *np.random.default_rng(0).integers(2000, 10_000_000, 500).tolist()]
    for n in ns:
        assert conv_frames(n) == (0 if n < 400 else (n - 400) // 320 + 1), n
    # transformers' own output-length rule for hubert-base's default conv stack agrees
    lengths = HubertModel._get_feat_extract_output_lengths(
        type("M", (), {"config": HubertConfig()})(), torch.tensor(ns[400:]))
    assert lengths.tolist() == [conv_frames(n) for n in ns[400:]]
    assert unit_frames_for(10.0) == 499 and unit_frames_for(0.02) == 0 and unit_frames_for(0.025) == 1
    assert unit_frames_for(3.0) == 149


def test_hubert_features_units_and_stage(store: Path, tmp_path: Path) -> None:
    from transformers import HubertModel

    config = config_for(store)
    # the analysis stage that feeds the k-means, on a 6 s excerpt with its given stems
    song = DEMO_DIR / "song_03"
    paths = {}
    for stem in ("mix", "vocals", "accompaniment"):
        x, rate = sf.read(str(song / f"{stem}.flac"), dtype="float32", start=44100 * 4, frames=44100 * 6)
        paths[stem] = tmp_path / f"{stem}.flac"
        sf.write(paths[stem], x, rate)
    cache = ArtefactStore(tmp_path / "cache")
    row = {"track": {"path": str(paths["mix"]), "vocals": str(paths["vocals"]),
                     "accompaniment": str(paths["accompaniment"])}, "results": {}}
    row["results"]["ingest"] = IngestStage(config, cache).process_one(row)
    row["results"]["stems"] = StemStage(config, cache).process_one(row)
    stage = UnitFramesStage(config, cache)
    stage.preflight()
    spec = load_registry(store)["tiny-hubert"]
    assert stage.lineage()["model"] == "tiny-hubert@t1" and stage.lineage()["checksum"] == spec.sha256
    stage.setup()
    out = stage.process_one(row)
    frames = cache.get_array(out["unit_frames_file"])
    assert frames.shape == (unit_frames_for(6.0), 32) == (299, 32) and out["unit_frames"] == 299

    enc = load_content_encoder(spec, spec.verified_folder(store), "cpu", HUBERT_LAYER)
    a, rate = vocals("song_00", 10.0, 2.3456)
    fa = enc.features(a, rate)
    assert fa.dtype == np.float32 and fa.shape == (enc.frames_for(len(a) / rate), 32)
    assert fa.shape[0] == unit_frames_for(len(a) / rate) == (round(len(a) / rate * 16000) - 400) // 320 + 1
    np.testing.assert_array_equal(enc.features(a, rate), fa)  # deterministic
    # the encoder's layer is hidden_states[layer] of the whole published model, with its input normalisation
    import soxr

    full = HubertModel.from_pretrained(spec.verified_folder(store), local_files_only=True).eval()
    x = soxr.resample(a, rate, 16000)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    with torch.no_grad():
        want = full(torch.from_numpy(x[None].astype(np.float32)), output_hidden_states=True).hidden_states[HUBERT_LAYER]
    np.testing.assert_allclose(fa, want[0].numpy(), atol=1e-4)
    # batches of mixed lengths give what single clips give
    b, _ = vocals("song_01", 3.0, 4.0)
    many = enc.features_many([(a, rate), (b, rate), (a, rate)])
    np.testing.assert_allclose(many[0], fa, atol=1e-5)
    np.testing.assert_allclose(many[1], enc.features(b, rate), atol=1e-5)
    assert enc.features(a[:100], rate).shape == (0, 32)
    with pytest.raises(ModelError, match="layer 7"):
        load_content_encoder(spec, spec.verified_folder(store), "cpu", 7)

    # units: k-means on two singers' vocals, nearest-centroid ids
    fb = enc.features(b, rate)
    cents = fit_unit_codebook([fa, fb, frames], config.content_units.n_units, seed=0)
    assert cents.shape == (8, 32) and cents.dtype == np.float32
    np.testing.assert_array_equal(fit_unit_codebook([fa, fb, frames], 8, seed=0), cents)  # same bytes
    ids = assign_units(fa, cents)
    assert ids.dtype == np.int16 and ids.shape == (fa.shape[0],) and 0 <= ids.min() and ids.max() < 8
    brute = np.argmin(((fa[:, None, :].astype(np.float64) - cents[None].astype(np.float64)) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(ids, brute)
    assert len(np.unique(assign_units(np.concatenate([fa, fb, frames]), cents))) > 1
    with pytest.raises(ValueError, match="do not match"):
        assign_units(fa[:, :16], cents)
