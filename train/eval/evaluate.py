"""``songcorpus evaluate``: score a trained run on held-out windows, or a folder of any system's outputs,
with the floor, the untrained model, the codec ceiling and the ground truth on the same windows.

Two modes:
- run: ``evaluate_run(RUN, data=CORPUS, split="test")`` generates every window of the split (or the first
  ``limit``) with the run's EMA weights (train/eval/heldout.py), and with each reference system, and scores
  them all (train/eval/scoring.py);
- folder: ``evaluate_folders(GENERATED, REFERENCE)`` matches files by name (``NAME.wav`` / ``.flac``; stems
  beside them as ``NAME.vocals.*`` / ``NAME.accompaniment.*``, else the mix is separated by the lite
  profile's stems stage; ``NAME.lyrics.txt`` and ``NAME.caption.txt`` in REFERENCE give the texts) and scores
  the generated files against the references, with ``ground_truth`` and ``floor`` (another reference file);
  ``untrained`` and ``codec_ceiling`` have no meaning there and are recorded with that reason.
Writes EVAL/metrics.parquet, EVAL/metrics.duckdb (train/eval/tables.py), EVAL/eval.json (what was
evaluated: run, checkpoint, corpus, split, device, embedding and speaker models, seeds, metric groups, counts) and,
for listening (``songcorpus view --eval``), the stems the evaluated system made for its first ``keep_audio`` windows
as 16-bit FLAC, ``EVAL/audio/<system>/<key>.<stem>.flac`` (in folder mode the references too, as ``ground_truth``:
no corpus holds them).
Deterministic: the same run, data and options give the same rows (seeded generation and bootstrap),
except ``rtf``, which is a wall-clock measurement.
Fails: :class:`~songcorpus.train.eval.heldout.EvalError` (the CLI exits 2) naming the problem.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.io.atomic import atomic_write_bytes
from songcorpus.train.eval.heldout import SYSTEMS, EvalError, HeldOutWindow, SystemOutput
from songcorpus.train.eval.metrics.singer import SPEAKER_DEFAULT
from songcorpus.train.eval.scoring import GROUPS, LOWER_IS_BETTER, Row, Scorer, SetAccumulator, choose_groups

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
STEM_TAGS = ("vocals", "accompaniment")
KEEP_AUDIO = 16  # windows whose generated stems are kept for listening (about 1.5 MB per window of 10 s)
AUDIO_DIR = "audio"  # EVAL/audio/<system>/<key>.<stem>.flac


def _progress(it: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="window", leave=False)


def _score_system(scorer: Scorer, system: str, windows: list[HeldOutWindow], outputs: Any, rows: list[Row],
                  set_intervals: dict, set_resamples: int, seed: int, progress: bool) -> None:
    acc = SetAccumulator()
    rows += scorer.missing_model_rows(system)
    for w, out in _progress(outputs, len(windows), system, progress):
        if out is None:
            continue
        rows += scorer.score(system, w, out, acc)
    set_rows, intervals = scorer.set_rows(system, acc, [w.key for w in windows], set_resamples, seed)
    rows += set_rows
    set_intervals.update({(system, m): v for m, v in intervals.items()})


def _write_stems(out: Path, system: str, w: HeldOutWindow, stems: dict[str, np.ndarray]) -> None:
    """One window's stems as 16-bit FLAC under ``EVAL/audio/<system>/`` (written whole or not at all)."""
    import soundfile as sf

    folder = out / AUDIO_DIR / system
    folder.mkdir(parents=True, exist_ok=True)
    for stem, x in sorted(stems.items()):
        buf = io.BytesIO()
        sf.write(buf, np.clip(np.asarray(x, np.float32), -1.0, 1.0), w.rate, format="FLAC", subtype="PCM_16")
        atomic_write_bytes(folder / f"{w.key}.{stem}.flac", buf.getvalue())


def _keeping(outputs: Any, out: Path, system: str, n: int, kept: dict[str, list[str]]) -> Any:
    """``outputs`` passed through unchanged, the stems of the first ``n`` windows written on the way
    (``kept[system]``: their keys), so ``songcorpus view`` can play what was scored."""
    for w, o in outputs:
        if o is not None and len(kept.setdefault(system, [])) < n:
            _write_stems(out, system, w, o.stems)
            kept[system].append(w.key)
        yield w, o


