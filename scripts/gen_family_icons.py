"""Write the family page's PWA icons (plain PNGs, no imaging library): run after a change."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "cloud" / "dashboard" / "family" / "icons"
BACKGROUND = (0x0B, 0x3D, 0x5C)  # the dashboard's deep blue
MARK = (0xF5, 0xB7, 0x00)  # a watch-tower amber


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def icon(size: int) -> bytes:
    """A filled square with an amber ring: legible at 48 px, safe inside a maskable crop."""
    rows = []
    c = (size - 1) / 2
    outer, inner = size * 0.30, size * 0.19
    for y in range(size):
        row = bytearray([0])  # filter type: none
        for x in range(size):
            d = ((x - c) ** 2 + (y - c) ** 2) ** 0.5
            row += bytes(MARK if inner <= d <= outer or d <= size * 0.07 else BACKGROUND)
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + _chunk(b"IEND", b"")
    )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        (OUT / f"icon-{size}.png").write_bytes(icon(size))


if __name__ == "__main__":
    main()
