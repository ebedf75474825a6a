"""songcorpus: raw songs in, WebDataset shards and a DuckDB catalog out.

The code lives in the top-level folders of the repository (schemas/, transforms/,
pipelines/, train/), installed as the subpackages songcorpus.schemas and so on.
"""

import os

__version__ = "0.1.0"

# onnxruntime (the lite classifier's YAMNet, basic-pitch...) otherwise queues telemetry events with the process
# name and OS version in ~/.cache/Microsoft/DeveloperTools and $TMPDIR/.ses; it reads this before its first
# import, and every process that runs a stage imports songcorpus first (Ray and Beam workers inherit it too).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
