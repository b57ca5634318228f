"""Evidence travels gateway → cloud over HTTP, verified by its hash, retried until it lands."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from cloud.config import CloudConfig
from cloud.evidence import EvidenceConfig as CloudEvidenceConfig
from cloud.evidence import hash_token
from edge.config import EdgeConfig
from edge.evidence import EvidenceConfig
from shouwang.config import HttpConfig
from shouwang.protocol import now_ms
from shouwang.services import Mosquitto, free_port
from tests.conftest import (
    BUTTON,
    cloud_config,
    edge_config,
    eventually,
    running_cloud,
    running_edge,
)

pytestmark = pytest.mark.integration
ROOT = str(Path(__file__).resolve().parents[2])  # this tree's code, however it is installed
SNAPSHOT = b"\xff\xd8\xff\xe0" + os.urandom(200_000) + b"\xff\xd9"  # JPEG markers around noise


def configs(
    edge_broker: Mosquitto, cloud_broker: Mosquitto, tmp_path: Path, http_port: int
) -> tuple[EdgeConfig, CloudConfig]:
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    token_file = tmp_path / "site.token"
    token_file.write_text("a-long-random-site-token\n")
    tokens = tmp_path / "site_tokens.yaml"
    tokens.write_text(yaml.safe_dump({econf.site: hash_token("a-long-random-site-token")}))
    econf = econf.model_copy(update={"evidence": EvidenceConfig(
        url=f"http://127.0.0.1:{http_port}", token_file=token_file)})  # type: ignore[arg-type]
    cconf = cloud_config(cloud_broker, tmp_path).model_copy(update={
        "http": HttpConfig(port=http_port),
        "evidence": CloudEvidenceConfig(dir=tmp_path / "blobs", site_tokens_file=tokens),
    })
    return econf, cconf


async def _evidence_of(cloud: Any, alert_id: str) -> list[dict[str, Any]]:
    return await cloud.evidence.for_alert(alert_id)  # type: ignore[no-any-return]


async def _bulk_empty(edge: Any) -> bool:
    return (await edge.outbox.depth()).get(4, 0) == 0


async def test_a_snapshot_reaches_the_cloud_intact_and_leaves_the_gateway(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf, cconf = configs(edge_broker, cloud_broker, tmp_path, free_port())
    async with running_cloud(cconf) as cloud, running_edge(econf) as edge:
        digest = await edge.evidence.add(
            SNAPSHOT, content_type="image/jpeg", device=BUTTON, ts=now_ms(),
            alert="01ALERTID0000000000000000", now_ms=now_ms(),
        )
        assert digest == hashlib.sha256(SNAPSHOT).hexdigest()
        [row] = await eventually(lambda: _evidence_of(cloud, "01ALERTID0000000000000000"))
        assert (row["sha256"], row["size"], row["device"]) == (digest, len(SNAPSHOT), BUTTON)
        assert cloud.evidence.path(digest).read_bytes() == SNAPSHOT
        await eventually(lambda: _bulk_empty(edge))
        await eventually(lambda: not edge.evidence.path(digest).exists())  # confirmed: let go


async def test_an_upload_waits_for_the_cloud_and_is_retried(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf, cconf = configs(edge_broker, cloud_broker, tmp_path, free_port())
    async with running_edge(econf) as edge:
        digest = await edge.evidence.add(
            SNAPSHOT, content_type="image/jpeg", device=BUTTON, ts=now_ms(), now_ms=now_ms()
        )
        assert edge.uploader is not None
        await eventually(lambda: edge.uploader.failures >= 2)  # nobody listens yet
        assert edge.evidence.path(digest).exists()
        assert not await _bulk_empty(edge)
        async with running_cloud(cconf) as cloud:
            await eventually(lambda: cloud.evidence.has(digest, len(SNAPSHOT)), timeout=30)
            await eventually(lambda: _bulk_empty(edge), timeout=30)


async def test_the_cloud_refuses_bytes_that_do_not_match_their_hash_or_token(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    cloud_broker = make_broker("cloud")
    port = free_port()
    _, cconf = configs(cloud_broker, cloud_broker, tmp_path, port)
    digest = hashlib.sha256(SNAPSHOT).hexdigest()
    url = f"http://127.0.0.1:{port}/ingest/evidence/{digest}"
    good = {"Authorization": "Bearer a-long-random-site-token", "Content-Type": "image/jpeg"}
    async with running_cloud(cconf) as cloud, aiohttp.ClientSession() as http:
        async with http.put(url, data=SNAPSHOT[:-1] + b"\x00", headers=good) as res:
            assert res.status == 422, await res.text()
        assert not cloud.evidence.has(digest, len(SNAPSHOT))
        bad_token = {**good, "Authorization": "Bearer guessed"}
        async with http.put(url, data=SNAPSHOT, headers=bad_token) as res:
            assert res.status == 401
        other_site = {**good, "X-Shouwang-Site": "someone-else"}
        async with http.put(url, data=SNAPSHOT, headers=other_site) as res:
            assert res.status == 403
        async with http.put(url, data=SNAPSHOT, headers=good) as res:
            assert res.status == 201
        async with http.put(url, data=SNAPSHOT, headers=good) as res:
            assert (res.status, (await res.json())["stored"]) == (200, False)  # idempotent
        assert cloud.evidence.path(digest).read_bytes() == SNAPSHOT
        assert [p.name for p in cloud.evidence.path(digest).parent.iterdir()] == [digest]


async def shouwang_cli(*argv: str) -> tuple[int, str]:
    """The operator's command, as its own process: the running cloud shares nothing with it
    but the files it writes."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shouwang", *argv, env={**os.environ, "PYTHONPATH": path},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def upload(http: aiohttp.ClientSession, port: int, site: str, token: str, n: int) -> int:
    blob = b"\xff\xd8\xff\xe0" + f"evidence {n}".encode() + os.urandom(1000) + b"\xff\xd9"
    url = f"http://127.0.0.1:{port}/ingest/evidence/{hashlib.sha256(blob).hexdigest()}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg",
               "X-Shouwang-Site": site}
    async with http.put(url, data=blob, headers=headers) as res:
        return res.status


