"""Bytes on the wire for one enrolment: the delta (v3) against the whole list (v1/v2 parts).

`.venv/bin/python bench/watchlist_delta.py [--entries 768]`: a list of N one-photo entries like
the cloud's (a uuid id, a person id, a consent reference, one photo's hash, one 192-value
descriptor), signed as the cloud signs them (with `kid` and the tier of its list), and one
person more enrolled: what goes to the gateway each way.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.video.face.store import DEFAULT_LISTS
from shouwang.watchlist_message import build, build_delta, fingerprint, pack, public_pem, sign


def entry(i: int, rng: np.random.Generator) -> dict[str, Any]:
    vector = rng.standard_normal(192).astype(np.float32)
    vector /= np.linalg.norm(vector)
    return {"id": str(uuid.UUID(int=i)), "person": f"P-{i:05d}", "list": "police",
            "consent": "CF-2026-0042", "entered_ms": 1_796_000_000_000 + i,
            "until_ms": 1_803_776_000_000 + i, "model": "mobilefacenet",
            "photos": [f"{i:064x}"], "embeddings": [pack([round(float(v), 6) for v in vector])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=768)
    args = parser.parse_args()
    key = Ed25519PrivateKey.generate()
    kid = fingerprint(public_pem(key.public_key()))

    def signed(message: dict[str, Any]) -> bytes:
        return sign({**message, "kid": kid}, key)

    rng = np.random.default_rng(16)
    held = [entry(i, rng) for i in range(args.entries)]
    new = entry(args.entries, rng)
    tiers = {"police": DEFAULT_LISTS["police"].model_dump()}
    whole = build("s-1", 2, [*held, new], signed, lists=tiers)
    delta = build_delta("s-1", 2, 1, [new], [], signed, lists=tiers)
    assert delta is not None
    removal = build_delta("s-1", 3, 2, [], [("police", new["person"])], signed, lists={})
    assert removal is not None
    print(f"list of {args.entries} entries, one person enrolled:")
    print(f"  whole list: {sum(map(len, whole)):,} bytes in {len(whole)} message(s)")
    print(f"  delta:      {len(delta):,} bytes in 1 message")
    print(f"  a removal as a delta: {len(removal):,} bytes")


if __name__ == "__main__":
    main()
