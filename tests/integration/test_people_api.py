"""The people on a board, as each role may see them (issue 15, "People, for those allowed").

Seen in the demo: ids where people expect names ("老人 r-0002", "对象 resident:r-demo-0001").
Workers and admins see name, age, tags, phone and emergency contacts; police what a responding
officer needs (name, tags, household, the phone and the first contact to call), by the
decision in docs/access.md; a family only their own elder; every list is audited.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import yaml
from sqlalchemy import select

from cloud.access import audit
from cloud.admin import ImportRejected, import_file
from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, HOME_B, Client, add_people

pytestmark = pytest.mark.integration

RESIDENTS = [
    {"id": "r-a1", "name": "王大爷", "location": HOME_A, "tags": ["elderly", "living_alone"],
     "birth_year": 1941, "phone": "138 0000 0001",
     "contacts": [{"name": "王芳", "relation": "daughter", "phone": "+86 139 0000 0002"},
                  {"name": "李邻居", "relation": "neighbour", "phone": "137-0000-0003"}]},
    {"id": "r-b1", "name": "李奶奶", "location": HOME_B, "tags": ["dementia"]},
]


async def seed(cloud, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for kind, rows in (("locations", [{"path": HOME_A}, {"path": HOME_B}]),
                       ("residents", RESIDENTS)):
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump(rows, allow_unicode=True))
        await import_file(cloud.store, kind, tmp_path / f"{kind}.yaml", 1)


async def test_each_role_sees_the_people_it_needs(database_url: str, tmp_path: Path) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        await seed(cloud, tmp_path)
        worker = await Client.login(http, cloud, "worker-a")
        [person] = (await worker.get("/api/residents?ids=r-a1,r-b1,nobody")).body["residents"]
        assert person["name"] == "王大爷"
        assert person["age"] is not None
        assert person["age"] >= 84
        assert person["phone"] == "138 0000 0001"
        assert [c["name"] for c in person["contacts"]] == ["王芳", "李邻居"]

        police = await Client.login(http, cloud, "police-a")
        [seen] = (await police.get("/api/residents?ids=r-a1,r-b1")).body["residents"]
        assert (seen["name"], seen["tags"], seen["location"]) == (
            "王大爷", ["elderly", "living_alone"], HOME_A)
        assert seen["contacts"] == [RESIDENTS[0]["contacts"][0]]  # the one to call first
        assert "age" not in seen

        family = await Client.login(http, cloud, "family-b")
        [own] = (await family.get("/api/residents?ids=r-a1,r-b1")).body["residents"]
        assert own["id"] == "r-b1"
        full = (await worker.get("/api/residents/r-a1")).body
        assert full["contacts"][1]["phone"] == "137-0000-0003"

        for bad in ("", "ids=", "ids=" + ",".join(f"r{i}" for i in range(101)), "ids=r%20a"):
            answer = await police.get(f"/api/residents?{bad}")
            assert answer.status == 400, bad
            assert "ids" in answer.body["error"]
        async with cloud.store.engine.connect() as conn:  # type: ignore[union-attr]
            rows = (await conn.execute(select(audit.audit_log.c.actor).where(
                audit.audit_log.c.action == "residents_listed"))).scalars().all()
        assert sorted(rows) == ["user:family-b", "user:police-a", "user:worker-a"]


async def test_a_bad_phone_or_contact_is_refused_by_line_and_key(
    database_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(database_url)) as cloud:
        bad = tmp_path / "residents.csv"
        bad.write_text("id,name,phone,contacts\nr-1,张三,call me,王芳:daughter:139\n"
                       "r-2,李四,,王芳:daughter:not-a-number\n")
        with pytest.raises(ImportRejected) as err:
            await import_file(cloud.store, "residents", bad, 1)  # type: ignore[arg-type]
        text = str(err.value)
        assert "2: phone" in text
        assert "3: contacts" in text
