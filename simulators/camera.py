"""Simulated RTSP cameras: their config, a handle that runs the server, test clips, the CLI.

The server itself (simulators/rtsp_server.py) needs GStreamer's RTSP server through gi, which
only Debian's /usr/bin/python3 has; this module is what the venv side uses. It never imports
gi: it starts the server as a subprocess and talks to it over stdin/stdout (docs/video.md):

    with CameraSimulator([CameraSpec(id="gate", width=1280, height=720)]) as sim:
        url = sim.url("gate")          # rtsp://127.0.0.1:PORT/gate
        sim.fault("gate", "cover")     # the lens is covered until...
        sim.restore("gate")
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, Self, get_args
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import simulators

Fault = Literal["stall", "drop", "refuse", "corrupt", "cover", "defocus", "turn", "ir"]
FAULTS: tuple[str, ...] = get_args(Fault)
ROOT = Path(simulators.__file__).resolve().parent.parent
# Debian's interpreter, the one with gi; SHOUWANG_GST_PYTHON overrides it.
GST_PYTHON = Path(os.environ.get("SHOUWANG_GST_PYTHON", "/usr/bin/python3"))
EXIT_MISSING = 3  # the server's exit code when gi or a GStreamer part is missing


class SimulatorError(Exception):
    """The camera simulator could not start, or did not do what it was told."""


def default_bitrate(width: int, height: int) -> int:
    """About 2 Mbit/s per megapixel, what IP cameras send: 720p ≈ 1.8, 1080p ≈ 4.1 Mbit/s."""
    return max(200, round(width * height / 1e6 * 2000))


class CameraSpec(BaseModel):
    """One simulated camera: a synthetic live scene, or an H.264 file played in a loop."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="path of the stream: rtsp://HOST:PORT/{id}",
    )
    kind: Literal["scene", "file"] = Field(
        "scene", description="scene: live synthetic street view; file: loop an H.264 file"
    )
    file: Path | None = Field(
        None, description="the video to loop (MP4, MKV, raw .h264; H.264 without B-frames)"
    )
    width: int = Field(1280, ge=64, le=7680, multiple_of=2, description="scene width, px")
    height: int = Field(720, ge=64, le=4320, multiple_of=2, description="scene height, px")
    fps: float = Field(25, gt=0, le=120, description="frame rate (a file's own rate wins)")
    bitrate_kbps: int | None = Field(
        None, ge=50, le=100_000, description="H.264 rate of a scene; default ~2 Mbit/s per MP"
    )
    gop_s: float = Field(1.0, gt=0, le=10, description="seconds between keyframes of a scene")
    seed: int = Field(0, ge=0, description="which street the scene shows")
    walk_every_s: float = Field(
        10.0, gt=0, description="someone walks through the scene once in this many seconds"
    )
    walk_s: float = Field(4.0, gt=0, description="how long the walk across takes")
    noise: int = Field(2, ge=0, le=20, description="sensor noise of a scene, ± grey levels")
    username: str | None = Field(None, min_length=1, description="RTSP user; none: open")
    password: str | None = Field(None, description="RTSP password (with username)")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind == "file" and self.file is None:
            raise ValueError(f"camera {self.id}: kind file needs `file`")
        if self.kind == "scene" and self.file is not None:
            raise ValueError(f"camera {self.id}: `file` is for kind file")
        if (self.username is None) != (self.password is None):
            raise ValueError(f"camera {self.id}: give both username and password, or neither")
        if self.walk_s > self.walk_every_s:
            raise ValueError(f"camera {self.id}: walk_s is longer than walk_every_s")
        return self

    def server_spec(self) -> dict[str, Any]:
        """What the server process reads (plain JSON; the server has no pydantic)."""
        spec = self.model_dump(mode="json")
        if self.kind == "file":
            spec["file"] = str(Path(spec["file"]).resolve())
        spec["bitrate_kbps"] = self.bitrate_kbps or default_bitrate(self.width, self.height)
        return spec


