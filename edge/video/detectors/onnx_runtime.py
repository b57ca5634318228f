"""The base of every ONNX model adapter: onnxruntime on CPU, threads from config, warm-up.

The model's bytes come from `models/` through `edge.video.models.model_bytes`, so a file that
is not the one in the manifest never reaches the runtime.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import Field

from edge.video.detectors.registry import Detector, DetectorConfig
from edge.video.models import model_bytes

log = logging.getLogger(__name__)


class OnnxConfig(DetectorConfig):
    model: str = Field(description="Model name in models/manifest.yaml")
    threads: int = Field(
        1, ge=1, le=64,
        description="onnxruntime intra-op threads. One per camera worker on a small gateway: "
        "several cameras share the cores, and a worker that spins threads starves the others",
    )
    warmup_runs: int = Field(2, ge=0, le=20, description="Inferences run by `warm_up`")
    models_dir: Path | None = Field(
        None, description="Where the model files are (default: the repository's models/)"
    )


def onnx_session(model: str, threads: int, models_dir: Path | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session of model `model` from `models/`, its hash checked first."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads busy-wait by default; on a shared 2-core box that is stolen CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings from the runtime go to our log, not stderr
    return ort.InferenceSession(
        model_bytes(model, models_dir), sess_options=options, providers=["CPUExecutionProvider"]
    )


class OnnxDetector(Detector):
    """A detector whose model runs in an onnxruntime CPU session made from `models/`."""

    config: OnnxConfig

    def __init__(self, config: OnnxConfig) -> None:
        super().__init__(config)
        self.session = onnx_session(config.model, config.threads, config.models_dir)
        self.input_name = self.session.get_inputs()[0].name
        log.info("%s: model %s loaded, %d thread(s)", self.type_key, config.model, config.threads)

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """The model's raw outputs for one prepared input tensor."""
        outputs: list[np.ndarray] = self.session.run(None, {self.input_name: blob})
        return outputs

    @abstractmethod
    def warmup_image(self) -> np.ndarray:
        """An image of the size the detector will see, for `warm_up`."""

    def warm_up(self) -> None:
        image = self.warmup_image()
        for _ in range(self.config.warmup_runs):
            self.detect(image)
