"""Deliveries the handlers cannot take: a body that does not fit its model, no
installation, a runtime failure outside any handler. Each ends journaled (completed or
dead-lettered), never silently pending."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from actors.bot import InstallationActor, on
from actors.runtime_events import stream_name
from actors.shard import ShardCore
from ghbot import events
from ghbot.errors import NoInstallation
from ghbot.events import Event, decode_envelope
from ghbot.journal import Journal
from ghbot.retry import RetryPolicy
from tests.runtime.conftest import INSTALLATION, VSHARDS, batch, inbound, payload, shard_of

Factory = Callable[..., ShardCore]


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def make(journal: Journal) -> AsyncIterator[Factory]:
    """Make started-later shards on the test's journal; close them after the test."""
    made: list[ShardCore] = []

    def factory(bot: type[InstallationActor], **kwargs: Any) -> ShardCore:
        kwargs.setdefault("sleep", _no_sleep)
        kwargs.setdefault("retry", RetryPolicy(base=0.0, cap=0.0))
        shard = ShardCore(range(VSHARDS), VSHARDS, journal, bot, **kwargs)
        made.append(shard)
        return shard

    yield factory
    for shard in made:
        await shard.close()


async def types_in(journal: Journal, installation_id: int = INSTALLATION) -> list[str]:
    records = await journal.read(stream_name(installation_id), shard=shard_of(installation_id))
    return [r.type for r in records]


class Two(InstallationActor):
    """Two handlers for `issues.opened`, recording what they ran."""

    ran: list[tuple[str, str]] = []

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        type(self).ran.append(("opened", event.delivery_id or ""))

    @on("issues")
    async def any_issue(self, event: Event) -> None:
        type(self).ran.append(("any_issue", event.delivery_id or ""))


@pytest.fixture(autouse=True)
def _reset() -> None:
    Two.ran = []
    Api.ran = []


# An issue title GitHub never sends as a number: the envelope (routing fields) decodes,
# the typed `IssuesPayload` does not.
MARKER = 9_876_543_210


def misfit() -> bytes:
    body = payload("issues.opened", issue__title=MARKER)
    decode_envelope(body)  # what the ingress checks passes
    return body


