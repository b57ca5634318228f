"""One building as 单元 → 楼层 → 户, each household lit by its open alerts and device problems
(issue 15, "Where"), within the caller's scope."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import yaml
from sqlalchemy import update

from cloud.admin import import_file
from cloud.schema import devices
from tests.conftest import api_config, running_cloud
from tests.integration.people import GRID_A, HOME_A, Client, add_alert, add_people

pytestmark = pytest.mark.integration
BUILDING = f"{GRID_A}/b1"
HOMES = [f"{BUILDING}/u1/f1/101", f"{BUILDING}/u1/f1/102", f"{BUILDING}/u1/f2/201",
         f"{BUILDING}/u1/f10/1001", f"{BUILDING}/u2/f1/101"]


async def seed_building(cloud, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert HOMES[0] == HOME_A
    files = {
        "sites": [{"id": "s-1"}],
        "locations": [{"path": h} for h in HOMES],
        "devices": [{"site": "s-1", "id": "gas-201", "profile": "gas_detector",
                     "location": HOMES[2]}],
    }
    for kind, rows in files.items():
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump(rows))
        await import_file(cloud.store, kind, tmp_path / f"{kind}.yaml", 1)
    async with cloud.store.engine.begin() as conn:
        await conn.execute(update(devices).where(devices.c.id == "gas-201").values(health="faulty"))


async def test_a_building_lights_alerts_and_device_problems(database_url: str, tmp_path: Path) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        await seed_building(cloud, tmp_path)
        await add_alert(cloud, location=HOMES[0], type="fall")
        await add_alert(cloud, location=HOMES[1], type="tamper", severity="medium")
        closed = await add_alert(cloud, location=HOMES[4], type="sos")
        await cloud.store.transition(closed["id"], "resolved", actor="user:admin")  # type: ignore[union-attr]
        worker = await Client.login(http, cloud, "worker-a")
        view = (await worker.get(f"/api/locations/building?path={BUILDING}")).body
        assert [u["name"] for u in view["units"]] == ["u1", "u2"]
        floors = view["units"][0]["floors"]
        assert [f["name"] for f in floors] == ["f10", "f2", "f1"]  # top floor first
        lit = {h["path"]: (h["active"], h["critical_active"], h["device_problems"])
               for u in view["units"] for f in u["floors"] for h in f["households"]}
        assert lit == {HOMES[0]: (1, 1, 0), HOMES[1]: (1, 0, 0), HOMES[2]: (0, 0, 1),
                       HOMES[3]: (0, 0, 0), HOMES[4]: (0, 0, 0)}

        other = await Client.login(http, cloud, "police-b")
        assert (await other.get(f"/api/locations/building?path={BUILDING}")).body["units"] == []
        family = await Client.login(http, cloud, "family-a")
        assert (await family.get(f"/api/locations/building?path={BUILDING}")).status == 403
        for bad in (f"path={GRID_A}", "path=", f"path={BUILDING}&x=1"):
            answer = await worker.get(f"/api/locations/building?{bad}")
            assert answer.status == 400, bad
