"""Streaming audio decoding: libsndfile first (WAV, FLAC, OGG, MP3, AIFF...), FFmpeg (PyAV) for the rest.

Decoding yields float32 blocks of shape (frames, channels) so that no input, however long, is held
whole in memory; the caller enforces the duration limit while streaming. Errors name the file and
what each decoder said, so a user can tell a corrupt file from an unsupported one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from songcorpus.schemas.failures import InputError

# ITU-R BS.775 downmix of 5.1 (L, R, C, LFE, Ls, Rs) to stereo; LFE is dropped. The sum is normalised
# so that full-scale input cannot exceed full scale (as FFmpeg's normalised downmix does).
_C = 1.0 / math.sqrt(2.0)
_BS775 = np.array(
    [  # rows: L R C LFE Ls Rs ; cols: Lo Ro
        [1.0, 0.0],
        [0.0, 1.0],
        [_C, _C],
        [0.0, 0.0],
        [_C, 0.0],
        [0.0, _C],
    ],
    dtype=np.float64,
) / (1.0 + 2.0 * _C)


class DecodeError(InputError):
    """The file cannot be decoded as audio; the message says why, ``code`` is the funnel's reason code."""


@dataclass(frozen=True)
class StreamInfo:
    sample_rate: int
    channels: int
    frames: int | None  # as the container declares; None when unknown
    format: str  # e.g. "WAV/PCM_16", "ffmpeg:mp3"

    @property
    def declared_duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


class AudioStream:
    """An open input: ``info`` from the header, ``blocks()`` to stream float32 (frames, channels)."""

    def __init__(self, path: Path, block_frames: int) -> None:
        self.path = path
        self.block_frames = block_frames
        self._sf: sf.SoundFile | None = None
        self._av = None
        try:
            self._sf = sf.SoundFile(str(path))
            self.info = StreamInfo(self._sf.samplerate, self._sf.channels, self._sf.frames,
                                   f"{self._sf.format}/{self._sf.subtype}")
            return
        except Exception as exc:  # noqa: BLE001 - fall back to FFmpeg, keep the reason
            sf_error = str(exc).strip() or type(exc).__name__
        try:
            import av

            self._av = av.open(str(path), mode="r")
            streams = self._av.streams.audio
            if not streams:
                raise DecodeError("container has no audio stream")
            stream = streams[0]
            rate = stream.rate or stream.codec_context.sample_rate
            if not rate:
                raise DecodeError("audio stream has no sample rate")
            channels = stream.channels or stream.codec_context.channels
            frames = None
            if stream.duration is not None and stream.time_base is not None:
                frames = int(round(float(stream.duration * stream.time_base) * rate))
            elif self._av.duration is not None:
                frames = int(round(self._av.duration / 1_000_000 * rate))
            self.info = StreamInfo(int(rate), int(channels), frames, f"ffmpeg:{stream.codec_context.name}")
        except Exception as exc:  # noqa: BLE001
            self.close()
            av_error = str(exc).strip() or type(exc).__name__
            raise DecodeError(f"not decodable as audio (libsndfile: {sf_error}; ffmpeg: {av_error})") from None

    def blocks(self) -> Iterator[np.ndarray]:
        if self._sf is not None:
            while True:
                try:
                    block = self._sf.read(self.block_frames, dtype="float32", always_2d=True)
                except Exception as exc:  # noqa: BLE001
                    raise DecodeError(f"decoding failed after part of the stream: {exc}", "corrupt") from None
                if block.shape[0] == 0:
                    return
                yield block
        else:
            yield from self._av_blocks()

    def _av_blocks(self) -> Iterator[np.ndarray]:
        import av

        stream = self._av.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout=stream.layout, rate=self.info.sample_rate)
        pending: list[np.ndarray] = []
        n_pending = 0
        try:
            for packet in self._av.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        arr = out.to_ndarray().reshape(-1, self.info.channels)
                        pending.append(arr)
                        n_pending += arr.shape[0]
                if n_pending >= self.block_frames:
                    yield np.concatenate(pending).astype(np.float32, copy=False)
                    pending, n_pending = [], 0
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1, self.info.channels))
        except av.error.FFmpegError as exc:
            raise DecodeError(f"ffmpeg decoding failed after part of the stream: {exc}", "corrupt") from None
        if pending:
            yield np.concatenate(pending).astype(np.float32, copy=False)

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
            self._sf = None
        if self._av is not None:
            self._av.close()
            self._av = None

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def downmix(block: np.ndarray, channels: int) -> np.ndarray:
    """Map (frames, C_in) to (frames, channels) with standard coefficients."""
    c_in = block.shape[1]
    if c_in == channels:
        return block
    x = block.astype(np.float64, copy=False)
    if c_in == 6:
        stereo = x @ _BS775
    elif c_in == 1:
        stereo = np.repeat(x, 2, axis=1)
    elif c_in == 2:
        stereo = x
    elif c_in == 4:  # quad: L R Ls Rs
        stereo = np.stack([(x[:, 0] + _C * x[:, 2]), (x[:, 1] + _C * x[:, 3])], axis=1) / (1.0 + _C)
    else:
        mean = x.mean(axis=1, keepdims=True)
        stereo = np.repeat(mean, 2, axis=1)
    if channels == 2:
        return stereo.astype(np.float32)
    return stereo.mean(axis=1, keepdims=True).astype(np.float32)


