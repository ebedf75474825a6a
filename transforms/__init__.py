"""songcorpus.transforms."""
