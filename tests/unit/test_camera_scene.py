"""The synthetic camera scene and the simulator's camera config, without GStreamer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from simulators.camera import CameraSpec, SimulatorConfig, default_bitrate
from simulators.scene import Scene

W, H = 320, 180


def luma(frame: bytes) -> np.ndarray:
    return np.frombuffer(frame, np.uint8)[: W * H].reshape(H, W).astype(np.int16)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene(W, H, seed=0, noise=2)


def test_a_frame_is_one_i420_picture_and_the_same_for_the_same_time(scene: Scene) -> None:
    assert len(scene.frame(1.0)) == W * H * 3 // 2
    assert scene.frame(1.0) == Scene(W, H, seed=0, noise=2).frame(1.0)
    assert scene.frame(1.0) != Scene(W, H, seed=1, noise=2).frame(1.0)


def test_between_walks_only_the_sensor_noise_moves(scene: Scene) -> None:
    assert scene.walker_at(1.0) is None
    assert scene.walker_at(2.5) is None
    assert int(np.abs(luma(scene.frame(1.0)) - luma(scene.frame(2.5))).max()) <= 4


def test_someone_walks_through_every_period(scene: Scene) -> None:
    seen = [scene.walker_at(3.0 + i * 0.5) for i in range(8)]  # 3 s to 7 s into a period
    assert all(at is not None for at in seen)
    xs = [at[0] for at in seen if at is not None]
    assert xs == sorted(xs) or xs == sorted(xs, reverse=True)  # one way across
    moved = np.abs(luma(scene.frame(5.0)) - luma(scene.frame(1.0))) > 20
    assert 0.005 < moved.mean() < 0.2  # a person, not the whole picture
    assert scene.walker_at(13.0) is not None  # and again in the next period


def test_the_turned_view_is_another_view(scene: Scene) -> None:
    diff = np.abs(luma(scene.frame(1.0, view=1)) - luma(scene.frame(1.0, view=0)))
    assert diff.mean() > 20


def test_an_odd_size_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        Scene(321, 180)


def test_bit_rates_are_camera_like() -> None:
    assert 1500 <= default_bitrate(1280, 720) <= 2200
    assert 3500 <= default_bitrate(1920, 1080) <= 4500


@pytest.mark.parametrize(("fields", "error"), [
    ({"id": "a", "kind": "file"}, "kind file needs `file`"),
    ({"id": "a", "file": "x.mp4"}, "`file` is for kind file"),
    ({"id": "a", "username": "u"}, "both username and password"),
    ({"id": "a b"}, "should match pattern"),
    ({"id": "a", "width": 641}, "multiple of 2"),
    ({"id": "a", "colour": "red"}, "Extra inputs are not permitted"),
])
def test_a_bad_camera_is_refused_by_name(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        CameraSpec.model_validate(fields)


def test_ids_are_unique_and_digest_users_have_one_password() -> None:
    with pytest.raises(ValidationError, match="listed twice: a"):
        SimulatorConfig(cameras=[CameraSpec(id="a"), CameraSpec(id="a")])
    two = [CameraSpec(id="a", username="u", password="p1"),
           CameraSpec(id="b", username="u", password="p2")]
    with pytest.raises(ValidationError, match="camera b: user u has another password"):
        SimulatorConfig(cameras=two)
    SimulatorConfig(cameras=two, auth="basic")  # basic tells them apart
    same = [CameraSpec(id="a", username="u", password="p"),
            CameraSpec(id="b", username="u", password="p"), CameraSpec(id="c")]
    assert SimulatorConfig(cameras=same).auth == "digest"


def test_a_file_path_reaches_the_server_whole(tmp_path: Path) -> None:
    spec = CameraSpec(id="a", kind="file", file=Path("clips/x.mp4")).server_spec()
    assert Path(spec["file"]).is_absolute()
    assert spec["bitrate_kbps"] == default_bitrate(1280, 720)
