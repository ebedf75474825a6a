"""Window planning: lengths, snapping, vocal-activity threshold, non-overlapping references."""

from __future__ import annotations

import pytest

from songcorpus.schemas.config import WindowConfig
from songcorpus.schemas.sample import window_key
from songcorpus.transforms.dsp.windows import activity_in, choose_references, plan_windows

BEATS = [0.37 + 0.5 * i for i in range(200)]  # 120 BPM from 0.37 s


@pytest.mark.parametrize("length", [10.24, 40.96, 47.55, 163.84, 3.3])
def test_windows_have_the_length_and_never_overlap(length: float) -> None:
    duration = 400.0
    cfg = WindowConfig(length_s=length, min_vocal_activity=0.0, max_per_track=1000)
    windows = plan_windows(duration, BEATS, [], [[0.0, duration]], cfg)
    assert windows, "a 400 s song fits windows of every paper's length"
    for a, b in zip(windows, windows[1:], strict=False):
        assert b.start_s >= a.end_s - 1e-9
    for w in windows:
        assert w.duration_s == length and w.end_s <= duration + 1e-6
        assert round(w.start_s, 2) in {round(b, 2) for b in BEATS}  # snapped to beats
        assert abs(w.start_s * 100 - round(w.start_s * 100)) < 1e-6  # on the 10 ms f0 grid


def test_vocal_activity_threshold_and_short_songs() -> None:
    cfg = WindowConfig(length_s=10.0, snap="none", min_vocal_activity=0.5)
    vad = [[0.0, 12.0], [30.0, 40.0]]
    windows = plan_windows(40.0, [], [], vad, cfg)
    assert [w.start_s for w in windows] == [0.0, 30.0]  # 10-20 s is 20% active, 20-30 s is silent
    assert activity_in(vad, 10.0, 20.0) == pytest.approx(0.2)
    assert plan_windows(9.0, [], [], [[0.0, 9.0]], cfg) == []


def test_references_never_overlap_and_lonely_windows_are_dropped() -> None:
    cfg = WindowConfig(length_s=10.0, snap="none", hop_s=4.0, min_vocal_activity=0.0)
    windows = plan_windows(30.0, [], [], [[0.0, 30.0]], cfg)
    keys = [window_key("t0", w.index) for w in windows]
    kept, refs = choose_references(windows, keys, require=True)
    assert kept
    for w in kept:
        ref = windows[refs[w.index]]
        assert not ref.overlaps(w) and ref.index != w.index
    # one window only: nothing can be its reference
    single = plan_windows(12.0, [], [], [[0.0, 12.0]], cfg.model_copy(update={"hop_s": None}))
    assert choose_references(single, ["t0_0000"], require=True)[0] == []
    assert choose_references(single, ["t0_0000"], require=False)[1] == {0: None}


def test_lyric_words_are_clipped_to_the_window_by_their_middle() -> None:
    from songcorpus.transforms.stages.samples_lite import clip_words

    words = [[0.5, 1.0, "before"], [1.8, 2.4, "edge"], [2.5, 3.0, "inside"], [5.9, 6.5, "after"], [3.7, 4.1, "end"],
             [3.9, 4.3, "next"]]
    assert clip_words(words, 2.0, 4.0) == [{"start_s": 0.0, "end_s": 0.4, "word": "edge"},
                                           {"start_s": 0.5, "end_s": 1.0, "word": "inside"},
                                           {"start_s": 1.7, "end_s": 2.0, "word": "end"}]