INT16_FULL_SCALE = 32767 / 32768  # the largest float magnitude to_int16 keeps on both sides unclipped


def to_int16(x: np.ndarray) -> np.ndarray:
    """Quantise float audio to 16-bit PCM the one way the project does it (x 32768, round, clip), the inverse of
    how libsndfile and ``read_standard_audio`` read 16-bit PCM, so a 16-bit source passes through unchanged."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def from_int16(pcm: np.ndarray) -> np.ndarray:
    """16-bit PCM as float32 the way libsndfile reads it (/ 32768): the inverse of :func:`to_int16`, and what
    :func:`read_standard_audio` hands out for a standardised FLAC."""
    return pcm.astype(np.float32) / 32768.0


def read_standard_audio(path: Path) -> tuple[np.ndarray, int]:
    """Read a standardised FLAC from the artefact store as float32 (frames, channels); inside
    :func:`shared_decodes`, decoded once and handed out read-only."""
    shared = getattr(_shared, "decodes", None)
    key = None
    if shared is not None:
        st = Path(path).stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key in shared:
            return shared[key]
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    return _keep_shared(key, from_int16(data), int(rate))


def _keep_shared(key: tuple[str, int, int] | None, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    shared = getattr(_shared, "decodes", None)
    if shared is not None and key is not None:
        x.setflags(write=False)  # one stage writing into it would change what the next one reads
        if x.nbytes <= _shared.budget:
            _shared.budget -= x.nbytes
            shared[key] = (x, rate)
    return x, rate


def share_written_audio(path: Path, pcm: np.ndarray, rate: int) -> None:
    """Inside :func:`shared_decodes`, hand the 16-bit samples ``(frames, channels)`` just written to the standardised
    FLAC at ``path`` to its later readers, as :func:`read_standard_audio` would decode them: a stage that writes a
    file the next stages read (the stems stage's kept stems) spares them the decode. Outside a block, nothing."""
    if getattr(_shared, "decodes", None) is None:
        return
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _shared.decodes:
        _keep_shared(key, from_int16(pcm), int(rate))


# Per thread: the standardised files decoded inside the current shared_decodes() block (None outside one).
_shared = threading.local()
SHARED_DECODES_MAX_BYTES = 768 * 1024 * 1024  # a 10-minute song's mix and two stems, stereo float32


@contextmanager
def shared_decodes(max_bytes: int = SHARED_DECODES_MAX_BYTES) -> Iterator[None]:
    """Inside the block, :func:`read_standard_audio` decodes each file once on this thread and hands every reader
    the same read-only array: one row's stages read the same mix and stems (the mix about nine times in the lite
    profile), and decoding them again was about 5 % of the analysis. Up to ``max_bytes`` of samples are kept; past
    that, files are decoded on each read (still read-only). The engines open one block per row
    (``pipelines/engines/executor.py``), so nothing outlives the row. Store files are written once under their
    content's name; the size and modification time are part of the key all the same. Blocks nest (the outer one
    serves)."""
    if getattr(_shared, "decodes", None) is not None:
        yield
        return
    _shared.decodes, _shared.budget = {}, max_bytes
    try:
        yield
    finally:
        _shared.decodes = None
