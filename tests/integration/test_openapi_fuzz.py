"""Issue 14, defect 5: the API keeps its OpenAPI document under generated requests.

A bounded Schemathesis run against `/api/openapi.json` of a running cloud: for every operation
EXAMPLES requests that fit the document and EXAMPLES that break it, derandomized (the same
requests every run), as an admin with a bearer token. Every check Schemathesis has applies: no
5xx, only documented status codes and content types, responses that match their schemas,
valid requests accepted and invalid ones refused. Two are left out, each for a reason given
below. Run it wider with SHOUWANG_FUZZ_EXAMPLES=500.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from cloud.openapi import DOCUMENT
from shouwang.protocol import make_envelope
from tests.conftest import api_config, running_cloud
from tests.integration.people import Client, add_alert, add_people

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("SHOUWANG_FUZZ_EXAMPLES", "15"))
# The run sends the admin's bearer token with every request, so the probe of `ignored_auth`
# (does the operation answer without credentials?) cannot take it away; that every route but
# the public ones answers 401 without a session is test_api.py's job.
EXCLUDED = [ignored_auth]
# A push subscription's endpoint must be on the configured push services' hosts
# (`notify.webpush.endpoint_hosts`), which the document cannot list: a made-up https URL that
# fits the schema is refused with a 400 that names the host.
NOT_EVERY_VALID_BODY = {"POST /api/push/subscriptions"}


def _cursor_fits_order(case: Any) -> bool:
    """A cursor is valid only in the order it came from (`u..` for urgency), which the
    document says in words and a pattern cannot: valid requests keep the two together."""
    query = case.query or {}
    if "cursor" not in query:
        return True
    return str(query["cursor"]).startswith("u") == (query.get("order") == "urgency")


VALID_ONLY_IF = {"GET /api/alerts": _cursor_fits_order}


def _fuzz(base: str, token: str, known: list[tuple[str, str, dict[str, str]]]) -> dict[str, str]:
    """Schemathesis is synchronous: this runs in a thread while the cloud serves the loop.
    `known`: (method, path, path parameters) of requests that must be made as well, whatever
    the generator draws, so every stored kind of alert is checked against its schema."""
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    auth = {"Authorization": f"Bearer {token}"}
    failures: dict[str, str] = {}
    for method, path, params in known:
        case = schema[path][method].Case(path_parameters=params)
        try:
            case.call_and_validate(base_url=base, excluded_checks=EXCLUDED, headers=auth)
        except (Exception, BaseExceptionGroup) as err:
            failures[f"{method} {path} {params}"] = str(err)[:2000]
    for result in schema.get_all_operations():
        operation = result.ok()
        excluded = EXCLUDED + (
            [positive_data_acceptance] if operation.label in NOT_EVERY_VALID_BODY else []
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            cases = operation.as_strategy(generation_mode=mode)
            if mode == GenerationMode.POSITIVE and operation.label in VALID_ONLY_IF:
                cases = cases.filter(VALID_ONLY_IF[operation.label])
            try:
                _run(cases, base, token, excluded)
            except Unsatisfiable:  # nothing to break: an operation without any parameter
                continue
            except (Exception, BaseExceptionGroup) as err:
                failures[f"{operation.label} ({mode.value})"] = str(err)[:2000]
    return failures


def _run(cases: Any, base: str, token: str, excluded: list[Any]) -> None:
    @hypothesis.given(case=cases)
    @hypothesis.settings(
        max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base, excluded_checks=excluded,
                               headers={"Authorization": f"Bearer {token}"})

    run()


async def test_the_api_answers_as_its_openapi_document_says(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite"  # the API is the same on both stores
    keys = {"key_file": str(tmp_path / "watchlist.key"),
            "signing_key_file": str(tmp_path / "watchlist-signing.pem")}
    async with running_cloud(api_config(url, watchlists=keys)) as cloud, \
            aiohttp.ClientSession() as http:
        await add_people(cloud)
        assert cloud.store is not None
        acked = await add_alert(cloud)
        await add_alert(cloud, type="fall", severity="high", detail={"why": {"rule": "r"}})
        # A gateway's own alert: no resident, no place, no source event.
        gateway = await cloud.store.insert_alert(make_envelope(
            site="s-1", device="gw-1", kind="alert", ts=1_795_000_000_000, body={
                "type": "device_offline", "severity": "low", "subject": "device:gw-1",
                "dedup_key": "device:gw-1|device_offline", "life_safety": False,
                "detail": {"reason": "no heartbeat"}}))
        admin = await Client.login(http, cloud, "admin")
        assert (await admin.post(f"/api/alerts/{acked['id']}/ack", {"note": "on it"})).status == 200
        token = admin.headers["Authorization"].removeprefix("Bearer ")
        assert gateway is not None
        known = [("GET", "/api/alerts", {})] + [
            ("GET", "/api/alerts/{id}", {"id": a["id"]}) for a in (acked, gateway)]
        failures = await asyncio.to_thread(_fuzz, admin.base, token, known)
    assert not failures, "\n\n".join(f"== {op}\n{text}" for op, text in failures.items())


async def test_a_body_over_the_limit_is_the_documented_json_413(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite"
    async with running_cloud(api_config(url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud)
        admin = await Client.login(http, cloud, "admin")
        reply = await admin.post(f"/api/alerts/{alert['id']}/ack", {"note": "x" * 70_000})
        assert (reply.status, reply.body) == (413, {"error": "request entity too large"})
        assert "413" in DOCUMENT["paths"]["/api/alerts/{id}/ack"]["post"]["responses"]