class SimulatorConfig(BaseModel):
    """The server: where it listens, how it asks for credentials, its cameras."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(0, ge=0, le=65535, description="RTSP port; 0 picks a free one")
    auth: Literal["digest", "basic"] = Field(
        "digest", description="how cameras with a username ask for it (most cameras: digest)"
    )
    cameras: list[CameraSpec] = Field(min_length=1, description="the cameras served")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        ids = [c.id for c in self.cameras]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"camera ids listed twice: {', '.join(twice)}")
        if self.auth == "digest":
            passwords: dict[str, str | None] = {}
            for c in self.cameras:
                known = passwords.setdefault(c.username, c.password) if c.username else None
                if known != c.password:
                    raise ValueError(
                        f"camera {c.id}: user {c.username} has another password on another "
                        "camera; digest auth keeps one password per user (use auth basic)"
                    )
        return self


def server_env(config: SimulatorConfig) -> dict[str, str]:
    """The server's environment: the cameras, and a PYTHONPATH with this repository only
    (the venv's packages are built for another Python and must not reach Debian's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env["PYTHONPATH"] = str(ROOT)
    env["SHOUWANG_SIM_CAMERAS"] = json.dumps({
        "host": config.host, "port": config.port, "auth": config.auth,
        "cameras": [c.server_spec() for c in config.cameras],
    })
    return env


def check_gst_python(python: Path = GST_PYTHON) -> None:
    """Raise SimulatorError naming the Debian packages to install if `python` cannot serve."""
    if not python.exists():
        raise SimulatorError(
            f"{python} not found: the camera simulator needs Debian's python3 with gi "
            "(apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0; scripts/system-deps.sh)"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [str(python), "-m", "simulators.rtsp_server", "--check"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    if result.returncode != 0:
        raise SimulatorError(result.stderr.strip() or f"{python}: check failed")


class CameraSimulator:
    """Runs the RTSP server as a subprocess and tells it which faults to show.

    Every method returns within milliseconds except start() and stop(). Ending the handle
    (stop(), or leaving the `with`) ends the process; so does the end of this process, since
    the server stops when its stdin closes.
    """

    def __init__(
        self,
        cameras: list[CameraSpec] | SimulatorConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: Literal["digest", "basic"] = "digest",
        log_path: Path | None = None,
        python: Path = GST_PYTHON,
    ) -> None:
        self.config = (
            cameras if isinstance(cameras, SimulatorConfig)
            else SimulatorConfig(host=host, port=port, auth=auth, cameras=cameras)
        )
        self.log_path = log_path
        self.python = python
        self.port = 0
        self.cameras: dict[str, dict[str, Any]] = {}  # as the server reported them at start
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._buffer = b""
        self._next_id = 0
        self._lock = threading.Lock()

    # --- life ----------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Self:
        """Start the server and wait until it listens (a few seconds: scenes are drawn first)."""
        if self.proc is not None:
            raise SimulatorError("already started")
        if not self.python.exists():
            check_gst_python(self.python)
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "simulators.rtsp_server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            cwd=ROOT, env=server_env(self.config),
        )
        try:
            message = self._read(time.monotonic() + timeout)
        except SimulatorError as err:
            self.stop()
            raise SimulatorError(
                f"camera simulator did not start: {err}{self._log_tail()}"
            ) from err
        if message.get("event") != "ready":
            self.stop()
            raise SimulatorError(
                f"camera simulator did not start: {message.get('error', message)}{self._log_tail()}"
            )
        self.port = int(message["port"])
        self.cameras = message["cameras"]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End the server: close its stdin (it stops by itself), else terminate, else kill."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- what a client needs -------------------------------------------------------------------

    def url(self, camera: str, *, credentials: bool = True, password: str | None = None) -> str:
        """The camera's RTSP URL; with its username and password in it unless told not to
        (`password=` puts another one in, to be refused)."""
        spec = self._spec(camera)
        login = ""
        if credentials and spec.username is not None:
            secret = spec.password if password is None else password
            login = f"{quote(spec.username, safe='')}:{quote(secret or '', safe='')}@"
        return f"rtsp://{login}{self.config.host}:{self.port}/{camera}"

    def _spec(self, camera: str) -> CameraSpec:
        for spec in self.config.cameras:
            if spec.id == camera:
                return spec
        raise SimulatorError(f"no camera {camera!r}")

    # --- control -------------------------------------------------------------------------------

    def fault(self, camera: str, fault: Fault, for_s: float | None = None) -> dict[str, Any]:
        """Show `fault` on `camera` ('*': all of them) until restored, or for `for_s` seconds.
        Returns the server's reply: `{"cameras": {id: {"faults": [...]}}}`."""
        request: dict[str, Any] = {"cmd": "fault", "camera": camera, "fault": fault}
        if for_s is not None:
            request["for_s"] = for_s
        return self.request(request)

    def restore(self, camera: str, fault: Fault | None = None) -> dict[str, Any]:
        """Undo one fault, or every fault of `camera` ('*': of all cameras)."""
        request: dict[str, Any] = {"cmd": "restore", "camera": camera}
        if fault is not None:
            request["fault"] = fault
        return self.request(request)

    def status(self) -> dict[str, Any]:
        """Per camera: kind, size, fps, faults, frames sent, whether watched, clients, url."""
        return self.request({"cmd": "status"})["cameras"]

    def frames_sent(self, camera: str) -> int:
        return int(self.status()[camera]["frames"])

    def request(self, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send one command; return its reply; raise SimulatorError if it was refused."""
        with self._lock:
            if self.proc is None or self.proc.stdin is None:
                raise SimulatorError("camera simulator is not running")
            self._next_id += 1
            request = {**request, "id": self._next_id}
            try:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                self.proc.stdin.flush()
            except OSError as err:
                raise SimulatorError(f"camera simulator is gone: {err}{self._log_tail()}") from err
            deadline = time.monotonic() + timeout
            while True:
                reply = self._read(deadline)
                if reply.get("id") == self._next_id:
                    break
        if not reply.get("ok"):
            raise SimulatorError(f"camera simulator refused {request}: {reply.get('error')}")
        return reply

    def _read(self, deadline: float) -> dict[str, Any]:
        """The next JSON line from the server's stdout."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SimulatorError("no answer in time")
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.proc.wait()
                if code == EXIT_MISSING:
                    raise SimulatorError("GStreamer parts are missing (below)")
                raise SimulatorError(f"the server exited with code {code}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n" + self.log_path.read_text(errors="replace")[-3000:]


# --- clips -------------------------------------------------------------------------------


def make_clip(
    directory: Path,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 25,
    seconds: float = 10.0,
    seed: int = 0,
    bitrate_kbps: int | None = None,
    gop_s: float = 1.0,
    python: Path = GST_PYTHON,
) -> Path:
    """A real H.264 MP4 of a synthetic scene, made once and kept in `directory` by its
    parameters (a 10 s 720p clip takes about 3 s of CPU, 1080p about 7 s)."""
    bitrate_kbps = bitrate_kbps or default_bitrate(width, height)
    name = (
        f"scene-{width}x{height}-{fps}fps-{seconds:g}s-seed{seed}-{bitrate_kbps}k-gop{gop_s:g}.mp4"
    )
    path = directory / name
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{name}.{os.getpid()}.partial"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [str(python), "-m", "simulators.clips", str(partial), f"--width={width}",
         f"--height={height}", f"--fps={fps}", f"--seconds={seconds}", f"--seed={seed}",
         f"--bitrate-kbps={bitrate_kbps}", f"--gop-s={gop_s}"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise SimulatorError(f"making clip {name} failed: {result.stderr.strip()[-2000:]}")
    partial.replace(path)  # atomic: a cached clip is always whole
    return path


# --- command line: `shouwang sim camera` ----------------------------------------------------

# `--camera` keys and the CameraSpec fields they set (size and clip set width and height).
_SPEC_KEYS = {
    "file": "file", "size": "", "fps": "fps", "bitrate": "bitrate_kbps", "gop": "gop_s",
    "seed": "seed", "user": "username", "password": "password", "clip": "", "noise": "noise",
    "walk_every": "walk_every_s", "walk": "walk_s",
}


def parse_camera(text: str, clip_dir: Path) -> CameraSpec:
    """`ID[,key=value...]`, keys: size=WxH, fps, bitrate (kbit/s), gop (s), seed, noise, user,
    password, walk_every, walk (s) for a scene; file=PATH, or clip=WxH (a synthetic clip made
    once into --clip-dir), for a file camera."""
    camera_id, *pairs = text.split(",")
    fields: dict[str, Any] = {"id": camera_id}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in _SPEC_KEYS:
            raise SimulatorError(
                f"--camera {text}: cannot read {pair!r}; keys: {', '.join(_SPEC_KEYS)}"
            )
        if key in ("size", "clip"):
            try:
                width, height = (int(v) for v in value.lower().split("x"))
            except ValueError as err:
                raise SimulatorError(f"--camera {text}: {key} must be WIDTHxHEIGHT") from err
            fields.update(width=width, height=height)
            if key == "clip":
                fields["kind"] = "file"
                fields["clip"] = True
        else:
            fields[_SPEC_KEYS[key]] = value
        if key == "file":
            fields["kind"] = "file"
    if fields.pop("clip", False):
        fps = int(float(fields.get("fps", 25)))
        fields["file"] = make_clip(clip_dir, width=fields.pop("width"),
                                   height=fields.pop("height"), fps=fps,
                                   seed=int(fields.get("seed", 0)))
    try:
        return CameraSpec.model_validate(fields)
    except ValidationError as err:
        from shouwang.config import describe

        raise SimulatorError(f"--camera {text}: {describe(err)}") from err


def cli(args: argparse.Namespace) -> int:
    """Serve simulated RTSP cameras in the foreground under Debian's python3 (this process
    becomes the server). Type commands on stdin: `cover cam-1`, `stall cam-1 30` (for 30 s),
    `restore cam-1`, `status`, `quit`; or one JSON object a line (docs/video.md)."""
    from shouwang.config import describe, load_yaml

    try:
        cameras = [parse_camera(c, args.clip_dir) for c in args.camera]
        if args.config is not None:
            config = load_yaml(args.config, SimulatorConfig)  # ConfigError: reported by main
            cameras = config.cameras + cameras
        elif not cameras:
            raise SimulatorError("name at least one --camera ID[,key=value...] or a --config")
        else:
            config = SimulatorConfig(cameras=cameras)
        config = SimulatorConfig(
            host=args.host, port=args.port, auth=args.auth or config.auth, cameras=cameras
        )
        check_gst_python(GST_PYTHON)
    except ValidationError as err:
        print(f"shouwang sim camera: {describe(err)}", file=sys.stderr)
        return 2
    except SimulatorError as err:
        print(f"shouwang sim camera: {err}", file=sys.stderr)
        return 2
    env = server_env(config)  # before chdir: file paths are resolved from here
    for spec in config.cameras:
        what = (f"file {spec.file}" if spec.kind == "file"
                else f"scene {spec.width}x{spec.height}@{spec.fps:g}")
        login = f", user {spec.username}" if spec.username else ""
        print(f"camera {spec.id}: {what}{login}", file=sys.stderr)
    print("commands: FAULT CAMERA [SECONDS] (faults: " + ", ".join(FAULTS) + "), "
          "restore CAMERA [FAULT], status, quit", file=sys.stderr, flush=True)
    python = str(GST_PYTHON)
    os.chdir(ROOT)
    os.execve(python, [python, "-m", "simulators.rtsp_server"], env)


def add_parser(sim: Any) -> None:
    """`shouwang sim camera`: wired into shouwang/cli.py beside `sim button`."""
    p = sim.add_parser(
        "camera", help="serve simulated RTSP cameras with faults on command",
        description=cli.__doc__,
    )
    p.add_argument("--camera", action="append", default=[], metavar="ID[,key=value...]",
                   help=parse_camera.__doc__)
    p.add_argument("--config", type=Path, default=None,
                   help="YAML: {host, port, auth, cameras: [{id, kind, file, width, ...}]}")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8554, help="RTSP port (0: a free one)")
    p.add_argument("--auth", choices=["digest", "basic"], default=None,
                   help="how a camera with a user asks for the password (default digest)")
    p.add_argument("--clip-dir", type=Path, default=Path("var/camera-clips"),
                   help="where clip=WxH cameras keep their clips")
    p.set_defaults(fn=cli)
