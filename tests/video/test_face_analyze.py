"""`shouwang video analyze` on a gate camera: the enrolled person is found, the others are not.

The scene is composed from real photos (tests/face_scene.py): the person enrolled from
`obama.jpg` walks past the gate in a different photo (`obama2.jpg`), then a person nobody
enrolled (`biden.jpg`). One `face_match` line, within two seconds of the face being visible;
nothing for the other; and nothing of anyone's face is written to the data directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import orjson
import pytest
import yaml

from edge.video.face.store import DEFAULT_LISTS
from tests import face_photos
from tests.face_scene import gate_clip

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ENROLLED_VISIBLE_S = 1.0


def shouwang(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shouwang", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gate")
    return gate_clip(directory / "gate.mp4", [("obama2", ENROLLED_VISIBLE_S, 4.0),
                                               ("biden", 5.0, 8.0)])


def camera_file(tmp_path: Path) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump({"id": "cam-gate-01", "analytics": ["face"],
                                    "detect": {"fps": 5, "width": 640}}))
    return path


def enrol(data_dir: Path, person: str, photo: str | Path, list_name: str = "police") -> None:
    path = photo if isinstance(photo, Path) else face_photos.photo(photo)
    done = shouwang("face", "enroll", "--data-dir", str(data_dir), "--list", list_name,
                    "--person", person, "--consent", f"CF-{person}", str(path))
    assert done.returncode == 0, done.stderr


def test_an_enrolled_person_in_another_photo_is_one_match_and_a_stranger_none(
    scene: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "edge"
    enrol(data_dir, "P-0042", "obama")
    before = {p: p.read_bytes() for p in (data_dir / "face").iterdir()}
    done = shouwang("video", "analyze", "--camera", str(camera_file(tmp_path)), str(scene),
                    "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [(e["type"], e["person"], e["list"]) for e in lines] == [
        ("face_match", "P-0042", "police")
    ]
    [match] = lines
    assert ENROLLED_VISIBLE_S * 1000 <= match["t_ms"] <= (ENROLLED_VISIBLE_S + 2) * 1000
    assert match["score"] >= DEFAULT_LISTS["police"].threshold
    # Analysing wrote nothing to the gateway's data directory: no crop, no descriptor.
    assert {p: p.read_bytes() for p in (data_dir / "face").iterdir()} == before
    assert sorted(p.name for p in data_dir.rglob("*")) == sorted(
        ["face", "audit.jsonl", "watchlist.enc", "watchlist.key"])


def test_nobody_enrolled_in_the_scene_prints_nothing(scene: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "edge"
    astronaut = tmp_path / "astronaut.png"
    cv2.imwrite(str(astronaut), face_photos.image("astronaut"))
    enrol(data_dir, "P-0007", astronaut, "missing_elder")
    done = shouwang("video", "analyze", "--camera", str(camera_file(tmp_path)), str(scene),
                    "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_a_missing_key_file_is_an_error_naming_it(scene: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "edge"
    enrol(data_dir, "P-0042", "obama")
    (data_dir / "face" / "watchlist.key").unlink()
    done = shouwang("video", "analyze", "--camera", str(camera_file(tmp_path)), str(scene),
                    "--data-dir", str(data_dir))
    assert done.returncode == 2
    assert "watchlist.key is missing" in done.stderr
    assert done.stdout == ""
