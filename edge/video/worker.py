"""One camera's worker process: RTSP in, events out to the gateway's broker like any device.

`python -m edge.video.worker --config site.yaml --camera cam-gate-01` (the edge daemon starts
and supervises it: edge/video/supervisor.py). It connects over TCP with back-off and jitter,
decodes every frame, keeps a ring of packets for clips, analyses `detect.fps` frames a second
(edge/video/analysis.py) and publishes what it sees as the device `{camera}`:

`dev/{camera}/status` (retained, its last will says offline), `dev/{camera}/telemetry` every
`telemetry_s` (a minute by default: fps, analysed fps, resolution, bit rate, undecodable
packets) and `dev/{camera}/event`:
`stream_lost` after `stall_timeout_s` without a frame, `stream_restored`, `gap` (every gap in
frames of `gap_min_s` or more, when it ends: the ledger that tells "no video" from "no
detections"), `auth_failed` (once, not a retry loop), `tamper` / `tamper_cleared` (cause:
occluded, defocused, moved), `watchlist_hit` (analytics: [face]: a face track matched a person
on one of the gateway's watchlists, edge/video/face/) and `evidence` (a clip, snapshot or face
crop of an event is kept). The table of events and fields is in docs/video.md.

Each goes through the edge's pipeline, rules, outbox and uplink like any device's message.
Evidence files are written to `{data_dir}/video/{camera}/` under their SHA-256; the daemon
takes them into its evidence spool when the `evidence` message arrives.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.video.analysis import VIDEO_TO_FULL, Analyzer, is_full_range
from edge.video.config import CameraConfig
from edge.video.events import CameraEvent
from edge.video.face.pipeline import EVENT as FACE_MATCH
from edge.video.face.pipeline import FaceMatch, WatchlistSource
from edge.video.face.store import WatchlistStore
from edge.video.frames import polygon_mask
from edge.video.recorder import ClipJob, PacketRing, keep, snapshot, write_clip
from edge.video.stream import (
    FrameClock,
    Opened,
    StreamAuthError,
    StreamError,
    StreamUnsupported,
    open_stream,
)
from edge.video.throw.calibration import Facade
from edge.video.throw.detector import ThrowDetector, wire_fields
from edge.video.throw.evidence import launch_area, mark
from shouwang import logs
from shouwang.backoff import Backoff
from shouwang.config import BrokerConfig, ConfigError, validate
from shouwang.protocol import device_topic, make_envelope

log = logging.getLogger(__name__)
FIRST_REPORT_S = 3.0
EVIDENCE_EVENTS = frozenset({"tamper", "thrown_object", "watchlist_hit"})
MAX_BAD_PACKETS = 250  # packets in a row that will not decode: the stream is garbage, reconnect
EXIT_CONFIG = 2  # a configuration error: restarting will not help


class Publisher:
    """The worker's MQTT connection to the gateway's broker (paho's own network thread)."""

    def __init__(self, broker: BrokerConfig, camera: str) -> None:
        self.camera = camera
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"camera-worker-{camera}",
            protocol=paho.MQTTv311, clean_session=True,
        )
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password())
        if broker.tls is not None:
            self.client.tls_set(
                ca_certs=str(broker.tls.ca_file) if broker.tls.ca_file else None,
                certfile=str(broker.tls.cert_file) if broker.tls.cert_file else None,
                keyfile=str(broker.tls.key_file) if broker.tls.key_file else None,
            )
        offline = make_envelope(site=None, device=camera, kind="status",
                                body={"state": "offline"}).to_bytes()
        self.client.will_set(device_topic(camera, "status"), offline, qos=1, retain=True)
        self.client.reconnect_delay_set(1, broker.reconnect_max_s)
        self.client.on_connect = self._connected
        self.client.connect_async(broker.host, broker.port, broker.keepalive_s)
        self.client.loop_start()

    def _connected(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            self.send("status", {"state": "online"}, retain=True)

    def send(self, kind: str, body: dict[str, Any], *, retain: bool = False,
             ts: int | None = None) -> None:
        """Queue a message (QoS 1); paho sends it, and again after a reconnect."""
        env = make_envelope(site=None, device=self.camera, kind=kind, body=body, ts=ts)
        self.client.publish(device_topic(self.camera, kind), env.to_bytes(), qos=1, retain=retain)

    def close(self) -> None:
        self.send("status", {"state": "offline"}, retain=True)
        time.sleep(0.2)  # let paho write it; a clean disconnect does not fire the will
        self.client.disconnect()
        self.client.loop_stop()


class CameraWorker:
    def __init__(
        self, camera: CameraConfig, out: Callable[..., None], evidence_dir: Path,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
        watchlist: WatchlistSource | None = None,
    ) -> None:
        self.camera = camera
        self.send = out
        self.evidence_dir = evidence_dir
        self.clock = clock
        self.sleep = sleep
        self.stopping = threading.Event()
        self.analyzer = Analyzer(camera, watchlist)
        if self.analyzer.face is not None:
            self.analyzer.face.warm_up()  # the first face must not be the slow one
        self.ring = PacketRing(camera.record.pre_s)
        self.clips: list[ClipJob] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip")
        self.io_timeout_s = max(1.0, min(camera.stall_timeout_s / 2, 5.0))
        self.lost = False  # stream_lost was sent and frames have not come back
        self.auth_failed = False
        self.unsupported = False  # the last try found a stream this camera may not have
        self.last_frame_ms: int | None = None
        self.gap_start_ms: int | None = None
        self.started_ms = int(clock() * 1000)
        self.frame_clock = FrameClock()  # frames timed as the camera took them
        self.counts = {"frames": 0, "bytes": 0, "bad_packets": 0, "corrupt_frames": 0,
                       "reconnects": 0, "errors": 0}
        self._report_at = clock() + FIRST_REPORT_S  # soon: the gateway learns it streams
        self._window = {"frames": 0, "analysed": 0, "bytes": 0, "since": clock()}
        self._template: Any = None
        # The last frame's stream time (t_ms, as events carry it) and its own timestamp
        # (seconds, as its packets carry it): a marked clip's frames are timed by the latter.
        self._frame_ms: tuple[int, float | None] = (0, None)

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        r = self.camera.reconnect
        retry = Backoff(r.first_s, max(r.first_s, r.max_s))
        refused = Backoff(r.first_s, max(r.first_s, r.auth_max_s))  # a locked account: slower
        while not self.stopping.is_set():
            try:
                opened = open_stream(self.camera, timeout_s=self.io_timeout_s)
            except StreamAuthError as err:
                self._on_auth_failure(err)
                self._wait(refused.next())
                continue
            except StreamError as err:
                self._on_error(err)
                self._wait(retry.next())
                continue
            had_frames = self._stream(opened)
            self.counts["reconnects"] += 1
            if had_frames:  # it worked: start the back-off over
                retry.reset()
                refused.reset()
            self._wait(retry.next())
        self._writer.shutdown(wait=True)

    def stop(self) -> None:
        self.stopping.set()

    def _wait(self, seconds: float) -> None:
        """Sleep between tries, in short steps: a stall must be told on time meanwhile."""
        end = self.clock() + seconds
        while not self.stopping.is_set() and (left := end - self.clock()) > 0:
            self.sleep(min(left, 0.25))
            self._tick()

    def _stream(self, opened: Opened) -> bool:
        """Read one connection until it ends; whether any frame came."""
        self.ring.clear()
        self.frame_clock.restart()
        self._template = opened.stream
        got = False
        bad_in_a_row = 0
        try:
            for packet in opened.container.demux(opened.stream):
                if self.stopping.is_set():
                    break
                if packet.dts is None and packet.pts is None:
                    continue  # the demuxer's end-of-stream marker
                now_ms = int(self.clock() * 1000)
                self.ring.add(packet, now_ms)
                self._feed_clips(packet, now_ms)
                self.counts["bytes"] += packet.size
                self._window["bytes"] += packet.size
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    bad_in_a_row += 1
                    self.counts["bad_packets"] += 1
                    if bad_in_a_row >= MAX_BAD_PACKETS:
                        log.warning("camera %s: %d packets in a row do not decode; "
                                    "reconnecting", self.camera.id, bad_in_a_row)
                        break
                    continue
                bad_in_a_row = 0
                self.unsupported = False
                for frame in frames:
                    if frame.is_corrupt:
                        if not self.counts["corrupt_frames"]:
                            log.warning("camera %s: frames decode with errors (corrupt H.264); "
                                        "counted in dropped_frames", self.camera.id)
                        self.counts["corrupt_frames"] += 1
                    got = True
                    self._frame(frame, int(self.clock() * 1000))
                self._tick()
        except av.error.TimeoutError:
            log.info("camera %s: no data for %.0f s; reconnecting", self.camera.id,
                     self.io_timeout_s)
        except (av.error.FFmpegError, OSError) as err:
            self._on_error(StreamError(f"camera {self.camera.id}: stream ended: "
                                       f"{self.camera.redact(str(err))}"))
        finally:
            # Clips still recording end with this connection: the next one's packets belong
            # to another stream (a reconnect may even change its parameters).
            for job in self.clips:
                self._writer.submit(self._write_clip, job, self._template)
            self.clips = []
            # Closed on the clip thread, after the clips queued there: they read the stream's
            # parameters (its template), which closing the container frees.
            self._writer.submit(opened.container.close)
        return got

    # --- per frame --------------------------------------------------------------------------

    def _frame(self, frame: Any, now_ms: int) -> None:
        self.counts["frames"] += 1
        self._window["frames"] += 1
        if self.last_frame_ms is not None and now_ms - self.last_frame_ms >= \
                self.camera.gap_min_s * 1000 and self.gap_start_ms is None:
            self.gap_start_ms = self.last_frame_ms  # a gap seen only now (one long read)
        if self.gap_start_ms is not None:
            self.send("event", {"event": "gap", "start_ms": self.gap_start_ms, "end_ms": now_ms})
            self.gap_start_ms = None
        if self.lost or self.auth_failed:
            log.info("camera %s: frames again", self.camera.id)
            self.send("event", {"event": "stream_restored"})
            self.lost = self.auth_failed = False
        self.last_frame_ms = now_ms
        # The stream's clock, monotonic over reconnects: the camera's spacing of frames even
        # when they are decoded in a burst (physics needs it), anchored to the gateway's clock.
        t_ms = self.frame_clock.at(frame.time, now_ms) - self.started_ms
        self._frame_ms = (t_ms, frame.time)
        if not self.analyzer.due(t_ms):
            return
        try:
            result = self.analyzer.analyse(frame, t_ms)
        except ValueError as err:
            self.counts["errors"] += 1
            log.warning("camera %s: frame not analysed: %s", self.camera.id, err)
            return
        if result.detected:
            self._window["analysed"] += 1
        if self.analyzer.throw is not None:
            for job in self.clips:
                if isinstance(job.draw, _ClipMarks):
                    job.draw.follow(self.analyzer.throw)
        for event in result.events:
            if event.type != FACE_MATCH:  # sent as watchlist_hit, with its crops, below
                self._event(event, frame, now_ms)
        for match in result.faces:
            self._watchlist_hit(match, frame, now_ms)

    def _watchlist_hit(self, match: FaceMatch, frame: Any, now_ms: int) -> None:
        """A face track matched a watchlist: the `watchlist_hit` event (ids and score only),
        then the track's best crops, a snapshot and a clip as its evidence."""
        fields = match.event.fields
        self._event(CameraEvent("watchlist_hit", match.event.t_ms, {
            "person": fields["person"], "watchlist": fields["list"],
            "confidence": fields["score"], "track": fields["track"],
        }), frame, now_ms)
        for crop in match.crops:
            try:
                digest = keep(self.evidence_dir, crop, ".jpg")
            except OSError as err:
                log.error("camera %s: face crop not kept: %s", self.camera.id, err)
                continue
            self.send("event", {"event": "evidence", "alert": "watchlist_hit", "crop": digest},
                      ts=now_ms)

    def _event(self, event: CameraEvent, frame: Any, now_ms: int) -> None:
        fields = dict(event.fields)
        if event.type == "thrown_object":
            fields = wire_fields(fields)
        log.info("camera %s: %s %s", self.camera.id, event.type, fields)
        self.send("event", {"event": event.type, **fields}, ts=now_ms)
        if event.type in EVIDENCE_EVENTS:
            throw = dict(event.fields) if event.type == "thrown_object" else None
            seen = None
            if throw is not None and self.analyzer.throw is not None:
                seen = self.analyzer.throw.frame_at(event.t_ms)  # the first sighting's
            self._evidence(event.type, frame, now_ms, throw, seen, event.ref)

    def _evidence(self, alert: str, frame: Any, now_ms: int,
                  throw: dict[str, Any] | None = None,
                  seen: tuple[Any, tuple[int, int]] | None = None,
                  ref: int | None = None) -> None:
        """A masked snapshot now; a clip of pre_s before and post_s after, when it is over.
        A thrown object's marked snapshot and launch area (from `seen`, the façade's grey
        crop of the frame of its first sighting, when still kept) are drawn on the clip
        thread, and its clip is marked frame by frame: with its track as the detector follows
        the object after the alarm (`ref`, its track id), until the clip is written."""
        bgr = frame.to_ndarray(format="bgr24")  # a copy: the decoder's buffer moves on
        try:
            jpeg = snapshot(bgr, self.camera.privacy_masks)
            digest = keep(self.evidence_dir, jpeg, ".jpg")
            self.send("event", {"event": "evidence", "alert": alert, "snapshot": digest},
                      ts=now_ms)
        except (ValueError, OSError) as err:
            log.error("camera %s: snapshot not kept: %s", self.camera.id, err)
        job = ClipJob(alert, now_ms, now_ms + int(self.camera.record.post_s * 1000),
                      self.ring.packets())
        if throw is not None:
            facade = self.analyzer.throw.facade if self.analyzer.throw else None
            launch = None
            if seen is not None:
                crop, origin = seen
                launch = (crop, origin, is_full_range(frame))
            else:
                log.info("camera %s: the first sighting of a thrown object is no longer kept "
                         "(throw.launch_ring_s); its launch area is cut from the alarm frame",
                         self.camera.id)
            self._writer.submit(self._throw_pictures, bgr, throw, facade, now_ms, launch)
            t_ms, t_s = self._frame_ms
            # A clip frame's stream time from its own timestamp: this frame's offset (without
            # timestamps to tell the frames' times, the track as known when it is written).
            job.draw = _ClipMarks(throw, facade, ref,
                                  None if t_s is None else t_ms - t_s * 1000)
        self.clips.append(job)

    def _throw_pictures(self, bgr: Any, fields: dict[str, Any], facade: Facade | None,
                        now_ms: int, seen: tuple[Any, tuple[int, int], bool] | None) -> None:
        """The snapshot with the track and candidate windows drawn, and the launch area
        enlarged (edge/video/throw/evidence.py), masked like every stored picture. The
        launch area is cut from `seen` (grey crop, its origin, whether full range) when the
        frame of the first sighting was still kept, else from the alarm frame."""
        h, w = bgr.shape[:2]
        hidden = polygon_mask(self.camera.privacy_masks, w, h, (w, h), grow=1)
        if hidden is not None:
            bgr[hidden > 0] = 0  # masked before drawing: the crop of the launch area too
        pictures: list[tuple[str, Callable[[], Any]]] = [
            ("marked", lambda: mark(bgr, fields, facade))]
        if seen is not None:
            crop, origin, full = seen  # masked already: the detector's own crop
            grey = crop if full else cv2.LUT(crop, VIDEO_TO_FULL)
            pictures.append(("launch", lambda: launch_area(
                cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), fields, facade, origin)))
        else:
            pictures.append(("launch", lambda: launch_area(bgr, fields, facade)))
        for kind, draw in pictures:
            try:
                digest = keep(self.evidence_dir, snapshot(draw()), ".jpg")
            except (ValueError, OSError, cv2.error) as err:
                log.error("camera %s: %s picture of a thrown object not kept: %s",
                          self.camera.id, kind, err)
                continue
            self.send("event", {"event": "evidence", "alert": "thrown_object", kind: digest},
                      ts=now_ms)

    def _feed_clips(self, packet: Any, now_ms: int) -> None:
        for job in list(self.clips):
            if now_ms <= job.until_ms:
                job.packets.append(packet)
            else:
                self.clips.remove(job)
                self._writer.submit(self._write_clip, job, self._template)

    def _write_clip(self, job: ClipJob, template: Any) -> None:
        path = self.evidence_dir / f"clip-{job.started_ms}.mp4"
        try:
            self.evidence_dir.mkdir(parents=True, exist_ok=True)
            write_clip(path, template, job.packets, self.camera.privacy_masks)
            digest = keep(self.evidence_dir, path.read_bytes(), ".mp4")
            path.unlink()
        except (ValueError, OSError, av.error.FFmpegError) as err:
            log.error("camera %s: clip of %s not kept: %s", self.camera.id, job.name, err)
            return
        self.send("event", {"event": "evidence", "alert": job.name, "clip": digest},
                  ts=job.started_ms)
        if job.draw is not None:
            self._write_marked_clip(job, template)

    def _write_marked_clip(self, job: ClipJob, template: Any) -> None:
        """The same clip decoded, the track drawn on every frame and encoded again (libx264,
        ultrafast): CPU for the clip's length, on this thread, after the remuxed clip is
        safe (docs/video.md has the cost)."""
        path = self.evidence_dir / f"clip-{job.started_ms}-marked.mp4"
        try:
            write_clip(path, template, job.packets, self.camera.privacy_masks, job.draw)
            digest = keep(self.evidence_dir, path.read_bytes(), ".mp4")
            path.unlink()
        except (ValueError, OSError, av.error.FFmpegError, cv2.error) as err:
            log.error("camera %s: marked clip of %s not kept: %s", self.camera.id, job.name,
                      err)
            return
        self.send("event", {"event": "evidence", "alert": job.name, "marked_clip": digest},
                  ts=job.started_ms)

    # --- between frames -----------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.clock()
        now_ms = int(now * 1000)
        since = self.last_frame_ms if self.last_frame_ms is not None else self.started_ms
        silent_ms = now_ms - since
        if silent_ms >= self.camera.gap_min_s * 1000 and self.gap_start_ms is None:
            self.gap_start_ms = since
        if not self.lost and silent_ms >= self.camera.stall_timeout_s * 1000:
            self.lost = True
            reason = (
                "auth_failed" if self.auth_failed
                else "unsupported" if self.unsupported else "no_frames"
            )
            log.warning("camera %s: stream lost (no frame for %.0f s)", self.camera.id,
                        silent_ms / 1000)
            self.send("event", {"event": "stream_lost", "since_ms": since, "reason": reason})
        if now >= self._report_at:
            self._report(now)

    def _report(self, now: float) -> None:
        window = self._window
        seconds = max(now - window["since"], 1e-3)
        size = self.analyzer.size
        body: dict[str, Any] = {
            "online": not self.lost and self.last_frame_ms is not None,
            "fps": round(window["frames"] / seconds, 2),
            "analysed_fps": round(window["analysed"] / seconds, 2),
            "bitrate": round(window["bytes"] * 8 / 1000 / seconds),
            "dropped_frames": self.counts["bad_packets"] + self.counts["corrupt_frames"],
        }
        if size is not None:
            body["resolution"] = f"{size[0]}x{size[1]}"
        face = self.analyzer.face
        if face is not None:  # counts only: nothing of a face that matched no one leaves
            body["faces"] = face.counts.faces
            body["faces_matched"] = face.counts.matched
            body["faces_unmatched"] = face.counts.unmatched
            for reason, n in face.counts.skipped.items():
                body[f"faces_skipped_{reason}"] = n
        self.send("telemetry", body)
        self._window = {"frames": 0, "analysed": 0, "bytes": 0, "since": now}
        self._report_at = now + self.camera.telemetry_s

    def _on_auth_failure(self, err: StreamError) -> None:
        if not self.auth_failed:
            self.auth_failed = True
            log.error("%s", err)
            self.send("event", {"event": "auth_failed"})
        self._tick()

    def _on_error(self, err: StreamError) -> None:
        self.counts["errors"] += 1
        unsupported = isinstance(err, StreamUnsupported)
        if unsupported and not self.unsupported:
            log.error("%s", err)  # once: it needs a person, not a log line per retry
        elif not unsupported:
            log.warning("%s", err)
        self.unsupported = unsupported
        self._tick()


