"""Shared pieces of the browser tests: Debian's headless Chromium, logging in, a test image."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=user-gesture-required",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once, before any I/O starts
        pytest.fail("Debian's chromium is missing: run `make deps` (apt-get install chromium)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The browser tests' cloud database: what they test is the page, so SQLite only."""
    return f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite"


def screenshots(tmp_path: Path) -> Path:
    """SHOUWANG_SCREENSHOTS=1 refreshes the pictures in docs/; otherwise they stay in tmp."""
    return DOCS if os.environ.get("SHOUWANG_SCREENSHOTS") == "1" else tmp_path


async def log_in(page: Page, username: str, password: str) -> None:
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login button[type=submit]")


def snapshot_png(width: int = 320, height: int = 200) -> bytes:
    """A small camera-like PNG (a gradient with a dark doorway), made without any library."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            door = 130 < x < 190 and y > 60
            g = 40 if door else 90 + (x * 100) // width
            row += bytes((g, g + (0 if door else 20), g + (10 if door else 40)))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
