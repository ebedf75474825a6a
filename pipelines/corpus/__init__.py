"""From stored scores to a corpus: decisions, splits, codebooks, shard plans and the builder that runs them."""
