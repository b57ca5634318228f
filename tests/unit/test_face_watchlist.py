"""The gateway's watchlist: encrypted at rest, open-set matching, enrolment refusals (CLI)."""

from __future__ import annotations

import datetime as dt
import os
import re
import stat

import cv2
import numpy as np
import orjson
import pytest

from edge.video.face.store import DEFAULT_LISTS, Enrolment, WatchlistError, WatchlistStore
from edge.video.face.watchlist import Watchlist
from shouwang.cli import main
from tests import face_photos

MODEL = "mobilefacenet"


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def enrolment(person: str, list_name: str, vectors: list[np.ndarray]) -> Enrolment:
    return Enrolment(id=person, person=person, list=list_name, consent="c", entered_by="t",
                     entered_at="", until="", model=MODEL, photos=[],
                     embeddings=[v.tolist() for v in vectors])


# --- the store --------------------------------------------------------------------------------

def test_the_store_is_unreadable_without_its_key_and_the_key_is_0600(tmp_path):
    store = WatchlistStore(tmp_path)
    vector = unit(np.arange(1, 129, dtype=np.float32))
    store.enrol(person="p-17", list_name="missing_elder", consent="CF-2026-001",
                entered_by="grid-worker-3", photos=["ab" * 32], embeddings=vector[None], model=MODEL)
    key = tmp_path / "face" / "watchlist.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    sealed = (tmp_path / "face" / "watchlist.enc").read_bytes()
    # Neither the id, the consent reference nor any descriptor value is in the file in clear.
    for clear in (b"p-17", b"CF-2026-001", b"grid-worker", orjson.dumps(float(vector[0]))):
        assert clear not in sealed
    [back] = store.load()
    assert back.person == "p-17"
    assert back.consent == "CF-2026-001"
    assert back.entered_by == "grid-worker-3"
    assert back.until > back.entered_at
    assert np.allclose(back.embeddings[0], vector, atol=1e-6)
    key.unlink()
    with pytest.raises(WatchlistError, match=r"watchlist.key is missing"):
        store.load()


def test_a_wrong_key_or_a_readable_key_is_refused(tmp_path):
    store = WatchlistStore(tmp_path)
    store.enrol(person="p", list_name="police", consent="c", entered_by="t", photos=[],
                embeddings=np.ones((1, 128), np.float32), model=MODEL)
    key = tmp_path / "face" / "watchlist.key"
    os.chmod(key, 0o644)
    with pytest.raises(WatchlistError, match=r"may be read by others \(mode 644\)"):
        store.load()
    os.chmod(key, 0o600)
    key.write_bytes(os.urandom(32))
    with pytest.raises(WatchlistError, match=r"does not open with the key"):
        store.load()


def test_removal_is_audited_without_descriptors(tmp_path):
    store = WatchlistStore(tmp_path)
    for list_name in ("police", "missing_elder"):
        store.enrol(person="p", list_name=list_name, consent="c", entered_by="a", photos=[],
                    embeddings=np.ones((1, 128), np.float32), model=MODEL)
    gone = store.remove(person="p", list_name="police", by="officer-2")
    assert [e.list for e in gone] == ["police"]
    assert [e.list for e in store.load()] == ["missing_elder"]
    audit = [orjson.loads(line) for line in (tmp_path / "face" / "audit.jsonl").read_bytes()
             .splitlines()]
    assert [(a["action"], a["list"]) for a in audit] == [
        ("enrol", "police"), ("enrol", "missing_elder"), ("remove", "police")]
    assert audit[-1]["by"] == "officer-2"
    assert all("embeddings" not in a for a in audit)


# --- matching ---------------------------------------------------------------------------------

def test_open_set_a_face_between_two_people_matches_neither():
    rng = np.random.default_rng(1)
    a, b = unit(rng.normal(size=128)), unit(rng.normal(size=128))
    watchlist = Watchlist([enrolment("a", "police", [a]), enrolment("b", "police", [b])],
                          DEFAULT_LISTS, MODEL)
    match = watchlist.match(a)
    assert match is not None
    assert (match.person, match.list) == ("a", "police")
    assert match.score == pytest.approx(1.0)
    # Enrolled with another descriptor model: not comparable, never matched.
    other = Watchlist([enrolment("a", "police", [a])], DEFAULT_LISTS, "dlib_resnet_face")
    assert other.match(a) is None
    assert other.other_model == 1
    assert watchlist.match(unit(rng.normal(size=128))) is None  # a stranger
    # Twins: b enrolled again as c, nearly the same; a face of b matches neither b nor c.
    c = unit(b + 0.01 * rng.normal(size=128))
    twins = Watchlist([enrolment("b", "police", [b]), enrolment("c", "police", [c])],
                      DEFAULT_LISTS, MODEL)
    assert twins.match(b) is None


