"""songcorpus.train."""
