"""Notes a worker shares with the family, who handles a case by name, and the number to call
(issue 15, item 5: "the notes the worker chose to share, and the number to call").

A daughter far away reads what the grid worker chose to tell her ("到家了，老人无大碍"),
never the notes the responders keep among themselves ("老人有点糊涂，注意"): the scope holds
in the API, whatever page asks. Before this, a family's GET of an alert returned every note in
its timeline, the list said nothing of notes, and people were named by their user names.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from cloud.access import audit
from cloud.admin import ImportRejected, import_file
from tests.conftest import api_config, running_cloud
from tests.integration.people import GRID_A, PASSWORD, Client, add_alert, add_people
from tests.integration.test_residents_api import seed

pytestmark = pytest.mark.integration
KEPT = "老人有点糊涂，夜里注意"  # among the responders only
POLICE_NOTE = "派出所已登记"  # a police note: for the case file
SHARED_ON_ACK = "已电话联系，马上上门"
SHARED_LATER = "到家了，老人无大碍"


async def test_a_family_reads_the_shared_notes_and_no_other(database_url: str) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        assert cloud.access is not None
        assert cloud.store is not None
        await add_people(cloud)
        await cloud.access.add_user("worker-li", PASSWORD, "worker", locations=[GRID_A],
                                    display_name="李华")
        fall = await add_alert(cloud, type="fall")
        other = await add_alert(cloud, type="sos")
        worker = await Client.login(http, cloud, "worker-li")
        police = await Client.login(http, cloud, "police-a")
        family = await Client.login(http, cloud, "family-a")
        stranger = await Client.login(http, cloud, "family-b")
        url = f"/api/alerts/{fall['id']}"

        # What is refused, each with the field or the role named.
        for who, path, body, status, says in (
            (worker, "/ack", {"share": True}, 400, "share"),
            (worker, "/ack", {"note": "  ", "share": True}, 400, "share"),
            (worker, "/note", {"note": "x", "share": "yes"}, 400, "share"),
            (worker, "/note", {}, 400, "note"),
            (worker, "/note", {"note": "   "}, 400, "note"),
            (worker, "/note", {"note": "x", "to": "family"}, 400, "to"),
            (police, "/note", {"note": POLICE_NOTE, "share": True}, 403, "share"),
            (family, "/note", {"note": "我们来了"}, 403, "note"),
            (family, "/ack", {"note": "我们来了", "share": True}, 403, "share"),
            (stranger, "/note", {"note": "x"}, 404, "no such alert"),
        ):
            reply = await who.post(url + path, body)
            assert reply.status == status, (path, body, reply.body)
            assert says in reply.body["error"], (path, body, reply.body)

        assert (await worker.post(url + "/note", {"note": KEPT})).status == 200
        assert (await police.post(url + "/note", {"note": POLICE_NOTE})).status == 200
        acked = await worker.post(url + "/ack", {"note": SHARED_ON_ACK, "share": True})
        assert acked.status == 200, acked.body
        assert acked.body["ack_name"] == "李华"
        later = await worker.post(url + "/note", {"note": SHARED_LATER, "share": True})
        assert later.status == 200, later.body
        assert later.body["state"] == "acknowledged"  # a note moves nothing

        # The worker sees every note, each marked shared or not, the people by name.
        lines = [(s["note"], s["shared"], s["name"])
                 for s in (await worker.get(url)).body["timeline"] if s["note"]]
        assert lines == [(KEPT, False, "李华"), (POLICE_NOTE, False, "police-a"),
                         (SHARED_ON_ACK, True, "李华"), (SHARED_LATER, True, "李华")]

        # The family: the shared notes, in the detail and in the list, and no other text.
        shared = [(n["note"], n["by"], n["name"]) for n in later.body["shared_notes"]]
        assert shared == [(SHARED_ON_ACK, "worker-li", "李华"), (SHARED_LATER, "worker-li", "李华")]
        detail = await family.get(url)
        assert detail.status == 200
        assert [(n["note"], n["name"]) for n in detail.body["shared_notes"]] == [
            (SHARED_ON_ACK, "李华"), (SHARED_LATER, "李华")]
        assert [s["note"] for s in detail.body["timeline"] if s["note"]] == [
            SHARED_ON_ACK, SHARED_LATER]
        assert len(detail.body["timeline"]) == 5  # every step stays: opened, 3 notes, the ack
        page = await family.get("/api/alerts?limit=20")
        mine = {a["id"]: a for a in page.body["alerts"]}
        assert [n["note"] for n in mine[fall["id"]]["shared_notes"]] == [SHARED_ON_ACK, SHARED_LATER]
        assert mine[other["id"]]["shared_notes"] == []
        for reply in (detail, page):
            text = reply.raw.decode()
            assert KEPT not in text
            assert POLICE_NOTE not in text
        assert (await stranger.get(url)).status == 404

        # Dispatched to the worker: the family reads who is on the way, by name.
        admin = await Client.login(http, cloud, "admin")
        sent = await admin.post(url + "/dispatch", {"worker": "worker-li"})
        assert sent.status == 200, sent.body
        listed = {a["id"]: a for a in (await family.get("/api/alerts")).body["alerts"]}
        assert (listed[fall["id"]]["dispatched_to"], listed[fall["id"]]["dispatched_name"]) == (
            "worker-li", "李华")

        # Audited like every other action: who, which alert, shared or not.
        notes = await audit.entries(cloud.store.engine, action="alert_note", target=fall["id"])
        assert sorted((e["actor"], e["detail"]["shared"]) for e in notes) == [
            ("user:police-a", False), ("user:worker-li", False), ("user:worker-li", True)]
        [ack] = await audit.entries(cloud.store.engine, action="alert_ack", target=fall["id"])
        assert ack["detail"]["shared"] is True


async def test_the_number_to_call_is_the_nearest_place_s(
    database_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(database_url)) as cloud, aiohttp.ClientSession() as http:
        assert cloud.store is not None
        await add_people(cloud)
        await seed(cloud.store, tmp_path)
        rows = [{"path": "d1/s1/c-a", "label": "阳光社区", "phone": "100 0000 0110"}]
        places = tmp_path / "community.yaml"
        places.write_text(yaml.safe_dump(rows, allow_unicode=True))
        await import_file(cloud.store, "locations", places, 1)
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump([{"path": "d1/s2/c-b", "phone": "call us"}]))
        with pytest.raises(ImportRejected) as rejected:
            await import_file(cloud.store, "locations", bad, 1)
        assert "phone" in str(rejected.value)

        family = await Client.login(http, cloud, "family-a")
        record = await family.get("/api/residents/r-a1")
        assert record.body["office"] == {"phone": "100 0000 0110", "place": "阳光社区"}
        worker = await Client.login(http, cloud, "worker-b")
        other = await worker.get("/api/residents/r-b1")
        assert other.status == 200
        assert other.body["office"] is None  # nothing imported with a number above it
        # A building with its own desk comes first for its households.
        desk = tmp_path / "desk.yaml"
        desk.write_text(json.dumps([{"path": f"{GRID_A}/b1", "phone": "100-0000-0111"}]))
        await import_file(cloud.store, "locations", desk, 2)
        listed = await family.get("/api/residents?ids=r-a1")
        assert listed.body["residents"][0]["office"] == {"phone": "100-0000-0111", "place": "b1"}
