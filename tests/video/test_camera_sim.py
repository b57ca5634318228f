"""The camera simulator seen by a real RTSP client (PyAV over TCP): frames, faults, recovery."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from simulators.camera import (
    ROOT,
    CameraSimulator,
    CameraSpec,
    SimulatorError,
    check_gst_python,
)
from simulators.scene import Scene
from tests.video.rtsp_reader import Frame, StreamReader, describe, similarity

pytestmark = pytest.mark.integration

USER, PASSWORD = "viewer", "s3cret:/@"  # characters a URL must escape
KINDS = ["scene", "file"]
PICTURE_FAULTS = ["cover", "defocus", "turn", "ir"]


@pytest.fixture(scope="module")
def sim(camera_clip: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[CameraSimulator]:
    """One server for the module, a camera per test so that faults never meet."""
    clip_720 = camera_clip(width=1280, height=720)
    clip_1080 = camera_clip(width=1920, height=1080, seconds=4)

    def camera(cid: str, kind: str, **kw: object) -> CameraSpec:
        if kind == "file":
            return CameraSpec(id=cid, kind="file", file=kw.pop("file", clip_720), **kw)
        return CameraSpec(id=cid, width=1280, height=720, **kw)

    cameras = [camera(f"{kind}-{fault}", kind) for kind in KINDS for fault in PICTURE_FAULTS]
    cameras += [camera(f"{kind}-{fault}", kind) for kind in KINDS
                for fault in ("stall", "drop", "corrupt")]
    cameras += [
        camera("scene-refuse", "scene", username=USER, password=PASSWORD),
        camera("file-refuse", "file"),  # no credentials: refusing still answers 401
        camera("secure", "scene", username=USER, password=PASSWORD),
        camera("other", "file", username="someone-else", password="other-password"),
        CameraSpec(id="scene-1080", width=1920, height=1080),
        camera("file-1080", "file", file=clip_1080),
        camera("pair-a", "scene", username=USER, password=PASSWORD),
        camera("pair-b", "file"),
        camera("timed", "file"),
    ]
    log = tmp_path_factory.mktemp("camera-sim") / "server.log"
    with CameraSimulator(cameras, log_path=log) as server:
        yield server


def reference_thumb(width: int, height: int) -> np.ndarray:
    """What the scene looks like (seed 0, nobody walking), as a grey thumbnail."""
    frame = np.frombuffer(Scene(width, height, 0).frame(0.0), np.uint8)
    luma = frame[: width * height].reshape(height, width).astype(np.float64)
    th = 64 * height // width // 2 * 2
    return luma[: height // th * th, : width // 64 * 64].reshape(
        th, height // th, 64, width // 64).mean(axis=(1, 3))


def baseline(reader: StreamReader, width: int = 1280, height: int = 720) -> Frame:
    """The camera's normal picture: the right size, and the street the scene shows."""
    frames = reader.wait_frames(12)
    assert {(f.width, f.height) for f in frames} == {(width, height)}
    normal = reader.measured()[-1]
    assert similarity(normal.thumb, reference_thumb(width, height)) > 0.9, describe(normal)
    assert normal.colour > 10, describe(normal)
    assert normal.sharpness > 100, describe(normal)
    return normal


def looks_normal(base: Frame) -> Callable[[Frame], bool]:
    return lambda f: (
        similarity(f.thumb, base.thumb) > 0.9 and f.sharpness > 0.5 * base.sharpness
        and f.colour > 0.5 * base.colour and abs(f.mean - base.mean) < 15
    )


SHOWS: dict[str, tuple[str, Callable[[Frame, Frame], bool]]] = {
    "cover": ("a near-black, uniform picture", lambda f, b: f.mean < 30 and f.std < 8),
    "defocus": ("a sharpness collapse", lambda f, b: f.sharpness < 0.1 * b.sharpness
                and similarity(f.thumb, b.thumb) > 0.8),
    "turn": ("another view, as sharp", lambda f, b: similarity(f.thumb, b.thumb) < 0.6
             and f.sharpness > 0.4 * b.sharpness),
    "ir": ("a monochrome picture of other contrast", lambda f, b: f.colour < 1.5
           and abs(f.std - b.std) > 0.1 * b.std),
}


# --- pictures --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", PICTURE_FAULTS)
def test_picture_fault_shows_and_restores(sim: CameraSimulator, kind: str, fault: str) -> None:
    camera = f"{kind}-{fault}"
    what, shows = SHOWS[fault]
    with StreamReader(sim.url(camera)) as reader:
        base = baseline(reader)
        assert sim.fault(camera, fault)["cameras"][camera]["faults"] == [fault]  # type: ignore[arg-type]
        seen = reader.wait_for(what, lambda f: shows(f, base))
        assert (seen.width, seen.height) == (1280, 720)
        sim.restore(camera)
        reader.wait_for("the normal picture again", looks_normal(base))
        assert reader.error is None
        assert not reader.ended


