"""Checkpoints of a training run: everything a resume needs, written atomically, the last K kept.

Layout: ``RUN/checkpoints/step-00000100/`` holding ``state.pt`` (model, EMA, optimiser, step, loader state,
config, the run's provenance) and ``rng-rank<r>.pt`` (python, numpy, torch and CUDA RNG of each rank). The
folder is built under ``.tmp-step-...`` and renamed into place last, so a crash (even ``kill -9``) leaves
either the previous checkpoints or the new one, never a half folder that a resume would trust. A folder on
its way out (an older checkpoint past ``keep``, or a step written again) is renamed to ``.del-...`` before it
is deleted, for the same reason; :func:`clear_leftovers` removes what a killed run left under those names.

The run's latent statistics (``RUN/latent_stats.npz``) are run state too: :func:`save_latent_stats` writes them
atomically and :func:`load_latent_stats` refuses a truncated or tampered file by name, since silently using
other statistics (or none) would train or decode on wrongly scaled latents.

Loading uses ``torch.load(weights_only=True)``: a checkpoint is data, never code. A corrupt or foreign
checkpoint raises :class:`CheckpointError` naming the file and what to do.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from songcorpus.io.atomic import atomic_write_bytes

STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from, named, with what to do."""


def checkpoint_dir(run: Path) -> Path:
    return run / "checkpoints"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    root = checkpoint_dir(run)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(obj: Any) -> Any:
    """RNG states hold tuples and numpy arrays; torch's weights_only loader takes lists, tensors and scalars."""
    if isinstance(obj, tuple):
        return {"__tuple__": [_to_plain(x) for x in obj]}
    if isinstance(obj, list):
        return [_to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(obj.copy()), "dtype": str(obj.dtype)}
    return obj


def _from_plain(obj: Any) -> Any:
    if isinstance(obj, dict) and "__tuple__" in obj:
        return tuple(_from_plain(x) for x in obj["__tuple__"])
    if isinstance(obj, dict) and "__ndarray__" in obj:
        return obj["__ndarray__"].numpy().astype(obj["dtype"])
    if isinstance(obj, dict):
        return {k: _from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_plain(x) for x in obj]
    return obj


def staging_dir(run: Path, step: int) -> Path:
    return checkpoint_dir(run) / f".tmp-step-{step:08d}"


def _save_synced(obj: Any, path: Path) -> None:
    """torch.save, flushed to disk before returning: the folder rename that publishes it must not outlive it."""
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def write_rank_rng(run: Path, step: int, rank: int) -> None:
    """Each rank writes its RNG into the staging folder (after rank 0 created it, before rank 0 publishes)."""
    _save_synced(_to_plain(rng_state()), staging_dir(run, step) / f"rng-rank{rank}.pt")


LEFTOVER = re.compile(r"^\.(tmp|del)-step-\d{8}")


def clear_leftovers(run: Path) -> list[Path]:
    """Rank 0, before training: remove the staging and half-deleted folders a killed run left (never a
    ``step-N`` folder). Returns what was removed."""
    root = checkpoint_dir(run)
    if not root.is_dir():
        return []
    gone = [p for p in root.iterdir() if LEFTOVER.match(p.name)]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


def _retire(folder: Path) -> None:
    """Delete a checkpoint folder so that a kill midway never leaves a partial one under its step name: the
    rename is atomic, the slow delete happens under a name no resume reads."""
    doomed = folder.with_name(f".del-{folder.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def begin_checkpoint(run: Path, step: int) -> Path:
    """Rank 0: a fresh staging folder for ``step``."""
    tmp = staging_dir(run, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish_checkpoint(run: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Rank 0: write ``state.pt``, flush, rename the folder into place, then drop all but the last ``keep``."""
    tmp = staging_dir(run, step)
    _save_synced(state, tmp / "state.pt")
    final = checkpoint_dir(run) / f"step-{step:08d}"
    if final.exists():  # the same step written again (a re-run that ended on it): replace it whole
        _retire(final)
    os.replace(tmp, final)
    fd = os.open(checkpoint_dir(run), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for _, old in list_checkpoints(run)[:-keep]:
        _retire(old)
    return final


def load_checkpoint(path: Path, model_name: str, rank: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(state, this rank's RNG state or None when the checkpoint was written by a smaller world)."""
    state_file = path / "state.pt"
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no state.pt; move the folder aside to resume from the one "
                              f"before it") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling or zip error means the file is unusable
        raise CheckpointError(f"checkpoint {state_file} is corrupt ({type(exc).__name__}: {exc}); move "
                              f"{path} aside to resume from the checkpoint before it, or start a new run folder") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{state_file} is not a songcorpus training checkpoint")
    if state.get("model_name") != model_name:
        raise CheckpointError(f"checkpoint {path} is of model {state.get('model_name')!r}, this run trains "
                              f"{model_name!r}; use another run folder (--out)")
    rng_file = path / f"rng-rank{rank}.pt"
    rng = None
    if rng_file.exists():
        try:
            rng = _from_plain(torch.load(rng_file, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{rng_file} is corrupt ({exc}); move {path} aside to resume from the one "
                                  f"before it") from None
    return state, rng


def save_latent_stats(path: Path, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """``{key: (mean, std)}`` as ``<key>.mean`` / ``<key>.std`` arrays, written whole or not at all."""
    buf = io.BytesIO()
    np.savez(buf, **{f"{k}.{part}": v for k, (m, s) in stats.items() for part, v in (("mean", m), ("std", s))})
    atomic_write_bytes(path, buf.getvalue())


def load_latent_stats(path: Path, keys: Sequence[str], channels: int | None = None,
                      fix: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The mean and std of each of ``keys`` from a run's ``latent_stats.npz``, checked: every array present,
    1-D (of ``channels`` values when given), finite, and each std positive. Anything else raises
    :class:`CheckpointError` naming the file, what is wrong and ``fix`` (what to do)."""
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {problem}" + (f"; {fix}" if fix else ""))

    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except FileNotFoundError:
        raise bad("the run's latent statistics are missing") from None
    except Exception as exc:  # noqa: BLE001 - a truncated zip, a bad member, a pickle: the file is unusable
        raise bad(f"not a readable latent statistics file ({type(exc).__name__}: {exc})") from None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in keys:
        pair = []
        for part in ("mean", "std"):
            name = f"{key}.{part}"
            if name not in arrays:
                raise bad(f"no {name!r} array (it holds: {', '.join(sorted(arrays)) or 'nothing'})")
            arr = arrays[name]
            if arr.ndim != 1 or (channels is not None and arr.shape[0] != channels) or arr.dtype.kind != "f":
                want = f"{channels} float values" if channels is not None else "a 1-D float array"
                raise bad(f"{name!r} is {arr.dtype} of shape {arr.shape}, not {want}")
            if not np.all(np.isfinite(arr)):
                raise bad(f"{name!r} holds non-finite values")
            pair.append(arr)
        mean, std = pair
        if mean.shape != std.shape:
            raise bad(f"{key}.mean has shape {mean.shape} but {key}.std {std.shape}")
        if np.any(std <= 0):
            raise bad(f"{key}.std has values <= 0 (a division by it would blow up)")
        out[key] = (mean, std)
    return out
