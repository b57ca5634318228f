"""The camera simulator's RTSP server: several cameras on one port, faults on command.

Runs under Debian's /usr/bin/python3, which has gi and GStreamer's RTSP server (the venv's
Python has neither); `shouwang sim camera` and `simulators.camera.CameraSimulator` start it.
Cameras come as JSON in the environment variable SHOUWANG_SIM_CAMERAS (passwords stay out of
`ps`); the control channel is stdin, one command a line, and every reply is one JSON line on
stdout (docs/video.md). End of stdin stops the server, so it never outlives its parent.

    SHOUWANG_SIM_CAMERAS='{"cameras": [{"id": "cam-1", "kind": "scene", "width": 1280,
    "height": 720, "fps": 25, "bitrate_kbps": 1800}]}' /usr/bin/python3 -m simulators.rtsp_server
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any
from urllib.parse import quote

# Which Debian package brings what this process needs, for an error that says what to install.
PACKAGES = {
    "gi": "python3-gi",
    "numpy": "python3-numpy",
    "GstRtspServer": "gir1.2-gst-rtsp-server-1.0",
    "GstRtsp": "gir1.2-gst-plugins-base-1.0",
    "appsrc": "gstreamer1.0-plugins-base",
    "videoscale": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "parsebin": "gstreamer1.0-plugins-base",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "videobalance": "gstreamer1.0-plugins-good",
    "videoflip": "gstreamer1.0-plugins-good",
    "qtdemux": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "avdec_h264": "gstreamer1.0-libav",
}
EXIT_MISSING = 3  # what is missing is named on stderr


def missing() -> list[str]:
    """What this Python lacks to serve cameras, as 'what (Debian package)'; empty if nothing."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        return [f"numpy ({PACKAGES['numpy']})"]
    try:
        import gi
    except ImportError:
        return [f"gi ({PACKAGES['gi']})"]
    lacking = []
    for namespace in ("Gst", "GstRtsp", "GstRtspServer"):
        try:
            gi.require_version(namespace, "1.0")
        except ValueError:
            package = PACKAGES.get(namespace, "gir1.2-gstreamer-1.0")
            lacking.append(f"{namespace} typelib ({package})")
    if lacking:
        return lacking
    from gi.repository import Gst

    Gst.init(None)
    return [
        f"GStreamer element {name} ({package})"
        for name, package in PACKAGES.items()
        if name[0].islower() and name not in ("gi", "numpy")
        and Gst.ElementFactory.find(name) is None
    ]


if __name__ == "__main__" and (_lacking := missing()):
    packages = sorted({item.rsplit("(", 1)[1].rstrip(")") for item in _lacking})
    print(
        f"camera simulator: {sys.executable} lacks {', '.join(_lacking)}; "
        f"install with: apt-get install -y {' '.join(packages)}",
        file=sys.stderr,
    )
    sys.exit(EXIT_MISSING)
if __name__ == "__main__" and sys.argv[1:] == ["--check"]:
    sys.exit(0)

import gi  # noqa: E402

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

from simulators.camera_feed import FAULTS, Camera, FeedError  # noqa: E402

log = logging.getLogger("camera-sim")

# SPS and PPS go in-band before every IDR (h264parse), so that a client may join at any
# keyframe. Not rtph264pay's config-interval: with it, FFmpeg loses the first slice of every
# frame of a multi-slice stream (GStreamer 1.22, FFmpeg 8; seen here).
# The queue is bounded (4 s of frames; the oldest go): between a client's DESCRIBE and its PLAY
# nothing is consumed, and a client that never plays must not make the server grow.
MEDIA = (
    "( appsrc name=src is-live=true format=time do-timestamp=true min-latency=0 "
    "max-buffers=100 leaky-type=downstream "
    'caps="video/x-h264,stream-format=byte-stream,alignment=au" '
    "! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
)
ANONYMOUS = "anonymous"


class CommandError(Exception):
    """A control command that cannot be carried out; its text goes back to the sender."""


