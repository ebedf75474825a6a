"""Demucs separation (full profile): tiny random HTDemucs models saved in the published layouts, loaded
from a temporary model store through StemStage's own path, checked against demucs.apply.apply_model."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from demucs.apply import apply_model
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, serialize_model

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.config import load_config
from songcorpus.transforms.models.demucs_separator import DemucsSeparator, load_demucs
from songcorpus.transforms.models.registry import MODELS, ModelError
from songcorpus.transforms.models.store import load_registry, register_model
from songcorpus.transforms.stages.stems import StemStage

from conftest import ingested_excerpt

SOURCES = ["drums", "bass", "other", "vocals"]
SEGMENT = Fraction(4, 5)  # 0.8 s: a 3 s song is cut into 5 chunks (stride 0.6 s)
FT_SIGS = ["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"]  # htdemucs_ft's specialists (demucs/remote/htdemucs_ft.yaml)
RATE = 44100


def tiny_htdemucs(seed: int) -> HTDemucs:
    torch.manual_seed(seed)
    return HTDemucs(sources=SOURCES, audio_channels=2, samplerate=RATE, segment=SEGMENT, channels=4, depth=3,
                    nfft=1024, t_layers=1, t_heads=2, dconv_comp=2, norm_starts=2).eval()


def package_bytes(model: HTDemucs) -> bytes:
    """The bytes demucs.states.save_with_checksum writes for serialize_model's package."""
    try:
        from omegaconf import OmegaConf

        package = serialize_model(model, OmegaConf.create({"model": "htdemucs", "dset": {"segment": 11}}))
    except ImportError:  # serialize_model imports omegaconf only to turn the training args into a dict
        args, kwargs = model._init_args_kwargs
        package = {"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": get_state(model, None, half=True),
                   "training_args": {"model": "htdemucs", "dset": {"segment": 11}}}
    buf = io.BytesIO()
    torch.save(package, buf)
    return buf.getvalue()


def save_th(model: HTDemucs, folder: Path, sig: str) -> Path:
    """``<sig>-<first 8 hex of the file's sha256>.th``, as demucs publishes (and the store checks)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = package_bytes(model)
    path = folder / f"{sig}-{hashlib.sha256(data).hexdigest()[:8]}.th"
    path.write_bytes(data)
    return path


def half_rounded(model: HTDemucs) -> HTDemucs:
    """The in-memory model with the fp16 rounding serialize_model(half=True) applies to its weights."""
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return model


def reference(model: torch.nn.Module, mix: np.ndarray, segment: float | None = None) -> np.ndarray:
    """demucs.api.Separator's computation: normalise, apply_model (no shifts), denormalise: (S, C, n)."""
    wav = torch.from_numpy(np.stack([mix, mix])).float()
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.no_grad():
        out = apply_model(model, ((wav - mean) / std)[None], shifts=0, split=True, overlap=0.25, segment=segment)
    return (out * std + mean)[0].numpy()


