"""songcorpus.schemas."""
