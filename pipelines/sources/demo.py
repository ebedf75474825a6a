"""The bundled demo corpus (``pipelines/demo/``: songs with ground-truth stems, instrumentals, speech clips;
licences in its LICENSES.md), found where the package is installed. Reads nothing itself; the manifest is an
ordinary JSONL manifest input (``pipelines/sources/inputs.py``)."""

from __future__ import annotations

from importlib import resources

DEMO_MANIFEST = "demo/manifest.jsonl"


def demo_manifest() -> str:
    """The demo manifest's path (installed with songcorpus.pipelines)."""
    return str(resources.files("songcorpus.pipelines").joinpath(DEMO_MANIFEST))