def config_for(root: Path, model: str = "tiny-htdemucs", **separation: object):
    return load_config(overrides={"stems": {"separator": "demucs", "evaluate_separator": False},
                                  "separation": {"model": model, "batch_size": 3, **separation},
                                  "models": {"store_dir": str(root)}, "device": {"name": "cpu"}})


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the tiny models are too small to gain from more, and the CI box is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with a tiny htdemucs (published single-file layout) and a tiny 2-specialist bag."""
    root = tmp_path_factory.mktemp("models")
    src = tmp_path_factory.mktemp("tiny")
    save_th(tiny_htdemucs(0), src / "single", "955717e8")
    register_model("tiny-htdemucs", src / "single", root, kind="htdemucs", version="seed0")
    save_th(tiny_htdemucs(1), src / "bag", "aaaa0001")
    save_th(tiny_htdemucs(2), src / "bag", "bbbb0002")
    bag = {"models": ["aaaa0001", "bbbb0002"], "weights": [[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]}
    (src / "bag" / "tiny_bag.yaml").write_text(yaml.safe_dump(bag))
    register_model("tiny-bag", src / "bag", root, kind="htdemucs", version="seed12")
    return root


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtefactStore, dict]:
    """A 3 s excerpt of a demo song, ingested; its track names no stems, so the separator must run."""
    tmp = tmp_path_factory.mktemp("song")
    store = ArtefactStore(tmp / "cache")
    return store, ingested_excerpt(store, tmp, "song_00/mix.flac", 5.0, 8.0)


def mix_of(store: ArtefactStore, row: dict) -> np.ndarray:
    return read_standard_audio(store.root / row["results"]["ingest"]["audio_file"])[0]


def test_stem_stage_separates_with_a_store_demucs(store_root: Path, song: tuple[ArtefactStore, dict]) -> None:
    store, row = song
    config = config_for(store_root)
    stage = StemStage(config, store)
    stage.preflight()
    stage.setup()
    out = stage.process_one(row)
    assert out["stems_method"] == "demucs:tiny-htdemucs"
    spec = load_registry(store_root)["tiny-htdemucs"]
    assert stage.lineage()["model"] == "tiny-htdemucs@seed0" and stage.lineage()["checksum"] == spec.sha256
    assert stage.uses_gpu

    mix = mix_of(store, row)
    voc, _ = read_standard_audio(store.root / out["vocals_file"])
    acc, _ = read_standard_audio(store.root / out["accompaniment_file"])
    assert voc.shape == acc.shape == mix.shape and mix.shape[0] == 3 * RATE
    # the stems are the loaded weights' sources: vocals, and the sum of the three others
    model = half_rounded(tiny_htdemucs(0))
    srcs = reference(model, mix[:, 0]).mean(axis=1)  # (S, n), the stage keeps mono stems
    tol = 1.5 / 32768  # 16-bit FLAC stems
    assert np.max(np.abs(voc[:, 0] - srcs[3])) < tol
    assert np.max(np.abs(voc[:, 0] + acc[:, 0] - srcs.sum(axis=0))) < 2 * tol
    assert np.std(srcs[3]) > 1e-3  # a random model still outputs something: the check above is not 0 == 0
    # scores are computed as for every method: the residual is what the model leaves out of the mix
    residual = mix[:, 0] - (voc[:, 0] + acc[:, 0])
    expected_db = 10 * np.log10(np.mean(residual.astype(np.float64) ** 2) / np.mean(mix.astype(np.float64) ** 2))
    assert out["stem_residual_db"] == pytest.approx(expected_db, abs=0.05)
    assert out["vocal_energy_ratio"] == pytest.approx(np.mean(voc.astype(np.float64) ** 2) / np.mean(mix.astype(np.float64) ** 2),
                                                      rel=1e-3)
    # deterministic: a fresh worker writes the same bytes
    again = StemStage(config, store).process_one(row)
    assert (again["vocals_sha256"], again["accompaniment_sha256"]) == (out["vocals_sha256"], out["accompaniment_sha256"])


def test_repet_sim_is_unchanged_by_the_demucs_option(store_root: Path) -> None:
    lite = load_config()
    stage = StemStage(lite, ArtefactStore(store_root / "x"))
    assert stage.model_name() is None and stage.model_id() == "repet-sim@librosa" and stage.model_checksum() is None
    assert stage.config_digest() == lite.stems.digest() + lite.ingest.digest()
    assert not stage.uses_gpu
    demucs = StemStage(config_for(store_root), ArtefactStore(store_root / "x"))
    assert demucs.model_kind() == "htdemucs" and demucs.config_digest() != stage.config_digest()
    # batch size and device change speed, not stems: the cache survives them; the chunking does not
    same = StemStage(config_for(store_root, batch_size=8).model_copy(update={"device": lite.device}), demucs.store)
    assert same.config_digest() == demucs.config_digest()
    assert StemStage(config_for(store_root, overlap=0.5), demucs.store).config_digest() != demucs.config_digest()


def test_loading_is_weights_only_and_faithful(store_root: Path) -> None:
    folder = load_registry(store_root)["tiny-htdemucs"].folder(store_root)
    loaded = load_demucs(folder, "tiny-htdemucs")
    member = loaded.models[0] if hasattr(loaded, "models") else loaded
    assert isinstance(member, HTDemucs) and member.segment == SEGMENT
    expected = half_rounded(tiny_htdemucs(0)).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in member.state_dict().items())


class NotAModel:
    """A class a checkpoint may pickle: torch's weights-only unpickler must refuse to import it."""


