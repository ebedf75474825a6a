"""CaptionStage: a text caption for every track, the source's own when it has one.

Suno70k and LaDA-Band caption every song and the generators condition on that text; a folder of songs has
none. This stage keeps a source caption as it is (``caption_method = "source"``) and otherwise writes one from
what the pipeline measured, marked ``caption_method = "generated:measured-v1"`` so a corpus never passes a
generated caption off as a human one.

Reads (all stored results, no audio): the tagger's strongest genre / instrument / mood classes
(``classify.music_tags``), ``structure.tempo_bpm``, ``key.key`` / ``key.mode`` / ``key.key_strength``, vocal
presence (``stems.has_vocals``, ``vad.vocal_activity``) and ``track.metadata.caption``.
Provides: caption, caption_method, and caption_facts (the measured facts the text was written from, so a
time-stretched or pitch-shifted copy of the song is captioned with its own tempo and key: :func:`sample_caption`).
Only what was measured is claimed: a tag below ``caption.min_tag_prob``, a key whose profile correlation is
under ``caption.min_key_strength``, or a vocal activity between the instrumental and vocal thresholds is left
out rather than guessed. The template is deterministic: "Pop music with piano and drum kit, happy mood,
vocals, 110 BPM, in A minor."

The contract is the one a captioning model (Qwen2-Audio class, from the model store, for the full profile)
will keep: the same ``caption`` / ``caption_method`` fields, ``caption.method`` in the config choosing the
captioner, a source caption still winning, and ``caption_method = "generated:<model>@<version>"``.
Fails never on missing facts (a track with no tempo and no key gets "Music." plus what is known).
"""

from __future__ import annotations

import hashlib
from typing import Any

from songcorpus.schemas.row import Row, canonical_json, optional_field, optional_result, results_of, track_of
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.stages.key import transpose_key

TEMPLATE_VERSION = 1
GENERATED = f"generated:measured-v{TEMPLATE_VERSION}"
SOURCE = "source"
USED = {"classify": ("music_tags",), "structure": ("tempo_bpm",), "key": ("key", "mode", "key_strength"),
        "stems": ("has_vocals",), "vad": ("vocal_activity",)}


def source_caption(track: dict[str, Any]) -> str | None:
    """The source's own caption, when it gives a non-blank one."""
    given = (track.get("metadata") or {}).get("caption")
    return given.strip() if isinstance(given, str) and given.strip() else None


def short_name(label: str) -> str:
    """An AudioSet class name as a caption word: first alternative, no parenthetical ("Violin, fiddle" -> violin)."""
    return label.split(",")[0].split(" (")[0].strip()