def test_each_list_has_its_own_threshold():
    rng = np.random.default_rng(2)
    a = unit(rng.normal(size=128))
    noise = unit(rng.normal(size=128))
    # A face between the two lists' thresholds.
    t = (DEFAULT_LISTS["missing_elder"].threshold + DEFAULT_LISTS["police"].threshold) / 2
    face = unit(t * a + np.sqrt(1 - t**2) * unit(noise - (noise @ a) * a))
    assert float(face @ a) == pytest.approx(t, abs=1e-4)
    assert Watchlist([enrolment("a", "police", [a])], DEFAULT_LISTS, MODEL).match(face) is None
    hit = Watchlist([enrolment("a", "missing_elder", [a])], DEFAULT_LISTS, MODEL).match(face)
    assert hit is not None
    assert hit.list == "missing_elder"


# --- the command line -----------------------------------------------------------------------------

def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_enrol_list_and_remove_from_the_command_line(tmp_path, capsys):
    data = str(tmp_path)
    code, out, err = run(capsys, "face", "enroll", "--data-dir", data, "--list", "police",
                         "--person", "P-0042", "--consent", "CF-7", "--by", "officer-9",
                         str(face_photos.photo("obama")), str(face_photos.photo("obama3")))
    assert code == 0, err
    record = orjson.loads(out)
    assert (record["person"], record["list"], record["consent"], record["entered_by"],
            record["photos"]) == ("P-0042", "police", "CF-7", "officer-9", 2)
    entered, until = (dt.datetime.fromisoformat(record[k]) for k in ("entered_at", "until"))
    assert until - entered == dt.timedelta(days=DEFAULT_LISTS["police"].retention_days)
    code, out, _ = run(capsys, "face", "list", "--data-dir", data)
    assert code == 0
    assert [orjson.loads(x)["person"] for x in out.splitlines()] == ["P-0042"]
    assert "embeddings" not in out
    code, out, _ = run(capsys, "face", "remove", "--data-dir", data, "--person", "P-0042")
    assert code == 0
    assert orjson.loads(out)["person"] == "P-0042"
    code, out, _ = run(capsys, "face", "list", "--data-dir", data)
    assert out == ""


@pytest.mark.parametrize(("photo", "reason"), [
    ("t1", r"6 faces; a reference photo must show one person only"),
    ("not-an-image", r"not an image"),
    ("blank", r"no face found"),
    ("tiny", r"the face is too small \(eyes less than 40 px apart\)"),
    ("blurred", r"the face is blurred"),
    ("huge", r"a huge image"),
])
def test_a_photo_that_will_not_do_is_refused_with_the_reason_and_nothing_is_enrolled(
    tmp_path, capsys, photo, reason
):
    path = tmp_path / f"{photo}.png"
    if photo == "t1":
        path = face_photos.photo("t1")
    elif photo == "not-an-image":
        path.write_text("this is a consent form, not a photo\n")
    elif photo == "blank":
        cv2.imwrite(str(path), np.full((400, 400, 3), 200, np.uint8))
    elif photo == "tiny":
        image = face_photos.image("obama")
        cv2.imwrite(str(path), cv2.resize(image, None, fx=0.12, fy=0.12,
                                          interpolation=cv2.INTER_AREA))
    elif photo == "blurred":
        cv2.imwrite(str(path), cv2.GaussianBlur(face_photos.image("obama"), (0, 0), 9))
    elif photo == "huge":
        cv2.imwrite(str(path), np.zeros((9000, 9000, 3), np.uint8))
    good = str(face_photos.photo("obama"))
    code, out, err = run(capsys, "face", "enroll", "--data-dir", str(tmp_path), "--list",
                         "police", "--person", "p", "--consent", "c", good, str(path))
    assert code == 2
    assert out == ""
    assert "refused, nothing enrolled" in err
    assert str(path) in err
    assert re.search(reason, err), err
    assert not (tmp_path / "face" / "watchlist.enc").exists()


