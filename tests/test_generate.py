"""`songcorpus generate` end to end for each generator from 2-step tiny runs on the demo corpus (inputs through
the corpus's stages, the embedded codec's decode, the corpus sample rate, the input's length), its refusals
(exit 2 naming the problem), and `songcorpus train-report`'s PNG."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from test_trainer import tiny_generator

from songcorpus.cli import main
from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.train.launch import launch_local

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEMO_DIR = Path(demo_manifest()).parent
CLIP_S = 5.0  # one 4 s window and a partial one: the window-by-window path and the masked last window


@pytest.fixture(scope="module")
def runs(demo_ray, tmp_path_factory) -> dict[str, Path]:
    """A 2-step run of each generator (stage B on the stage-A run)."""
    root = tmp_path_factory.mktemp("gen_runs")
    out = {}
    for name in ("samuel", "lada_band", "songecho", "songecho_melody", "unisinger"):
        out[name] = root / name
        launch_local(tiny_generator(name, 2), str(demo_ray), out[name], progress=False,
                     backbone=out["songecho"] if name == "songecho_melody" else None)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """5 s of song_00 (from 10 s in): the vocal stem and the mix."""
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for stem in ("vocals", "mix"):
        x, rate = sf.read(DEMO_DIR / "song_00" / f"{stem}.flac", dtype="float32")
        out[stem] = folder / f"song_00_{stem}.flac"
        sf.write(out[stem], x[10 * rate:10 * rate + int(CLIP_S * rate)], rate, subtype="PCM_16")
    return out


def corpus_rate(demo: Path) -> int:
    return int(yaml.safe_load((demo / "config.yaml").read_text())["ingest"]["sample_rate"])


CASES = {  # id -> (run, arguments; {vocals}/{mix} are the clips)
    "samuel": ("samuel", ["--vocals", "{vocals}"]),
    "lada_band_reference_mix": ("lada_band", ["--vocals", "{vocals}", "--reference", "{mix}", "--caption", "a waltz"]),
    "songecho_stage_a": ("songecho", ["--melody", "{mix}", "--caption", "a slow ballad, piano"]),
    "songecho_stage_b": ("songecho_melody", ["--melody", "{mix}", "--caption", "a slow ballad",
                                             "--lyrics", "i dream of jeannie with the light brown hair", "--stems"]),
    "unisinger_song": ("unisinger", ["--task", "song", "--caption", "a ballad", "--lyrics", "borne like a vapor",
                                     "--melody", "{vocals}", "--inputs-are-stems"]),
    "unisinger_svc": ("unisinger", ["--task", "svc", "--vocals", "{vocals}", "--reference", "{mix}"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_writes_audio_at_the_corpus_rate(case, runs, clips, demo_ray, tmp_path, capsys):
    name, args = CASES[case]
    suffix = ".flac" if name == "lada_band" else ".wav"
    out = tmp_path / f"out{suffix}"
    argv = ["generate", str(runs[name]), "--out", str(out), "--steps", "2", "--seed", "3",
            *[a.format(**{k: str(v) for k, v in clips.items()}) for a in args]]
    assert main(argv) == 0, capsys.readouterr().err
    assert "EMA weights of step 2" in capsys.readouterr().out
    rate = corpus_rate(demo_ray)
    written = [out] + ([out.with_name(f"out.{s}{suffix}") for s in ("vocals", "accompaniment")] if "--stems" in args else [])
    for path in written:
        info = sf.info(path)
        assert info.samplerate == rate and info.channels == 1
        assert info.frames == round(CLIP_S * rate), (path, info.frames)  # the input's length, all windows joined
        y, _ = sf.read(path, dtype="float32")
        assert np.isfinite(y).all() and np.abs(y).max() > 0
    if name == "samuel":  # same inputs and seed: the same bytes
        again = tmp_path / "again.wav"
        assert main([*argv[:3], str(again), *argv[4:]]) == 0
        assert again.read_bytes() == out.read_bytes()


def test_generate_refuses_bad_requests_by_name(runs, clips, tmp_path, capsys):
    def refused(argv: list[str], *needles: str) -> None:
        assert main(["generate", *argv, "--out", str(tmp_path / "x.wav")]) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err
        assert not (tmp_path / "x.wav").exists()

    voc = ["--vocals", str(clips["vocals"])]
    lada_ckpt = sorted((runs["lada_band"] / "checkpoints").iterdir())[-1]
    refused([str(runs["samuel"]), *voc, "--checkpoint", str(lada_ckpt)], "is of model 'lada_band'", "samuel")
    refused([str(runs["samuel"]), *voc, "--checkpoint", "7"], "no checkpoint at step 7")
    broken = tmp_path / "broken"
    shutil.copytree(runs["samuel"], broken)
    state = next((broken / "checkpoints").iterdir()) / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    refused([str(broken), *voc], "corrupt", "state.pt")
    shutil.rmtree(broken / "checkpoints")
    refused([str(broken), *voc], "has no checkpoint", "train it first")
    refused([str(runs["samuel"]), "--vocals", str(tmp_path / "missing.flac")], "--vocals file", "does not exist")
    refused([str(runs["songecho_melody"]), "--caption", "a ballad"], "stage B", "needs --melody")
    refused([str(runs["samuel"]), *voc, "--reference", str(clips["mix"])], "SAMUeL does not take --reference")
    refused([str(tmp_path / "no-run"), *voc], "not a training run folder")


def test_generate_refuses_a_tampered_latent_stats_file(runs, clips, tmp_path, capsys):
    """A latent_stats.npz without a key's arrays was read past (the accompaniment decoded unscaled, exit 0); one
    missing only a std, or truncated, raised a bare KeyError or zip error. All are refused naming the file and
    what is wrong."""
    from test_training_faults import tampered_copies

    run = tmp_path / "samuel"
    shutil.copytree(runs["samuel"], run)
    stats = run / "latent_stats.npz"
    for problem, data in tampered_copies(stats).items():
        stats.write_bytes(data)
        out = tmp_path / "out.wav"
        assert main(["generate", str(run), "--vocals", str(clips["vocals"]), "--out", str(out), "--steps", "2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("songcorpus: ") and str(stats) in err and problem in err, err
        assert not out.exists()


def synthetic_vocals(path: Path, seconds: float, rate: int) -> Path:
    """A gliding tone with a little noise: a long input made in memory, no corpus file needed."""
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * t)))
    noise = 0.01 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, (tone + noise).astype(np.float32), rate, subtype="PCM_16")
    return path


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
def test_generate_memory_does_not_grow_with_the_input_length(runs, demo_ray, tmp_path, monkeypatch):
    """Peak RSS of generation after the input's curation (reset once the input is ingested) for 20 s and for 4x
    that: the same within a margin far below what the longer input's decoded song would take. Before, every
    window's latents were joined and decoded at once: about +0.3 GB here for one more minute (7 GB in all for a
    20-minute input)."""
    from songcorpus.train.generate import Request, generate
    from songcorpus.transforms.stages.ingest import IngestStage

    rate = corpus_rate(demo_ray)
    ingest = IngestStage.process_one
    reset_at: list[int] = []

    def ingest_then_reset_peak(self, row):
        result = ingest(self, row)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        reset_at.append(status_kb("VmRSS"))
        return result

    monkeypatch.setattr(IngestStage, "process_one", ingest_then_reset_peak)

    def growth_mb(seconds: float) -> float:
        vocals = synthetic_vocals(tmp_path / f"vocals-{seconds:g}.flac", seconds, rate)
        info = generate(runs["samuel"], Request(out=tmp_path / f"out-{seconds:g}.wav", vocals=vocals, steps=2))
        assert info["duration_s"] == pytest.approx(seconds, abs=1e-4)
        return (status_kb("VmHWM") - reset_at[-1]) / 1024

    growth_mb(5.0)  # first-use allocations (filterbanks, thread pools) out of the comparison
    short, long = growth_mb(20.0), growth_mb(80.0)
    assert long < short + 48, (short, long)


def test_generate_scratch_lives_beside_the_output_and_is_removed(runs, clips, tmp_path, monkeypatch, capsys):
    """Scratch files sit next to the output, never in the system temp folder: removed on a normal end (with a
    progress bar per window on stderr) and on an error, and one a killed run left (its process gone) is
    removed by the next run writing the same output. Before, a kill -9 left the scratch store in the system
    temp folder for good."""
    import tempfile

    from songcorpus.transforms.models import embedded_codec as codec

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    folder = tmp_path / "outputs"
    folder.mkdir()
    out = folder / "song.wav"
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = folder / f".song.wav.generate-{gone.pid}.tmp"
    (stale / "store").mkdir(parents=True)
    (stale / "store" / "input.flac").write_bytes(b"left by a killed run")
    seen: list[list[str]] = []
    decode = codec.EmbeddedCodec.decode_latents

    def watch(self, *args, **kwargs):
        seen.append(sorted(os.listdir(system_tmp)) + sorted(p.name for p in folder.iterdir()))
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(codec.EmbeddedCodec, "decode_latents", watch)
    argv = ["generate", str(runs["samuel"]), "--vocals", str(clips["vocals"]), "--out", str(out), "--steps", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "generate samuel" in err and "2/2" in err, err  # two windows, counted on stderr
    assert seen and all(len(names) == 1 and names[0].startswith(".song.wav.generate-") for names in seen), seen
    assert sorted(os.listdir(folder)) == ["song.wav"] and not os.listdir(system_tmp)

    def fail(self, *args, **kwargs):
        raise RuntimeError("decoder failed")

    monkeypatch.setattr(codec.EmbeddedCodec, "decode_latents", fail)
    out.unlink()
    with pytest.raises(RuntimeError, match="decoder failed"):
        main([*argv, "--no-progress"])
    assert not os.listdir(folder) and not os.listdir(system_tmp)


def test_train_report_writes_a_png(runs, tmp_path, capsys):
    png = tmp_path / "report.png"
    assert main(["train-report", str(runs["lada_band"]), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "2 logged steps" in out and "mlm" in out and "data_wait_frac" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["train-report", str(tmp_path)]) == 2
    assert "no log.jsonl" in capsys.readouterr().err


def zeroed_copy(run: Path, dest: Path, select) -> Path:
    """A copy of ``run`` whose checkpoint's EMA weights named by ``select`` are zero (a probe's known answer)."""
    import torch

    shutil.copytree(run, dest)
    state_file = next((dest / "checkpoints").iterdir()) / "state.pt"
    state = torch.load(state_file, weights_only=True)
    chosen = [k for k in state["ema"] if select(k)]
    assert chosen, sorted(state["ema"])[:20]
    for k in chosen:
        state["ema"][k] = torch.zeros_like(state["ema"][k])
    torch.save(state, state_file)
    return dest


def test_f0_use_reads_whether_a_model_follows_its_f0(runs, tmp_path):
    """The paired held-out loss of train/eval/probes/f0_use.py. Known answer: stage B with its zero-initialised
    injections is its backbone bit for bit, so no altered f0 changes its loss; once the injections (or
    UniSinger's f0 encoder) are trained, removing the f0 does. Same call, same numbers; a model without f0 is
    refused by name."""

    from songcorpus.train.eval.probes.f0_use import VARIANTS, f0_use
    from songcorpus.train.eval.probes.paired_loss import ProbeError

    probe = {"split": "train", "batches": 2, "batch_size": 2}
    identity = zeroed_copy(runs["songecho_melody"], tmp_path / "stage_b_identity",
                           lambda k: k.startswith("injections.") and k.endswith(".out.weight"))
    use = f0_use(identity, **probe)
    assert set(use.losses) == set(VARIANTS)
    assert all(np.all(use.delta(v) == 0.0) for v in VARIANTS), use.table()

    for name in ("songecho_melody", "unisinger"):
        use = f0_use(runs[name], **probe)
        assert np.all(np.isfinite(use.losses["true"])) and use.step == 2
        assert np.abs(use.delta("nulled")).max() > 0, (name, use.table())
        again = f0_use(runs[name], **probe)
        assert all(np.array_equal(use.losses[v], again.losses[v]) for v in VARIANTS)
    with pytest.raises(ProbeError, match="reads no f0"):
        f0_use(runs["samuel"], **probe)


def test_content_alignment_reads_a_unisinger_run(runs):
    """train/eval/probes/content_alignment.py on the tiny trained UniSinger run: one row per block and one column per
    head, masses between 0 and 1 with the aligned share inside the content share; same call, same numbers; a
    run of another model is refused by name."""
    from songcorpus.train.eval.probes.content_alignment import content_alignment
    from songcorpus.train.eval.probes.paired_loss import ProbeError

    probe = {"split": "train", "batches": 2, "batch_size": 2}
    found = content_alignment(runs["unisinger"], **probe)
    cfg = yaml.safe_load((runs["unisinger"] / "config.yaml").read_text())["model"]
    assert found.aligned.shape == found.content.shape == (cfg["n_layers"], cfg["n_heads"])
    assert np.all(found.aligned >= 0) and np.all(found.aligned <= found.content + 1e-9) and np.all(found.content <= 1)
    assert 0 < found.uniform < 1 and found.step == 2 and "best / uniform" in found.table()
    again = content_alignment(runs["unisinger"], **probe)
    assert np.array_equal(found.aligned, again.aligned)
    with pytest.raises(ProbeError, match="UniSinger"):
        content_alignment(runs["samuel"], **probe)


def test_condition_use_reads_whether_an_accompaniment_model_follows_its_vocals(runs, tmp_path):
    """train/eval/probes/condition_use.py. Known answer: a SAMUeL whose vocal input is cut (the first layer that reads
    the condition zeroed) loses nothing from any alteration; the tiny trained SAMUeL and LaDA-Band runs give
    finite, repeatable paired losses; a model without vocals, and a batch of one, are refused by name."""

    from songcorpus.train.eval.probes.condition_use import condition_use, variants
    from songcorpus.train.eval.probes.paired_loss import ProbeError

    probe = {"split": "train", "batches": 2, "batch_size": 2}
    cut = zeroed_copy(runs["samuel"], tmp_path / "samuel_cut",
                      lambda k: k.startswith("net.cond_in") and k.endswith("weight"))
    use = condition_use(cut, **probe)
    assert set(use.losses) == set(variants("samuel", 25.0))
    assert all(np.all(use.delta(v) == 0.0) for v in use.losses), use.table()

    for name in ("samuel", "lada_band"):
        use = condition_use(runs[name], **probe)
        assert np.all(np.isfinite(use.losses["true"])) and use.step == 2
        assert np.abs(use.delta("another song's vocals")).max() > 0, (name, use.table())
        again = condition_use(runs[name], **probe)
        assert all(np.array_equal(use.losses[v], again.losses[v]) for v in use.losses)
    with pytest.raises(ProbeError, match="reads samuel or lada_band"):
        condition_use(runs["unisinger"], **probe)
    with pytest.raises(ProbeError, match="batch_size >= 2"):
        condition_use(runs["samuel"], split="train", batches=1, batch_size=1)


def test_pitch_share_reads_what_voicing_and_pitch_explain(runs):
    """train/eval/probes/linear_read.py ``pitch_share``. Known answers: a target made from the pitch bins is explained by
    voicing plus pitch and far less by voicing alone; one made from voicing gains nothing from pitch; noise is
    explained by neither. Then the corpus path runs on a trained run's stats."""
    from songcorpus.train.eval.probes.linear_read import pitch_share, ridge_r2, voicing_pitch_features
    from songcorpus.train.run import load_run

    rng = np.random.default_rng(0)
    f0 = np.where(rng.random(4000) < 0.7, 110.0 * 2.0 ** rng.uniform(0, 3, 4000), 0.0)
    voiced, with_pitch = voicing_pitch_features(f0)
    assert voiced.shape == (4000, 1) and with_pitch.shape[0] == 4000 and with_pitch[:, -1].tolist() == voiced[:, 0].tolist()
    fit, read = slice(0, 3000), slice(3000, None)
    from_pitch = with_pitch @ rng.normal(size=(with_pitch.shape[1], 6)) + 0.01 * rng.normal(size=(4000, 6))
    assert ridge_r2(with_pitch[fit], from_pitch[fit], with_pitch[read], from_pitch[read], ridge=1e-6) > 0.99
    assert ridge_r2(voiced[fit], from_pitch[fit], voiced[read], from_pitch[read]) < 0.6
    from_voicing = voiced @ rng.normal(size=(1, 6)) + 0.1 * rng.normal(size=(4000, 6))
    a = ridge_r2(voiced[fit], from_voicing[fit], voiced[read], from_voicing[read])
    b = ridge_r2(with_pitch[fit], from_voicing[fit], with_pitch[read], from_voicing[read])
    assert a > 0.9 and abs(b - a) < 0.01
    noise = rng.normal(size=(4000, 6))
    assert abs(ridge_r2(with_pitch[fit], noise[fit], with_pitch[read], noise[read])) < 0.05

    loaded = load_run(runs["songecho_melody"])
    share = pitch_share(str(loaded.corpus), loaded.stats, loaded.window_s, splits=("train", "train"), batches=2,
                        batch_size=2)
    assert share.frames[0] == share.frames[1] > 0
    assert 0.0 <= share.voicing <= 1.0 and np.isfinite(share.pitch)


def test_content_pitch_reads_the_model_s_own_content_frames(runs):
    """train/eval/probes/linear_read.py ``content_pitch`` on the tiny UniSinger run's corpus: every lifter width is read on
    the same frames, the R² are those of ``ridge_r2`` on ``content_frames`` (checked for voicing, unliftered),
    and the table prints each width."""
    from songcorpus.train.eval.probes.linear_read import content_pitch, ridge_r2, voicing_pitch_features
    from songcorpus.train.models.unisinger import content_frames
    from songcorpus.train.run import load_run

    loaded = load_run(runs["unisinger"])
    assert loaded.model.config.content_lifter == 20  # the default reaches a trained run
    found = content_pitch(str(loaded.corpus), loaded.stats, loaded.window_s, lifters=(0, 20),
                          splits=("train", "train"), batches=2, batch_size=2)
    assert set(found.pitch_bins) == set(found.log_f0) == set(found.voicing) == {0, 20}
    assert found.frames[0] == found.frames[1] > 0
    assert all(np.isfinite(v) for d in (found.pitch_bins, found.log_f0, found.voicing) for v in d.values())
    assert "off" in found.table() and "20" in found.table()

    import torch

    from songcorpus.train.data import BatchBuilder, CorpusView, ShardStream, StepOrder

    view = CorpusView(str(loaded.corpus), "train", ["f0", "vocals_latents"], window_s=loaded.window_s)
    stream = ShardStream(BatchBuilder(view, latent_stats=loaded.stats), StepOrder(len(view), 0, 2))
    xs, vs = [], []
    for i in range(min(2, max(1, len(view) // 2))):
        batch = stream.batch(i)
        lat = torch.as_tensor(np.asarray(batch["vocals_latents"], dtype=np.float32))
        mask = torch.as_tensor(np.asarray(batch["mask"]) > 0)
        xs.append(content_frames(lat, mask, None)[mask].double().numpy())
        vs.append(voicing_pitch_features(batch["f0"], lat.shape[1])[0][mask.numpy()])
    x, v = np.concatenate(xs), np.concatenate(vs)
    assert found.voicing[0] == pytest.approx(ridge_r2(x, v, x, v))


def test_modality_use_nulls_each_svc_condition(runs):
    """train/eval/probes/f0_use.py ``modality_use``: the baseline and one variant per SVC condition, paired (the
    baseline's delta is 0), repeatable, and refused for a model without those conditions."""
    from songcorpus.train.eval.probes.f0_use import SVC_CONDITIONS, modality_use
    from songcorpus.train.eval.probes.paired_loss import ProbeError

    used = modality_use(runs["unisinger"], split="train", batches=1, batch_size=2)
    assert set(used.losses) == {"true"} | {f"no {m}" for m in SVC_CONDITIONS}
    assert used.delta("true").tolist() == [0.0]
    again = modality_use(runs["unisinger"], split="train", batches=1, batch_size=2)
    assert all(np.array_equal(used.losses[k], again.losses[k]) for k in used.losses)
    with pytest.raises(ProbeError, match="UniSinger"):
        modality_use(runs["samuel"], split="train", batches=1, batch_size=2)
