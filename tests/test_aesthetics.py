"""AestheticsStage (SongEval + Audiobox-Aesthetics) through the exact loading path users take.

Tiny randomly initialised models of both real architectures are written in the published on-disk layouts
(SongEval: config.yaml + head model.safetensors + MuQ config.json / model.safetensors with MuQ's state-dict
names; Audiobox: checkpoint.pt with state_dict / model_cfg / target_transform), registered in a temporary
store, and run by the stage on a few seconds of the demo song. Independent references: the full
transformers conformer (hooked at its 6th layer) for MuQ's hidden state, and the audiobox_aesthetics
package's own predictor for the windowed Audiobox scores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.config import load_config
from songcorpus.schemas.row import canonical_json
from songcorpus.transforms.models.aesthetic_inputs import to_rate
from songcorpus.transforms.models.audiobox_aesthetics import (
    AUDIOBOX_AXES,
    AudioboxAestheticsScorer,
    _wavlm_overrides,
    build_aes_model,
    load_aes_checkpoint,
)
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.models.songeval import MuQFeatures, SongEvalHead, SongEvalScorer, _ConvSubsampling
from songcorpus.transforms.models.store import load_registry, register_model
from songcorpus.transforms.stages.aesthetics import FIELDS, AestheticsStage, middle_excerpt

from conftest import ingested_excerpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# --- tiny models in the published layouts -----------------------------------------------------------------

TINY_W2V2 = {  # a Wav2Vec2-Conformer config.json dump as MuQ stores it, with MuQ's rotary/swish choices
    "architectures": ["Wav2Vec2ConformerForCTC"], "model_type": "wav2vec2-conformer",
    "transformers_version": "4.19.0.dev0", "position_embeddings_type": "rotary", "hidden_act": "swish",
    "conv_depthwise_kernel_size": 3, "num_attention_heads": 4, "intermediate_size": 64,
    "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4, "rotary_embedding_base": 10000,
    "hidden_size": 1024, "num_hidden_layers": 24, "do_stable_layer_norm": True, "layer_norm_eps": 1e-5,
}
TINY_MUQ = {  # MuQConfig fields (muq/muq.py), sized down
    "label_rate": 25, "num_codebooks": 1, "codebook_dim": 16, "codebook_size": 64, "features": ["melspec_2048"],
    "hop_length": 240, "n_mels": 128, "conv_dim": 4, "encoder_dim": 32, "encoder_depth": 7, "mask_hop": 0.4,
    "mask_prob": 0.6, "is_flash": False,
    "stat": {"melspec_2048_cnt": 14282760192, "melspec_2048_mean": 6.768444971712967,
             "melspec_2048_std": 18.417922652295623},
    "w2v2_config": TINY_W2V2, "use_rvq_target": False, "use_vq_target": False, "use_encodec_target": False,
    "rvq_ckpt_path": None, "recon_loss_ratio": None, "resume_checkpoint": None, "rvq_n_codebooks": 8,
    "rvq_multi_layer_num": 1,
}
TINY_HEAD = {"in_features": 32, "ffd_hidden_size": 64, "num_classes": 5, "attn_layer_num": 2}
TINY_WAVLM = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
              "conv_pos": 8, "conv_pos_groups": 4, "num_buckets": 32, "max_distance": 64,
              "conv_feature_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2}
TINY_AES_CFG = {"proj_num_layer": 1, "proj_ln": False, "proj_act_fn": "gelu", "proj_dropout": 0.0, "nth_layer": 3,
                "use_weighted_layer_sum": True, "precision": "32", "normalize_embed": True, "output_dim": 1,
                "wavlm_cfg": TINY_WAVLM}


def _randomise_norms(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Batch-norm statistics away from 0/1, so a model that ignored them would score differently."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def make_muq_files(folder: Path, seed: int) -> torch.nn.Module:
    """MuQ's config.json and model.safetensors (keys ``model.<MuQModel name>``: conv, the whole conformer,
    the pre-training linear, cls token and random-projection quantizer). Returns the full conformer."""
    from transformers import Wav2Vec2ConformerConfig
    from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = Wav2Vec2ConformerConfig(**TINY_W2V2)
    cfg.hidden_size, cfg.num_hidden_layers = TINY_MUQ["encoder_dim"], TINY_MUQ["encoder_depth"]
    cfg._attn_implementation = "eager"
    conformer = Wav2Vec2ConformerEncoder(cfg).eval()
    conv = _ConvSubsampling(TINY_MUQ["conv_dim"], TINY_MUQ["encoder_dim"], (2, 2), 128).eval()
    _randomise_norms(conformer, gen)
    _randomise_norms(conv, gen)
    state = {f"model.conv.{k}": v for k, v in conv.state_dict().items()}
    state |= {f"model.conformer.{k}": v for k, v in conformer.state_dict().items()}
    state |= {"model.linear.weight": torch.randn(64, 32, generator=gen), "model.linear.bias": torch.zeros(64),
              "model.cls_token": torch.randn(32, generator=gen),
              "model.quantizer_melspec_2048.random_projection": torch.randn(512, 16, generator=gen),
              "model.quantizer_melspec_2048.codebook": torch.randn(64, 16, generator=gen)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "muq_model.safetensors"))
    (folder / "muq_config.json").write_text(json.dumps(TINY_MUQ, indent=2))
    return torch.nn.Sequential(conv, conformer)


def make_songeval_folder(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    make_muq_files(folder, seed)
    torch.manual_seed(seed + 1)
    head = SongEvalHead(**TINY_HEAD)  # torch's default init: scores spread inside (1, 5), not saturated
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text(
        "generator:\n  _target_: model.Generator\n" + "".join(f"  {k}: {v}\n" for k, v in TINY_HEAD.items())
        + "train:\n  lr: 0.0001\n  batch_size: 8\n")
    return folder


def make_audiobox_folder(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    targets = {a: {"mean": 5.0 + 0.5 * i, "std": 1.5} for i, a in enumerate(AUDIOBOX_AXES)}
    model = build_aes_model(TINY_AES_CFG, targets, _wavlm_overrides(TINY_WAVLM))
    for p in model.layer_weights.values():
        p.data.normal_()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "model_cfg": TINY_AES_CFG, "target_transform": targets}, folder / "checkpoint.pt")
    return folder


# --- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A store with tiny-songeval (kind songeval) and tiny-aes (kind audiobox-aesthetics) registered."""
    base = tmp_path_factory.mktemp("aesthetics")
    root = base / "store"
    register_model("tiny-songeval", make_songeval_folder(base / "songeval"), root, kind="songeval", version="t1")
    register_model("tiny-aes", make_audiobox_folder(base / "aes"), root, kind="audiobox-aesthetics", version="t1")
    return {"root": root, "base": base}


