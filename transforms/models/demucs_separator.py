"""DemucsSeparator: vocals and accompaniment of a mix from a Hybrid Transformer Demucs in the model store.

Reads: a store folder holding Demucs weights in a published layout: ``<sig>-<sha8>.th`` files as on
dl.fbaipublicfiles.com (htdemucs: one file; htdemucs_ft: four specialists), or ``<sig>.safetensors``
as on the HuggingFace hub (demucs >= 4.1); a bag of several files is described by a ``<name>.yaml`` in
the folder, else by the demucs package's own ``demucs/remote/*.yaml`` whose signatures match the files.
Provides: ``separate(mix, rate) -> (vocals, accompaniment)`` at the input rate, length and channel
layout; accompaniment is the sum of the non-vocal sources. ``sources()`` gives every source.
Needs: the demucs package's model classes (demucs.htdemucs.HTDemucs, demucs.apply.BagOfModels), torch,
soxr when the input rate is not the model's (44.1 kHz for htdemucs).
Fails when: a file is not an HTDemucs checkpoint loadable without running code (ModelError naming the
file); ``separation.segment_s`` is longer than the model was trained on (ValueError).

Loading never executes code from the weights: .th files are read by ``torch.load(weights_only=True)``
with only HTDemucs and Fraction allowed (demucs.states.load_model uses weights_only=False, so it is not
used), .safetensors metadata is JSON whose class must be HTDemucs; the model is then built by the
package's class and ``load_state_dict``. Inference is demucs.apply.apply_model's (shifts=0, split=True):
the mix is normalised by its mean/std as demucs.api does, cut into ``segment`` windows every
``(1 - overlap) * segment``, each window padded to the segment with real context around it, the outputs
centre-trimmed and cross-faded with triangular weights. The windows go through
accelerator.run_batched, so a batch that runs out of memory is halved instead of failing the track.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Sequence
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from songcorpus.schemas.config import PipelineConfig
from songcorpus.transforms.models.accelerator import autocast, pick_device, run_batched
from songcorpus.transforms.models.registry import ModelError

log = logging.getLogger(__name__)

HTDEMUCS_CLASS = "demucs.htdemucs.HTDemucs"
VOCALS = "vocals"
_GROUP_BATCHES = 4  # windows handed to run_batched at a time: batch_size x this (bounds memory on long songs)


def _htdemucs_class() -> type:
    from demucs.htdemucs import HTDemucs

    return HTDemucs


def _build(path: Path, args: Sequence[Any], kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The package's class with the checkpoint's arguments (unknown ones dropped, as demucs does), then its weights."""
    klass = _htdemucs_class()
    known = inspect.signature(klass).parameters
    dropped = sorted(k for k in kwargs if k not in known)
    if dropped:
        log.warning("%s: dropping arguments this demucs version does not know: %s", path.name, ", ".join(dropped))
    model = klass(*args, **{k: v for k, v in kwargs.items() if k in known})
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the HTDemucs it describes ({str(exc)[:300]})") from None
    return model.eval()


def load_th(path: Path) -> torch.nn.Module:
    """One model from a ``.th`` package as demucs.states.serialize_model writes it, unpickled weights-only."""
    klass = _htdemucs_class()
    try:
        with torch.serialization.safe_globals([klass, Fraction]):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not a checkpoint we load
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
        why = next((line for line in lines if "Unsupported global" in line), lines[0])  # names the refused class
        raise ModelError(f"{path} is not an HTDemucs checkpoint loadable without running code "
                         f"({type(exc).__name__}: {why[:300]})") from None
    if not isinstance(package, dict) or package.get("klass") is not klass:
        what = package.get("klass") if isinstance(package, dict) else type(package).__name__
        raise ModelError(f"{path} holds {what}, not an {HTDEMUCS_CLASS} package (demucs.states.serialize_model)")
    state = package["state"]
    if state.get("__quantized"):
        raise ModelError(f"{path} is a diffq-quantized model; only plain HTDemucs weights are supported")
    return _build(path, package.get("args") or (), dict(package.get("kwargs") or {}), state)


