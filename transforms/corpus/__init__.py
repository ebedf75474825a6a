"""Corpus-level decisions the driver takes over stored scores (gates, near-duplicate groups), never inside a stage."""
