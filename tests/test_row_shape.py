"""The in-flight row's shape (schemas/row.py) matches what the stages declare, and its accessors fail naming the
stage and field a reader wanted (not a bare KeyError) while the tolerant ones keep their defaults."""

from __future__ import annotations

import pickle
from dataclasses import fields

import pytest

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.engines.executor import run_stage
from songcorpus.schemas.config import load_config
from songcorpus.schemas.failures import StageFault
from songcorpus.schemas.row import (
    RESULT_TYPES,
    ROW_INPUTS,
    MissingResult,
    Outcome,
    Row,
    TrackDict,
    add_stage_seconds,
    audio_file,
    canonical_json,
    has_vocals,
    new_row,
    optional_field,
    optional_result,
    rejected_early,
    result,
    result_field,
    set_outcome,
    set_result,
    source_sha256,
    take_stage_seconds,
    vad_result,
)
from songcorpus.schemas.track import TrackRecord
from songcorpus.transforms.registry import STAGES, stage_class
from songcorpus.transforms.stages.quality import QualityStage


def provided_by_name() -> dict[str, list[set[str]]]:
    """Stage name -> the ``provides`` of every registered stage of that name (profile variants share a name)."""
    out: dict[str, list[set[str]]] = {}
    for entry in STAGES:
        cls = stage_class(entry)
        out.setdefault(cls.name, []).append(set(cls.provides))
    return out


@pytest.mark.parametrize("stage", sorted(RESULT_TYPES))
def test_each_typed_result_has_exactly_the_fields_its_stage_provides(stage):
    variants = provided_by_name()[stage]
    typed = RESULT_TYPES[stage]
    # every variant provides the required keys; the optional ones are what only some variants add
    assert set(typed.__required_keys__) == set.intersection(*variants), stage
    assert set(typed.__required_keys__) | set(typed.__optional_keys__) == set.union(*variants), stage


def test_every_typed_result_names_a_registered_stage():
    assert set(RESULT_TYPES) <= set(provided_by_name())


def test_the_track_view_is_the_track_record_and_the_row_inputs_are_the_samples_phase_inputs():
    assert set(TrackDict.__annotations__) == {f.name for f in fields(TrackRecord)}
    assert TrackDict.__required_keys__ == {"source"}  # a slim row of a decided input keeps source and metadata
    assert Row.__required_keys__ == {"track", "results", "outcome"}
    # besides the samples phase's inputs, only the timings a row carries back to the driver (never stored)
    assert Row.__optional_keys__ == {*ROW_INPUTS["samples"], "stage_seconds"} and ROW_INPUTS["analysis"] == ()
    assert Outcome.__optional_keys__ == {"early"}


def test_stage_timings_ride_on_the_row_and_leave_it_as_it_was():
    row = new_row({"source": "a.wav", "path": "/in/a.wav"})
    before = canonical_json(row)
    add_stage_seconds(row, "ingest", 1.5)
    add_stage_seconds(row, "ingest", 0.5)
    add_stage_seconds(row, "quality", 0.25)
    assert take_stage_seconds(row) == {"ingest": 2.0, "quality": 0.25}
    assert canonical_json(row) == before
    assert take_stage_seconds(row) == {}


def test_outcomes_are_written_as_before():
    row = new_row({"source": "a.wav", "path": "/in/a.wav"})
    assert row == {"track": {"source": "a.wav", "path": "/in/a.wav"}, "results": {}, "outcome": None}
    set_outcome(row, "failed", "ingest", "missing", "file not found")
    assert canonical_json(row["outcome"]) == canonical_json(
        {"status": "failed", "stage": "ingest", "code": "missing", "reason": "file not found"})  # no "early" key
    assert not rejected_early(row) and not rejected_early({"track": {"source": "b"}})  # type: ignore[typeddict-item]
    set_outcome(row, "rejected", "classify", "speech", "speech", early=True)
    assert row["outcome"] == {"status": "rejected", "stage": "classify", "code": "speech", "reason": "speech",
                              "early": True}
    assert rejected_early(row)


def test_a_missing_result_names_the_stage_the_field_and_the_input():
    row = new_row({"source": "songs/a.wav", "path": "/in/a.wav"})
    with pytest.raises(MissingResult, match=r"input 'songs/a.wav' has no ingest field 'audio_file': stage ingest has not "
                                            r"run on it") as caught:
        audio_file(row)
    assert isinstance(caught.value, KeyError)  # what a reader caught before still catches it
    again = pickle.loads(pickle.dumps(caught.value))  # crosses Ray/Beam worker boundaries intact
    assert str(again) == str(caught.value) and (again.stage, again.field) == ("ingest", "audio_file")
    with pytest.raises(MissingResult, match=r"no vad fields \(vad_segments, vocal_activity, speech_activity, "
                                            r"vad_method\): stage vad has not run"):
        vad_result(row)
    with pytest.raises(MissingResult, match="no aesthetics result: stage aesthetics has not run"):
        result(row, "aesthetics")
    set_result(row, "ingest", {"audio_sha256": "0" * 64})
    with pytest.raises(MissingResult, match="no ingest field 'audio_file': its ingest result lacks it"):
        audio_file(row)
    assert result_field(row, "ingest", "audio_sha256") == "0" * 64


def test_tolerant_accessors_keep_their_defaults():
    row = new_row({"source": "a.wav", "path": "/in/a.wav"})
    assert optional_result(row, "vad") is None and optional_field(row, "quality", "bandwidth_hz") is None
    assert source_sha256(row) is None  # a row ingest never read keeps the source-derived track id
    set_result(row, "ingest", {"audio_sha256": "1" * 64})  # state from before ingest recorded source_sha256
    assert source_sha256(row) is None
    with pytest.raises(MissingResult, match="no stems field 'has_vocals': stage stems has not run"):
        has_vocals(row)
    set_result(row, "stems", {"vocals_sha256": "2" * 64})  # a result from before has_vocals was recorded
    assert has_vocals(row) is True
    set_result(row, "stems", {"has_vocals": False})
    assert has_vocals(row) is False


def test_a_stage_run_before_its_input_stops_the_job_naming_stage_field_and_input(tmp_path):
    stage = QualityStage(load_config(), ArtefactStore(tmp_path))
    row = new_row({"source": "songs/a.wav", "path": str(tmp_path / "a.wav")})
    with pytest.raises(StageFault, match=r"stage 'quality' on input 'songs/a.wav': MissingResult: the row of input "
                                         r"'songs/a.wav' has no ingest field 'audio_sha256'"):
        run_stage(stage, row, [False])
    assert row["outcome"] is None and row["results"] == {}  # the job's fault, not the input's: no outcome recorded