async def test_a_rotated_or_revoked_site_token_takes_effect_without_restarting_the_cloud(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """A stolen gateway's token is refused at its next upload once the operator revokes it,
    and a rotated token works at once: the running cloud re-reads `site-tokens.yaml`."""
    cloud_broker = make_broker("cloud")
    port = free_port()
    _, cconf = configs(cloud_broker, cloud_broker, tmp_path, port)
    accounts = tmp_path / "cloud-broker"
    code, out = await shouwang_cli("cloud", "provision", "--site", "site-a", "--dir", str(accounts))
    assert code == 0, out
    cconf = cconf.model_copy(update={"evidence": CloudEvidenceConfig(
        dir=tmp_path / "blobs", site_tokens_file=accounts / "site-tokens.yaml")})
    token_of = {site: accounts / "sites" / site / "evidence.token" for site in ("site-a", "site-b")}
    old = token_of["site-a"].read_text().strip()
    async with running_cloud(cconf) as cloud, aiohttp.ClientSession() as http:
        assert await upload(http, port, "site-a", old, 1) == 201

        code, out = await shouwang_cli("cloud", "provision", "--site", "site-a", "--rotate",
                                       "--dir", str(accounts))
        assert code == 0, out
        new = token_of["site-a"].read_text().strip()
        assert new != old
        assert await upload(http, port, "site-a", old, 2) == 401
        assert await upload(http, port, "site-a", new, 2) == 201

        # A site provisioned while the cloud runs uploads at once.
        code, out = await shouwang_cli("cloud", "provision", "--site", "site-b",
                                       "--dir", str(accounts))
        assert code == 0, out
        b_token = token_of["site-b"].read_text().strip()
        assert await upload(http, port, "site-b", b_token, 3) == 201

        code, out = await shouwang_cli("cloud", "provision", "--site", "site-a", "--revoke",
                                       "--dir", str(accounts))
        assert code == 0, out
        assert "restart the cloud" not in out
        assert await upload(http, port, "site-a", new, 4) == 401
        assert await upload(http, port, "site-b", b_token, 4) == 201  # the others go on
        assert cloud.metrics.registry.get_sample_value(
            "shouwang_evidence_site_tokens") == 1
