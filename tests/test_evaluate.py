"""`songcorpus evaluate` end to end: a tiny trained run scored on demo windows with every reference system
(ground truth, codec ceiling, floor, untrained) and every requested metric, or the recorded reason; the
DuckDB tables and view, joinable with the corpus catalog; the same rows again for the same command; a
folder of another system's files scored by name; the refusals (exit 2, naming the problem); and the evaluation
notebook on it, as a script and executed in a kernel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from test_trainer import tiny_generator

from songcorpus.cli import main
from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.train.eval.heldout import SYSTEMS, spread_over_songs
from songcorpus.train.eval.scoring import GROUPS
from songcorpus.train.launch import launch_local

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEMO_DIR = Path(demo_manifest()).parent
FAST = ["--bootstrap", "50", "--fad-bootstrap", "3", "--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def samuel_run(demo_ray, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("eval_runs") / "samuel"
    launch_local(tiny_generator("samuel", 2), str(demo_ray), run, progress=False)
    return run


@pytest.fixture(scope="module")
def samuel_eval(samuel_run, demo_ray, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "samuel"
    assert main(["evaluate", str(samuel_run), "--data", str(demo_ray), "--split", "train", "--limit", "4",
                 "--out", str(out), *FAST]) == 0
    return out


def test_spread_over_songs_puts_every_song_first():
    keys = ["a_0000", "a_0001", "a_0002", "b_0000", "b_0001", "c_0000", "a_0000_speed90"]
    order = spread_over_songs(keys)
    assert [keys[i].split("_")[0] for i in order[:3]] == ["a", "b", "c"]
    assert sorted(order) == list(range(len(keys)))


def test_evaluate_writes_every_system_and_metric_or_its_reason(samuel_eval, demo_ray, capsys):
    table = pq.read_table(samuel_eval / "metrics.parquet").to_pylist()
    assert {r["system"] for r in table} == set(SYSTEMS)
    assert {r["model"] for r in table} == {"samuel"} and {r["split"] for r in table} == {"train"}
    assert {r["checkpoint_step"] for r in table} == {2}
    expected = {m for g in ("onset_f1", "chroma_cosine", "hpcp_similarity", "fad", "kl", "rtf") for m in GROUPS[g]}
    for system in SYSTEMS:
        got = {r["metric"] for r in table if r["system"] == system}
        want = expected - ({"rtf"} if system not in ("model", "untrained") else set())
        assert want <= got, (system, want - got)
    for r in table:  # a value, or the reason there is none: never an empty row
        assert (r["value"] is None) == (r["reason"] is not None), r
    by = {(r["system"], r["key"], r["metric"]): r["value"] for r in table}
    keys = sorted({r["key"] for r in table if r["key"]})
    assert len(keys) == 4
    for key in keys:  # the real stems against themselves score perfectly
        assert by[("ground_truth", key, "onset_f1")] == pytest.approx(1.0)
        assert by[("ground_truth", key, "chroma_cosine")] == pytest.approx(1.0)
        assert abs(by[("ground_truth", key, "kl_ref_gen")]) < 1e-3
    assert by[("ground_truth", None, "fad")] == pytest.approx(0.0, abs=1e-6)
    # the codec ceiling loses something, a 2-step model much more: numbers read between them
    assert 0.0 < by[("codec_ceiling", None, "fad")] < by[("model", None, "fad")]
    fad_inf = [r for r in table if r["metric"] == "fad_inf" and r["system"] == "model"]
    assert fad_inf[0]["value"] is None and "FAD-inf starts at n = 500" in fad_inf[0]["reason"]
    # the floor is another song's accompaniment: the windows span several songs
    assert by[("floor", keys[0], "onset_f1")] is not None


def test_summary_view_has_intervals_and_joins_the_catalog(samuel_eval, demo_ray):
    con = duckdb.connect(str(samuel_eval / "metrics.duckdb"), read_only=True)
    rows = con.execute("SELECT system, metric, mean, ci_low, ci_high, n FROM summary WHERE metric = 'onset_f1'"
                       ).fetchall()
    assert {r[0] for r in rows} == set(SYSTEMS)
    for _, _, mean, lo, hi, n in rows:
        assert n == 4 and lo <= mean + 1e-9 and mean <= hi + 1e-9
    fad = con.execute("SELECT mean, ci_low, ci_high FROM summary WHERE system = 'model' AND metric = 'fad'").fetchone()
    assert fad[1] <= fad[0] <= fad[2]
    con.execute(f"ATTACH '{demo_ray / 'catalog.duckdb'}' AS corpus (READ_ONLY)")
    joined = con.execute("SELECT count(*), count(DISTINCT w.track_id) FROM metrics m JOIN corpus.windows w "
                         "USING (key) WHERE m.system = 'model' AND m.metric = 'onset_f1'").fetchone()
    assert joined[0] == 4 and joined[1] >= 2
    con.close()


def test_paired_differences_pair_windows_and_know_their_answer(samuel_eval):
    """tables.paired_table: a model that is its baseline plus 0.1 on every window differs by exactly 0.1 with a
    zero-width interval, however much the windows differ among themselves (the unpaired intervals would
    overlap); windows only one system scored are left out. The evaluator writes the table and prints it."""
    import pyarrow as pa

    from songcorpus.train.eval.tables import paired_table

    base = [0.1, 0.9, 0.4, 0.6, 0.2]
    rows = ([("model", f"k{i}", "onset_f1", v + 0.1) for i, v in enumerate(base)]
            + [("untrained", f"k{i}", "onset_f1", v) for i, v in enumerate(base)]
            + [("model", "only_model", "onset_f1", 5.0), ("floor", "k0", "onset_f1", 0.0),
               ("model", None, "fad", 3.0), ("untrained", None, "fad", 4.0)])
    table = pa.table({"system": [r[0] for r in rows], "key": [r[1] for r in rows],
                      "metric": [r[2] for r in rows], "value": [r[3] for r in rows]})
    got = {(r["baseline"], r["metric"]): r for r in paired_table(table, 500, 0).to_pylist()}
    assert set(got) == {("untrained", "onset_f1"), ("floor", "onset_f1")}  # FAD is a set metric: not paired
    u = got[("untrained", "onset_f1")]
    assert u["n"] == 5 and u["mean_difference"] == pytest.approx(0.1)
    assert u["ci_low"] == pytest.approx(0.1) and u["ci_high"] == pytest.approx(0.1)
    assert got[("floor", "onset_f1")]["n"] == 1 and got[("floor", "onset_f1")]["mean_difference"] == pytest.approx(0.2)

    con = duckdb.connect(str(samuel_eval / "metrics.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM paired WHERE baseline = 'untrained' AND metric = 'onset_f1'").fetchone()[0]
    con.close()
    assert n == 1


def test_evaluate_is_deterministic_and_prints_the_table(samuel_run, demo_ray, samuel_eval, tmp_path, capsys):
    out = tmp_path / "again"  # the same windows and seed, two of the metrics (the others take longer)
    assert main(["evaluate", str(samuel_run), "--data", str(demo_ray), "--split", "train", "--limit", "4",
                 "--metrics", "onset_f1,chroma_cosine", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "onset_f1 (higher better)" in printed and "ground_truth" in printed and "wrote" in printed
    assert "model - untrained" in printed and "model - floor" in printed

    def rows(folder: Path) -> list[dict]:
        return [r for r in pq.read_table(folder / "metrics.parquet").to_pylist()
                if r["metric"] in ("onset_f1", "chroma_cosine")]

    assert rows(out) == rows(samuel_eval)


def test_song_model_gets_melody_metrics_with_references(demo_ray, tmp_path):
    run = tmp_path / "songecho"
    launch_local(tiny_generator("songecho", 2), str(demo_ray), run, progress=False)
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--data", str(demo_ray), "--split", "train", "--limit", "3",
                 "--metrics", "melody,per", "--models-dir", str(tmp_path / "empty-store"), "--out", str(out),
                 *FAST]) == 0
    table = pq.read_table(out / "metrics.parquet").to_pylist()
    con = duckdb.connect(str(demo_ray / "catalog.duckdb"), read_only=True)
    try:  # songs with real stems: their corpus f0 was read from the same vocals (a mix's, from the mix itself)
        real = {k for (k,) in con.execute("SELECT w.key FROM windows w JOIN tracks t USING (track_id) "
                                          "WHERE t.stems_method = 'source'").fetchall()}
    finally:
        con.close()
    gt = [r["value"] for r in table if r["system"] == "ground_truth" and r["metric"] == "rpa" and r["value"] is not None
          and r["key"] in real]
    assert gt and min(gt) > 0.8  # the tracker on the real vocals against the corpus f0 of the same vocals
    model = [r for r in table if r["system"] == "model" and r["metric"] == "rpa"]
    assert len(model) == 3
    per = [r for r in table if r["metric"] == "per"]
    assert per and all(r["value"] is None for r in per)  # no Whisper in an empty store: said, per system
    assert {r["system"] for r in per} == set(SYSTEMS) and "faster-whisper-tiny.en" in per[0]["reason"]


def _clip(src: Path, dst: Path, start_s: float, seconds: float) -> None:
    x, rate = sf.read(src, dtype="float32")
    sf.write(dst, x[int(start_s * rate):int((start_s + seconds) * rate)], rate, subtype="PCM_16")


def test_folder_mode_scores_files_by_name(tmp_path):
    ref, gen = tmp_path / "reference", tmp_path / "other-system"
    ref.mkdir()
    gen.mkdir()
    for song in ("song_00", "song_01"):
        for stem in ("mix", "vocals", "accompaniment"):
            name = f"{song}.wav" if stem == "mix" else f"{song}.{stem}.wav"
            _clip(DEMO_DIR / song / f"{stem}.flac", ref / name, 10.0, 6.0)
    shutil.copy(ref / "song_00.wav", gen / "song_00.wav")  # the same audio: a perfect system on song_00
    for stem in ("vocals", "accompaniment"):
        shutil.copy(ref / f"song_00.{stem}.wav", gen / f"song_00.{stem}.wav")
    _clip(DEMO_DIR / "song_05" / "mix.flac", gen / "song_01.wav", 10.0, 6.0)  # another song: separated here
    _clip(DEMO_DIR / "song_05" / "mix.flac", gen / "stray.wav", 0.0, 3.0)  # no reference of that name
    out = tmp_path / "eval"
    assert main(["evaluate", "--generated", str(gen), "--reference", str(ref), "--out", str(out),
                 "--metrics", "onset_f1,chroma_cosine,fad", "--bootstrap", "50", "--fad-bootstrap", "3",
                 "--keep-audio", "1", "--no-progress"]) == 0
    kept = json.loads((out / "eval.json").read_text())["audio"]
    assert kept["keys"] == {"other-system": ["song_00"], "ground_truth": ["song_00"]}  # for listening: the first window
    for system in kept["keys"]:
        for stem in ("mix", "vocals", "accompaniment"):
            assert sf.info(out / "audio" / system / f"song_00.{stem}.flac").duration == pytest.approx(6.0, abs=0.01)
    table = pq.read_table(out / "metrics.parquet").to_pylist()
    by = {(r["system"], r["key"], r["metric"]): r for r in table}
    assert by[("other-system", "song_00", "onset_f1")]["value"] == pytest.approx(1.0)
    assert by[("other-system", "song_01", "onset_f1")]["value"] < 0.9
    assert by[("other-system", "stray", "matched")]["reason"].startswith("no reference file stray")
    assert by[("floor", "song_00", "onset_f1")]["value"] is not None
    for system in ("untrained", "codec_ceiling"):
        rows = [r for r in table if r["system"] == system]
        assert rows and all(r["value"] is None and "scoring a folder" in r["reason"] for r in rows)


def test_evaluate_refuses_bad_requests(samuel_run, demo_ray, tmp_path, capsys):
    def refused(argv: list[str], *needles: str) -> None:
        assert main(["evaluate", *argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, err

    refused([str(samuel_run), "--data", str(demo_ray), "--metrics", "nonsense"], "unknown metric 'nonsense'")
    refused([str(tmp_path / "nowhere")], "not a training run folder")
    refused([str(samuel_run), "--data", str(demo_ray), "--limit", "0"], "--limit 0")
    refused([], "give RUN")
    refused(["--generated", str(tmp_path)], "--generated DIR scores a folder against --reference DIR")
    empty = tmp_path / "empty-corpus"
    shutil.copytree(demo_ray, empty, ignore=shutil.ignore_patterns("index-test.json"))
    refused([str(samuel_run), "--data", str(empty), "--split", "test"], "no samples in split 'test'")


def test_a_corrupt_checkpoint_is_named(samuel_run, demo_ray, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(samuel_run, broken)
    state = next((broken / "checkpoints").glob("step-*")) / "state.pt"
    state.write_bytes(np.random.default_rng(0).bytes(256))
    assert main(["evaluate", str(broken), "--data", str(demo_ray), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "state.pt" in capsys.readouterr().err


def test_eval_notebook_runs_on_an_evaluation(samuel_eval, demo_ray, tmp_path):
    import runpy

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "eval_overview.py"
    report = runpy.run_path(str(notebook))["main"]([str(samuel_eval), "--figures", str(tmp_path),
                                                    "--corpus", str(demo_ray)])
    steps = {(m, s): step for m, s, step, _, _ in report["by_step"]}
    assert steps[("onset_f1", "model")] == 2 and ("fad", "ground_truth") in steps
    songs = {song for m, s, song, _ in report["per_song"] if m == "onset_f1" and s == "model"}
    assert len(songs) >= 2  # grouped by the catalog's track ids
    assert any(r[1] == "fad_inf" for r in report["failures"])  # the reasons are listed
    for png in ("metrics_by_step.png", "per_song.png", "systems.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_eval_notebook_executes_on_an_evaluation(samuel_eval, demo_ray, tmp_path):
    from notebook_outputs import PNG_MAGIC, errors, executed, images, table_with

    nb = executed("eval_overview", {"EVAL": str(samuel_eval), "CORPUS": str(demo_ray), "FIGURES": str(tmp_path)})
    assert errors(nb) == []
    steps = {(r["metric"], r["system"]): r["checkpoint_step"] for r in table_with(nb, "metric", "system", "n")}
    assert steps[("onset_f1", "model")] == "2" and ("fad", "ground_truth") in steps
    table = pq.read_table(samuel_eval / "metrics.parquet").to_pylist()
    assert set(steps) == {(r["metric"], r["system"]) for r in table if r["value"] is not None}  # every scored pair
    songs = {r["song"] for r in table_with(nb, "metric", "song") if r["metric"] == "onset_f1" and r["model"] != "NaN"}
    assert len(songs) >= 2  # grouped by the catalog's track ids
    side_by_side = table_with(nb, "metric", *SYSTEMS, exact=True)  # one column per system
    assert {r["metric"] for r in side_by_side} == {m for m, _ in steps}
    missing = table_with(nb, "system", "metric", "reason", "rows")
    assert any(r["metric"] == "fad_inf" and r["reason"] for r in missing)  # the reasons are listed
    assert sum(int(r["rows"]) for r in missing) == sum(r["value"] is None for r in table)
    assert len(images(nb)) == 3 and all(png.startswith(PNG_MAGIC) for png in images(nb))
    assert {p.name for p in tmp_path.iterdir()} == {"metrics_by_step.png", "per_song.png", "systems.png"}
