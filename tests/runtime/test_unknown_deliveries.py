"""Events and actions newer than the models reach the handlers that take them, through
the ingress and a shard (no Ray), instead of being dead-lettered as malformed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.bot import InstallationActor, UnknownEventWarning, on
from actors.shard import ShardCore
from actors.wire import Status
from ghbot.events import Event
from ghbot.journal import Journal
from ghbot.models import IssuesPayload, UnknownPayload
from tests.runtime.conftest import (
    INSTALLATION,
    VSHARDS,
    AcceptingBatcher,
    bare_ingress,
    batch,
    payload,
    webhook_request,
)


def watcher() -> type[InstallationActor]:
    """Return a bot that records which handler saw which delivery, in `SEEN`."""

    class Watcher(InstallationActor):
        def note(self, handler: str, event: Event[Any]) -> None:
            SEEN.append((handler, event.qualified_name, type(event.payload).__name__))

        @on("*")
        async def everything(self, event: Event) -> None:
            self.note("everything", event)

        @on("issues")
        async def typed(self, event: Event[IssuesPayload]) -> None:
            self.note("typed", event)

        @on("sub_issues_v9", strict=False)
        async def newer(self, event: Event[UnknownPayload]) -> None:
            self.note("newer", event)

    return Watcher


SEEN: list[tuple[str, str, str]] = []


async def test_unknown_events_and_actions_reach_the_handlers_that_take_them(
    journal: Journal,
) -> None:
    SEEN.clear()  # from an earlier run of this test in the same process
    with pytest.warns(UnknownEventWarning, match="sub_issues_v9"):
        bot = watcher()
    opened = payload("issues.opened")
    new_action = payload("issues.opened", action="prioritized")
    new_event = json.dumps(json.loads(opened) | {"action": "linked"}).encode()
    batcher = AcceptingBatcher()
    ingress = bare_ingress(bot, batcher)
    for event, body in [("issues", opened), ("issues", new_action), ("sub_issues_v9", new_event)]:
        answer = await ingress.webhook(webhook_request(body, x_github_event=event))
        assert answer.status_code == 202

    shard = ShardCore(range(VSHARDS), VSHARDS, journal, bot)
    await shard.start()
    try:
        assert await shard.ingest(batch(*batcher.items)) == [Status.ACCEPTED] * 3
        await shard.wait_idle()
        host = await shard.host(INSTALLATION)
        assert not host.progress.dead  # nothing dead-lettered as malformed
    finally:
        await shard.close()

    assert sorted(SEEN) == [
        ("everything", "issues.opened", "IssuesOpened"),
        ("everything", "issues.prioritized", "UnknownPayload"),
        ("everything", "sub_issues_v9.linked", "UnknownPayload"),
        ("newer", "sub_issues_v9.linked", "UnknownPayload"),
        ("typed", "issues.opened", "IssuesOpened"),
    ]