@pytest.fixture(scope="module")
def clip_row(tmp_path_factory) -> tuple[ArtefactStore, dict]:
    """6 s of the demo song, ingested."""
    base = tmp_path_factory.mktemp("aesthetics-audio")
    store = ArtefactStore(base / "cache")
    return store, ingested_excerpt(store, base, "song_00/mix.flac", 10.0, 16.0)


def config_for(root: Path, **aesthetics):
    settings = {"songeval_model": "tiny-songeval", "audiobox_model": "tiny-aes", "max_analysis_s": 4.0, **aesthetics}
    return load_config(overrides={"models": {"store_dir": str(root)}, "aesthetics": settings,
                                  "device": {"name": "cpu"}})


def run_stage(config, store: ArtefactStore, row: dict) -> tuple[AestheticsStage, dict]:
    stage = AestheticsStage(config, store)
    stage.preflight()
    stage.setup()
    return stage, stage.process_one(row)


# --- tests ------------------------------------------------------------------------------------------------

def test_stage_scores_with_both_models(models, clip_row):
    store, row = clip_row
    stage, out = run_stage(config_for(models["root"]), store, row)
    assert set(out) == set(FIELDS) == set(AestheticsStage.provides)
    dims = [out[f"songeval_{d}"] for d in ("coherence", "musicality", "memorability", "clarity", "naturalness")]
    assert all(isinstance(v, float) and 1.0 < v < 5.0 for v in dims), dims
    assert len(set(dims)) == 5  # five separate outputs, not one value repeated
    assert out["songeval_mean"] == pytest.approx(np.mean(dims), abs=1e-4)
    assert all(isinstance(out[f"audiobox_{a.lower()}"], float) and np.isfinite(out[f"audiobox_{a.lower()}"])
               for a in AUDIOBOX_AXES)
    assert out["aesthetics_models"] == "tiny-songeval@t1 + tiny-aes@t1"
    canonical_json(out)  # JSON-serialisable, no NaN

    registry = load_registry(models["root"])
    lines = "".join(f"{n}@t1 {registry[n].sha256}\n" for n in ("tiny-songeval", "tiny-aes"))
    lineage = stage.lineage()
    assert lineage["model"] == "tiny-songeval@t1 + tiny-aes@t1"
    assert lineage["checksum"] == hashlib.sha256(lines.encode()).hexdigest()
    assert lineage["models"] == {"songeval": {"model": "tiny-songeval@t1", "checksum": registry["tiny-songeval"].sha256},
                                 "audiobox-aesthetics": {"model": "tiny-aes@t1", "checksum": registry["tiny-aes"].sha256}}

    # the scores are those of the middle 4 s at each model's rate, through the scorers the stage loaded
    x, rate = read_standard_audio(store.root / row["results"]["ingest"]["audio_file"])
    mono = middle_excerpt(x, rate, 4.0).mean(axis=1)
    assert mono.shape[0] == 4 * rate
    songeval = stage._scorers["songeval"].score(to_rate(mono, rate, 24000))
    assert out["songeval_clarity"] == round(songeval["clarity"], 4)
    audiobox = stage._scorers["audiobox-aesthetics"].score(to_rate(mono, rate, 16000))
    assert out["audiobox_pq"] == round(audiobox["PQ"], 4)

    # deterministic: a fresh stage (new setup) gives the same bytes
    _, again = run_stage(config_for(models["root"]), store, row)
    assert canonical_json(again) == canonical_json(out)


