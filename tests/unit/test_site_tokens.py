"""The running cloud follows `site-tokens.yaml`: new, rotated and revoked tokens at the next
upload, a broken file refuses everything, an unchanged file costs one stat."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from cloud.evidence import EvidenceConfig, SiteTokens, hash_token
from shouwang.broker_accounts import write_private
from shouwang.metrics import Metrics

A, B = hash_token("token-of-site-a"), hash_token("token-of-site-b")


def write(path: Path, tokens: dict[str, str]) -> None:
    write_private(path, yaml.safe_dump(tokens))  # as `shouwang cloud provision` writes it


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "site-tokens.yaml"
    write(p, {"site-a": A})
    return p


def test_added_rotated_and_revoked_tokens_are_seen_at_the_next_check(path: Path) -> None:
    metrics = Metrics("cloud")
    tokens = SiteTokens(EvidenceConfig(site_tokens_file=path), metrics)
    assert tokens.hashes() == {"site-a": A}
    write(path, {"site-a": A, "site-b": B})
    assert tokens.hashes() == {"site-a": A, "site-b": B}
    write(path, {"site-a": B})  # rotated: the same size, written at once
    assert tokens.hashes() == {"site-a": B}
    write(path, {})
    assert tokens.hashes() == {}
    assert metrics.registry.get_sample_value("shouwang_evidence_site_tokens") == 0
    assert metrics.registry.get_sample_value(
        "shouwang_evidence_token_reloads_total", {"result": "ok"}) == 3


def test_a_change_the_file_time_cannot_show_is_still_seen_while_the_file_is_young(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a coarse clock, a rewrite within one tick keeps size and times; the file is read
    again at every check until it is older than RACY_S."""
    tokens = SiteTokens(EvidenceConfig(site_tokens_file=path))
    frozen = tokens._signature()
    monkeypatch.setattr(tokens, "_signature", lambda: frozen)
    path.write_text(yaml.safe_dump({"site-a": B}))
    assert tokens.hashes() == {"site-a": B}


def test_an_old_unchanged_file_is_not_read_again(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SiteTokens, "RACY_S", 0.0)  # as if written long ago
    config = EvidenceConfig(site_tokens_file=path)
    tokens = SiteTokens(config)
    reads = []
    real = EvidenceConfig.token_hashes
    monkeypatch.setattr(EvidenceConfig, "token_hashes",
                        lambda self: reads.append(1) or real(self))
    for _ in range(1000):
        assert tokens.hashes() == {"site-a": A}
    assert reads == []
    write(path, {"site-a": B})
    assert tokens.hashes() == {"site-a": B}
    assert len(reads) == 1


def test_a_broken_or_missing_file_refuses_every_token_until_mended(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics("cloud")
    tokens = SiteTokens(EvidenceConfig(site_tokens_file=path), metrics)
    write_private(path, "site-a: [not a hash\n")
    with caplog.at_level(logging.ERROR, logger="cloud.evidence"):
        for _ in range(5):
            assert tokens.hashes() == {}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per broken version, not once per upload
    assert "site-tokens.yaml" in errors[0]
    assert "every evidence upload is refused" in errors[0]
    path.unlink()
    assert tokens.hashes() == {}
    write(path, {"site-a": A})
    assert tokens.hashes() == {"site-a": A}
    assert metrics.registry.get_sample_value(
        "shouwang_evidence_token_reloads_total", {"result": "failed"}) >= 2


def test_without_a_file_there_is_no_token(tmp_path: Path) -> None:
    assert SiteTokens(EvidenceConfig()).hashes() == {}