async def test_a_body_that_does_not_fit_its_model_is_dead_lettered_at_once(
    make: Factory, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    shard = make(Two)
    await shard.start()
    item = inbound(Two, "issues", misfit(), delivery_id="misfit")
    assert await shard.ingest(batch(item)) == ["accepted"]
    with caplog.at_level(logging.WARNING, logger="ghbot.installation"):
        await shard.wait_idle()

    # Every handler that would have run is dead-lettered in one write; no retry.
    assert Two.ran == []
    assert await types_in(journal) == [
        "DeliveryReceived",
        "DeadLettered",
        "DeadLettered",
        "DeliveryCompleted",
    ]
    dead = await shard.dead_letters()
    assert sorted((d["delivery_id"], d["handler"], d["attempts"]) for d in dead) == [
        ("misfit", "any_issue", 1),
        ("misfit", "opened", 1),
    ]
    for letter in dead:
        assert letter["error_type"] == "MalformedPayload"
        assert "$.issue.title" in letter["error"]
        assert str(MARKER) not in letter["error"]  # the error, never the body
    (line,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    fields = {k: getattr(line, k, None) for k in ("event_id", "installation_id", "operation")}
    assert fields == {"event_id": "misfit", "installation_id": INSTALLATION, "operation": "decode"}
    assert getattr(line, "error_type", None) == "MalformedPayload"
    assert str(MARKER) not in line.getMessage()

    # Rebuilt from the journal, nothing is pending: it is not queued again.
    await shard.close()
    again = make(Two)
    assert await again.start() == 0
    host = await again.host(INSTALLATION)
    assert host.progress.pending == {}
    assert len(await again.dead_letters()) == 2
    await again.wait_idle()
    assert Two.ran == []


class _Installation(msgspec.Struct):
    id: int


class FixedIssues(msgspec.Struct):
    """The `issues` model after a fix: it takes a title of any type."""

    action: str | None = None
    installation: _Installation | None = None
    issue: dict[str, Any] | None = None


async def test_a_replay_after_the_model_is_fixed_runs_every_handler(
    make: Factory, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = make(Two)
    await shard.start()
    await shard.ingest(batch(inbound(Two, "issues", misfit(), delivery_id="later")))
    await shard.wait_idle()
    assert len(await shard.dead_letters()) == 2

    # Replayed before the fix: dead-lettered again at once, still replayable.
    assert await shard.replay(INSTALLATION, "later", None) == 2
    await shard.wait_idle()
    assert sorted(d["handler"] for d in await shard.dead_letters()) == ["any_issue", "opened"]
    assert Two.ran == []

    monkeypatch.setitem(events._DECODERS, "issues", msgspec.json.Decoder(FixedIssues))
    assert await shard.replay(INSTALLATION, "later", None) == 2
    await shard.wait_idle()
    assert await shard.dead_letters() == []
    assert sorted(Two.ran) == [("any_issue", "later"), ("opened", "later")]
    host = await shard.host(INSTALLATION)
    assert host.progress.pending == {}
    assert "HandlerFailed" not in await types_in(journal)


class Api(InstallationActor):
    """One handler that calls GitHub, one that does not."""

    ran: list[str] = []

    @on("issues.opened")
    async def comment(self, event: Event) -> None:
        await self.github.request("POST", "/repos/o/r/issues/1/comments", json={"body": "hi"})

    @on("issues")
    async def count(self, event: Event) -> None:
        type(self).ran.append(event.delivery_id or "")


async def test_without_an_installation_self_github_fails_at_once_and_clearly(
    make: Factory, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    # A repository webhook pointed at the App's URL: its deliveries carry no installation.
    shard = make(Api)
    await shard.start()
    item = inbound(Api, "issues", payload("issues.opened", installation=None), delivery_id="r1")
    assert item.installation_id == 0
    with caplog.at_level(logging.WARNING, logger="ghbot.installation"):
        assert await shard.ingest(batch(item)) == ["accepted"]
        await shard.wait_idle()

    assert Api.ran == ["r1"]  # the handler that needs no API ran as usual
    assert await types_in(journal, 0) == [
        "DeliveryReceived",
        "DeadLettered",
        "HandlerSucceeded",
        "DeliveryCompleted",
    ]
    (dead,) = await shard.dead_letters()
    assert (dead["handler"], dead["attempts"], dead["error_type"]) == (
        "comment",
        1,
        "NoInstallation",
    )
    expected = "delivery r1 (event issues) carries no installation"
    assert dead["error"].startswith(expected)
    assert "self.github is unavailable" in dead["error"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("r1" in m and "carries no installation" in m for m in messages)  # accepted
    assert any("dead-lettered" in m and expected in m for m in messages)


async def test_the_stand_in_client_raises_on_use_only() -> None:
    bot = Api()
    from actors.installation import InstallationHost

    async def append(_stream: str, _events: Any) -> int:
        return 0

    InstallationHost(0, bot, append=append, retry=RetryPolicy())
    with pytest.raises(NoInstallation, match=r"self\.quota is unavailable"):
        bot.quota.lease(1)
    assert bot.github.breaker is None  # reads as a client without a breaker
    assert "NoInstallation" not in repr(bot.github)
    with pytest.raises(AttributeError):
        bot.github.__deepcopy__  # type: ignore[attr-defined]  # noqa: B018 - copying protocols see a plain object


async def test_a_failure_outside_any_handler_is_dead_lettered_not_dropped(
    make: Factory, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    checks = [RuntimeError("breaker check failed")]

    def breaker_wait(_github: Any) -> float:
        if checks:
            raise checks.pop()
        return 0.0

    shard = make(Two, breaker_wait=breaker_wait)
    await shard.start()
    await shard.ingest(batch(inbound(Two, "issues", payload("issues.opened"), delivery_id="x")))
    with caplog.at_level(logging.ERROR, logger="ghbot"):
        await shard.wait_idle()
    # ghbot's own lines: another library's ERROR (asyncio's "Unclosed client session"
    # for an earlier test's session collected now) is not this delivery's.
    (line,) = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("ghbot")
    ]
    assert line.name == "ghbot.installation" and line.exc_info is not None
    assert (getattr(line, "operation", None), getattr(line, "error_type", None)) == (
        "process",
        "RuntimeError",
    )
    assert Two.ran == []
    assert await types_in(journal) == [
        "DeliveryReceived",
        "DeadLettered",
        "DeadLettered",
        "DeliveryCompleted",
    ]
    dead = await shard.dead_letters()
    assert {(d["error_type"], d["error"]) for d in dead} == {
        ("RuntimeError", "breaker check failed")
    }
    assert await shard.replay(INSTALLATION, "x", None) == 2
    await shard.wait_idle()
    assert await shard.dead_letters() == []
    assert sorted(Two.ran) == [("any_issue", "x"), ("opened", "x")]


class Broken(InstallationActor):
    """Two handlers for `issues.opened` that fail until `broken` is cleared."""

    max_attempts = 1
    broken = True
    ran: list[str] = []

    @on("issues.opened")
    async def first(self, event: Event) -> None:
        self._run("first")

    @on("issues")
    async def second(self, event: Event) -> None:
        self._run("second")

    def _run(self, name: str) -> None:
        if type(self).broken:
            raise RuntimeError("still broken")
        type(self).ran.append(name)


async def test_replaying_a_delivery_runs_each_of_its_dead_handlers(make: Factory) -> None:
    # The replay of one handler used to complete the delivery before the next one's
    # replay was journaled: the second handler never ran and its dead letter was gone.
    Broken.broken, Broken.ran = True, []
    shard = make(Broken)
    await shard.start()
    await shard.ingest(batch(inbound(Broken, "issues", payload("issues.opened"), delivery_id="b")))
    await shard.wait_idle()
    assert len(await shard.dead_letters()) == 2
    Broken.broken = False
    assert await shard.replay(INSTALLATION, "b", None) == 2
    await shard.wait_idle()
    assert sorted(Broken.ran) == ["first", "second"]
    assert await shard.dead_letters() == []
