"""The open-alert book: ids from the message alone, repeats, and the cloud's word on each alert."""

from __future__ import annotations

from edge.rules.book import CloudWord
from shouwang.records import Event
from tests.unit.rules_helpers import Bench

from .test_rules import ELDER

BTN = ("btn-1", "emergency_button", "r-1")
KEY = "resident:r-1|sos"


def press(b: Bench, msg_id: str, ts: int | None = None) -> list[str]:
    event = Event(msg_id, "btn-1", b.clock.now_ms() if ts is None else ts, "press", {})
    out = b.engine.observe_event(event)
    b.alerts += out.alerts
    return [a.id for a in out.alerts]


def word(alert_id: str, state: str, version: int, **more: object) -> CloudWord:
    return CloudWord(id=alert_id, dedup_key=KEY, state=state, version=version, **more)  # type: ignore[arg-type]


def test_the_same_press_processed_later_by_a_new_engine_gives_the_same_alert_id() -> None:
    # The edge stored the alert, then died before saving its rule state; the broker sends the
    # press again and a fresh engine, a minute later, must make the very same alert.
    b = Bench([BTN], [ELDER])
    sent_at = b.clock.now_ms()
    [first] = press(b, "press-1", sent_at)
    b.clock.advance(60_000)
    b.engine = b.make()
    [again] = press(b, "press-1", sent_at)
    assert again == first


def test_a_second_press_is_a_repeat_of_the_open_alert_counted_once() -> None:
    b = Bench([BTN], [ELDER])
    [alert_id] = press(b, "p1")
    b.clock.advance(5_000)
    [repeat_id] = press(b, "p2")
    [repeat] = b.repeats("sos")
    assert repeat.id == repeat_id != alert_id
    assert (repeat.detail["supersedes"], repeat.detail["repeats"]) == (alert_id, 1)
    assert press(b, "p2") == []  # the same repeat redelivered: folded in already
    assert b.engine.book.open[KEY].repeats == 1


def test_a_press_after_the_cloud_resolved_the_alert_is_a_new_alert_at_once() -> None:
    b = Bench([BTN], [ELDER])
    [first] = press(b, "p1")
    b.clock.advance(8_000)  # well inside the 60 s debounce
    assert b.engine.book.follow(word(first, "open", 1), adopt=True) == "open"
    assert b.engine.book.follow(word(first, "resolved", 2), adopt=True) == "resolved"
    [second] = press(b, "p2")
    assert second != first
    assert [a.id for a in b.of("sos")] == [first, second]


def test_a_press_long_after_an_acknowledged_alert_still_reaches_that_case() -> None:
    # A worker acknowledged the SOS and is on the way; ten minutes later the elder presses
    # again: the press goes to the case the worker has, not to a new alert nobody owns.
    b = Bench([BTN], [ELDER])
    [first] = press(b, "p1")
    b.engine.book.follow(word(first, "acknowledged", 2), adopt=True)
    b.clock.advance(600_000)
    [repeat] = press(b, "p2")
    assert b.repeats("sos")[0].detail["supersedes"] == first
    assert repeat != first
    assert len(b.of("sos")) == 1


def test_without_the_clouds_word_the_debounce_window_still_starts_a_new_alert() -> None:
    b = Bench([BTN], [ELDER])
    press(b, "p1")
    b.clock.advance(61_000)
    press(b, "p2")
    assert len(b.of("sos")) == 2


def test_old_news_and_news_of_other_alerts_change_nothing() -> None:
    b = Bench([BTN], [ELDER])
    [first] = press(b, "p1")
    book = b.engine.book
    assert book.follow(word(first, "acknowledged", 3), adopt=True) == "acknowledged"
    assert book.follow(word(first, "open", 1), adopt=True) is None  # a replay of version 1
    assert book.follow(word("01OTHERALERT0000000000000", "resolved", 9), adopt=True) is None
    assert book.open[KEY].cloud_state == "acknowledged"


def test_an_active_alert_the_book_does_not_hold_is_adopted_and_the_next_press_folds_in() -> None:
    # The cloud made a repeat of a closed alert into a new alert: the book learns its id.
    b = Bench([BTN], [ELDER])
    adopted = "01KDVDNA00ZZZZZZZZZZZZZZZZ"
    w = word(adopted, "open", 1, type="sos", subject="resident:r-1", severity="critical",
             device="btn-1", ts=b.clock.now_ms())
    assert b.engine.book.follow(w, adopt=True) == "adopted"
    press(b, "p9")
    assert b.of("sos") == []
    assert b.repeats("sos")[0].detail["supersedes"] == adopted


def test_a_fall_alert_says_when_the_person_fell_and_when_it_was_raised() -> None:
    b = Bench([("w-1", "wearable", "r-1")], [ELDER])
    fell_at = b.clock.now_ms()
    b.event("w-1", "fall")
    b.advance(45)
    [fall] = b.of("fall")
    assert fall.ts == fell_at
    assert fall.raised_ms == fell_at + 30_000