def test_a_checkpoint_that_pickles_other_code_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"klass": NotAModel, "args": (), "kwargs": {}, "state": {}}, folder / "955717e8-00000000.th")
    with pytest.raises(ModelError, match="loadable without running code"):
        load_demucs(folder)


def test_safetensors_layout_loads_the_same_model(tmp_path: Path, store_root: Path) -> None:
    """demucs >= 4.1 also publishes <sig>.safetensors with the class and arguments as JSON metadata."""
    from safetensors.torch import save_file

    model = half_rounded(tiny_htdemucs(0))
    _, kwargs = model._init_args_kwargs
    meta_kwargs = {**kwargs, "segment": {"_type": "fraction", "numerator": 4, "denominator": 5}}
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "955717e8.safetensors"),
              metadata={"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": json.dumps(meta_kwargs)})
    loaded = load_demucs(folder, "htdemucs")
    member = loaded.models[0] if hasattr(loaded, "models") else loaded
    assert member.segment == SEGMENT
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in member.state_dict().items())
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({"w": torch.zeros(1)}, str(bad / "955717e8.safetensors"), metadata={"klass": "os.system", "args": "[]",
                                                                                  "kwargs": "{}"})
    with pytest.raises(ModelError, match="not demucs.htdemucs.HTDemucs"):
        load_demucs(bad)


