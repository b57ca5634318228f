"""The cloud's watchlist signing key rolled over the air (issue 16), through the real brokers:
no installer at the gateway. The new key is announced in messages signed by the current one;
the cloud activates it only once the gateway reports it trusts it; the old key is revoked."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.watchlist_keys import sites_lacking
from cloud.watchlist_store import public_path, staged
from shouwang.cli import main
from shouwang.services import Mosquitto
from shouwang.watchlist_message import fingerprint, sign
from tests.conftest import eventually
from tests.integration.test_watchlists import delete, enrol, gateway_people, keyed, photo
from tests.scenarios.site import community

pytestmark = pytest.mark.integration


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["cloud", "watchlist-keys", *args])
    return code, out.getvalue(), err.getvalue()


async def test_the_signing_key_rolls_over_the_air(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    edge, cloud = keyed(tmp_path)
    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        conf = site.cloud.config.watchlists
        assert conf is not None
        cloud_yaml = tmp_path / "cloud.yaml"
        cloud_yaml.write_text(yaml.safe_dump({
            "broker": {}, "database_url": site.cloud.config.database_url,
            "watchlists": {"key_file": str(conf.key_file),
                           "signing_key_file": str(conf.signing_key_file)}}))
        me = site.edge.config.site
        installed = site.edge.config.cloud_watchlist_key
        assert installed is not None
        old_pem = installed.read_bytes()
        old_signer_pem = conf.signing_key_file.read_bytes()
        reply = await enrol(site, "police-wang", "police", "P-1", [photo("obama")])
        assert reply.status == 201, reply.body
        assert await eventually(lambda: gateway_people(site) == [("P-1", "police")])

        # A new key staged: not activated while the gateway has not reported it.
        code, _, _ = await asyncio.to_thread(cli, "--config", str(cloud_yaml), "--rotate")
        assert code == 0
        new_pem = public_path(staged(conf.signing_key_file)).read_bytes()
        new = fingerprint(new_pem)
        code, _, err = await asyncio.to_thread(cli, "--config", str(cloud_yaml),
                                               "--activate-signing-key", "--wait", "0")
        assert code == 1
        assert me in err
        assert new in err
        assert conf.signing_key_file.read_bytes() == old_signer_pem  # nothing changed

        # The next message (here: an enrolment) announces it, signed by the current key; the
        # gateway keeps it and reports it at once; now the cloud may activate it.
        reply = await enrol(site, "police-wang", "police", "P-2", [photo("biden")])
        assert reply.status == 201, reply.body

        async def reported() -> bool:
            return await sites_lacking(site.cloud.store, new) == []

        assert await eventually(reported)
        code, _, err = await asyncio.to_thread(cli, "--config", str(cloud_yaml),
                                               "--activate-signing-key", "--wait", "30")
        assert code == 0, err
        assert "WARNING" not in err

        # Signed with the new key from now on, the old one revoked: the gateway, whose
        # installed key file still holds the old key alone, takes the next change.
        assert await delete(site, "police-wang", "/api/watchlists/police/people/P-1") == 204
        assert await eventually(lambda: gateway_people(site) == [("P-2", "police")])
        assert installed.read_bytes() == old_pem
        watch = site.edge.watchlists

        async def old_forgotten() -> bool:
            return await asyncio.to_thread(watch.trusted) == [new]

        assert await eventually(old_forgotten)
        # A message signed with the old key (stolen, say) is refused now, and counted.
        old_signer = serialization.load_pem_private_key(old_signer_pem, password=None)
        assert isinstance(old_signer, Ed25519PrivateKey)
        forged = sign({"v": 1, "site": me, "version": 10**6, "entries": [],
                       "kid": fingerprint(old_pem)}, old_signer)
        assert not await watch.handle(forged)
        assert site.edge.metrics.rejected_count("watchlist_key_untrusted") >= 1
        assert gateway_people(site) == [("P-2", "police")]