def measured_facts(results: dict[str, dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """The facts a caption may claim, from stored results and the ``caption`` config thresholds."""
    tags = (results.get("classify") or {}).get("music_tags") or {}

    def named(cat: str, k: int) -> list[str]:
        out: list[str] = []
        for label, prob in tags.get(cat, []):
            word = short_name(label) if cat != "genre" else label
            word = word.lower() if cat == "instrument" else word
            if prob < cfg.min_tag_prob or len(out) >= k:
                break
            if not any(word in w or w in word for w in out):  # "drum" adds nothing to "drum kit"
                out.append(word)
        return out

    key = results.get("key") or {}
    strength = key.get("key_strength")
    has_key = key.get("key") is not None and strength is not None and strength >= cfg.min_key_strength
    has_vocals = (results.get("stems") or {}).get("has_vocals")
    activity = (results.get("vad") or {}).get("vocal_activity")
    vocals = None
    if has_vocals is False or (activity is not None and activity <= cfg.instrumental_max_activity):
        vocals = "instrumental"
    elif has_vocals and activity is not None and activity >= cfg.vocals_min_activity:
        vocals = "vocals"
    genre, mood = named("genre", 1), named("mood", 1)
    tempo = (results.get("structure") or {}).get("tempo_bpm")
    return {"genre": genre[0] if genre else None, "instruments": named("instrument", cfg.top_k_tags),
            "mood": mood[0].split(" ")[0].lower() if mood else None, "vocals": vocals,
            "tempo_bpm": None if tempo is None else round(float(tempo), 2),
            "key": key.get("key") if has_key else None, "mode": key.get("mode") if has_key else None}


def render(facts: dict[str, Any]) -> str:
    """The caption text of a facts dict (deterministic)."""
    head = facts.get("genre") or "Music"
    instruments = facts.get("instruments") or []
    if instruments:
        head += " with " + (instruments[0] if len(instruments) == 1
                            else ", ".join(instruments[:-1]) + " and " + instruments[-1])
    parts = [head]
    if facts.get("mood"):
        parts.append(f"{facts['mood']} mood")
    if facts.get("vocals"):
        parts.append(facts["vocals"])
    if facts.get("tempo_bpm") is not None:
        parts.append(f"{round(facts['tempo_bpm'])} BPM")
    if facts.get("key"):
        parts.append(f"in {facts['key']} {facts['mode']}")
    return ", ".join(parts) + "."


def moved_facts(facts: dict[str, Any], speed: float = 1.0, semitones: float = 0.0) -> dict[str, Any]:
    """The facts of the song after a time stretch (``speed`` x faster) or a pitch shift."""
    out = dict(facts)
    if out.get("tempo_bpm") is not None:
        out["tempo_bpm"] = round(out["tempo_bpm"] * speed, 2)
    if out.get("key") and round(semitones):
        out["key"] = transpose_key(out["key"], out["mode"], round(semitones))
    return out


def sample_caption(caption: dict[str, Any] | None, speed: float = 1.0,
                   semitones: float = 0.0) -> tuple[str | None, str]:
    """(caption, caption_method) of one sample: a generated caption names the augmented copy's own tempo and
    key; a source caption is kept as it is (its text cannot be edited safely); "none" when no caption stage ran."""
    if not caption or caption.get("caption") is None:
        return None, "none"
    if caption["caption_method"] == SOURCE or (speed == 1.0 and semitones == 0):
        return caption["caption"], caption["caption_method"]
    return render(moved_facts(caption["caption_facts"], speed, semitones)), caption["caption_method"]


class CaptionStage(Stage):
    name = "caption"
    version = "1"
    requires = ("music_tags", "tempo_bpm", "key", "mode", "key_strength", "has_vocals", "vocal_activity",
                "track.metadata.caption")
    provides = ("caption", "caption_method", "caption_facts")
    resources = Resources(num_cpus=1.0, memory_mb=256)
    batch_size = 16

    def config_digest(self) -> str:
        return self.config.caption.digest()

    def model_id(self) -> str:
        return f"caption-template-v{TEMPLATE_VERSION}"

    def input_identity(self, row: Row) -> str:
        """The source caption and every stored result the text is written from."""
        used = {"source_caption": source_caption(track_of(row)),
                "results": {stage: {f: optional_field(row, stage, f) for f in fields} for stage, fields in USED.items()}}
        return hashlib.sha256(canonical_json(used).encode()).hexdigest()

    def process_one(self, row: Row) -> dict[str, Any]:
        facts = measured_facts(results_of(row), self.config.caption)
        given = source_caption(track_of(row))
        if given is not None:
            return {"caption": given, "caption_method": SOURCE, "caption_facts": facts}
        return {"caption": render(facts), "caption_method": GENERATED, "caption_facts": facts}


def effective_caption(row: Row) -> tuple[str | None, str | None]:
    """(caption, caption_method) of an analysed row for the catalog: the caption stage's when it ran, else the
    source's own ("source"), else (None, None) (a track rejected or failed before captioning)."""
    result = optional_result(row, "caption")
    if result is not None:
        return result["caption"], result["caption_method"]
    given = source_caption(track_of(row))
    return (given, SOURCE) if given is not None else (None, None)