def _unavailable_system(scorer: Scorer, system: str, reason: str, rows: list[Row]) -> None:
    for group in scorer.groups:
        if system in ("ground_truth", "codec_ceiling", "floor") and group == "rtf":
            continue
        rows += [Row(system, None, m, None, reason) for m in GROUPS[group]]


def _finish(out: Path, rows: list[Row], identity: dict[str, Any], set_intervals: dict, resamples: int,
            seed: int, info: dict[str, Any], quiet: bool) -> dict[str, Any]:
    from songcorpus.train.eval.tables import format_summary, intervals_table, metrics_table, paired_table, write_report

    table = metrics_table(rows, identity)
    paths = write_report(out, table, intervals_table(table, set_intervals, resamples, seed),
                         paired_table(table, resamples, seed))
    failed = sum(1 for r in rows if r.value is None)
    info = {**identity, **info, "rows": len(rows), "failed_rows": failed,
            "outputs": {k: str(v) for k, v in paths.items()}}
    atomic_write_bytes(out / "eval.json", (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    text = format_summary(paths["duckdb"], LOWER_IS_BETTER)
    if not quiet:
        print(text)
    return {**info, "table": text}


def evaluate_run(run: str | Path, out: str | Path, data: str | None = None, split: str = "test",
                 checkpoint: str | None = None, metrics: Sequence[str] | None = None, limit: int | None = None,
                 store_dir: str | None = None, seed: int = 0, steps: int | None = None, device: str = "cpu",
                 resamples: int = 1000, set_resamples: int = 50, task: str = "svc",
                 systems: Sequence[str] = SYSTEMS, progress: bool = True, quiet: bool = False,
                 speaker_model: str | None = None, keep_audio: int = KEEP_AUDIO) -> dict[str, Any]:
    """Generate and score every held-out window of ``split``; see the module docstring."""
    from songcorpus.train.eval import heldout as ho
    from songcorpus.train.eval.metrics.embeddings import YAMNET_MODEL
    from songcorpus.train.eval.metrics.speed import device_description
    from songcorpus.train.run import RunError, load_run

    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise EvalError(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    try:
        loaded = load_run(run, checkpoint, device)
    except RunError as exc:
        raise EvalError(str(exc)) from None
    if data is None:
        data = str(loaded.corpus)
    try:
        groups = choose_groups(loaded.name, metrics)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    if loaded.name == "unisinger" and task not in ("song", "svc"):
        raise EvalError(f"--task must be song or svc for UniSinger, not {task!r}")
    heldout = ho.HeldOut(loaded, data, split, limit, task)
    windows = heldout.windows()
    scorer = Scorer(loaded.name, groups, store_dir, device, speaker_model)
    if {"fad", "kl"} & set(groups):
        for w in _progress(windows, len(windows), "reference", progress):
            scorer.reference(w)
        scorer.set_reference([w.key for w in windows])
    decoder = ho.Decoder(loaded)
    partners = ho.floor_partner(windows)
    rows: list[Row] = []
    set_intervals: dict[tuple[str, str], tuple[float, float]] = {}
    kept: dict[str, list[str]] = {}
    for system in systems:
        if system in ("model", "untrained"):
            model = loaded.model if system == "model" else ho.untrained_model(loaded)
            outputs: Any = ho.Generator(loaded, model, heldout, decoder, seed, steps, device).outputs(windows)
            if system == "model":
                outputs = _keeping(outputs, Path(out), system, keep_audio, kept)
        elif system == "ground_truth":
            outputs = ((w, ho.ground_truth(w)) for w in windows)
        elif system == "codec_ceiling":
            outputs = ((w, ho.codec_ceiling(loaded, decoder, heldout.view, w)) for w in windows)
        else:
            if all(p is None for p in partners.values()):
                _unavailable_system(scorer, "floor", f"the floor (another held-out song's stems) needs two songs "
                                    f"among the evaluated windows of split {split!r}; they hold one", rows)
                continue
            outputs = ((w, ho.floor_output(loaded.name, w, partners[w.key])) for w in windows)
        _score_system(scorer, system, windows, outputs, rows, set_intervals, set_resamples, seed, progress)
    identity = {"run": str(Path(run).resolve()), "checkpoint_step": loaded.step, "model": loaded.name, "split": split}
    info = {"mode": "run", "checkpoint": str(loaded.checkpoint), "corpus": str(data), "windows": len(windows),
            "songs": len({w.track_id for w in windows}), "window_s": loaded.window_s, "groups": list(groups),
            "systems": list(systems), "seed": seed, "sampling_steps": steps, "task": heldout.task,
            "device": device_description(device), "embedding": YAMNET_MODEL,
            "speaker_model": speaker_model or SPEAKER_DEFAULT,
            "floor": "the same window position of the next held-out song (track-id order, cyclic)",
            "bootstrap": {"per_window_resamples": resamples, "fad_resamples": set_resamples},
            "audio": {"folder": AUDIO_DIR, "keys": kept}}
    return _finish(Path(out), rows, identity, set_intervals, resamples, seed, info, quiet)


# ---------------------------------------------------------------------------------------------
# folder mode
# ---------------------------------------------------------------------------------------------

def _audio_files(folder: Path) -> dict[str, dict[str, Path]]:
    """NAME -> {"mix": path, "vocals": path, "accompaniment": path} (the stems only where present)."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        stem = path.name[: -len(path.suffix)]
        name, _, tag = stem.rpartition(".")
        if name and tag in STEM_TAGS:
            found.setdefault(name, {})[tag] = path
        else:
            found.setdefault(stem, {})["mix"] = path
    return found


class _FolderAudio:
    """Files -> mono float32 stems at one rate: decoded and resampled by the curation ingest stage, a missing
    stem separated from the mix by the lite profile's stems stage."""

    def __init__(self, scratch: Path) -> None:
        from songcorpus.schemas.config import load_config
        from songcorpus.train.generate import Curation

        self.cur = Curation(load_config("lite"), scratch)
        self.rate = int(self.cur.config.ingest.sample_rate)

    def stems(self, files: dict[str, Path], what: str) -> dict[str, np.ndarray]:
        from songcorpus.train.generate import GenerateError

        try:
            out: dict[str, np.ndarray] = {}
            for tag in STEM_TAGS:
                if tag in files:
                    out[tag] = self.cur.audio(self.cur.stems(files[tag], what, tag), tag)
            if len(out) < 2:
                if "mix" not in files:
                    raise EvalError(f"{what}: {', '.join(sorted(files))} given, but neither both stems nor a mix")
                row = self.cur.stems(files["mix"], what, None)
                for tag in STEM_TAGS:
                    out.setdefault(tag, self.cur.audio(row, tag))
            if "mix" in files:
                out["mix"] = self.cur.audio(self.cur.stems(files["mix"], what, "vocals"), "vocals")
            else:
                n = min(out["vocals"].size, out["accompaniment"].size)
                out["mix"] = out["vocals"][:n] + out["accompaniment"][:n]
        except GenerateError as exc:
            raise EvalError(str(exc)) from None
        return out


def evaluate_folders(generated: str | Path, reference: str | Path, out: str | Path, system: str | None = None,
                     metrics: Sequence[str] | None = None, store_dir: str | None = None, seed: int = 0,
                     resamples: int = 1000, set_resamples: int = 50, device: str = "cpu", progress: bool = True,
                     quiet: bool = False, scratch: Path | None = None, speaker_model: str | None = None,
                     keep_audio: int = KEEP_AUDIO) -> dict[str, Any]:
    """Score ``generated``'s files against ``reference``'s by name; see the module docstring."""
    import tempfile

    from songcorpus.train.eval.heldout import fit_length, floor_partner
    from songcorpus.train.eval.metrics.embeddings import YAMNET_MODEL
    from songcorpus.train.eval.metrics.melody import f0_of_vocals

    gen_dir, ref_dir = Path(generated), Path(reference)
    for what, folder in (("--generated", gen_dir), ("--reference", ref_dir)):
        if not folder.is_dir():
            raise EvalError(f"{what} {folder} is not a folder")
    name = system or gen_dir.resolve().name
    if name in SYSTEMS:
        raise EvalError(f"--system {name!r} is a reference system's name; call the generated system otherwise")
    try:
        groups = tuple(g for g in choose_groups("folder", metrics) if g != "rtf")
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    refs, gens = _audio_files(ref_dir), _audio_files(gen_dir)
    if not refs:
        raise EvalError(f"--reference {ref_dir} holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
    scorer = Scorer("folder", groups, store_dir, device, speaker_model)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=scratch, prefix="songcorpus-eval-") as tmp:
        audio = _FolderAudio(Path(tmp))
        windows: list[HeldOutWindow] = []
        outputs: dict[str, SystemOutput] = {}
        names = sorted(refs)
        for key in _progress(names, len(names), "decode", progress):
            stems = audio.stems(refs[key], f"reference {key}")
            n = stems["mix"].size
            stems = {k: fit_length(v, n) for k, v in stems.items()}
            text = {t: (ref_dir / f"{key}.{t}.txt").read_text().strip() if (ref_dir / f"{key}.{t}.txt").exists()
                    else "" for t in ("lyrics", "caption")}
            f0 = f0_of_vocals(stems["vocals"], audio.rate, model=scorer.metric_model("f0")) if "melody" in groups else \
                np.zeros(0, np.float32)
            windows.append(HeldOutWindow(key, key, audio.rate, n, stems, f0, text["caption"], text["lyrics"], None))
            if key in gens:
                g = audio.stems(gens[key], f"generated {key}")
                outputs[key] = SystemOutput({k: fit_length(v, n) for k, v in g.items()})
        for key in names:
            if key not in gens:
                rows += [Row(name, key, m, None, f"no generated file {key}.* in {gen_dir}")
                         for g in groups for m in GROUPS[g] if m not in ("fad", "fad_inf")]
        for key in sorted(set(gens) - set(refs)):
            rows.append(Row(name, key, "matched", None, f"no reference file {key}.* in {ref_dir}"))
        if {"fad", "kl"} & set(groups):
            for w in windows:
                scorer.reference(w)
            scorer.set_reference([w.key for w in windows])
        set_intervals: dict[tuple[str, str], tuple[float, float]] = {}
        present = [w for w in windows if w.key in outputs]
        kept: dict[str, list[str]] = {}
        _score_system(scorer, name, present, _keeping(((w, outputs[w.key]) for w in present), Path(out), name,
                                                      keep_audio, kept), rows, set_intervals, set_resamples, seed,
                      progress)
        for w in present[:keep_audio]:  # the references of the kept windows: no corpus holds them
            _write_stems(Path(out), "ground_truth", w, w.stems)
            kept.setdefault("ground_truth", []).append(w.key)
        _score_system(scorer, "ground_truth", windows, ((w, SystemOutput(dict(w.stems))) for w in windows), rows,
                      set_intervals, set_resamples, seed, progress)
        partners = floor_partner(windows)
        if all(p is None for p in partners.values()):
            _unavailable_system(scorer, "floor", "the floor (another reference file) needs two reference files", rows)
        else:
            floor = ((w, SystemOutput({k: fit_length(v, w.n_samples) for k, v in partners[w.key].stems.items()}))
                     for w in windows)
            _score_system(scorer, "floor", windows, floor, rows, set_intervals, set_resamples, seed, progress)
        for ref_system in ("untrained", "codec_ceiling"):
            _unavailable_system(scorer, ref_system, f"scoring a folder of outputs: no model or codec defines "
                                f"{ref_system}", rows)
    identity = {"run": name, "checkpoint_step": None, "model": name, "split": ref_dir.resolve().name}
    info = {"mode": "folder", "generated": str(gen_dir.resolve()), "reference": str(ref_dir.resolve()),
            "matched": len(outputs), "references": len(refs), "groups": list(groups), "seed": seed,
            "embedding": YAMNET_MODEL, "speaker_model": speaker_model or SPEAKER_DEFAULT,
            "floor": "another reference file (name order, cyclic)",
            "bootstrap": {"per_window_resamples": resamples, "fad_resamples": set_resamples},
            "audio": {"folder": AUDIO_DIR, "keys": kept}}
    return _finish(Path(out), rows, identity, set_intervals, resamples, seed, info, quiet)