@pytest.mark.parametrize(("camera", "kind"), [("scene-1080", "scene"), ("file-1080", "file")])
def test_1080p_cameras_send_1080p(sim: CameraSimulator, camera: str, kind: str) -> None:
    assert sim.cameras[camera]["kind"] == kind
    with StreamReader(sim.url(camera)) as reader:
        baseline(reader, 1920, 1080)


# --- the stream ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_stall_sends_nothing_on_a_live_connection_until_restored(
    sim: CameraSimulator, kind: str
) -> None:
    camera = f"{kind}-stall"
    with StreamReader(sim.url(camera), read_timeout=60) as reader:
        baseline(reader)
        sim.fault(camera, "stall")
        quiet_since, arrived = time.monotonic(), len(reader.frames)
        give_up = quiet_since + 15
        while time.monotonic() - quiet_since < 1:  # frames already on their way land first
            assert time.monotonic() < give_up, "frames kept coming after the stall"
            time.sleep(0.1)
            if len(reader.frames) != arrived:
                quiet_since, arrived = time.monotonic(), len(reader.frames)
        # Counted once quiet: on a loaded machine a frame already in the server's pipeline
        # when the fault was set can still go out just after.
        sent = sim.frames_sent(camera)
        time.sleep(3)  # the stall we watch
        assert len(reader.frames) == arrived, "frames arrived during the stall"
        assert sim.frames_sent(camera) == sent
        assert not reader.ended, "the stall closed the connection"
        assert reader.error is None
        sim.restore(camera)
        reader.wait_frames(arrived + 25)  # on the same connection
        assert not reader.ended
        reader.wait_for("the normal picture after the stall", looks_normal(
            reader.measured()[0]))


@pytest.mark.parametrize("kind", KINDS)
def test_drop_closes_the_connection_and_a_reconnect_works(
    sim: CameraSimulator, kind: str
) -> None:
    camera = f"{kind}-drop"
    with StreamReader(sim.url(camera)) as reader:
        baseline(reader)
        assert sim.fault(camera, "drop")["cameras"][camera] == {"dropped": 1}
        reader.wait_end()
        ended_at = len(reader.frames)
    assert ended_at > 0
    with StreamReader(sim.url(camera)) as again:
        baseline(again)


@pytest.mark.parametrize("kind", KINDS)
def test_refuse_answers_401_until_restored(sim: CameraSimulator, kind: str) -> None:
    camera = f"{kind}-refuse"
    url = sim.url(camera)  # with the right credentials, if the camera has any
    with StreamReader(url) as reader:
        baseline(reader)
        sim.fault(camera, "refuse")
        reader.wait_end()  # its session went with the credentials
    with pytest.raises(av.error.HTTPUnauthorizedError):
        StreamReader(url).open()
    assert sim.status()[camera]["refusing"]
    sim.restore(camera)
    with StreamReader(url) as again:
        baseline(again)


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_damages_frames_yet_the_stream_goes_on(sim: CameraSimulator, kind: str) -> None:
    camera = f"{kind}-corrupt"
    with StreamReader(sim.url(camera)) as reader:
        base = baseline(reader)
        assert reader.corrupt_frames == 0
        sim.fault(camera, "corrupt")
        start = len(reader.frames)
        if kind == "scene":
            # CAVLC (x264 ultrafast): FFmpeg finds the errors and flags the frames it concealed.
            reader.wait_until("corrupt frames", lambda fs: any(f.corrupt for f in fs[start:]))
        else:
            # CABAC (most cameras, and these clips): errors go unflagged; the stream goes on.
            reader.wait_frames(start + 50)
        sim.restore(camera)
        restored = len(reader.frames)
        reader.wait_until(
            "25 clean frames in a row",
            lambda fs: len(fs) > restored + 25 and not any(f.corrupt for f in fs[-25:]),
        )
        reader.wait_for("the normal picture again", looks_normal(base))
        assert reader.error is None
        assert not reader.ended


def test_credentials_are_checked_like_a_camera(sim: CameraSimulator) -> None:
    for url in (
        sim.url("secure", credentials=False),
        sim.url("secure", password="wrong"),
        sim.url("other").replace("/other", "/secure"),  # another camera's user
    ):
        with pytest.raises(av.error.HTTPUnauthorizedError):
            StreamReader(url).open()
    with pytest.raises(av.error.HTTPNotFoundError):
        StreamReader(sim.url("secure").replace("/secure", "/nothing-here")).open()
    with StreamReader(sim.url("secure")) as reader:
        baseline(reader)


def test_basic_auth(camera_sim: Callable[..., CameraSimulator]) -> None:
    server = camera_sim(
        [CameraSpec(id="basic", width=320, height=180, username=USER, password=PASSWORD)],
        auth="basic",
    )
    with pytest.raises(av.error.HTTPUnauthorizedError):
        StreamReader(server.url("basic", password="wrong")).open()
    with StreamReader(server.url("basic")) as reader:
        baseline(reader, 320, 180)


