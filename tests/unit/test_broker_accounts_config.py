"""`cloud.yaml`'s `broker_accounts`: each worker role's own account, else the `broker` one."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud.config import CloudConfig
from shouwang.config import BrokerConfig, TlsConfig


def test_a_role_without_an_account_of_its_own_uses_the_broker_section() -> None:
    broker = BrokerConfig(port=1884, username="shouwang-cloud",
                          password_file=Path("/etc/shouwang/cloud.password"))
    config = CloudConfig(broker=broker)
    for role in ("ingest", "alert_downlink", "watchlist_downlink"):
        assert config.broker_for(role) == broker


def test_a_role_account_replaces_only_the_credentials(tmp_path: Path) -> None:
    config = CloudConfig.model_validate({
        "broker": {"host": "broker.lan", "port": 8884, "username": "shouwang-cloud",
                   "password_env": "CLOUD_PW", "tls": {"ca_file": str(tmp_path / "ca.crt")}},
        "broker_accounts": {
            "ingest": {"username": "shouwang-ingest",
                       "password_file": str(tmp_path / "shouwang-ingest.password")},
            "alert_downlink": {"username": "shouwang-alert-downlink",
                               "password_env": "ALERT_DOWNLINK_PW"},
        },
    })
    ingest = config.broker_for("ingest")
    assert (ingest.host, ingest.port, ingest.tls) == (
        "broker.lan", 8884, TlsConfig(ca_file=tmp_path / "ca.crt"))
    assert (ingest.username, ingest.password_file, ingest.password_env) == (
        "shouwang-ingest", tmp_path / "shouwang-ingest.password", None)
    news = config.broker_for("alert_downlink")
    assert (news.username, news.password_file, news.password_env) == (
        "shouwang-alert-downlink", None, "ALERT_DOWNLINK_PW")
    assert config.broker_for("watchlist_downlink").username == "shouwang-cloud"


@pytest.mark.parametrize(("accounts", "problem"), [
    ({"injest": {"username": "x", "password_file": "/p"}}, "injest"),
    ({"ingest": {"username": "x", "pasword_file": "/p"}}, "pasword_file"),
    ({"ingest": {"username": "x"}}, "password_file or password_env"),
    ({"ingest": {"username": "x", "password_file": "/p", "password_env": "P"}},
     "password_file or password_env"),
])
def test_a_wrong_account_is_refused_by_name(accounts: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        CloudConfig.model_validate({"broker": {}, "broker_accounts": accounts})


def test_each_role_has_a_broker_account_and_what_it_may_do() -> None:
    """A role added to `broker_accounts` without an account and a role on the broker would
    connect with the fallback credentials and be refused everything (default deny)."""
    from typing import get_args

    from cloud.config import Role
    from cloud.provision import ROLES, role_of

    assert set(ROLES) == set(get_args(Role))
    for account in ROLES.values():
        assert role_of(account).description.startswith("cloud ")
    assert role_of("site-a").description == "site site-a's gateway"
