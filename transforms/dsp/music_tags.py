"""Which AudioSet classes describe a song's music, and the track's strongest ones.

The AudioSet ontology (Gemmeke et al. 2017, "Audio Set: An ontology and human-labeled dataset for audio
events") files music classes under the branches "Musical instrument", "Music genre" and "Music mood". The
lists below are those branches' display names as YAMNet (521 classes) and AST (AudioSet's 527) spell them,
minus the branch heads and grouping nodes ("Percussion", "Brass instrument"...) and playing techniques
("Strum", "Pizzicato"...), which say nothing a caption could use. Taggers are matched by name, since their
class orders differ; a name a tagger lacks is skipped ("Funny music" is AST's only).

Reads: a tagger's label list and its per-class mean probabilities. Writes nothing. Fails never.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INSTRUMENTS = (
    "Guitar", "Electric guitar", "Bass guitar", "Acoustic guitar", "Steel guitar, slide guitar", "Banjo", "Sitar",
    "Mandolin", "Zither", "Ukulele", "Piano", "Electric piano", "Organ", "Electronic organ", "Hammond organ",
    "Synthesizer", "Sampler", "Harpsichord", "Drum kit", "Drum machine", "Drum", "Snare drum", "Rimshot", "Drum roll",
    "Bass drum", "Timpani", "Tabla", "Cymbal", "Hi-hat", "Wood block", "Tambourine", "Rattle (instrument)", "Maraca",
    "Gong", "Tubular bells", "Marimba, xylophone", "Glockenspiel", "Vibraphone", "Steelpan", "Orchestra",
    "French horn", "Trumpet", "Trombone", "String section", "Violin, fiddle", "Cello", "Double bass", "Flute",
    "Saxophone", "Clarinet", "Harp", "Church bell", "Jingle bell", "Chime", "Wind chime", "Harmonica", "Accordion",
    "Bagpipes", "Didgeridoo", "Shofar", "Theremin", "Singing bowl",
)
GENRES = (
    "Pop music", "Hip hop music", "Rock music", "Heavy metal", "Punk rock", "Grunge", "Progressive rock",
    "Rock and roll", "Psychedelic rock", "Rhythm and blues", "Soul music", "Reggae", "Country", "Swing music",
    "Bluegrass", "Funk", "Folk music", "Middle Eastern music", "Jazz", "Disco", "Classical music", "Opera",
    "Electronic music", "House music", "Techno", "Dubstep", "Drum and bass", "Electronica", "Electronic dance music",
    "Ambient music", "Trance music", "Music of Latin America", "Salsa music", "Flamenco", "Blues",
    "Music for children", "New-age music", "Vocal music", "A capella", "Music of Africa", "Afrobeat",
    "Christian music", "Gospel music", "Music of Asia", "Carnatic music", "Music of Bollywood", "Ska",
    "Traditional music", "Independent music",
)
MOODS = ("Happy music", "Funny music", "Sad music", "Tender music", "Exciting music", "Angry music", "Scary music")
CATEGORIES: dict[str, tuple[str, ...]] = {"genre": GENRES, "instrument": INSTRUMENTS, "mood": MOODS}
PER_CATEGORY = 5  # classes stored per category (the caption names fewer; the rest is there for analysts)


def category_indices(labels: Sequence[str]) -> dict[str, list[int]]:
    """For each category, the indices in ``labels`` of its classes the tagger has."""
    where = {name: i for i, name in enumerate(labels)}
    return {cat: [where[n] for n in names if n in where] for cat, names in CATEGORIES.items()}


def top_music_tags(mean_probs: np.ndarray, labels: Sequence[str], k: int = PER_CATEGORY) -> dict[str, list[list]]:
    """Per category, the ``k`` classes with the highest mean probability: ``[[name, prob], ...]``, strongest first
    (ties broken by the category list's order, so the result is deterministic)."""
    mean_probs = np.asarray(mean_probs, dtype=np.float64)
    out: dict[str, list[list]] = {}
    for cat, idx in category_indices(labels).items():
        ranked = sorted(idx, key=lambda i: (-round(float(mean_probs[i]), 6), CATEGORIES[cat].index(labels[i])))
        out[cat] = [[labels[i], round(float(mean_probs[i]), 6)] for i in ranked[:k]]
    return out
