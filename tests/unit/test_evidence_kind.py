"""An evidence envelope says what its file is (`kind`): one of the known kinds or nothing
(gateways from before it); anything else is refused at ingest, naming the field."""

from __future__ import annotations

import pytest

from cloud.evidence import KINDS, check_evidence_body

BODY = {"sha256": "a" * 64, "size": 10, "content_type": "image/jpeg", "alert": None,
        "captured_ts": 1_795_000_000_000}


@pytest.mark.parametrize("kind", [None, *KINDS])
def test_a_known_kind_or_none_is_taken(kind: str | None) -> None:
    assert check_evidence_body({**BODY, "kind": kind}) is None
    assert check_evidence_body(BODY) is None


@pytest.mark.parametrize("kind", ["overlay", "", 3, ["marked"]])
def test_any_other_kind_is_refused_by_name(kind: object) -> None:
    assert check_evidence_body({**BODY, "kind": kind}) == (
        f"body.kind must be one of {', '.join(KINDS)}, or absent")
