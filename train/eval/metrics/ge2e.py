"""Speaker embeddings from a GE2E voice encoder (Wan et al. 2018, "Generalized End-to-End Loss for Speaker
Verification"), in the layout Resemblyzer publishes: a second speaker encoder beside ECAPA
(transforms/models/speaker.py), because its real weights ship inside a PyPI wheel and so can be brought onto an
air-gapped machine by hand, where ECAPA's cannot.

Reads: mono float audio at any rate (resampled to 16 kHz with soxr; ``(n, channels)`` is averaged to mono) and a
store model of kind ``ge2e``: ``pretrained.pt``, a ``torch.save`` dict whose ``model_state`` holds a 3-layer
LSTM (40 -> 256) and a Linear 256 -> 256 (Resemblyzer 0.1.4's file; its GE2E similarity scale and bias are
training-only and ignored).
Provides: ``embed(audio, rate)`` -> float32 ``(256,)``, L2-normalised, and ``embed_many``; the cosine of two is the
verification score. The computation is Resemblyzer's ``embed_utterance``: the clip's level raised (never lowered)
to -30 dBFS; a 40-band power mel spectrogram (librosa, 25 ms Hann window, 10 ms hop, not logged); partial
utterances of 160 frames (1.6 s) every round(16000 / 1.3 / 160) = 77 frames, the last one kept when it covers at
least 75% of its span (zero-padded), at least one kept; each partial -> LSTM -> the last layer's final hidden
state -> Linear -> ReLU -> L2 norm; the mean of the partials, L2-normalised. One difference, deliberately:
Resemblyzer first trims long silences with webrtcvad; here nothing is trimmed (evaluation compares windows of
equal length, and webrtcvad is not a dependency), so silence inside a clip counts.
Loading never runs code from the file: ``torch.load(weights_only=True)``.
Fails (ModelError, naming the file): a model of another kind, a missing or unreadable file, a state whose tensors
do not fit the architecture. ValueError: empty or non-finite audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.models.speaker import SAMPLE_RATE, to_16k

if TYPE_CHECKING:
    from songcorpus.transforms.models.registry import StoreModel

KIND = "ge2e"
WEIGHTS_FILE = "pretrained.pt"
N_MELS, HIDDEN, EMBEDDING, LAYERS = 40, 256, 256, 3
WINDOW, HOP = 400, 160  # 25 ms and 10 ms at 16 kHz
PARTIAL_FRAMES = 160  # 1.6 s
PARTIALS_PER_S = 1.3
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
_TRAINING_ONLY = ("similarity_weight", "similarity_bias")


class Ge2eNet(nn.Module):
    """(B, frames, 40) power mels -> (B, 256) L2-normalised embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)


def raise_level(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """``wav`` scaled up so its RMS is ``target_dbfs`` (full scale = 1.0); a louder or silent clip is unchanged."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms <= 0.0:
        return wav
    gain_db = target_dbfs - 20.0 * np.log10(rms)
    return wav if gain_db <= 0 else (wav * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def partial_slices(n_samples: int) -> list[slice]:
    """The mel-frame ranges of the partial utterances of an ``n_samples`` clip at 16 kHz (module docstring)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(round(SAMPLE_RATE / PARTIALS_PER_S / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    last = starts[-1] * HOP
    if len(starts) > 1 and (n_samples - last) / (PARTIAL_FRAMES * HOP) < MIN_COVERAGE:
        starts.pop()
    return [slice(s, s + PARTIAL_FRAMES) for s in starts]


def power_mels(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) float32 power mel spectrogram of 16 kHz ``wav`` (librosa's defaults otherwise)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=wav.astype(np.float32), sr=SAMPLE_RATE, n_fft=WINDOW, hop_length=HOP,
                                         n_mels=N_MELS)
    return mel.astype(np.float32).T


class Ge2eSpeakerEncoder:
    """A loaded GE2E voice encoder: ``embed`` / ``embed_many``, as :class:`speaker.SpeakerEncoder` offers."""

    def __init__(self, net: Ge2eNet, device: torch.device, name: str = "", sha256: str = "") -> None:
        self.net, self.device, self.name, self.sha256 = net.eval().to(device), device, name, sha256

    @property
    def dim(self) -> int:
        return EMBEDDING

    @torch.no_grad()
    def embed(self, audio: np.ndarray, rate: int) -> np.ndarray:
        wav = to_16k(audio, rate)
        if wav.size == 0 or not np.isfinite(wav).all():
            raise ValueError("speaker embedding needs a non-empty, finite clip")
        wav = raise_level(wav)
        slices = partial_slices(len(wav))
        need = slices[-1].stop * HOP
        if need >= len(wav):
            wav = np.pad(wav, (0, need - len(wav)))
        mels = power_mels(wav)
        batch = torch.from_numpy(np.stack([mels[s] for s in slices])).to(self.device)
        mean = self.net(batch).mean(dim=0).double().cpu().numpy()
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def embed_many(self, items: Sequence[tuple[np.ndarray, int]], max_items: int = 16) -> list[np.ndarray]:
        """One embedding per clip (clips of different lengths have different partial counts: one at a time)."""
        return [self.embed(audio, rate) for audio, rate in items]


def load_ge2e_encoder(spec: StoreModel, folder: Path, device: torch.device | str = "cpu") -> Ge2eSpeakerEncoder:
    """The encoder in store ``folder`` (verified by the caller), refusing another kind or a state that does not fit."""
    if spec.kind != KIND:
        raise ModelError(f"{spec.name} is a {spec.kind or 'kind-less'} model; the GE2E encoder loads {KIND} models")
    path = Path(folder) / WEIGHTS_FILE
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable GE2E checkpoint ({exc})") from None
    state = saved.get("model_state") if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: no 'model_state' in the checkpoint (expected Resemblyzer's pretrained.pt layout)")
    net = Ge2eNet()
    try:
        net.load_state_dict({k: v for k, v in state.items() if k not in _TRAINING_ONLY})
    except RuntimeError as exc:
        raise ModelError(f"{path}: its tensors do not fit the GE2E encoder (3-layer LSTM 40 -> 256, Linear 256 -> "
                         f"256): {str(exc)[:300]}") from None
    return Ge2eSpeakerEncoder(net, torch.device(device), spec.name, spec.sha256)
