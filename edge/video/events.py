"""The one record every video analyser emits: an event at a stream time, with its fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CameraEvent:
    """Something a camera's analysis concluded, e.g. `tamper` with `{"cause": "occluded"}`.

    `t_ms` is the stream's own time (milliseconds from the start of the input for a file, the
    frame's timestamp for a live stream), never the wall clock: replaying a file gives the same
    events at the same times as the live daemon did. `fields` are the event's data as the
    camera profile (device_profiles/camera.yaml) names them.
    """

    type: str
    t_ms: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    # The analyser's own handle on what the event is about, not part of the output: a thrown
    # object's track id, for ThrowDetector.fall.
    ref: int | None = None

    def as_json(self) -> dict[str, Any]:
        """One line of `shouwang video analyze` output: type, t_ms, then the fields."""
        return {"type": self.type, "t_ms": self.t_ms, **self.fields}