class SimServer:
    """The RTSP server, its cameras, who watches which, and the commands that fault them."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.host: str = config.get("host", "127.0.0.1")
        self.auth_method: str = config.get("auth", "digest")
        self.cameras: dict[str, Camera] = {}
        self.credentials: dict[str, tuple[str, str]] = {}  # camera → (user, password)
        self.roles: dict[tuple[str, str], str] = {}  # (user, password) → role
        self.refusing: set[str] = set()
        self.factories: dict[str, GstRtspServer.RTSPMediaFactory] = {}
        self.watchers: dict[GstRtspServer.RTSPClient, set[str]] = {}
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(self.host)
        self.server.set_service(str(config.get("port", 0)))
        self.auth = GstRtspServer.RTSPAuth()
        method = (
            GstRtsp.RTSPAuthMethod.BASIC if self.auth_method == "basic"
            else GstRtsp.RTSPAuthMethod.DIGEST
        )
        self.auth.set_supported_methods(method)
        anonymous = GstRtspServer.RTSPToken()
        anonymous.set_string("media.factory.role", ANONYMOUS)
        self.auth.set_default_token(anonymous)
        self.server.set_auth(self.auth)
        mounts = self.server.get_mount_points()
        for spec in config["cameras"]:
            try:
                camera = Camera(spec)
            except FeedError as err:
                raise FeedError(f"camera {spec.get('id')}: {err}") from err
            if camera.id in self.cameras:
                raise FeedError(f"camera {camera.id} is listed twice")
            self.cameras[camera.id] = camera
            if spec.get("username"):
                self._add_user(camera.id, spec["username"], spec.get("password") or "")
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(MEDIA)
            factory.set_shared(True)
            factory.connect("media-configure", self._on_media, camera)
            self.factories[camera.id] = factory
            mounts.add_factory(f"/{camera.id}", factory)
        for camera_id in self.cameras:  # once every role is known
            self._permit(camera_id)
        self.server.connect("client-connected", self._on_client)
        self.port = 0

    # --- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        if self.server.attach(None) == 0:
            raise OSError(f"cannot listen on {self.host}:{self.server.get_service()}")
        self.port = self.server.get_bound_port()
        for camera in self.cameras.values():
            camera.start()

    def stop(self) -> None:
        for camera in self.cameras.values():
            camera.stop()
        for client in list(self.watchers):
            client.close()

    def url(self, camera_id: str) -> str:
        return f"rtsp://{self.host}:{self.port}/{camera_id}"

    # --- credentials -------------------------------------------------------------------------

    def _role(self, camera_id: str) -> str:
        if camera_id not in self.credentials:
            return ANONYMOUS
        return self.roles[self.credentials[camera_id]]

    def _add_user(self, camera_id: str, user: str, password: str) -> None:
        """Cameras that share a user and password (admin/admin on every camera of a site)
        share a role: the server maps each credential to one token."""
        if self.auth_method == "digest":
            for (known, other), _ in self.roles.items():
                if known == user and other != password:
                    raise ValueError(
                        f"camera {camera_id}: user {user} has another password on another "
                        "camera; digest auth keeps one password per user (use auth basic)"
                    )
        self.credentials[camera_id] = (user, password)
        if (user, password) in self.roles:
            return
        role = self.roles[(user, password)] = f"user-{len(self.roles) + 1}"
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", role)
        if self.auth_method == "basic":
            self.auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        else:
            self.auth.add_digest(user, password, token)

    def _permit(self, camera_id: str) -> None:
        """Who may open this camera: its own user, or anyone if it has none, unless refusing.

        Every role may *access* every camera and only the camera's own role may *construct*
        its media, because GstRtspServer answers a role without access 404 and one without
        construct 401, and a camera answers a wrong password (or another camera's) with 401.
        """
        permissions = GstRtspServer.RTSPPermissions()
        own = self._role(camera_id)
        for role in {ANONYMOUS, *self.roles.values()}:
            construct = "true" if role == own and camera_id not in self.refusing else "false"
            permissions.add_role_from_structure(Gst.Structure.new_from_string(
                f"{role}, media.factory.access=(boolean)true, "
                f"media.factory.construct=(boolean){construct}"
            ))
        self.factories[camera_id].set_permissions(permissions)

    def _refuse(self, camera_id: str, on: bool) -> None:
        """As a camera whose password was changed: 401 to every request, whatever it carries."""
        if on:
            self.refusing.add(camera_id)
        else:
            self.refusing.discard(camera_id)
        self._permit(camera_id)

    # --- clients -----------------------------------------------------------------------------

    def _on_client(self, _server: Any, client: GstRtspServer.RTSPClient) -> None:
        self.watchers[client] = set()
        for signal in ("describe-request", "setup-request", "play-request"):
            client.connect(signal, self._on_request)
        client.connect("closed", self._on_closed)

    def _on_request(self, client: GstRtspServer.RTSPClient, ctx: Any) -> None:
        path = ctx.uri.abspath if ctx.uri is not None else ""
        camera_id = path.strip("/").split("/", 1)[0]
        if camera_id in self.cameras:
            self.watchers.setdefault(client, set()).add(camera_id)

    def _on_closed(self, client: GstRtspServer.RTSPClient) -> None:
        self.watchers.pop(client, None)

    def _on_media(
        self, _factory: Any, media: GstRtspServer.RTSPMedia, camera: Camera
    ) -> None:
        src = media.get_element().get_child_by_name("src")
        camera.attach(src)
        media.connect("unprepared", lambda _media: camera.detach(src))

    def _drop(self, camera_id: str) -> int:
        """Close the connection of every client of this camera, as a camera that reboots."""
        dropped = [c for c, ids in self.watchers.items() if camera_id in ids]
        for client in dropped:
            client.close()
        return len(dropped)

    # --- commands ----------------------------------------------------------------------------

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one control command; the reply says what was done."""
        cmd = request.get("cmd")
        if cmd == "status":
            return {"port": self.port, "cameras": {
                cid: {**cam.status(), "url": self.url(cid), "refusing": cid in self.refusing,
                      "clients": sum(cid in ids for ids in self.watchers.values())}
                for cid, cam in self.cameras.items()
            }}
        if cmd not in ("fault", "restore"):
            raise CommandError(f"unknown command {cmd!r}: fault, restore, status or quit")
        targets = self._targets(request.get("camera"))
        fault = request.get("fault")
        if cmd == "fault":
            if fault not in FAULTS:
                raise CommandError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
            seconds = request.get("for_s")
            if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
                raise CommandError(f"for_s must be a positive number of seconds, not {seconds!r}")
            done = {cid: self._fault(cid, fault, seconds) for cid in targets}
        else:
            if fault is not None and fault not in FAULTS:
                raise CommandError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
            done = {cid: self._restore(cid, fault) for cid in targets}
        return {"cameras": done}

    def _targets(self, camera: Any) -> list[str]:
        if camera == "*":
            return list(self.cameras)
        if camera not in self.cameras:
            raise CommandError(
                f"unknown camera {camera!r}: one of {', '.join(self.cameras)} or '*'"
            )
        return [camera]

    def _fault(self, camera_id: str, fault: str, seconds: float | None) -> dict[str, Any]:
        camera = self.cameras[camera_id]
        log.info("camera %s: %s%s", camera_id, fault, f" for {seconds} s" if seconds else "")
        if fault == "drop":
            return {"dropped": self._drop(camera_id)}
        if fault == "refuse":
            self._refuse(camera_id, True)
            # The sessions it had go too, so that a client learns of it when it reconnects.
            self._drop(camera_id)
        else:
            camera.set_fault(fault, True)
        if seconds:
            camera.restore_after(fault, seconds, lambda: self._restore(camera_id, fault))
        return self._state(camera_id)

    def _restore(self, camera_id: str, fault: str | None) -> dict[str, Any]:
        camera = self.cameras[camera_id]
        camera.cancel_restore(fault)
        active = set(camera.faults) | ({"refuse"} if camera_id in self.refusing else set())
        faults = [fault] if fault else sorted(active)
        log.info("camera %s: restore %s", camera_id, ", ".join(faults) or "(nothing)")
        for name in faults:
            if name == "refuse":
                self._refuse(camera_id, False)
            elif name != "drop":
                camera.set_fault(name, False)
        return self._state(camera_id)

    def _state(self, camera_id: str) -> dict[str, Any]:
        faults = set(self.cameras[camera_id].faults)
        if camera_id in self.refusing:
            faults.add("refuse")
        return {"faults": sorted(faults)}


TEXT_HELP = (
    "commands: FAULT CAMERA [SECONDS] (faults: " + ", ".join(FAULTS) + "), "
    "restore CAMERA [FAULT], status, quit; CAMERA may be '*'; or one JSON object a line"
)


def parse_line(line: str) -> dict[str, Any]:
    """A JSON object, or the short form typed at a terminal: `cover cam-1 5`, `restore cam-1`."""
    if line.startswith("{"):
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError as err:
            raise CommandError(f"not JSON: {err}") from err
        if not isinstance(parsed, dict):
            raise CommandError("a command is a JSON object")
        return parsed
    words = line.split()
    request: dict[str, Any]
    if words[0] in ("status", "quit", "help"):
        return {"cmd": words[0]}
    if words[0] == "restore" and len(words) in (2, 3):
        request = {"cmd": "restore", "camera": words[1]}
        if len(words) == 3:
            request["fault"] = words[2]
        return request
    if words[0] in FAULTS and len(words) in (2, 3):
        request = {"cmd": "fault", "fault": words[0], "camera": words[1]}
        if len(words) == 3:
            try:
                request["for_s"] = float(words[2])
            except ValueError as err:
                raise CommandError(f"not a number of seconds: {words[2]!r}") from err
        return request
    raise CommandError(f"cannot read {line!r}; {TEXT_HELP}")


class Control:
    """Reads commands from stdin on the GLib loop; writes one JSON reply per command."""

    def __init__(self, server: SimServer, loop: GLib.MainLoop) -> None:
        self.server, self.loop = server, loop
        self._buffer = b""
        GLib.io_add_watch(
            sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR,
            self._readable,
        )

    def _readable(self, fd: int, _condition: Any) -> bool:
        chunk = os.read(fd, 65536)
        if not chunk:
            log.info("stdin closed: stopping")
            self.loop.quit()
            return False
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._handle(line)
        return True

    def _handle(self, line: str) -> None:
        request: dict[str, Any] = {}
        try:
            request = parse_line(line)
            if request.get("cmd") == "quit":
                reply: dict[str, Any] = {"ok": True}
                self.loop.quit()
            elif request.get("cmd") == "help":
                reply = {"ok": True, "help": TEXT_HELP}
            else:
                reply = {"ok": True, **self.server.command(request)}
        except CommandError as err:
            log.warning("refused command: %s", err)
            reply = {"ok": False, "error": str(err)}
        except Exception as err:  # a bug here must not leave the sender waiting, nor stop us
            log.exception("command %r failed", line)
            reply = {"ok": False, "error": f"internal error: {err!r}"}
        if "id" in request:
            reply["id"] = request["id"]
        emit(reply)


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("SHOUWANG_LOG_LEVEL", "INFO"), stream=sys.stderr,
        format="%(asctime)s camera-sim %(levelname)s %(message)s",
    )
    Gst.init(None)
    raw = os.environ.get("SHOUWANG_SIM_CAMERAS")
    if not raw:
        print("camera simulator: set SHOUWANG_SIM_CAMERAS to the cameras as JSON", file=sys.stderr)
        return 2
    try:
        server = SimServer(json.loads(raw))
        server.start()
    except (FeedError, OSError, KeyError, ValueError) as err:
        print(f"camera simulator: {err}", file=sys.stderr)
        emit({"event": "failed", "error": str(err)})
        return 1
    loop = GLib.MainLoop()
    for signum in (2, 15):  # SIGINT, SIGTERM
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, lambda: loop.quit() or False)
    Control(server, loop)
    cameras = {}
    for cid, cam in server.cameras.items():
        cameras[cid] = {**cam.status(), "url": server.url(cid)}
        user = server.credentials.get(cid, ("", ""))[0]
        login = f"{quote(user, safe='')}:***@" if user else ""
        log.info("camera %s: rtsp://%s%s:%s/%s (%s %dx%d@%g)", cid, login, server.host,
                 server.port, cid, cam.kind, cam.width, cam.height, cam.fps)
    emit({"event": "ready", "port": server.port, "cameras": cameras})
    try:
        loop.run()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
