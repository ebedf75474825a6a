"""Keep librosa's constant-Q filter bases between calls, in memory.

Why: librosa builds the frequency-domain filter basis of every octave again on every ``cqt`` / ``chroma_cqt`` call
(its own cache is joblib's on-disk one, off unless ``LIBROSA_CACHE_DIR`` is set before librosa is imported). The
structure stage's CQT (tuning 0) asks for the same bases on every song, and the key stage's chroma (tuning estimated
per song, in 0.01-semitone steps) for one of a few dozen sets: building them was about half of the key stage's time
and a quarter of the structure stage's (bench/results/lite-throughput.md).

How: ``librosa.core.constantq`` looks its basis builder up as a module global on each call; ``keep_cqt_filter_bases``
wraps that global once per process in an LRU keyed by the exact arguments (arrays by dtype, shape and bytes) and
hands each caller its own copy (librosa scales the basis in place). The numbers are the ones librosa would build:
tests/test_cqt_filter_cache.py compares both bit for bit.

Reads and writes nothing. Needs librosa 0.11 (locked). Under a librosa whose builder is not where 0.11 keeps it,
nothing is wrapped and librosa runs as it is (slower, the same numbers).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

BUILDER = "__vqt_filter_fft"  # librosa.core.constantq's per-octave basis builder (0.10, 0.11)
MAX_BASES = 1024  # one octave's sparse basis is tens of kB; 100 tunings x 7 octaves, plus structure's six, fit


def _key_part(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, type):
        return ("type", value.__module__, value.__qualname__)
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, (list, tuple)):
        return tuple(_key_part(v) for v in value)
    return value


def _copied(value: Any) -> Any:
    """A copy of every array (dense or sparse) in what the builder returned; numbers as they are."""
    import scipy.sparse

    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    return value.copy() if isinstance(value, np.ndarray) or scipy.sparse.issparse(value) else value


class KeptBases:
    """The builder wrapped: the first call with given arguments builds, later ones copy what was built. Safe to
    call from several threads (a lock guards the entries; two threads missing the same key both build it)."""

    def __init__(self, build: Callable[..., Any], max_entries: int = MAX_BASES) -> None:
        self.build = build
        self.max_entries = max_entries
        self.entries: OrderedDict[Any, Any] = OrderedDict()
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = (_key_part(args), tuple(sorted((k, _key_part(v)) for k, v in kwargs.items())))
        try:
            hash(key)
        except TypeError:  # an argument we cannot key on: build as librosa would
            return self.build(*args, **kwargs)
        with self._lock:
            kept = self.entries.get(key)
            if kept is not None:
                self.entries.move_to_end(key)
                self.hits += 1
                return _copied(kept)
            self.misses += 1
        built = self.build(*args, **kwargs)
        with self._lock:
            self.entries[key] = built
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        return _copied(built)


def keep_cqt_filter_bases() -> KeptBases | None:
    """Wrap librosa's basis builder (once per process; later calls return the same wrapper). None when this
    librosa has no builder where 0.11 keeps it."""
    import librosa.core.constantq as constantq

    current = getattr(constantq, BUILDER, None)
    if isinstance(current, KeptBases):
        return current
    if not callable(current):
        return None
    kept = KeptBases(current)
    setattr(constantq, BUILDER, kept)
    return kept
