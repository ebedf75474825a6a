"""The analyst notebook runs against a curated corpus and reports what the catalog holds."""

from __future__ import annotations

import runpy
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "catalog_overview.py"


def test_catalog_overview_runs_on_the_demo(demo_ray: Path, tmp_path: Path) -> None:
    main = runpy.run_path(str(NOTEBOOK))["main"]
    report = main([str(demo_ray), "--figures", str(tmp_path)])
    assert sum(r[3] for r in report["funnel"]) == 11  # every input counted once
    assert {r[0] for r in report["splits"]} == {"train", "valid", "test"}  # the demo manifest holds songs out
    assert all(r[0] in ("source", "repet-sim") for r in report["methods"])
    for png in ("funnel.png", "scores.png"):
        assert (tmp_path / png).stat().st_size > 5000
