"""`shouwang cloud import`: row-level errors, all or nothing, idempotent re-import; both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud.schema import consents, devices, locations, resident_guardians, residents
from cloud.store import Store
from shouwang.cli import main

pytestmark = pytest.mark.integration
HOME = "d1/s1/c1/g1/b1/u1/f3/301"


def rows(url: str, table: Any) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = await Store.connect(url)
        try:
            async with store.engine.connect() as conn:
                result = await conn.execute(select(table).order_by(*table.primary_key.columns))
                return [dict(r) for r in result.mappings().all()]
        finally:
            await store.close()

    return asyncio.run(read())


def run(tmp_path: Path, url: str, kind: str, name: str, text: str) -> int:
    config = tmp_path / "cloud.yaml"
    config.write_text(f"broker: {{port: 1883}}\ndatabase_url: {url}\n")
    (tmp_path / name).write_text(text)
    return main(["cloud", "import", kind, str(tmp_path / name), "--config", str(config)])


def test_import_people_and_places_all_or_nothing_and_idempotent(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    places = f"path,label\n{HOME},301室\nd1/s1/c1/g1/b1/u1/f3/302,\n"
    assert run(tmp_path, database_url, "locations", "places.csv", places) == 0
    assert "locations: 2 rows, 2 new, 0 updated, 7 ancestors added" in capsys.readouterr().out
    stored = rows(database_url, locations)
    assert len(stored) == 9  # 7 ancestors made on the way, then the two households
    by_path = {r["path"]: r for r in stored}
    assert (by_path[HOME]["parent"], by_path[HOME]["level"], by_path[HOME]["label"]) == (
        "d1/s1/c1/g1/b1/u1/f3", 8, "301室"
    )
    assert (by_path["d1"]["parent"], by_path["d1"]["level"]) == (None, 1)

    bad = (
        "id,name,location,tags,guardians,consents\n"
        f"r-1,Wang Fang,{HOME},elderly;living_alone,u-7:daughter;u-9,fall_detection\n"
        f"r-2,Li Lei,{HOME},,,\n"
        "r-3,Qian Wu,nowhere/at/all,,,\n"
        "r-4,Zhao Min,,,u-1;u-1,\n"
        "bad id!,Sun Li,,,,\n"
        f"r-1,Again,{HOME},,,\n"
        "r-7,Zhou Yu,,alone,,\n"
    )
    assert run(tmp_path, database_url, "residents", "residents.csv", bad) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "residents.csv:4: location: 'nowhere/at/all' is not imported",
        "residents.csv:5: guardians: a contact is listed twice",
        "residents.csv:6: id: 'bad id!' is not an id (1-64 of A-Za-z0-9_.:-)",
        "residents.csv:7: id: duplicate of line 2",
        "residents.csv:8: tags: unknown tag 'alone' (known: living_alone, elderly, dementia, disabled, child)",
        "residents.csv: 5 problem(s); nothing imported",
    ]
    assert rows(database_url, residents) == []  # the good rows were not written either

    good = (
        "id,name,location,tags,guardians,consents\n"
        f"r-1,Wang Fang,{HOME},elderly;living_alone,u-7:daughter;u-9,fall_detection;location\n"
        f"r-2,Li Lei,{HOME},,,\n"
    )
    assert run(tmp_path, database_url, "residents", "residents.csv", good) == 0
    assert run(tmp_path, database_url, "residents", "residents.csv", good) == 0
    assert capsys.readouterr().out.splitlines() == [
        "residents: 2 rows, 2 new, 0 updated", "residents: 2 rows, 0 new, 2 updated"
    ]
    people = rows(database_url, residents)
    assert [(r["id"], r["tags"]) for r in people] == [("r-1", ["elderly", "living_alone"]), ("r-2", [])]
    assert [(g["contact_id"], g["relation"], g["priority"]) for g in rows(database_url, resident_guardians)] == [
        ("u-7", "daughter", 1), ("u-9", None, 2)
    ]
    granted = rows(database_url, consents)
    assert [(c["purpose"], c["revoked_ms"]) for c in granted] == [("fall_detection", None), ("location", None)]

    # Location sharing withdrawn: revoked, not deleted; fall detection keeps its first grant.
    assert run(tmp_path, database_url, "residents", "residents.csv", good.replace(";location\n", "\n")) == 0
    after = rows(database_url, consents)
    assert [(c["purpose"], c["granted_ms"]) for c in after] == [(c["purpose"], c["granted_ms"]) for c in granted]
    assert after[0]["revoked_ms"] is None
    assert after[1]["revoked_ms"] is not None


def test_import_devices_from_yaml_reports_yaml_lines(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, database_url, "locations", "places.yaml", f"- path: {HOME}\n") == 0
    assert run(tmp_path, database_url, "residents", "people.yaml", f"- {{id: r-1, name: Wang Fang, location: {HOME}}}\n") == 0
    capsys.readouterr()
    bad = (
        "- {site: s-1, id: wear-1, profile: wearable, resident: r-1, firmware: '2.3'}\n"
        "- site: s-1\n"
        "  id: btn-1\n"
        "  profile: toaster\n"
        f"  location: {HOME}\n"
        "- {site: s-1, id: btn-2, profile: emergency_button}\n"
        "- {site: s-1, id: btn-3, profile: emergency_button, resident: r-404, colour: red}\n"
    )
    assert run(tmp_path, database_url, "devices", "devices.yaml", bad) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("devices.yaml:2: profile: unknown profile 'toaster' (known: ")
    assert err[1:] == [
        "devices.yaml:6: resident, location: a device is bound to one or both",
        "devices.yaml:7: colour: unknown column",
        "devices.yaml: 3 problem(s); nothing imported",
    ]
    assert rows(database_url, devices) == []
    good = bad.split("- site: s-1\n")[0] + f"- {{site: s-1, id: btn-1, profile: emergency_button, location: {HOME}}}\n"
    assert run(tmp_path, database_url, "devices", "devices.yaml", good) == 0
    assert [(d["id"], d["profile"], d["resident"], d["location"], d["firmware"]) for d in rows(database_url, devices)] == [
        ("btn-1", "emergency_button", None, HOME, None), ("wear-1", "wearable", "r-1", None, "2.3")
    ]
