from __future__ import annotations

import re
import subprocess
import sys

import pytest

from songcorpus.cli import main


@pytest.mark.parametrize("command", ["curate", "rebuild", "report", "demo", "generate", "train-report", "view"])
def test_help_explains_each_command(command):
    out = subprocess.run([sys.executable, "-m", "songcorpus.cli", command, "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "usage: songcorpus" in out and len(out) > 300


def test_report_prints_the_funnel(demo_ray, capsys):
    assert main(["report", str(demo_ray)]) == 0
    out = capsys.readouterr().out
    # one shard per split: the demo manifest holds songs out for valid and test
    assert "speech_dominant" in out and re.search(r"\b\d{2,} samples in 3 shards", out), out


def test_report_on_a_folder_without_catalog_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "run `songcorpus curate" in capsys.readouterr().err


def test_bad_config_key_exits_2_with_the_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("shards: {max_sample: 3}\n")
    assert main(["curate", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "shards.max_sample" in capsys.readouterr().err


# each command's config: (arguments after the config file's path is known, YAML with a problem, the problem)
BAD_CONFIGS = {
    "curate": (lambda d, c: ["curate", str(d), "--out", str(d / "o"), "--config", str(c)], "shards: {max_sample: 3}\n",
               "shards.max_sample: unknown key (did you mean 'max_samples'?)"),
    "rebuild": (lambda d, c: ["rebuild", str(d), "--config", str(c)], "splits: {test: -1}\n",
                "splits.test: Input should be greater than or equal to 0"),
    "train": (lambda d, c: ["train", "--model", "samuel", "--data", str(d), "--out", str(d / "run"), "--config", str(c)],
              "model: {base_chanels: 16}\noptim: {lr: 0}\n",
              "model.base_chanels: unknown key (did you mean 'base_channels'?); {config}: optim.lr: Input should be "
              "greater than 0"),
}


@pytest.mark.parametrize("command", sorted(BAD_CONFIGS))
def test_a_bad_config_is_one_line_naming_file_key_and_problem_and_exits_2(command, tmp_path, capsys):
    args, text, problem = BAD_CONFIGS[command]
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert main(args(tmp_path, config)) == 2
    assert capsys.readouterr().err == f"songcorpus: {config}: {problem.format(config=config)}\n"
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


def test_inspect_draws_a_sample_and_decodes_the_codec_for_listening(demo_ray, tmp_path, capsys):
    import duckdb
    import soundfile as sf

    con = duckdb.connect(str(demo_ray / "catalog.duckdb"), read_only=True)
    (key,) = con.execute("SELECT key FROM windows ORDER BY key LIMIT 1").fetchone()
    con.close()
    png, listen = tmp_path / "s.png", tmp_path / "listen"
    assert main(["inspect", str(demo_ray), key, "--png", str(png), "--listen", str(listen)]) == 0
    assert png.stat().st_size > 20000 and key in capsys.readouterr().out
    mix, rate = sf.read(listen / "mix.wav")
    for name in ("vocals.embedded_latents_decoded.wav", "accompaniment.embedded_tokens_decoded.wav"):
        decoded, r = sf.read(listen / name)
        assert r == rate and decoded.shape == mix.shape and abs(decoded).max() > 1e-3


def test_inspect_an_unknown_key_is_a_clear_error(demo_ray, capsys):
    assert main(["inspect", str(demo_ray), "no_such_key"]) == 2
    assert "no sample 'no_such_key'" in capsys.readouterr().err


def test_the_picture_title_names_the_augmentation_briefly():
    from songcorpus.pipelines.readers.inspect_sample import describe_augmentation

    eq = {name: {"gain_db": g, "freq_hz": f, "q": 0.8} for name, g, f in
          (("bass", -3.84, 147.2), ("mid", 2.04, 1369.4), ("treble", 2.57, 3751.4))}
    from songcorpus.schemas.config import AugmentConfig
    from songcorpus.transforms.dsp.augment import Biquad, EqParams, SongAugmentation, stretcher_id
    from songcorpus.transforms.stages.samples_lite import augmentation_record

    eq = EqParams(bass=Biquad(-3.84, 147.2, 0.8), mid=Biquad(2.04, 1369.4, 0.8), treble=Biquad(2.57, 3751.4, 0.8))
    cfg = AugmentConfig()
    pitch = SongAugmentation("pitch", 2.0, stretcher="librosa")
    assert describe_augmentation(augmentation_record(pitch, eq, cfg, (0.0, 10.24))) == (
        f"pitch +2 st ({stretcher_id('librosa')}); accompaniment EQ bass -3.8 dB @ 147 Hz, mid +2.0 dB @ 1369 Hz, "
        "treble +2.6 dB @ 3751 Hz; -16 dB RMS, peak <= -1 dBFS")
    speed = SongAugmentation("speed", 1.2, stretcher="librosa")
    described = describe_augmentation(augmentation_record(speed, None, cfg, (0.0, 12.288)))
    assert described == f"speed x1.2 ({stretcher_id('librosa')})"
    assert describe_augmentation(augmentation_record(None, None, cfg, (0.0, 10.24))) == "none"


def test_an_input_error_from_a_dataloader_worker_is_one_line(capsys):
    """PyTorch re-raises a worker's error as the same class with the worker's traceback as its message; the CLI
    prints the original message and the worker, not the traceback."""
    from torch._utils import ExceptionWrapper

    from songcorpus.cli.exit_codes import exit_code
    from songcorpus.train.data import DataError

    try:
        try:
            raise DataError("shard shard-train-000001.latents.tar: member x.npy is truncated")
        except DataError:
            ExceptionWrapper(where="in DataLoader worker process 1").reraise()
    except DataError as exc:
        assert "Original Traceback" in str(exc)  # what torch hands back
        assert exit_code(exc, lambda: (DataError,), verbose=False) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["songcorpus: shard shard-train-000001.latents.tar: member x.npy is truncated "
                     "(in DataLoader worker process 1)"], lines
