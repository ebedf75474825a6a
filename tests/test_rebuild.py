"""Scores are stored, decisions are views: rebuild re-decides without running any stage."""

from __future__ import annotations

import shutil

import pytest
import yaml

from songcorpus.cli import main
from songcorpus.pipelines import build_corpus as corpus_mod
from songcorpus.pipelines.curate import rebuild
from songcorpus.schemas.config import load_config
from songcorpus.schemas.config_base import ConfigError

from conftest import forbid_analysis_stages, output_files, tracks


def test_rebuild_with_new_threshold_runs_no_stage(demo_ray, tmp_path, monkeypatch):
    """On one Beam worker, which runs in this process, so the patched ``run_stage`` sees every stage the rebuild
    runs (the engine is late-binding: the bytes are the Ray-curated corpus's)."""
    out = tmp_path / "corpus"
    shutil.copytree(demo_ray, out)
    before = output_files(out)
    forbid_analysis_stages(monkeypatch)
    strict = tmp_path / "strict.yaml"
    profile = load_config().model_dump(mode="json")
    gates = [g for g in profile["gates"]] + [{"name": "music_only", "score": "music_prob", "min": 0.7}]
    strict.write_text(yaml.safe_dump({"gates": gates, "engine": {"name": "beam", "workers": 1}}))
    assert main(["rebuild", str(out), "--config", str(strict), "--no-progress"]) == 0
    rows = {r["source"].split("/")[-2]: r for r in tracks(out)}
    assert rows["instr_fof_00"]["status"] == "rejected"
    assert rows["instr_fof_00"]["reason_code"] == "music_only"
    assert rows["instr_midi_00"]["status"] == "accepted"
    accepted = sum(r["status"] == "accepted" for r in rows.values())
    assert 0 < accepted < 8
    # back to the original thresholds: the original bytes again, also when the samples phase gets its full rows
    # streamed from the state file one at a time and the shard writer is given one plan per call (the bounded
    # driver's path for corpora of any size)
    monkeypatch.setattr(corpus_mod, "SAMPLES_CHUNK", 1)
    monkeypatch.setattr(corpus_mod, "PLANS_CHUNK", 1)
    rebuild(out, load_config(overrides={"engine": {"name": "beam", "workers": 1}}), progress=False)
    assert output_files(out) == before


def test_rebuild_refuses_analysis_changes(demo_ray, tmp_path):
    out = tmp_path / "corpus"
    shutil.copytree(demo_ray, out)
    with pytest.raises(ConfigError, match="ingest"):
        rebuild(out, load_config(overrides={"ingest": {"sample_rate": 22050}}), progress=False)
