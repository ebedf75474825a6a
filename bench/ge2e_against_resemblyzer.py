"""train/eval/metrics/ge2e.py against Resemblyzer's own ``VoiceEncoder.embed_utterance``, on the same clips and weights,
and the speaker similarity it gives same-voice and other-voice pairs of a synthetic corpus.

    pip download --no-deps resemblyzer==0.1.4 -d /tmp/rz && (cd /tmp/rz && unzip -q Resemblyzer-0.1.4-*.whl)
    .venv/bin/songcorpus models --store STORE add ge2e-resemblyzer /tmp/rz/resemblyzer
    .venv/bin/python bench/ge2e_against_resemblyzer.py /tmp/rz /work/data/synth200 --store STORE

Reads: the unpacked wheel (its ``resemblyzer`` package is imported with ``webrtcvad`` stubbed: only its
silence trimming uses it, and neither side trims here), a ``songcorpus synth`` folder (``song_*/vocals.flac``
and ``song.json``'s ``voice``), the store. Writes nothing. Prints, per clip, the cosine and largest difference
between the two embeddings, then the mean similarity of same-voice and other-voice pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from songcorpus.train.eval.metrics.ge2e import TARGET_DBFS, load_ge2e_encoder
from songcorpus.transforms.models.store import load_registry, store_model, store_root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel_dir", help="folder holding the unpacked resemblyzer package")
    p.add_argument("synth", help="a `songcorpus synth` output folder")
    p.add_argument("--store", help="model store holding ge2e-resemblyzer")
    p.add_argument("--songs", type=int, default=8)
    p.add_argument("--start-s", type=float, default=4.0)
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))
    sys.path.insert(0, args.wheel_dir)
    from resemblyzer import audio as rz_audio
    from resemblyzer.voice_encoder import VoiceEncoder

    root = store_root(args.store)
    spec = store_model("ge2e-resemblyzer", load_registry(root))
    ours, theirs = load_ge2e_encoder(spec, spec.verified_folder(root)), VoiceEncoder("cpu", verbose=False)
    songs = sorted(d for d in Path(args.synth).iterdir() if (d / "vocals.flac").is_file())[: args.songs]
    embs, voice = {}, {}
    for d in songs:
        voice[d.name] = json.loads((d / "song.json").read_text())["voice"]
        x, rate = sf.read(d / "vocals.flac", dtype="float32")
        x = x.mean(axis=1) if x.ndim == 2 else x
        clip = x[int(args.start_s * rate): int((args.start_s + args.seconds) * rate)]
        a = ours.embed(clip, rate)
        w = rz_audio.normalize_volume(soxr.resample(clip, rate, 16000).astype(np.float32), TARGET_DBFS, increase_only=True)
        b = theirs.embed_utterance(w)
        embs[d.name] = a
        print(f"{d.name} ({voice[d.name]}): cosine {float(a @ b):.7f}, largest difference {float(np.abs(a - b).max()):.2e}")
    names = sorted(embs)
    pairs = [(i, j) for i in names for j in names if i < j]
    for label, keep in (("same voice", True), ("other voice", False)):
        sims = [float(embs[i] @ embs[j]) for i, j in pairs if (voice[i] == voice[j]) == keep]
        if sims:
            print(f"{label}: mean similarity {np.mean(sims):.3f} over {len(sims)} pairs")


if __name__ == "__main__":
    main()
