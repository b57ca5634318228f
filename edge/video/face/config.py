"""A camera's `face:` section (used when its `analytics:` has `face`).

```yaml
analytics: [face]
face:
  detector: {input_size: 320, score_threshold: 0.8}
  quality: {min_eye_distance_px: 24, min_sharpness: 60, max_yaw: 0.6}
  track_timeout_ms: 1500
  best_frames: 3
```
"""

from __future__ import annotations

from pydantic import Field

from edge.video.detectors.retinaface import RetinaFaceConfig
from edge.video.face.embedder import EmbedderConfig
from edge.video.face.quality import QualityConfig
from shouwang.config import Strict


class FaceConfig(Strict):
    detector: RetinaFaceConfig = Field(
        default_factory=lambda: RetinaFaceConfig(input_size=320),
        description="The face detector (RetinaFace) run on the moving region. input_size 320: "
        "the region, not the whole frame, is scaled to it, so a face whose eyes are 24 px "
        "apart in a region up to 640 px stays above the detector's 16-px smallest face, at a "
        "third of the cost of 640 (bench/face.py)",
    )
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality gates")
    embedder: EmbedderConfig = Field(
        default_factory=EmbedderConfig, description="The face descriptor model"
    )
    region_margin: float = Field(
        0.5, ge=0, le=4,
        description="Motion boxes and live face tracks are widened by this fraction of their "
        "size before face detection runs on them (a moving head is larger than its motion)",
    )
    track_timeout_ms: int = Field(
        1500, ge=100, le=60000, description="A face track not seen this long has ended"
    )
    best_frames: int = Field(
        3, ge=1, le=10, description="Best face crops kept per track, sent as a hit's evidence"
    )
    reload_s: float = Field(
        5.0, gt=0, le=3600, description="How often the worker looks for a changed watchlist"
    )
