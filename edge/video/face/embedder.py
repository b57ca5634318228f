"""The face embedder: an aligned 150×150 crop in, a unit-length 128-d descriptor out.

The model is dlib's ResNet-29 face descriptor rebuilt from npm `@vladmandic/face-api`
(models/dlib_resnet_face.md): it takes RGB pixels 0–255 in NCHW and normalises them itself.
Descriptors are scaled to length 1 so that matching is a dot product (cosine similarity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from edge.video.detectors.onnx_runtime import onnx_session
from edge.video.face.align import CHIP_SIZE
from shouwang.config import Strict

DIMENSIONS = 128


class EmbedderConfig(Strict):
    model: str = Field("dlib_resnet_face", description="Model name in models/manifest.yaml")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads")


class FaceEmbedder:
    def __init__(self, config: EmbedderConfig | None = None,
                 models_dir: Path | None = None) -> None:
        self.config = config or EmbedderConfig()
        self.session = onnx_session(self.config.model, self.config.threads, models_dir)
        self.input_name = self.session.get_inputs()[0].name

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, 128) unit descriptors of aligned BGR crops of 150×150."""
        if not crops:
            return np.zeros((0, DIMENSIONS), np.float32)
        batch = np.stack([c[:, :, ::-1] for c in crops]).astype(np.float32).transpose(0, 3, 1, 2)
        assert batch.shape[2:] == (CHIP_SIZE, CHIP_SIZE), batch.shape
        raw = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        result: np.ndarray = (raw / np.maximum(norms, 1e-9)).astype(np.float32)
        return result

    def warm_up(self) -> None:
        self.embed([np.zeros((CHIP_SIZE, CHIP_SIZE, 3), np.uint8)])
