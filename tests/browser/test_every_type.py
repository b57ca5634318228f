"""Every alert type in the registry reads as words on the board, in the type filter and on the
family page, in 中文 and English (issue 15, acceptance: "a test walks every alert type")."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from shouwang.vocabulary import alert_types
from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, add_alert, add_people

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_every_registered_type_is_named_everywhere(browser: Browser, sqlite_url: str) -> None:
    types = alert_types()
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        ids = {t: (await add_alert(cloud, type=t, severity="high"))["id"] for t in types}
        board = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
        await board.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(board, "worker-a", PASSWORD)
        family = await (await browser.new_context(viewport={"width": 390, "height": 844})).new_page()
        await family.goto(f"http://127.0.0.1:{cloud.http_port}/family/")
        await log_in(family, "family-a", PASSWORD)
        await expect(board.locator("#alerts tbody tr")).to_have_count(len(types))
        await expect(family.locator("#alerts li")).to_have_count(len(types))  # all open
        for lang, pick in (("zh-CN", "zh"), ("en", "en")):
            await board.select_option("#lang", lang)
            await family.select_option("#lang", lang)
            for alert_type, names in types.items():
                name = getattr(names, pick)
                row = board.locator(f"#alerts tbody tr[data-id='{ids[alert_type]}'] td.type")
                # The name, then for a thrown object the floor it came from (its own span).
                await expect(row).to_have_text(re.compile(rf"^{re.escape(name)}(\s|$)"))
                option = board.locator(f"#f-type option[value='{alert_type}']")
                await expect(option).to_have_text(name)
            # The family page lists every open case: each reads as its name, never an id.
            items = family.locator("#alerts li strong")
            for text in await items.all_inner_texts():
                shown = text.split(" · ")[0]
                assert shown in {getattr(n, pick) for n in types.values()}, text
        # The filter finds each type (one request per type: the server filters).
        for alert_type in list(types)[:: max(1, len(types) // 8)]:
            await board.select_option("#f-type", alert_type)
            await expect(board.locator("#alerts tbody tr")).to_have_count(1)
            await expect(board.locator("#alerts tbody tr")).to_have_attribute(
                "data-id", ids[alert_type])