def _decode_json(value: Any) -> Any:
    """Init arguments as demucs' HuggingFace export encodes them (fractions as {_type: fraction})."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {k: _decode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_json(v) for v in value]
    return value


def load_safetensors(path: Path) -> torch.nn.Module:
    """One model from a ``.safetensors`` file as demucs.hf reads it (class and arguments as JSON metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no items()
    if meta.get("klass") != HTDEMUCS_CLASS:
        raise ModelError(f"{path} describes {meta.get('klass')!r}, not {HTDEMUCS_CLASS}")
    if "structure" in meta:
        raise ModelError(f"{path} is a packed (quantized) model; only plain HTDemucs weights are supported")
    return _build(path, _decode_json(json.loads(meta.get("args", "[]"))), _decode_json(json.loads(meta.get("kwargs", "{}"))),
                  state)


def _signature(path: Path) -> str:
    """Demucs names files ``<sig>-<sha256 prefix>.th`` or ``<sig>.safetensors``; bags list the signatures."""
    return path.stem.split("-", 1)[0]


def _package_bag(name: str, sigs: set[str]) -> dict[str, Any] | None:
    """The demucs package's own bag definition (demucs/remote/*.yaml) whose models are exactly ``sigs``."""
    remote = resources.files("demucs") / "remote"
    candidates = sorted((p for p in remote.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name != f"{name}.yaml")
    for entry in candidates:
        bag = yaml.safe_load(entry.read_text())
        if isinstance(bag, dict) and set(bag.get("models", ())) == sigs:
            return bag
    return None


def load_demucs(folder: Path, name: str = "") -> torch.nn.Module:
    """An HTDemucs, or a demucs.apply.BagOfModels of them, from a store folder (see the module docstring)."""
    from demucs.apply import BagOfModels

    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".th", ".safetensors") and (path.suffix == ".safetensors" or _signature(path) not in files):
            files[_signature(path)] = path  # sorted: .safetensors comes after .th and wins for one signature
    if not files:
        raise ModelError(f"{folder} holds no Demucs weights (<sig>-<sha8>.th or <sig>.safetensors)")
    yamls = sorted(folder.glob("*.yaml"))
    if len(yamls) > 1:
        raise ModelError(f"{folder} holds several bag definitions ({', '.join(p.name for p in yamls)}); keep one")
    bag = yaml.safe_load(yamls[0].read_text()) if yamls else _package_bag(name, set(files))
    if bag is None:
        if len(files) > 1:
            raise ModelError(f"{folder} holds {len(files)} Demucs models but no bag definition (<name>.yaml with "
                             f"models and weights) and none of the demucs package's bags lists exactly {sorted(files)}")
        return _load_one(next(iter(files.values())))
    missing = [s for s in bag["models"] if s not in files]
    if missing:
        raise ModelError(f"{folder}: the bag lists models {missing} whose files are not there")
    models = [_load_one(files[s]) for s in bag["models"]]
    try:
        return BagOfModels(models, bag.get("weights"), bag.get("segment")).eval()
    except AssertionError:
        raise ModelError(f"{folder}: the bag's models differ in sources, rate or channels, or its weights "
                         f"do not fit them") from None


def _load_one(path: Path) -> torch.nn.Module:
    return load_safetensors(path) if path.suffix == ".safetensors" else load_th(path)


def _window(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """``x[:, start:start + length]`` with zeros outside the signal (demucs' TensorChunk.padded)."""
    out = np.zeros((x.shape[0], length), dtype=np.float32)
    lo, hi = max(0, start), min(x.shape[1], start + length)
    if hi > lo:
        out[:, lo - start:hi - start] = x[:, lo:hi]
    return out


class DemucsSeparator:
    """A loaded Demucs (single model or bag) on the configured device, separating whole songs in chunks."""

    def __init__(self, model: torch.nn.Module, config: PipelineConfig) -> None:
        sep = config.separation
        self.device = pick_device(config.device.name)
        self.mixed_precision = config.device.mixed_precision
        self.batch_size = sep.batch_size
        self.overlap = sep.overlap
        self.model = model.to(self.device).eval()
        self.members = list(getattr(model, "models", [model]))
        n_sources = len(model.sources)
        weights = getattr(model, "weights", None) or [[1.0] * n_sources for _ in self.members]
        totals = np.sum(np.asarray(weights, dtype=np.float64), axis=0)
        self.weights = [np.asarray(w, dtype=np.float64) / totals for w in weights]  # bag average per source
        self.sources: list[str] = list(model.sources)
        self.samplerate: int = int(model.samplerate)
        self.channels: int = int(model.audio_channels)
        trained = min(float(m.segment) for m in self.members)
        limited = [m for m in self.members if getattr(m, "use_train_segment", False)]
        if sep.segment_s is not None and limited and sep.segment_s > trained + 1e-9:
            raise ValueError(f"separation.segment_s {sep.segment_s} is longer than the {trained:.2f} s this model was "
                             f"trained on (Transformer Demucs cannot take longer chunks); use at most {trained:.2f} or None")
        segment = sep.segment_s if sep.segment_s is not None else min((m.segment for m in self.members), key=float)
        self.segment_length = int(self.samplerate * segment)
        if VOCALS not in self.sources:
            raise ModelError(f"this Demucs separates {self.sources}, no {VOCALS!r} source")

    @classmethod
    def from_folder(cls, folder: Path, config: PipelineConfig, name: str = "") -> DemucsSeparator:
        return cls(load_demucs(Path(folder), name), config)

    def separate(self, mix: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """(vocals, accompaniment) of ``mix`` ((n,) or (n, channels)) at its rate, length and layout."""
        v = self.sources.index(VOCALS)
        combine = np.zeros((2, len(self.sources)))
        combine[0, v] = 1.0
        combine[1] = 1.0
        combine[1, v] = 0.0
        vocals, acc = self._run(mix, rate, combine)
        return vocals, acc

    def sources_of(self, mix: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        """Every source the model separates, like ``separate``."""
        return dict(zip(self.sources, self._run(mix, rate, np.eye(len(self.sources))), strict=True))

    def _run(self, mix: np.ndarray, rate: int, combine: np.ndarray) -> list[np.ndarray]:
        """Linear combinations ``combine`` (outputs x sources) of the separated sources, in the input's shape."""
        import soxr

        x = np.asarray(mix, dtype=np.float32)
        frames = x.reshape(x.shape[0], -1)  # (n, c)
        n = frames.shape[0]
        if frames.shape[1] == self.channels:
            wav = frames
        elif frames.shape[1] == 1:
            wav = np.repeat(frames, self.channels, axis=1)
        elif self.channels == 1:
            wav = frames.mean(axis=1, keepdims=True)
        else:
            raise ValueError(f"cannot feed {frames.shape[1]} channels to a {self.channels}-channel model")
        if rate != self.samplerate:
            wav = soxr.resample(wav, rate, self.samplerate, quality="HQ").astype(np.float32)
        wav = np.ascontiguousarray(wav.T)  # (c, m) as demucs takes it
        if not np.any(wav):
            outs = np.zeros((combine.shape[0], *wav.shape), dtype=np.float32)
        else:
            ref = torch.from_numpy(wav).mean(0)  # demucs.api: normalise by the mono mix's statistics
            mean, std = float(ref.mean()), float(ref.std()) + 1e-8
            outs = self._overlap_add((wav - mean) / std, combine) * std
            outs += (mean * combine.sum(axis=1)).astype(np.float32)[:, None, None]
        results = []
        for y in outs:
            y = y.T  # (m, c)
            if rate != self.samplerate:
                y = soxr.resample(y, self.samplerate, rate, quality="HQ")
                y = np.pad(y, ((0, max(0, n - y.shape[0])), (0, 0)))[:n]
            if frames.shape[1] != y.shape[1]:
                y = y.mean(axis=1, keepdims=True) if frames.shape[1] == 1 else np.repeat(y, frames.shape[1], axis=1)
            results.append(np.ascontiguousarray(y.reshape(x.shape), dtype=np.float32))
        return results

    def _overlap_add(self, wav: np.ndarray, combine: np.ndarray) -> np.ndarray:
        """demucs.apply.apply_model(split=True, shifts=0) over ``wav`` (c, m), batched through run_batched."""
        length = wav.shape[1]
        seg = self.segment_length
        stride = max(1, int((1 - self.overlap) * seg))
        offsets = list(range(0, length, stride))
        ramp = np.concatenate([np.arange(1, seg // 2 + 1), np.arange(seg - seg // 2, 0, -1)]).astype(np.float32)
        ramp /= ramp.max()
        mats = [torch.from_numpy((combine * w[None, :]).astype(np.float32)).to(self.device) for w in self.weights]
        out = np.zeros((combine.shape[0], wav.shape[0], length), dtype=np.float32)
        total = np.zeros(length, dtype=np.float32)

        def windows(idx: list[int]) -> list[np.ndarray]:
            batch = []
            for i in idx:
                chunk = min(seg, length - offsets[i])
                delta = seg - chunk  # a short last chunk takes context from before it, as demucs does
                batch.append(_window(wav, offsets[i] - delta // 2, seg))
            x = torch.from_numpy(np.stack(batch)).to(self.device)
            y = self._forward(x, mats)
            res = []
            for i, yi in zip(idx, y, strict=True):
                chunk = min(seg, length - offsets[i])
                start = (seg - chunk) // 2
                res.append(yi[..., start:start + chunk])
            return res

        group = self.batch_size * _GROUP_BATCHES
        for g in range(0, len(offsets), group):
            idx = list(range(g, min(len(offsets), g + group)))
            results = run_batched(idx, windows, max_items=self.batch_size)
            for i, y in zip(idx, results, strict=True):
                off, chunk = offsets[i], y.shape[-1]
                out[..., off:off + chunk] += ramp[:chunk] * y
                total[off:off + chunk] += ramp[:chunk]
        return out / total

    def _forward(self, x: torch.Tensor, mats: list[torch.Tensor]) -> np.ndarray:
        """Every member on a batch of windows (b, c, seg), its sources weighted and combined: (b, k, c, seg)."""
        acc: torch.Tensor | None = None
        with torch.no_grad(), autocast(self.device, self.mixed_precision):
            for member, mat in zip(self.members, mats, strict=True):
                if not bool(mat.any()):
                    continue
                y = torch.einsum("ks,bscw->bkcw", mat, member(x).float())
                acc = y if acc is None else acc + y
        assert acc is not None
        return acc.float().cpu().numpy()
