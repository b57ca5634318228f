"""Enrolment: reference photos → descriptors, refused with the reason when a photo will not do.

`shouwang face enroll [--data-dir DIR] --list LIST --person ID --consent REF PHOTO...` (and
`face list`, `face remove`). A watchlist is only as good as its reference photos, so each photo
must show exactly one face, big, sharp and frontal enough (the camera's quality gates, with a
larger least size); a photo that is not an image, or is huge, is refused before it is decoded
in full. All photos are checked before anything is written: one bad photo, nothing enrolled.
The photos themselves are not kept, only their SHA-256 and descriptors (in the encrypted
store, edge/video/face/store.py), with who entered them, when, on which list and until when.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson

from edge.video.detectors.retinaface import RetinaFace, RetinaFaceConfig
from edge.video.face.embedder import FaceEmbedder
from edge.video.face.quality import QualityConfig, judge
from edge.video.face.store import WatchlistError, WatchlistStore

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # about 8000×5000: a larger photo is not a reference photo, or an attack
EXIT_REFUSED = 2
# Reference photos are held to more than camera frames: they decide every later match.
ENROL_QUALITY = QualityConfig(min_eye_distance_px=40, min_sharpness=60, max_yaw=0.6,
                              min_confidence=0.95)


class PhotoRefused(Exception):
    """A photo cannot be enrolled; the message names the photo and the reason."""


class Enroller:
    def __init__(self, models_dir: Path | None = None) -> None:
        self.detector = RetinaFace(RetinaFaceConfig(models_dir=models_dir, score_threshold=0.6))
        self.embedder = FaceEmbedder(models_dir=models_dir)

    def describe(self, path: Path) -> tuple[str, np.ndarray]:
        """(the photo's SHA-256, its face's unit descriptor), or PhotoRefused with why."""
        try:
            size = path.stat().st_size
        except OSError as err:
            raise PhotoRefused(f"{path}: cannot read: {err.strerror}") from None
        if size > MAX_BYTES:
            raise PhotoRefused(f"{path}: {size} bytes, more than {MAX_BYTES} (a huge image)")
        return self.describe_bytes(str(path), path.read_bytes())

    def describe_bytes(self, name: str, data: bytes) -> tuple[str, np.ndarray]:
        """`describe` for a photo already in memory (the cloud API's); `name` heads the
        reason of a refusal."""
        if len(data) > MAX_BYTES:
            raise PhotoRefused(f"{name}: {len(data)} bytes, more than {MAX_BYTES} (a huge image)")
        path = name
        image = _decode(path, data)
        faces = self.detector.detect(image)
        if len(faces) == 0:
            raise PhotoRefused(f"{path}: no face found")
        if len(faces) > 1:
            raise PhotoRefused(
                f"{path}: {len(faces)} faces; a reference photo must show one person only"
            )
        assert faces.landmarks is not None
        chip = self.embedder.align(image, faces.landmarks[0])
        reason, _ = judge(ENROL_QUALITY, float(faces.confidence[0]), faces.landmarks[0], chip)
        if reason is not None:
            raise PhotoRefused(f"{path}: the face is {_REASON_TEXT[reason]}")
        return hashlib.sha256(data).hexdigest(), self.embedder.embed([chip])[0]


_REASON_TEXT = {
    "size": f"too small (eyes less than {ENROL_QUALITY.min_eye_distance_px:.0f} px apart)",
    "blur": "blurred",
    "pose": "turned or tilted away from the camera",
    "confidence": "not clearly a face",
}


def _decode(path: str, data: bytes) -> np.ndarray:
    header = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if header is None:
        raise PhotoRefused(f"{path}: not an image (JPEG, PNG, BMP, WebP or TIFF expected)")
    if header.shape[0] * header.shape[1] * 64 > MAX_PIXELS:
        raise PhotoRefused(
            f"{path}: about {header.shape[1] * 8}×{header.shape[0] * 8} pixels, more than "
            f"{MAX_PIXELS:,} (a huge image)"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise PhotoRefused(f"{path}: not an image that decodes")
    return image


# --- the command line ----------------------------------------------------------------------------

def add_parser(sub: Any) -> None:
    face = sub.add_parser("face", help="the gate face watchlist on this gateway").add_subparsers(
        dest="sub", required=True
    )

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, default=Path("var/edge"),
                       help="the gateway's data directory (default var/edge)")
        p.add_argument("--key-file", type=Path, default=None,
                       help="the watchlist key (default DATA_DIR/face/watchlist.key)")

    en = face.add_parser("enroll", help="enrol a person's reference photos on a watchlist")
    common(en)
    en.add_argument("--list", required=True, help="the watchlist (missing_elder, police, ...)")
    en.add_argument("--person", required=True, help="the person's id (never a name)")
    en.add_argument("--consent", default=None,
                    help="reference of the signed consent form (required)")
    en.add_argument("--by", default=None, help="who enters it (default: the login name)")
    en.add_argument("photos", nargs="+", type=Path, help="reference photos, one face each")
    en.set_defaults(fn=cmd_enroll)
    ls = face.add_parser("list", help="the enrolments (no descriptors), one JSON line each")
    common(ls)
    ls.set_defaults(fn=cmd_list)
    rm = face.add_parser("remove", help="remove a person from a watchlist (or from all)")
    common(rm)
    rm.add_argument("--person", required=True, help="the person's id")
    rm.add_argument("--list", default=None, help="only from this list")
    rm.add_argument("--by", default=None, help="who removes it (default: the login name)")
    rm.set_defaults(fn=cmd_remove)


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _refuse(message: str) -> int:
    print(f"shouwang face: {message}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_enroll(args: argparse.Namespace) -> int:
    if not args.consent or not args.consent.strip():
        return _refuse("refused: enrolment needs --consent REF, the reference of the person's "
                       "signed consent form (人脸识别技术应用安全管理办法: separate consent)")
    store = WatchlistStore(args.data_dir, args.key_file)
    try:
        lists = store.lists()
    except WatchlistError as err:
        return _refuse(str(err))
    if args.list not in lists:
        return _refuse(f"refused: no list {args.list!r} (lists: {', '.join(sorted(lists))})")
    enroller = Enroller()
    hashes, descriptors = [], []
    for path in args.photos:
        try:
            digest, descriptor = enroller.describe(path)
        except PhotoRefused as err:
            return _refuse(f"refused, nothing enrolled: {err}")
        hashes.append(digest)
        descriptors.append(descriptor)
    try:
        enrolment = store.enrol(person=args.person, list_name=args.list, consent=args.consent,
                                entered_by=_who(args.by), photos=hashes,
                                embeddings=np.stack(descriptors),
                                model=enroller.embedder.model)
    except WatchlistError as err:
        return _refuse(str(err))
    sys.stdout.buffer.write(orjson.dumps(enrolment.public(), option=orjson.OPT_APPEND_NEWLINE))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        enrolments = WatchlistStore(args.data_dir, args.key_file).load()
    except WatchlistError as err:
        return _refuse(str(err))
    for e in enrolments:
        sys.stdout.buffer.write(orjson.dumps(e.public(), option=orjson.OPT_APPEND_NEWLINE))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    try:
        gone = WatchlistStore(args.data_dir, args.key_file).remove(
            person=args.person, list_name=args.list, by=_who(args.by)
        )
    except WatchlistError as err:
        return _refuse(str(err))
    if not gone:
        where = f"list {args.list}" if args.list else "any list"
        return _refuse(f"{args.person} is not enrolled on {where}")
    for e in gone:
        sys.stdout.buffer.write(orjson.dumps({"removed": e.id, "person": e.person,
                                              "list": e.list}, option=orjson.OPT_APPEND_NEWLINE))
    return 0
