"""The stage contract is checked when a profile's stages are composed (transforms/registry.py), and the declared
resources reach both engines (Ray's actor options, Beam's resource hints)."""

from __future__ import annotations

from typing import Any

import pytest

from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.row import Row
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.registry import PHASES, PROFILES, STAGES, StageContractError, check_contract, stage_classes


def fake_stage(name: str, requires: tuple[str, ...] = (), provides: tuple[str, ...] = ()) -> type[Stage]:
    class Fake(Stage):
        version = "1"

        def input_identity(self, row: Row) -> str:
            return ""

        def process_one(self, row: Row) -> dict[str, Any]:
            return {}

    Fake.name, Fake.requires, Fake.provides = name, requires, provides
    return Fake


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_composes_and_its_stage_names_are_unique(profile):
    for phase in PHASES:
        names = [cls.name for cls in stage_classes(profile, phase)]
        assert len(names) == len(set(names)), names
    assert [c.name for c in stage_classes(profile, "analysis")][0] == "ingest"


def test_every_registered_stage_is_a_stage_with_a_contract():
    for entry in STAGES:
        from songcorpus.transforms.registry import stage_class

        cls = stage_class(entry)
        assert issubclass(cls, Stage) and cls.name and cls.version and cls.provides, entry


def test_a_field_provided_only_by_a_later_stage_names_both_stages():
    reader = fake_stage("reader", requires=("beats",))
    writer = fake_stage("writer", provides=("beats",))
    with pytest.raises(StageContractError, match="stage reader requires the field 'beats'.*stage writer, which "
                                                 "runs after reader"):
        check_contract([("analysis", [reader, writer])])
    check_contract([("analysis", [writer, reader])])  # the other order is fine


def test_a_field_nothing_provides_is_refused_before_the_job_starts():
    with pytest.raises(StageContractError, match="stage lonely requires the field 'nowhere'.*no stage"):
        check_contract([("analysis", [fake_stage("lonely", requires=("nowhere",))])])
    assert issubclass(StageContractError, ConfigError)  # the CLI prints it as a config error (exit 2)


def test_track_fields_and_the_drivers_row_inputs_are_known():
    check_contract([("analysis", [fake_stage("a", requires=("track.path", "track.metadata.lyrics"))])])
    with pytest.raises(StageContractError, match="'track.mood'.*not a field of an input track"):
        check_contract([("analysis", [fake_stage("a", requires=("track.mood",))])])
    # the samples phase reads what the analysis phase provided and the split/codebook the driver adds
    analysis = fake_stage("a", provides=("audio_file",))
    check_contract([("analysis", [analysis]), ("samples", [fake_stage("s", requires=("audio_file", "split"))])])
    with pytest.raises(StageContractError, match="'split'"):
        check_contract([("analysis", [fake_stage("b", requires=("split",))])])


def test_an_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown profile 'medium'"):
        stage_classes("medium", "analysis")


def test_beam_gets_each_groups_declared_resources_as_hints():
    import apache_beam as beam

    from songcorpus.pipelines.engines.beam_runner import resource_hints

    hints = resource_hints(Resources(num_cpus=1.5, memory_mb=3072))
    assert hints == {"min_ram": "3072MiB", "cpu_count": "2"}
    assert resource_hints(Resources(num_cpus=0.25))["cpu_count"] == "1"
    # Beam parses them (it refuses a malformed hint when the transform is built)
    parsed = beam.Map(lambda x: x).with_resource_hints(**hints).get_resource_hints()
    assert sorted(parsed.values()) == [b"2", str(3072 * 1024 * 1024).encode()]
