"""``early_gates``: an input a gate rejects skips the rest of the analysis, with the decision and the
shards of a late-gated run; a rebuild may only keep rejecting what was never fully analysed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from songcorpus.pipelines.curate import rebuild
from songcorpus.schemas.config import load_config
from songcorpus.schemas.config_base import ConfigError

from conftest import DEMO_DIR, curate_with, tracks


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("early")
    x, rate = sf.read(str(DEMO_DIR / "song_00" / "mix.flac"), dtype="float32")
    sf.write(root / "song.flac", x[: 12 * rate], rate, subtype="PCM_16")
    speech, rate = sf.read(str(DEMO_DIR / "speech_00" / "mix.flac"), dtype="float32")
    sf.write(root / "speech.flac", speech, rate, subtype="PCM_16")
    return root


def test_early_gates_skip_analysis_and_keep_the_decisions_and_shards(inputs: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")  # shared: the early run reuses what the late run computed
    common = {"cache_dir": cache, "windows": {"length_s": 4.0}}
    late = curate_with("beam", [str(inputs)], tmp_path / "late", workers=1, **common)
    early = curate_with("beam", [str(inputs)], tmp_path / "early", workers=1, early_gates=True, **common)

    def decisions(out: Path) -> dict:
        return {Path(r["source"]).name: (r["status"], r["stage"], r["reason_code"]) for r in tracks(out)}

    assert decisions(early) == decisions(late)
    assert decisions(early)["speech.flac"] == ("rejected", "classify", "speech_dominant")
    assert decisions(early)["song.flac"][0] == "accepted"
    shards = sorted(p.name for p in (late / "shards").iterdir())
    assert shards and all((early / "shards" / n).read_bytes() == (late / "shards" / n).read_bytes() for n in shards)
    rows = {Path(r["track"]["source"]).name: r for r in map(json.loads, (early / "state" / "rows.jsonl").open())}
    assert rows["speech.flac"]["outcome"]["early"] is True
    assert "stems" not in rows["speech.flac"]["results"]  # nothing after the classifier ran on it
    assert {"stems", "vad", "f0", "structure"} <= set(rows["song.flac"]["results"])

    gates = [g.model_dump() for g in load_config().gates]
    stricter = [{**g, "max": 0.3} if g["name"] == "speech_dominant" else g for g in gates]
    rebuild(early, load_config(overrides={"gates": stricter, "early_gates": True, **common}), progress=False)
    assert decisions(early)["speech.flac"] == ("rejected", "classify", "speech_dominant")
    looser = [g for g in gates if g["name"] != "speech_dominant"]
    with pytest.raises(ConfigError, match="early gate rejected.*speech.flac.*songcorpus curate"):
        rebuild(early, load_config(overrides={"gates": looser, "early_gates": True, **common}), progress=False)
