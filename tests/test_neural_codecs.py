"""Neural codecs (EnCodec, DAC, Oobleck VAE) loaded from a model store through load_codec / load_codecs.

Each model is a tiny randomly initialised instance of the real class with the real hop lengths (so the
real frame rates), saved with save_pretrained in the published hub layout, registered in a temporary
store and loaded through the verified folder, exactly as the pipeline does.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from songcorpus.schemas.config import load_config
from songcorpus.schemas.row import canonical_json
from songcorpus.transforms.models.neural_codecs import (
    DacCodec,
    EncodecCodec,
    NeuralCodec,
    OobleckVae,
    codec_manifest,
    encode_window_fields,
    load_codec,
    load_codecs,
)
from songcorpus.transforms.models.registry import ModelError, StoreModel
from songcorpus.transforms.models.store import load_registry, register_model

from conftest import DEMO_DIR, music

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# published layouts (facebook/encodec_24khz, descript/dac_44khz, stabilityai/stable-audio-open-1.0 vae/ flattened)
LAYOUTS = {
    "encodec": ["config.json", "model.safetensors", "preprocessor_config.json"],
    "dac": ["config.json", "model.safetensors", "preprocessor_config.json"],
    "oobleck": ["config.json", "diffusion_pytorch_model.safetensors"],
}
NAMES = {"encodec": "encodec-tiny", "dac": "dac-tiny", "oobleck": "oobleck-tiny"}
CLASSES = {"encodec": EncodecCodec, "dac": DacCodec, "oobleck": OobleckVae}
# the real models' frame rates and frame shapes (tiny configs keep the hops, so the rates are real; the tiny
# VAE has 4 latent channels where Stable Audio Open's has 64: encoder_hidden_size 8 = 2 x 4)
FRAME_RATES = {"encodec": 24000 / 320, "dac": 44100 / 512, "oobleck": 44100 / 2048}
FRAME_SHAPES = {"encodec": (8,), "dac": (9,), "oobleck": (4,)}
RATE = 44100


@torch.no_grad()
def build_tiny(kind: str, folder: Path, seed: int = 0) -> torch.nn.Module:
    """A tiny random model of the real class, saved in the published layout."""
    torch.manual_seed(seed)
    if kind == "encodec":
        from transformers import EncodecConfig, EncodecFeatureExtractor, EncodecModel

        model = EncodecModel(EncodecConfig(num_filters=4, hidden_size=16, codebook_dim=16, num_lstm_layers=1))
        # transformers initialises codebooks to zeros (training fills them): draw them at the encoder's scale
        scale = model.encoder(0.1 * torch.randn(1, 1, 24000)).std()
        for layer in model.quantizer.layers:
            layer.codebook.embed.copy_(scale * torch.randn_like(layer.codebook.embed))
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
        model.save_pretrained(folder)
        EncodecFeatureExtractor(feature_size=1, sampling_rate=24000).save_pretrained(folder)
    elif kind == "dac":
        from transformers import DacConfig, DacFeatureExtractor, DacModel

        model = DacModel(DacConfig(encoder_hidden_size=4, hidden_size=16, decoder_hidden_size=16, codebook_dim=4,
                                   sampling_rate=44100))
        model.save_pretrained(folder)
        DacFeatureExtractor(sampling_rate=44100, hop_length=512).save_pretrained(folder)
    else:
        from diffusers import AutoencoderOobleck

        model = AutoencoderOobleck(encoder_hidden_size=8, decoder_channels=4, decoder_input_channels=4)
        model.save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("codecs")
    root = base / "store"
    models = {}
    for kind, name in NAMES.items():
        models[kind] = build_tiny(kind, base / name)
        register_model(name, base / name, root, kind=kind, version="tiny-1")
    return {"root": root, "base": base, "models": models, "registry": load_registry(root)}


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    import soundfile as sf

    mix, rate = music(2.0)
    vocals, _ = sf.read(str(DEMO_DIR / "song_00" / "vocals.flac"), dtype="float32", frames=2 * rate)
    assert rate == RATE
    mix, vocals = (x.mean(axis=1) if x.ndim == 2 else x for x in (mix, vocals))
    return {"mix": mix, "vocals": vocals, "stereo": np.stack([mix, 0.5 * vocals], axis=1)}


def open_codec(store: dict, kind: str, **kw) -> NeuralCodec:
    spec = store["registry"][NAMES[kind]]
    return load_codec(spec, spec.verified_folder(store["root"]), "cpu", **kw)


def reference_frames(kind: str, model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """What the in-memory model (never saved or loaded) computes: the loaded weights must give the same."""
    t = torch.from_numpy(x)[None, None]
    with torch.inference_mode():
        if kind == "encodec":
            return model.encode(t, bandwidth=6.0).audio_codes[0, 0].numpy()
        t = torch.nn.functional.pad(t, (0, -t.shape[-1] % 512 if kind == "dac" else -t.shape[-1] % 2048))
        if kind == "dac":
            return model.encode(t).audio_codes[0].numpy()
        return model.encode(t.expand(-1, 2, -1)).latent_dist.mean[0].numpy()


@pytest.mark.parametrize("kind", list(NAMES))
def test_encode_shapes_frame_contract_and_loaded_weights(store: dict, clips: dict, kind: str) -> None:
    folder = store["registry"][NAMES[kind]].verified_folder(store["root"])
    assert sorted(p.name for p in folder.iterdir()) == LAYOUTS[kind]
    codec = open_codec(store, kind)
    assert isinstance(codec, CLASSES[kind]) and codec.kind == kind and codec.name == NAMES[kind]
    assert codec.frame_rate == FRAME_RATES[kind]
    assert codec.frame_shape == FRAME_SHAPES[kind]
    frames = codec.encode(clips["mix"], RATE)
    t = codec.frames_for(2.0)
    assert t == {"encodec": 150, "dac": 173, "oobleck": 44}[kind]  # ceil(2 s x frame rate)
    assert frames.shape == (*FRAME_SHAPES[kind], t)
    if kind == "oobleck":
        assert codec.representation == "latents" and frames.dtype == np.float32
        assert np.isfinite(frames).all() and frames.std() > 0
    else:
        assert codec.representation == "tokens" and frames.dtype == np.int16
        assert 0 <= frames.min() and frames.max() < 1024 and len(np.unique(frames)) > 10
    # the loaded weights are the saved ones: the in-memory model gives the same frames
    expected = reference_frames(kind, store["models"][kind], codec.prepare(clips["mix"], RATE))
    np.testing.assert_array_equal(frames, expected.astype(frames.dtype))
    # a second load gives the same bytes
    assert open_codec(store, kind).encode(clips["mix"], RATE).tobytes() == frames.tobytes()
    m = codec.manifest()
    assert m["model"] == f"{NAMES[kind]}@tiny-1" and m["checksum"] == store["registry"][NAMES[kind]].sha256


@pytest.mark.parametrize("kind", list(NAMES))
def test_frames_for_predicts_t_at_other_rates_and_lengths(store: dict, clips: dict, kind: str) -> None:
    import soxr

    codec = open_codec(store, kind)
    for rate, n in ((48000, 62417), (16000, 20001), (44100, 44100 + 17), (22050, 5000)):
        x = soxr.resample(clips["mix"], RATE, rate)[:n].astype(np.float32)
        assert x.size == n
        frames = codec.encode(x, rate)
        assert frames.shape[-1] == codec.frames_for(n / rate) == codec.frames_for_samples(n, rate)
    # the arithmetic itself, on the real hops
    assert codec.frames_for(10.24) == {"encodec": 768, "dac": 882, "oobleck": 221}[kind]
    assert codec.frames_for(1 / codec.sample_rate) == 1
    assert codec.frames_for(0.5 / codec.sample_rate) == codec.frames_for_samples(1, 2 * codec.sample_rate) == 1
    assert codec.frames_for(0.0) == 0


@pytest.mark.parametrize("kind", list(NAMES))
def test_encode_many_equals_encode(store: dict, clips: dict, kind: str) -> None:
    codec = open_codec(store, kind)
    items = [clips["mix"], clips["vocals"], clips["mix"][: int(1.3 * RATE) + 17], clips["vocals"][:30000]]
    singles = [codec.encode(x, RATE) for x in items]
    many = codec.encode_many(items, RATE, max_items=3)
    for a, b in zip(many, singles, strict=True):
        assert a.tobytes() == b.tobytes()
    # stacked passes (the CUDA path): tokens equal, latents equal to float32 rounding
    codec.stack_batches = True
    for a, b in zip(codec.encode_many(items, RATE), singles, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if kind == "oobleck":
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", list(NAMES))
def test_decode_gives_audio_of_the_duration(store: dict, clips: dict, kind: str) -> None:
    codec = open_codec(store, kind)
    frames = codec.encode(clips["mix"], RATE)
    audio, rate = codec.decode(frames)
    assert rate == codec.sample_rate and audio.dtype == np.float32 and np.isfinite(audio).all()
    assert audio.shape[0] == frames.shape[-1] * codec.hop_length
    assert abs(audio.shape[0] / rate - 2.0) < codec.hop_length / rate
    assert audio.ndim == (2 if kind == "oobleck" else 1)  # Stable Audio Open's VAE is stereo
    assert audio.std() > 0
    with pytest.raises(ValueError, match="expected"):
        codec.decode(frames[:-1])


def test_encodec_bandwidth_codebooks_are_a_residual_prefix(store: dict, clips: dict) -> None:
    six = open_codec(store, "encodec")
    low = open_codec(store, "encodec", encodec_bandwidth=1.5)
    assert (six.n_codebooks, low.n_codebooks) == (8, 2)
    np.testing.assert_array_equal(low.encode(clips["mix"], RATE), six.encode(clips["mix"], RATE)[:2])
    assert six.manifest()["bandwidth_kbps"] == 6.0
    with pytest.raises(ModelError, match="bandwidth 5.0 kbps is not one of"):
        open_codec(store, "encodec", encodec_bandwidth=5.0)


def test_legacy_weight_norm_names_load_and_partial_weights_are_refused(store: dict, clips: dict, tmp_path: Path) -> None:
    """Checkpoints converted before torch's weight-norm parametrisation name tensors weight_g/weight_v;
    they load to the same model. A checkpoint missing a tensor is refused, not run half-random."""
    src = store["root"] / NAMES["encodec"] / "tiny-1"
    tensors = load_file(src / "model.safetensors")
    legacy = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v for k, v in tensors.items()}
    assert any(k.endswith("weight_g") for k in legacy)
    for name, state in (("encodec-legacy", legacy), ("encodec-partial", dict(list(legacy.items())[1:]))):
        folder = tmp_path / name
        folder.mkdir()
        for f in ("config.json", "preprocessor_config.json"):
            (folder / f).write_bytes((src / f).read_bytes())
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        register_model(name, folder, store["root"], kind="encodec", version="1")
    registry = load_registry(store["root"])
    legacy_codec = load_codec(registry["encodec-legacy"], registry["encodec-legacy"].verified_folder(store["root"]))
    np.testing.assert_array_equal(legacy_codec.encode(clips["mix"], RATE),
                                  open_codec(store, "encodec").encode(clips["mix"], RATE))
    with pytest.raises(ModelError, match="encodec-partial: the weights do not fit"):
        load_codec(registry["encodec-partial"], registry["encodec-partial"].verified_folder(store["root"]))


def test_window_fields_and_manifest(store: dict, clips: dict) -> None:
    codecs = [open_codec(store, "encodec"), open_codec(store, "oobleck")]
    fields = encode_window_fields(codecs, {"mix": clips["stereo"], "vocals": clips["vocals"]}, RATE)
    assert sorted(fields) == ["mix.encodec-tiny_tokens", "mix.oobleck-tiny_latents",
                              "vocals.encodec-tiny_tokens", "vocals.oobleck-tiny_latents"]
    assert fields["vocals.encodec-tiny_tokens"].shape == (8, 150)
    assert fields["mix.oobleck-tiny_latents"].shape == (4, 44)
    # a stereo stem is downmixed to mono by the mean
    downmix = (clips["stereo"][:, 0] + clips["stereo"][:, 1]) / 2
    np.testing.assert_array_equal(fields["mix.encodec-tiny_tokens"], codecs[0].encode(downmix, RATE))
    np.testing.assert_array_equal(fields["vocals.oobleck-tiny_latents"], codecs[1].encode(clips["vocals"], RATE))
    manifest = json.loads(canonical_json(codec_manifest(codecs)))
    assert manifest["encodec-tiny"] == {
        "name": "encodec-tiny", "kind": "encodec", "model": "encodec-tiny@tiny-1",
        "checksum": store["registry"]["encodec-tiny"].sha256, "sample_rate": 24000, "frame_rate": 75.0,
        "hop_length": 320, "representation": "tokens", "frame_shape": [8], "dtype": "int16", "codebook_size": 1024,
        "bandwidth_kbps": 6.0, "frames": "ceil(round(duration_s * sample_rate) / hop_length)"}
    assert manifest["oobleck-tiny"]["frame_rate"] == round(44100 / 2048, 6)
    assert manifest["oobleck-tiny"]["frame_shape"] == [4] and manifest["oobleck-tiny"]["dtype"] == "float32"


def test_load_codecs_from_config_and_missing_models_are_named(store: dict, tmp_path: Path) -> None:
    config = load_config(overrides={"models": {"store_dir": str(store["root"])},
                                    "codecs": {"models": ["dac-tiny", "oobleck-tiny"]}})
    assert [c.name for c in load_codecs(config)] == ["dac-tiny", "oobleck-tiny"]
    unknown = config.model_copy(update={"codecs": config.codecs.model_copy(update={"models": ["no-such-codec"]})})
    with pytest.raises(ModelError, match=r"'no-such-codec' is not in the model store.*songcorpus models add"):
        load_codecs(unknown)
    # registered, but its files are gone: named, with the command that brings them back
    folder = tmp_path / "gone"
    build_tiny("dac", folder, seed=1)
    root = tmp_path / "store"
    register_model("dac-gone", folder, root, kind="dac", version="1")
    (root / "dac-gone" / "1" / "model.safetensors").unlink()
    gone = load_config(overrides={"models": {"store_dir": str(root)}, "codecs": {"models": ["dac-gone"]}})
    with pytest.raises(ModelError, match=r"model dac-gone .*model.safetensors is missing.*songcorpus models add dac-gone"):
        load_codecs(gone)


def test_wrong_kind_is_refused(store: dict, tmp_path: Path) -> None:
    spec = store["registry"]["dac-tiny"]
    folder = spec.verified_folder(store["root"])
    with pytest.raises(ModelError, match="dac-tiny is a htdemucs, not a codec"):
        load_codec(dataclasses.replace(spec, kind="htdemucs"), folder)
    # registered under a codec kind that is not what the files are: refused before any weights are read
    with pytest.raises(ModelError, match=r"registered as kind encodec, but its config.json has model_type='dac'"):
        load_codec(dataclasses.replace(spec, kind="encodec"), folder)
    with pytest.raises(ModelError, match=r"kind oobleck, but its config.json has _class_name=None"):
        load_codec(dataclasses.replace(spec, kind="oobleck"), folder)
    # a store model of a non-codec kind named in codecs.models
    (tmp_path / "demucs").mkdir()
    (tmp_path / "demucs" / "weights.th").write_bytes(b"not a codec")
    register_model("some-separator", tmp_path / "demucs", store["root"], kind="htdemucs", version="1")
    config = load_config(overrides={"models": {"store_dir": str(store["root"])},
                                    "codecs": {"models": ["some-separator"]}})
    with pytest.raises(ModelError, match="names some-separator, a htdemucs, not a codec"):
        load_codecs(config)
    assert isinstance(spec, StoreModel)
