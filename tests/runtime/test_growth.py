"""A shard lives for months: what it keeps per event must not grow with their number."""

from __future__ import annotations

import logging

import pytest

from actors.github import InstallationClients
from actors.settings import RuntimeSettings
from ghbot.auth import InstallationToken
from ghbot.config import Settings


async def _mint(installation_id: int) -> InstallationToken:
    raise AssertionError("no token is needed here")


def _sizes(obj: object) -> dict[str, int]:
    """The length of every collection among `obj`'s attributes."""
    return {
        name: len(value)
        for name, value in vars(obj).items()
        if isinstance(value, list | dict | set | tuple)
    }


def test_breaker_changes_are_logged_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    settings = RuntimeSettings(
        bot="examples.greeter:Greeter",
        settings=Settings(app_id=None, private_key=None, webhook_secrets=()),
    )
    clients = InstallationClients(settings, _mint)
    before = _sizes(clients)
    github = clients.for_installation(7)
    assert github is not None and github.breaker is not None
    breaker = github.breaker
    now = 0.0
    with caplog.at_level(logging.WARNING, logger="ghbot.breaker"):
        for _ in range(200):  # open, half-open, closed, again and again
            for _ in range(breaker.min_calls):
                breaker.record_failure(now)
            now += breaker.open_for
            for _ in range(breaker.close_after):
                breaker.record_success(now)
            now += 1.0
    assert "installation 7: circuit closed -> open" in caplog.text
    # Only the breaker's lines: an object of an earlier test collected meanwhile may log.
    assert len([r for r in caplog.records if r.name == "ghbot.breaker"]) == 600
    assert _sizes(clients) == before
