"""The live figures of a job, piece by piece, on small data (no engine, no curate): the stage timings a row carries
back and leaves behind, the driver's figures and their file (``pipelines/job/progress.py``, ``schemas/progress.py``),
who holds an output folder (``output_holder``), and the lines a person reads (``songcorpus/cli/progress_view.py``).
The end-to-end checks, on a real curate in a subprocess, are in test_live_view.py."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from songcorpus.cli.progress_view import (
    LogView,
    TerminalView,
    follow,
    hms,
    live_view,
    read_progress,
    status_line,
    summary_lines,
)
from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.engines.executor import StageGroup
from songcorpus.pipelines.job.output_claim import claim_output, output_holder
from songcorpus.pipelines.job.progress import JobProgress
from songcorpus.schemas.config import load_config
from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.progress import PROGRESS_FILE, PROGRESS_VERSION, parse_progress, progress_bytes
from songcorpus.schemas.row import canonical_json, new_row, set_outcome, set_result, source_of, take_stage_seconds
from songcorpus.transforms.base import Rejection, Stage

CONFIG = load_config(overrides={"engine": {"name": "beam", "workers": 3}})


class _Probe(Stage):
    """A stage that takes a little time and checks it never sees the timings the row carries."""

    name, version, provides = "probe", "1", ("seen",)

    def config_digest(self) -> str:
        return ""

    def input_identity(self, row) -> str:
        assert "stage_seconds" not in row
        return source_of(row)

    def process_one(self, row) -> dict:
        assert "stage_seconds" not in row
        time.sleep(0.01)
        if source_of(row) == "speech.wav":
            raise Rejection("speech_dominant", "speech, not singing")
        return {"seen": True}


class _Later(_Probe):
    name, provides = "later", ("later",)

    def process_one(self, row) -> dict:
        assert "stage_seconds" not in row
        return {"later": True}


def test_a_stage_group_sends_each_row_back_with_its_stages_seconds_and_nothing_else(tmp_path):
    store = ArtefactStore(str(tmp_path / "cache"))
    first, second = StageGroup([_Probe(CONFIG, store)]), StageGroup([_Later(CONFIG, store)])
    rows = second(first([new_row({"source": "song.wav"}), new_row({"source": "speech.wav"})]))
    song, speech = rows
    assert set(song["stage_seconds"]) == {"probe", "later"} and song["stage_seconds"]["probe"] >= 0.01
    assert set(speech["stage_seconds"]) == {"probe"}  # rejected by the first: the later stage never ran on it
    # what the row holds once the driver took the timings off: the row a run without timings gives, byte for byte
    expected = new_row({"source": "song.wav"})
    set_result(expected, "probe", {"seen": True})
    set_result(expected, "later", {"later": True})
    take_stage_seconds(song)
    assert canonical_json(song) == canonical_json(expected)
    # a cache hit (the second run) is timed too, and costs less than the work
    again = StageGroup([_Probe(CONFIG, store)])([new_row({"source": "song.wav"})])[0]
    assert again["stage_seconds"]["probe"] < 0.01


def _analysed(source: str, seconds: float, outcome: tuple[str, str] | None = None) -> dict:
    row = new_row({"source": source})
    set_result(row, "ingest", {"duration_s": seconds})
    if outcome:
        set_outcome(row, outcome[0], "classify", outcome[1], "why")
    return row


def test_the_figures_count_rows_hours_stages_and_failures_and_end_with_the_catalogs(tmp_path):
    seen: list[dict] = []
    with JobProgress(str(tmp_path), "curate", CONFIG, seen.append, interval_s=0.05) as tracker:
        first = read_progress(tmp_path)
        assert first is not None and first["phase"] == "scan" and not first["done"]
        assert first["inputs"] == {"done": 0, "total": None}
        tracker.inputs(4)
        tracker.phase("analysis", 4)
        tracker.handed(4)
        tracker.row_back(_analysed("a.wav", 1800.0), {"ingest": 2.0, "stems": 6.0})
        tracker.row_back(_analysed("b.wav", 900.0, ("rejected", "speech_dominant")), {"ingest": 1.0})
        mid = tracker.snapshot()
        assert mid["inputs"] == {"done": 2, "total": 4} and mid["in_flight"] == 2
        assert mid["audio_hours"] == pytest.approx(0.75)
        assert mid["stage_seconds"] == {"ingest": 3.0, "stems": 6.0}
        assert mid["failures"] == {"rejected": {"speech_dominant": 1}}
        assert mid["eta_s"] is not None and mid["eta_s"] >= 0  # half done: as long again as it took so far
        assert mid["phase_rows"] == {"done": 2, "total": 4}
        time.sleep(0.2)  # the background thread rewrites the file
        on_disk = read_progress(tmp_path)
        assert on_disk is not None and on_disk["inputs"]["done"] == 2 and on_disk["phase"] == "analysis"
        tracker.row_back(_analysed("c.wav", 0.0, ("failed", "corrupt")), {})
        tracker.row_back(_analysed("d.wav", 1800.0), {"ingest": 1.0})
        tracker.phase("decide")
        tracker.phase("samples", 2)
        tracker.row_back(_analysed("a.wav", 1800.0), {"samples": 4.0})
        tracker.phase("publish")
        tracker.finish([("failed", "ingest", "corrupt", 1, 0.0), ("rejected", "classify", "speech_dominant", 1, 0.25),
                        ("accepted", "accepted", "accepted", 2, 1.0)])
    done = read_progress(tmp_path)
    assert done is not None and done["done"] and done["phase"] == "done" and done["version"] == PROGRESS_VERSION
    assert done["inputs"] == {"done": 4, "total": 4} and done["audio_hours"] == pytest.approx(1.25)
    assert done["tracks"] == {"accepted": {"tracks": 2, "hours": 1.0}, "rejected": {"tracks": 1, "hours": 0.25},
                              "failed": {"tracks": 1, "hours": 0.0}}
    assert done["failures"] == {"failed": {"corrupt": 1}, "rejected": {"speech_dominant": 1}}
    assert set(done["phase_seconds"]) == {"scan", "analysis", "decide", "samples", "publish"}
    assert done["stage_seconds"]["samples"] == 4.0 and done["hours_per_wall_hour"] > 0
    assert done["engine"] == "beam" and done["workers"] == 3 and done["command"] == "curate"
    assert seen[0]["phase"] == "scan" and seen[-1]["done"]
    assert {s["phase"] for s in seen} >= {"scan", "analysis", "decide", "samples", "publish", "done"}
    assert not list(tmp_path.glob(".*.tmp"))  # every rewrite was atomic: no temp file left behind


def test_a_job_that_stops_says_so_in_its_file(tmp_path):
    with pytest.raises(RuntimeError), JobProgress(str(tmp_path), "curate", CONFIG) as tracker:
        tracker.phase("analysis", 3)
        raise RuntimeError("the job stopped: a bug\nand its second line")
    stopped = read_progress(tmp_path)
    assert stopped is not None and not stopped["done"] and stopped["phase"] == "stopped"
    assert stopped["stopped"] == "the job stopped: a bug"
    assert "analysis" in stopped["phase_seconds"]


def test_a_progress_file_that_cannot_be_written_never_stops_the_job(tmp_path, caplog):
    (tmp_path / PROGRESS_FILE).mkdir()  # a folder where the file should go: every write fails
    with JobProgress(str(tmp_path), "curate", CONFIG, interval_s=0.02) as tracker:
        tracker.phase("analysis", 1)
        time.sleep(0.1)
    assert sum("not written" in r.message for r in caplog.records) == 1  # said once, not every few seconds


def test_the_file_has_a_version_readers_check():
    with JobProgress(None, "rebuild", CONFIG) as tracker:
        snap = tracker.snapshot()
    assert parse_progress(progress_bytes(snap)) == json.loads(progress_bytes(snap))
    with pytest.raises(ValueError, match="version"):
        parse_progress(json.dumps({**snap, "version": PROGRESS_VERSION + 1}).encode())
    with pytest.raises(ValueError):
        parse_progress(b"{not json")


def test_who_holds_an_output_folder(tmp_path):
    out = tmp_path / "out"
    assert output_holder(out) is None  # no folder, no lock
    with claim_output(out, "curate"):
        holder = output_holder(out)
        assert holder is not None and holder["command"] == "curate" and "pid" in holder
    assert output_holder(out) is None  # the lock file stays; nobody holds it


def test_a_reader_probing_the_lock_does_not_refuse_a_run_starting_in_that_instant(tmp_path):
    import fcntl
    import os

    out = tmp_path / "out"
    with claim_output(out, "curate"):
        pass
    fd = os.open(out / ".songcorpus.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a reader's probe, held far longer than a real one

    def release() -> None:
        time.sleep(0.2)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    threading.Thread(target=release).start()
    with claim_output(out, "curate"):
        assert output_holder(out) is not None


def _figures(**over) -> dict:
    base = {"version": PROGRESS_VERSION, "command": "curate", "engine": "ray", "workers": 2, "phase": "analysis",
            "done": False, "stopped": None, "started": "2026-12-07T00:00:00Z", "updated": "2026-12-07T00:01:00Z",
            "elapsed_s": 60.0, "inputs": {"done": 4, "total": 11}, "audio_hours": 0.05, "hours_per_wall_hour": 3.0,
            "phase_rows": {"done": 4, "total": 11}, "eta_s": 105.0, "in_flight": 7, "phase_seconds": {"scan": 2.0,
            "analysis": 58.0}, "stage_seconds": {"ingest": 10.0, "stems": 30.0}, "queues": None, "failures": {},
            "tracks": None}
    return {**base, **over}


def test_the_lines_a_person_reads():
    assert hms(3725.4) == "1:02:05" and hms(None) == "?"
    line = status_line(_figures(queues={"ingest+quality": {"waiting": 5, "running": 2}}))
    assert line == "[0:01:00] analysis: 4/11 inputs, 0.0500 h audio, 3 h/h, ETA 0:01:45, 0:01:00 elapsed " \
                   "(5 waiting, 2 in flight)"
    summary = "\n".join(summary_lines(_figures(done=True, phase="done", inputs={"done": 11, "total": 11},
                                               phase_seconds={"analysis": 58.0, "scan": 2.0},  # as the file sorts them
                                               failures={"rejected": {"speech_dominant": 3}})))
    assert "11 inputs, 0.0500 h of audio in 0:01:00 wall time: 3 audio hours per wall hour (ray, 2 workers)" in summary
    assert "time by phase: scan 0:00:02 (3%), analysis 0:00:58 (97%)" in summary
    assert "time by stage (40.0 s of worker time): stems 75%, ingest 25%" in summary
    assert "failures by reason: rejected speech_dominant 3" in summary


def test_a_log_gets_a_start_line_a_line_per_phase_and_few_lines_within_one():
    stream = io.StringIO()
    view = LogView("/data/out", stream, every_s=3600)
    view(_figures(phase="scan", elapsed_s=1.0))  # a young scan: a command refused there stays its one line
    assert stream.getvalue() == ""
    for i in range(50):  # a long phase, figures every few seconds
        view(_figures(phase_rows={"done": i, "total": 50}, updated=f"t{i}"))
    view(_figures(phase="decide", phase_rows={"done": 0, "total": None}))
    view(_figures(phase="done", done=True))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("songcorpus curate into /data/out started 2026-12-07T00:00:00Z (ray, 2 workers)")
    assert "/data/out/progress.json" in lines[0]
    assert lines[1].startswith("[0:01:00] analysis: 0/50 inputs") and lines[2].startswith("[0:01:00] decide: 0.05")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_live_line_and_a_log_plain_lines():
    assert isinstance(live_view("/o", verbose=False, no_progress=False, stream=_Terminal()), TerminalView)
    assert isinstance(live_view("/o", verbose=False, no_progress=False, stream=io.StringIO()), LogView)
    assert isinstance(live_view("/o", verbose=False, no_progress=True, stream=_Terminal()), LogView)
    assert isinstance(live_view("/o", verbose=True, no_progress=False, stream=_Terminal()), LogView)  # engine logs
    screen = _Terminal()
    view = TerminalView(screen)  # a StringIO has no terminal size: drawn 100 wide rather than not at all
    view(_figures(phase_rows={"done": 4, "total": 11}))
    view(_figures(phase="decide", phase_rows={"done": 0, "total": None}, eta_s=None))
    view(_figures(phase="done", done=True))  # the command prints the summary instead
    view.close()
    drawn = [d.strip() for d in screen.getvalue().split("\r") if d.strip()]
    assert drawn[0].startswith("analysis  36%|") and drawn[0].endswith(
        "| 4/11, 0.0500 h audio, 3 h/h, ETA 0:01:45, 0:01:00 elapsed")
    assert drawn[-1] == "decide, 0.0500 h audio, 3 h/h, 0:01:00 elapsed"


def test_follow_a_finished_job_and_a_folder_without_one(tmp_path):
    out = tmp_path / "out"
    with claim_output(out, "curate"):
        pass
    (out / PROGRESS_FILE).write_bytes(progress_bytes(_figures(done=True, phase="done")))  # type: ignore[arg-type]
    stream = io.StringIO()
    last = follow(out, every_s=0.01, stream=stream)
    assert last is not None and last["done"] and stream.getvalue() == ""  # nothing running: straight to the end
    (out / PROGRESS_FILE).write_bytes(progress_bytes(_figures()))  # type: ignore[arg-type]
    last = follow(out, every_s=0.01, stream=stream)
    assert last is not None and not last["done"]  # no run holds it and it never finished: it stopped
    with pytest.raises(ConfigError, match="no progress.json and no run"):
        follow(tmp_path / "empty", every_s=0.01)


def test_follow_waits_for_the_holder_and_prints_each_change(tmp_path):
    out = tmp_path / "out"
    stream = io.StringIO()
    result: list = []
    with claim_output(out, "curate"):
        reader = threading.Thread(target=lambda: result.append(follow(out, every_s=0.02, stream=stream)))
        reader.start()
        time.sleep(0.1)
        for i in range(3):
            (out / PROGRESS_FILE).write_bytes(progress_bytes(_figures(updated=f"u{i}",  # type: ignore[arg-type]
                                                                      phase_rows={"done": i, "total": 3})))
            time.sleep(0.1)
        (out / PROGRESS_FILE).write_bytes(progress_bytes(_figures(done=True, phase="done")))  # type: ignore[arg-type]
        time.sleep(0.1)
        assert reader.is_alive()  # done, but the run still holds the folder: a new run may be starting
    reader.join(timeout=5)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("waiting for songcorpus curate (pid")
    assert [ln.split(", ")[0] for ln in lines[1:]] == [f"[0:01:00] analysis: {i}/3 inputs" for i in range(3)]
    assert result and result[0]["done"]


def test_a_path_given_as_str_or_path_is_the_same_file(tmp_path):
    with JobProgress(str(tmp_path), "curate", CONFIG):
        pass
    assert read_progress(Path(tmp_path)) == read_progress(str(tmp_path))