def test_chunked_overlap_add_equals_the_unchunked_result(store_root: Path) -> None:
    """A pointwise stand-in model has an exact unchunked answer; the real one matches demucs' apply_model."""

    class Pointwise(torch.nn.Module):
        sources, samplerate, audio_channels, segment, use_train_segment = SOURCES, RATE, 2, SEGMENT, True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([0.1 * x, 0.2 * x ** 3, -0.3 * x, 0.4 * x], dim=1)

    rng = np.random.default_rng(1)
    x = (0.2 * rng.standard_normal(int(1.7 * RATE))).astype(np.float32)  # 1.7 s: 2 chunks and a shorter last one
    sep = DemucsSeparator(Pointwise(), config_for(store_root))
    mean, std = x.mean(), x.std(ddof=1) + 1e-8
    xn = (x - mean) / std
    expected = np.stack([0.1 * xn, 0.2 * xn ** 3, -0.3 * xn, 0.4 * xn]) * std + mean
    got = sep.sources_of(x, RATE)
    np.testing.assert_allclose(np.stack([got[s] for s in SOURCES]), expected, atol=2e-5)

    model = half_rounded(tiny_htdemucs(0))
    ref = reference(model, x).mean(axis=1)
    got = DemucsSeparator(model, config_for(store_root)).sources_of(x, RATE)
    np.testing.assert_allclose(np.stack([got[s] for s in SOURCES]), ref, atol=1e-5)
    ref = reference(model, x, 0.5).mean(axis=1)  # shorter chunks than trained on: padded with context, as demucs does
    vocals, acc = DemucsSeparator(model, config_for(store_root, segment_s=0.5)).separate(x, RATE)
    np.testing.assert_allclose(vocals, ref[3], atol=1e-5)
    np.testing.assert_allclose(acc, ref[:3].sum(axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="longer than the 0.80 s"):
        DemucsSeparator(model, config_for(store_root, segment_s=2.0))


def test_other_rates_and_channel_layouts_come_back_as_given(store_root: Path) -> None:
    sep = DemucsSeparator(half_rounded(tiny_htdemucs(0)), config_for(store_root))
    rng = np.random.default_rng(2)
    stereo = (0.1 * rng.standard_normal((int(1.3 * 22050), 2))).astype(np.float32)
    vocals, acc = sep.separate(stereo, 22050)  # resampled to the model's 44.1 kHz and back
    assert vocals.shape == acc.shape == stereo.shape and vocals.dtype == np.float32
    assert not np.allclose(vocals[:, 0], vocals[:, 1])  # a stereo input is separated as stereo
    silent_v, silent_a = sep.separate(np.zeros(1000, np.float32), RATE)
    assert silent_v.shape == (1000,) and not silent_v.any() and not silent_a.any()


def test_out_of_memory_halves_the_batch_and_changes_nothing(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = half_rounded(tiny_htdemucs(0))
    x = (0.2 * np.random.default_rng(3).standard_normal(int(1.7 * RATE))).astype(np.float32)  # 3 chunks
    one = DemucsSeparator(model, config_for(store_root, batch_size=1)).separate(x, RATE)
    batched = DemucsSeparator(model, config_for(store_root, batch_size=4))
    normal = batched.separate(x, RATE)
    sizes: list[int] = []
    forward = HTDemucs.forward

    def small_gpu(self: HTDemucs, mix: torch.Tensor) -> torch.Tensor:
        sizes.append(mix.shape[0])
        if mix.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, mix)

    monkeypatch.setattr(HTDemucs, "forward", small_gpu)
    backed_off = batched.separate(x, RATE)
    assert sizes == [3, 1, 2, 1, 1]  # the batch of 3 is split 1 + 2, the 2 again 1 + 1
    assert all(np.array_equal(a, b) for a, b in zip(backed_off, one, strict=True))  # what batch 1 computes
    for a, b in zip(backed_off, normal, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_bag_of_specialists_takes_each_source_from_its_model(store_root: Path, song: tuple[ArtefactStore, dict],
                                                                tmp_path: Path) -> None:
    store, row = song
    mix = mix_of(store, row)[: int(1.2 * RATE), 0]  # 2 chunks
    m1, m2 = half_rounded(tiny_htdemucs(1)), half_rounded(tiny_htdemucs(2))
    # the bag's own yaml: sources 0-2 from the first model, vocals from the second
    stage = StemStage(config_for(store_root, model="tiny-bag"), store)
    stage.setup()
    vocals, acc = stage._demucs.separate(mix, RATE)
    np.testing.assert_allclose(vocals, reference(m2, mix)[3].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(acc, reference(m1, mix)[:3].sum(axis=0).mean(axis=0), atol=1e-5)
    assert StemStage(config_for(store_root, model="tiny-bag"), store).lineage()["model"] == "tiny-bag@seed12"

    # htdemucs_ft's published layout (four specialists, no yaml): the demucs package's bag definition applies
    ft = tmp_path / "ft"
    for seed, sig in enumerate(FT_SIGS):
        save_th(tiny_htdemucs(10 + seed), ft, sig)
    bag = load_demucs(ft, "htdemucs_ft")
    assert bag.weights == np.eye(4).tolist()
    got = DemucsSeparator(bag, config_for(store_root)).sources_of(mix, RATE)
    for k, source in enumerate(SOURCES):
        specialist = half_rounded(tiny_htdemucs(10 + k))
        np.testing.assert_allclose(got[source], reference(specialist, mix)[k].mean(axis=0), atol=1e-5)
    (ft / "0123abcd-12345678.th").write_bytes(next(ft.glob("f7e0c4bc-*")).read_bytes())  # a fifth model
    with pytest.raises(ModelError, match="no bag definition"):
        load_demucs(ft, "htdemucs_ft")


def test_missing_or_wrong_kind_models_fail_in_preflight(store_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-store"
    default = load_config(overrides={"stems": {"separator": "demucs"}, "models": {"store_dir": str(empty)}})
    with pytest.raises(ModelError, match=default.separation.model) as err:
        StemStage(default, ArtefactStore(tmp_path / "c")).preflight()
    if default.separation.model in MODELS:  # the published htdemucs, once the registry has it
        assert "songcorpus models" in str(err.value)

    root = tmp_path / "store"
    src = tmp_path / "src"
    save_th(tiny_htdemucs(0), src, "955717e8")
    register_model("gone", src, root, kind="htdemucs", version="1")
    next((root / "gone" / "1").iterdir()).unlink()
    with pytest.raises(ModelError, match="gone") as err:
        StemStage(config_for(root, model="gone"), ArtefactStore(tmp_path / "c")).preflight()
    assert "songcorpus models add gone" in str(err.value)

    register_model("a-codec", src, root, kind="encodec", version="1")
    with pytest.raises(ModelError, match="loads htdemucs models; a-codec is encodec"):
        StemStage(config_for(root, model="a-codec"), ArtefactStore(tmp_path / "c")).preflight()