def test_scores_depend_on_the_weights(models, clip_row, tmp_path):
    store, row = clip_row
    root = tmp_path / "store"
    register_model("tiny-songeval", make_songeval_folder(tmp_path / "s", seed=7), root, kind="songeval", version="t2")
    register_model("tiny-aes", make_audiobox_folder(tmp_path / "a", seed=7), root, kind="audiobox-aesthetics",
                   version="t2")
    _, base = run_stage(config_for(models["root"]), store, row)
    stage, other = run_stage(config_for(root), store, row)
    assert other["songeval_mean"] != base["songeval_mean"]
    assert other["audiobox_ce"] != base["audiobox_ce"]
    assert stage.lineage()["model"] == "tiny-songeval@t2 + tiny-aes@t2"


def test_muq_features_are_hidden_state_6_of_the_full_model(tmp_path):
    """The truncated conformer gives what the whole MuQ conformer has after its 6th layer (MuQ's hidden_states[6]),
    read from the file layout: 25 frames a second of 24 kHz audio."""
    full = make_muq_files(tmp_path, seed=3)
    features = MuQFeatures.from_files(tmp_path / "muq_config.json", tmp_path / "muq_model.safetensors")
    assert len(features.conformer.layers) == 6
    keys = set(load_file(str(tmp_path / "muq_model.safetensors")))
    assert {"model.conv.conv.0.conv1.weight", "model.conv.conv.1.bn3.running_var", "model.conv.linear.weight",
            "model.conformer.layers.6.final_layer_norm.bias", "model.conformer.embed_positions.inv_freq"} <= keys
    wav = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3 * 24000)).astype(np.float32) * 0.1)
    captured = []
    conv, conformer = full
    hook = conformer.layers[5].register_forward_hook(lambda _m, _i, o: captured.append(o))
    with torch.inference_mode():
        ours = features(wav)
        conformer(conv(features.mel(wav)))
    hook.remove()
    assert ours.shape == (1, 75, 32)
    torch.testing.assert_close(ours, captured[0], atol=1e-5, rtol=1e-5)