def test_enrolment_without_consent_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, "face", "enroll", "--data-dir", str(tmp_path), "--list", "police",
                       "--person", "p", str(face_photos.photo("obama")))
    assert code == 2
    assert "needs --consent" in err
    code, _, err = run(capsys, "face", "enroll", "--data-dir", str(tmp_path), "--list", "nope",
                       "--person", "p", "--consent", "c", str(face_photos.photo("obama")))
    assert code == 2
    assert "no list 'nope' (lists: missing_elder, police)" in err
    assert not (tmp_path / "face").exists() or not any((tmp_path / "face").iterdir())


def test_a_worker_whose_key_goes_missing_logs_once_and_keeps_the_last_watchlist(tmp_path, caplog):
    from edge.video.face.pipeline import WatchlistSource

    store = WatchlistStore(tmp_path)
    rng = np.random.default_rng(3)
    a = unit(rng.normal(size=128))
    store.enrol(person="a", list_name="police", consent="c", entered_by="t", photos=[],
                embeddings=a[None], model=MODEL)
    now = [0.0]
    source = WatchlistSource(store, reload_s=5, clock=lambda: now[0])
    assert source.current().people == ["a"]
    (tmp_path / "face" / "watchlist.key").rename(tmp_path / "elsewhere.key")
    os.utime(tmp_path / "face" / "watchlist.enc", (1, 1))
    for _ in range(3):
        now[0] += 6
        assert source.current().people == ["a"]  # the last good list, not an empty one
    assert source.errors == 3
    errors = [r for r in caplog.records if "watchlist not loaded" in r.getMessage()]
    assert len(errors) == 1
    assert "watchlist.key is missing" in errors[0].getMessage()
    (tmp_path / "elsewhere.key").rename(tmp_path / "face" / "watchlist.key")
    now[0] += 6
    assert source.current().people == ["a"]
    assert source.errors == 3


def test_a_community_defines_its_own_lists_and_a_bad_lists_file_is_named(tmp_path, capsys):
    lists = tmp_path / "face" / "lists.yaml"
    lists.parent.mkdir()
    lists.write_text(
        "lists:\n"
        "  visitors_banned: {description: 小区禁入, threshold: 0.7, margin: 0.2, hits: 4,"
        " cooldown_s: 60, retention_days: 14}\n"
    )
    store = WatchlistStore(tmp_path)
    assert list(store.lists()) == ["visitors_banned"]
    code, _, err = run(capsys, "face", "enroll", "--data-dir", str(tmp_path), "--list", "police",
                       "--person", "p", "--consent", "c", str(face_photos.photo("obama")))
    assert code == 2
    assert "no list 'police' (lists: visitors_banned)" in err
    lists.write_text("lists:\n  x: {description: d, threshold: 2, margin: 0, hits: 1,"
                     " cooldown_s: 0, retention_days: 1}\n")
    with pytest.raises(WatchlistError, match=r"lists.yaml: lists.x.threshold"):
        store.lists()


def test_the_clouds_list_replaces_the_clouds_part_only_in_one_write(tmp_path):
    """`site/{site}/down/watchlist` (edge/video/face/downlink.py): the cloud's entries are
    replaced whole, a person enrolled on the gateway's command line stays, each change is
    audited by `cloud`, and the version held is sealed with them."""
    store = WatchlistStore(tmp_path)
    local = unit(np.arange(1, 129, dtype=np.float32))
    store.enrol(person="p-local", list_name="police", consent="CF-1", entered_by="officer-1",
                photos=[], embeddings=local[None], model=MODEL)
    assert store.cloud_version() == 0

    def cloud(person: str) -> Enrolment:
        e = enrolment(person, "missing_elder", [unit(np.arange(128, 0, -1, dtype=np.float32))])
        e.id, e.origin = f"id-{person}", "cloud"
        return e

    assert store.replace_cloud([cloud("r-1"), cloud("r-2")], 7) == (2, 0)
    assert store.replace_cloud([cloud("r-2")], 9) == (0, 1)
    held, version = store.load_all()
    assert version == 9
    assert sorted((e.person, e.origin) for e in held) == [("p-local", "local"), ("r-2", "cloud")]
    lines = [orjson.loads(line) for line in store.audit_path.read_bytes().splitlines()]
    assert [(x["action"], x["person"], x["by"]) for x in lines] == [
        ("enrol", "p-local", "officer-1"), ("enrol", "r-1", "cloud"), ("enrol", "r-2", "cloud"),
        ("remove", "r-1", "cloud")]
    # A local removal keeps the cloud's version; the cloud's part is untouched.
    store.remove(person="p-local", list_name=None, by="officer-1")
    assert store.load_all()[1] == 9
    assert [e.person for e in store.load()] == ["r-2"]