class _ClipMarks:
    """What a thrown object's marked clip draws on its frames: the event's candidate windows
    and its track as far as the object had been seen by each frame's time. The alarm goes out
    while the object still falls; until the clip is written, the frame thread replaces the
    track with the detector's whole fall so far (`follow`), so the clip's later frames show
    the track going down with the object, not stopping where the alarm was raised."""

    def __init__(self, fields: dict[str, Any], facade: Facade | None, ref: int | None,
                 offset_ms: float | None) -> None:
        self.fields = fields
        self.facade = facade
        self.ref = ref  # the detector's track id (the event's `ref`)
        self.offset_ms = offset_ms  # a frame's own timestamp to the event's clock
        # Replaced whole, never changed in place: the clip thread may be drawing from it.
        self.track: list[list[float]] = list(fields.get("track") or [])

    def follow(self, detector: ThrowDetector) -> None:
        """Take the detector's track of the object so far (frame thread); once the detector
        has forgotten it (3 s after it ended), the last one stays."""
        whole = None if self.ref is None else detector.fall(self.ref)
        if whole is not None:
            self.track = [[t, round(x, 1), round(y, 1)] for t, x, y in whole]

    def __call__(self, image: Any, t_s: float | None) -> Any:
        """A clip's frame (`t_s`: its own timestamp, seconds) marked (clip thread)."""
        until = None if self.offset_ms is None or t_s is None else t_s * 1000 + self.offset_ms
        return mark(image, {**self.fields, "track": self.track}, self.facade, until_ms=until)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One camera's worker (run by the edge daemon)")
    parser.add_argument("--spec", type=Path, required=True,
                        help="the worker's spec, written by the edge daemon (supervisor.py)")
    parser.add_argument("--log-file", type=Path, default=None, help="rotated JSON log")
    args = parser.parse_args(argv)
    logs.setup("edge.video", file=args.log_file)
    _die_with_parent()
    # One camera, one thread, like its decoder: OpenCV's thread pool only spins beside it on
    # pictures this small (0.3 % of a core per camera, bench/video.py), and many cameras share
    # the two cores anyway.
    cv2.setNumThreads(1)
    try:
        spec = orjson.loads(args.spec.read_bytes())
        camera = validate(spec["camera"], CameraConfig, source=f"{args.spec}: camera")
        broker = validate(spec["broker"], BrokerConfig, source=f"{args.spec}: broker")
        evidence_dir = Path(spec["evidence_dir"])
        data_dir = Path(spec["data_dir"])
        camera.source_url()  # a missing password file is a configuration error: say so now
        broker.password()
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as err:
        log.error("camera worker: unreadable spec %s: %s", args.spec, err)
        return EXIT_CONFIG
    except ConfigError as err:
        log.error("camera worker: configuration error: %s", err)
        return EXIT_CONFIG
    publisher = Publisher(broker, camera.id)
    watchlist = None
    if "face" in camera.analytics:
        # A missing key is logged once and the camera keeps running (tamper, gaps, clips).
        watchlist = WatchlistSource(WatchlistStore(data_dir), camera.face.reload_s,
                                    camera.face.embedder.model)
    worker = CameraWorker(camera, publisher.send, evidence_dir, watchlist=watchlist)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    try:
        worker.run()
    finally:
        publisher.close()
    return 0


def _die_with_parent() -> None:
    """Ask Linux to end this worker when the edge daemon that started it dies (even kill -9)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