def test_songeval_head_layout_is_checked(tmp_path):
    folder = make_songeval_folder(tmp_path / "s")
    state = load_file(str(folder / "model.safetensors"))
    assert sorted(state) == sorted(
        [f"attn.{i}.{n}" for i in range(2) for n in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")]
        + [f"ffd.{i}.{n}" for i in (0, 2) for n in ("weight", "bias")] + ["fc.weight", "fc.bias"])
    SongEvalScorer.from_folder(folder, torch.device("cpu"))  # loads
    del state["fc.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="fc.weight"):
        SongEvalScorer.from_folder(folder, torch.device("cpu"))


def test_audiobox_matches_the_package_predictor(tmp_path, monkeypatch):
    """Windows of 10 s (the last one partial), de-normalised and length-weighted: as AesPredictor scores it."""
    from audiobox_aesthetics.infer import AesPredictor
    from audiobox_aesthetics.model import aes
    from audiobox_aesthetics.model.wavlm import WavLMConfig

    folder = make_audiobox_folder(tmp_path, seed=5)
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"state_dict", "model_cfg", "target_transform"}
    assert all(k.startswith("model.wavlm_model.") or k.startswith(("model.proj_layer.", "model.layer_weights."))
               for k in ckpt["state_dict"])
    wav = (np.random.default_rng(1).standard_normal(16000 * 25) * 0.1).astype(np.float32)
    ours = AudioboxAestheticsScorer.from_folder(folder, torch.device("cpu")).score(wav)

    monkeypatch.setattr(aes, "DEFAULT_AUDIO_CFG",
                        WavLMConfig({**aes.DEFAULT_AUDIO_CFG.__dict__, **_wavlm_overrides(TINY_WAVLM)}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reference = AesPredictor(checkpoint_pth=str(folder / "checkpoint.pt"), precision="32")
    expected = reference.forward([{"path": torch.from_numpy(wav)[None], "sample_rate": 16000}])[0]
    for axis in AUDIOBOX_AXES:
        assert ours[axis] == pytest.approx(expected[axis], abs=1e-4)


def test_wavlm_settings_are_values_never_code(tmp_path):
    folder = make_audiobox_folder(tmp_path)
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    ckpt["model_cfg"] = {**ckpt["model_cfg"], "wavlm_cfg": {**TINY_WAVLM, "conv_feature_layers": "__import__('os')"}}
    torch.save(ckpt, folder / "checkpoint.pt")
    with pytest.raises(ModelError, match="conv_feature_layers"):
        load_aes_checkpoint(folder / "checkpoint.pt")


def test_one_model_disabled(models, clip_row):
    store, row = clip_row
    stage, out = run_stage(config_for(models["root"], audiobox_model=None), store, row)
    assert all(out[f"audiobox_{a.lower()}"] is None for a in AUDIOBOX_AXES)
    assert 1.0 < out["songeval_mean"] < 5.0
    assert out["aesthetics_models"] == stage.lineage()["model"] == "tiny-songeval@t1"
    spec = load_registry(models["root"])["tiny-songeval"]
    assert stage.lineage()["checksum"] == hashlib.sha256(f"tiny-songeval@t1 {spec.sha256}\n".encode()).hexdigest()

    stage, out = run_stage(config_for(models["root"], songeval_model=None), store, row)
    assert out["songeval_mean"] is None and out["songeval_coherence"] is None
    assert isinstance(out["audiobox_cu"], float)
    assert stage.lineage()["model"] == "tiny-aes@t1"

    stage, out = run_stage(config_for(models["root"], songeval_model=None, audiobox_model=None), store, row)
    assert out == dict.fromkeys(FIELDS) and stage.lineage()["model"] is None


@pytest.mark.parametrize(("which", "file"), [("songeval", "muq_model.safetensors"), ("aes", "checkpoint.pt")])
def test_missing_model_fails_preflight(models, tmp_path, which, file):
    root = tmp_path / "store"
    register_model("tiny-songeval", make_songeval_folder(tmp_path / "s"), root, kind="songeval", version="t1")
    register_model("tiny-aes", make_audiobox_folder(tmp_path / "a"), root, kind="audiobox-aesthetics", version="t1")
    name = {"songeval": "tiny-songeval", "aes": "tiny-aes"}[which]
    (root / name / "t1" / file).unlink()
    stage = AestheticsStage(config_for(root), ArtefactStore(tmp_path / "cache"))
    with pytest.raises(ModelError, match=rf"{name}.*{file} is missing.*songcorpus models add {name}"):
        stage.preflight()
    with pytest.raises(ModelError, match="no-such-songeval.*songcorpus models"):
        AestheticsStage(config_for(root, songeval_model="no-such-songeval"), ArtefactStore(tmp_path / "c2")).preflight()


def test_model_of_the_wrong_kind_is_refused(models, tmp_path):
    stage = AestheticsStage(config_for(models["root"], songeval_model="tiny-aes"), ArtefactStore(tmp_path))
    with pytest.raises(ModelError, match="loads songeval models; tiny-aes is audiobox-aesthetics"):
        stage.preflight()
    stage = AestheticsStage(config_for(models["root"], audiobox_model="tiny-songeval"), ArtefactStore(tmp_path))
    with pytest.raises(ModelError, match="loads audiobox-aesthetics models; tiny-songeval is songeval"):
        stage.preflight()


@pytest.mark.parametrize("which", ["songeval", "aes"])
def test_preflight_reads_the_layouts(tmp_path, which):
    """A registered folder of the right kind whose files are not the published layout fails before any data."""
    if which == "songeval":
        folder = make_songeval_folder(tmp_path / "s")
        (folder / "config.yaml").write_text("model:\n  dim: 32\n")  # no generator section
        register_model("bad", folder, tmp_path / "store", kind="songeval", version="t1")
        config, match = config_for(tmp_path / "store", songeval_model="bad", audiobox_model=None), "generator"
    else:
        folder = make_audiobox_folder(tmp_path / "a")
        ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
        del ckpt["target_transform"]
        torch.save(ckpt, folder / "checkpoint.pt")
        register_model("bad", folder, tmp_path / "store", kind="audiobox-aesthetics", version="t1")
        config, match = config_for(tmp_path / "store", songeval_model=None, audiobox_model="bad"), "target_transform"
    with pytest.raises(ModelError, match=match):
        AestheticsStage(config, ArtefactStore(tmp_path / "cache")).preflight()
