"""Search and history: find by resident, device, address or alert id, over a date range, and
export the filtered list as CSV, audited (issue 15, "Search and history").
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from cloud.access import audit
from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, HOME_B, Client, add_alert, add_people
from tests.integration.test_people_api import seed

pytestmark = pytest.mark.integration


async def test_find_by_name_device_address_or_id_within_scope(
    database_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        await seed(cloud, tmp_path)  # r-a1 王大爷 at HOME_A, r-b1 李奶奶 at HOME_B
        wang = await add_alert(cloud, ts=1_000, location=HOME_A, resident="r-a1")
        other = await add_alert(cloud, ts=2_000, location=HOME_A, resident="r-x", type="fall")
        li = await add_alert(cloud, ts=3_000, location=HOME_B, resident="r-b1")
        admin = await Client.login(http, cloud, "admin")

        async def found(query: str, who: Client = admin) -> list[str]:
            reply = await who.get(f"/api/alerts?{query}")
            assert reply.status == 200, reply.body
            return [a["id"] for a in reply.body["alerts"]]

        assert await found("q=王大爷") == [wang["id"]]
        assert await found("q=大爷") == [wang["id"]]
        assert await found(f"q={other['device']}") == [other["id"]]
        assert await found(f"q={wang['id']}") == [wang["id"]]
        assert sorted(await found("q=c-a/g1/b1")) == sorted([wang["id"], other["id"]])
        assert await found("q=100%25") == []  # '%' is a character, not a wildcard
        assert await found("q=李奶奶&from=2500&to=4000") == [li["id"]]
        assert await found("q=李奶奶&to=2500") == []
        police_a = await Client.login(http, cloud, "police-a")
        assert await found("q=李奶奶", police_a) == []  # another station's
        reply = await admin.get("/api/alerts?q=" + "x" * 65)
        assert reply.status == 400
        assert "q" in reply.body["error"]


async def test_the_filtered_list_exports_as_csv_and_the_export_is_audited(
    database_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        await seed(cloud, tmp_path)
        wang = await add_alert(cloud, ts=1_795_000_000_000, location=HOME_A, resident="r-a1")
        await add_alert(cloud, ts=1_795_000_001_000, location=HOME_A, resident="r-a1",
                        type="fall", severity="high")
        await add_alert(cloud, location=HOME_B, resident="r-b1")
        evil = await add_alert(cloud, location=HOME_A, resident="r-a1", type="tamper",
                               severity="medium", detail={"event": "tamper"})
        police = await Client.login(http, cloud, "police-a")
        async with http.get(f"http://127.0.0.1:{cloud.http_port}/api/alerts.csv?severity=critical,medium",
                            headers=police.headers) as res:
            assert res.status == 200
            assert res.content_type == "text/csv"
            assert "attachment" in res.headers["Content-Disposition"]
            text = (await res.read()).decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert sorted(r["id"] for r in rows) == sorted([wang["id"], evil["id"]])
        row = next(r for r in rows if r["id"] == wang["id"])
        assert (row["type"], row["severity"], row["state"]) == ("一键求助", "紧急", "待处理")
        assert row["resident"] == "王大爷"
        assert row["time"].startswith("2026-11-18")
        async with cloud.store.engine.connect() as conn:  # type: ignore[union-attr]
            logged = (await conn.execute(select(audit.audit_log.c.actor, audit.audit_log.c.detail)
                      .where(audit.audit_log.c.action == "alerts_exported"))).all()
        assert len(logged) == 1
        assert logged[0][0] == "user:police-a"
        assert logged[0][1]["rows"] == 2
        async with http.get(f"http://127.0.0.1:{cloud.http_port}/api/alerts.csv?state=nope",
                            headers=police.headers) as res:
            assert res.status == 400
