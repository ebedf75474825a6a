"""songcorpus: raw songs in, WebDataset shards and a DuckDB catalog out.

The code lives in the top-level folders of the repository (schemas/, transforms/,
pipelines/, train/), installed as the subpackages songcorpus.schemas and so on.
"""

__version__ = "0.1.0"
