"""Execution engines: the engine-agnostic executor and the Ray and Beam runners that drive it."""
