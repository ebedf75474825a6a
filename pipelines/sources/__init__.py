"""Where songs come from: folders, globs, URLs, manifests and Hugging Face datasets, and synthetic songs."""