# --- several cameras ---------------------------------------------------------------------------


def test_two_cameras_at_once_and_a_fault_touches_only_its_own(sim: CameraSimulator) -> None:
    with StreamReader(sim.url("pair-a")) as a, StreamReader(sim.url("pair-b")) as b:
        base_a, base_b = baseline(a), baseline(b)
        sim.fault("pair-a", "cover")
        a.wait_for("cover", lambda f: SHOWS["cover"][1](f, base_a))
        after = len(b.frames)
        b.wait_frames(after + 10)
        assert all(looks_normal(base_b)(f) for f in b.measured(after)), "pair-b was touched"
        assert sim.status()["pair-b"]["faults"] == []
        sim.restore("pair-a")
        a.wait_for("the normal picture again", looks_normal(base_a))
        status = sim.status()
        assert (status["pair-a"]["clients"], status["pair-b"]["clients"]) == (1, 1)


def test_a_fault_for_some_seconds_restores_itself(sim: CameraSimulator) -> None:
    assert sim.fault("timed", "cover", for_s=1)["cameras"]["timed"]["faults"] == ["cover"]
    deadline = time.monotonic() + 30
    while sim.status()["timed"]["faults"]:
        assert time.monotonic() < deadline, "the cover was not lifted"
        time.sleep(0.1)


# --- bad commands and bad set-ups ----------------------------------------------------------------


@pytest.mark.parametrize(("request_", "error"), [
    ({"cmd": "fault", "camera": "nope", "fault": "cover"}, "unknown camera 'nope'"),
    ({"cmd": "fault", "camera": "timed", "fault": "smoke"}, "unknown fault 'smoke'"),
    ({"cmd": "fault", "camera": "timed", "fault": "stall", "for_s": -1}, "for_s must be"),
    ({"cmd": "explode"}, "unknown command 'explode'"),
])
def test_bad_commands_are_refused_by_name(
    sim: CameraSimulator, request_: dict[str, object], error: str
) -> None:
    with pytest.raises(SimulatorError, match=error):
        sim.request(request_)
    assert sim.running


def test_a_file_that_is_not_video_is_named(
    camera_sim: Callable[..., CameraSimulator], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video\n" * 100)
    with pytest.raises(SimulatorError, match=r"camera cam-junk: .*junk.mp4: not an H.264 video"):
        camera_sim([CameraSpec(id="cam-junk", kind="file", file=junk)])
    with pytest.raises(SimulatorError, match=r"camera cam-gone: .*gone.mp4: no such file"):
        camera_sim([CameraSpec(id="cam-gone", kind="file", file=tmp_path / "gone.mp4")])


def test_a_python_without_gstreamer_is_told_what_to_install() -> None:
    # The venv's Python has no gi: exactly the mistake of running the server with it.
    with pytest.raises(SimulatorError, match=r"python3-gi.*apt-get install -y .*python3-gi"):
        check_gst_python(Path(sys.executable))


# --- the command line ---------------------------------------------------------------------------


def _line(proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, object]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
        assert ready, f"no line from the CLI within {timeout} s"
        byte = os.read(proc.stdout.fileno(), 1)
        assert byte, "the CLI ended"
        data += byte
    message: dict[str, object] = json.loads(data)
    return message


def test_cli_serves_and_takes_commands_on_stdin(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shouwang.cli", "sim", "camera", "--port", "0",
         "--camera", "c1,size=320x180,user=admin,password=pw", "--camera", "c2,size=320x180"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    try:
        ready = _line(proc)
        assert ready["event"] == "ready"
        port = ready["port"]
        cameras = ready["cameras"]
        assert isinstance(cameras, dict)
        assert cameras["c2"]["url"] == f"rtsp://127.0.0.1:{port}/c2"
        assert proc.stdin is not None
        proc.stdin.write(b"cover c1 5\n")
        proc.stdin.flush()
        assert _line(proc) == {"ok": True, "cameras": {"c1": {"faults": ["cover"]}}}
        with StreamReader(f"rtsp://admin:pw@127.0.0.1:{port}/c1") as reader:
            reader.wait_for("cover", lambda f: f.mean < 30 and f.std < 8)
        proc.stdin.write(b"quit\n")
        proc.stdin.flush()
        assert _line(proc) == {"ok": True}
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()
        proc.stdin.close() if proc.stdin else None
    assert "camera c1: rtsp://admin:***@127.0.0.1" in stderr  # the URLs, password hidden
    assert "pw@" not in stderr


@pytest.mark.parametrize(("args", "error"), [
    ([], "name at least one --camera"),
    (["--camera", "c1,size=12x3"], "--camera c1,size=12x3: width: Input should be greater"),
    (["--camera", "c1,colour=red"], "cannot read 'colour=red'"),
    (["--camera", "c1,user=admin"], "give both username and password"),
])
def test_cli_names_a_bad_camera(args: list[str], error: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shouwang.cli", "sim", "camera", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 2
    assert error in result.stderr
