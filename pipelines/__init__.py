"""songcorpus.pipelines."""
