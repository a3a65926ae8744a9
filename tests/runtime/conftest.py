"""Helpers for driving `ShardCore` without Ray: deliveries built from real payloads."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, TypeVar

import pytest
from starlette.requests import Request

from actors.bot import InstallationActor, on
from actors.quota import TurnSource
from actors.ray import app_auth_actor, shard_actor
from actors.ray.ingress import WebhookIngress
from actors.runtime_events import DeliveryReceived, decode_runtime, stream_name
from actors.shard import ShardCore
from actors.wire import Inbound, Status, encode_batch, to_inbound
from ghbot.breaker import CircuitBreaker
from ghbot.client import ClientOptions, GitHub, close_pool
from ghbot.events import Event, decode_envelope
from ghbot.journal import FaultyJournal, Journal, open_journal
from ghbot.journal.records import AppendRequest, AppendResult, EventRecord
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeGitHub
from ghbot.testing.payloads import EXAMPLES
from ghbot.webhooks import Delivery, sign

FIXTURES = EXAMPLES
VSHARDS = 4


INSTALLATION = 234


def payload(name: str, *, installation: int | None = INSTALLATION, **changes: Any) -> bytes:
    """Return a real payload for `installation`, with fields changed (`issue__number=5`).

    Most of GitHub's published examples come from repository webhooks, without the
    `installation` object that an app's deliveries carry; it is added here.
    """
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    if installation is not None:
        data["installation"] = {
            "id": installation,
            "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMjM0",
        }
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return json.dumps(data).encode()


def inbound(
    bot: type[InstallationActor],
    event: str,
    body: bytes,
    *,
    delivery_id: str | None = None,
) -> Inbound:
    """Build what the ingress sends a shard for one delivery (`actors.wire.to_inbound`)."""
    delivery = Delivery(
        event=event,
        delivery_id=delivery_id or str(uuid.uuid4()),
        hook_id=None,
        target_type=None,
        target_id=None,
        envelope=decode_envelope(body),
        body=body,
    )
    return to_inbound(bot, delivery, VSHARDS, received_at=time.time())


def item(n: int, body: bytes = b"{}") -> Inbound:
    """Delivery `dn` of installation 1 with `body`, for tests of how batches travel."""
    received = DeliveryReceived(delivery_id=f"d{n}", event="issues", body=body, received_at=0.0)
    return Inbound(installation_id=1, vshard=0, received=received)


class HeldReads(FaultyJournal):
    """A `FaultyJournal` whose reads, while `hold` is set, read at once and answer only
    once it is cleared: what they answer is the journal as it was when they read it."""

    def __init__(self, inner: Journal) -> None:
        super().__init__(inner)
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()  # set once the held read has read
        self.appended = asyncio.Event()  # set once an append is written

    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        results = await super().append_many(requests)
        self.appended.set()
        return results

    async def read(self, stream: str, *args: Any, **kwargs: Any) -> list[EventRecord]:
        records = await super().read(stream, *args, **kwargs)
        if self.hold is not None:
            hold, self.hold = self.hold, None  # one read is held
            self.entered.set()
            await hold.wait()
        return records


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Return once `check()` is true; fail after `within` seconds."""
    for _ in range(round(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true within {within:g} s")


def batch(*items: Inbound) -> bytes:
    return encode_batch(list(items))


def shard_of(installation_id: int = INSTALLATION) -> int:
    return installation_id % VSHARDS


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = await open_journal(f"sqlite://{tmp_path}/journal", shard_count=VSHARDS)
    yield journal
    await journal.close()


# --- a bot that comments, and the fake GitHub it comments on ----------------------

COMMENTER_INSTALLATION = 77
COMMENTER_REPO = "octo-org/hello-world"


class Stuck(InstallationActor):
    """A handler that waits for `release`: what it took stays pending (its installation
    busy) until then."""

    release: ClassVar[asyncio.Event]

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        await type(self).release.wait()


class AlwaysFails(InstallationActor):
    """A handler that fails its one attempt; its error carries data (an address)."""

    max_attempts = 1

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        raise RuntimeError("could not reach alice@example.com")


class Commenter(InstallationActor):
    """Comment once on issue 1 of `COMMENTER_REPO` for every new issue."""

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        await self.github.request(
            "POST", f"/repos/{COMMENTER_REPO}/issues/1/comments", json={"body": "thanks"}
        )


async def commenter_outcomes(journal: Journal) -> list[Any]:
    """The runtime's records in `Commenter`'s installation's stream, decoded."""
    stream, vshard = stream_name(COMMENTER_INSTALLATION), COMMENTER_INSTALLATION % VSHARDS
    return [decode_runtime(r.type, r.data) for r in await journal.read(stream, shard=vshard)]


R = TypeVar("R")


async def commenter_records(journal: Journal, kind: type[R]) -> list[R]:
    """`commenter_outcomes` of one record type (`ClientHeld`, `HandlerSucceeded`)."""
    return [e for e in await commenter_outcomes(journal) if isinstance(e, kind)]


@pytest.fixture
async def fake(public_pem: bytes) -> AsyncIterator[FakeGitHub]:
    """A FakeGitHub with `Commenter`'s installation, repository and issue 1."""
    async with FakeGitHub(app_id=1, public_key_pem=public_pem) as server:
        server.add_installation(COMMENTER_INSTALLATION, "octo-org", ["hello-world"])
        server.add_issue(COMMENTER_REPO, "Found a bug", "It crashes")
        yield server
    await close_pool()


def commenter_shard(
    journal: Journal,
    fake: FakeGitHub,
    bot: type[InstallationActor],
    *,
    retry: RetryPolicy | None = None,
    breaker: Callable[[], CircuitBreaker] | None = None,
    write_turns: TurnSource | None = None,
    **options: Any,
) -> ShardCore:
    """A shard of every virtual shard running `bot`, its client as `Commenter`'s
    installation at `fake` (`options` are the client's); a retry waits 15 to 30 s
    unless `retry` says otherwise; `breaker` makes each installation's breaker, whose
    open state keeps its deliveries waiting (as `actors.github.InstallationClients` has it)."""
    token = fake.create_token(COMMENTER_INSTALLATION)
    opts = ClientOptions(base_url=fake.url, **options)

    def github_for(_id: int) -> GitHub:
        return GitHub(token=token, options=opts, breaker=breaker() if breaker else None)

    def breaker_wait(github: GitHub | None) -> float:
        if github is None or github.breaker is None:
            return 0.0
        return github.breaker.retry_after(opts.clock())

    return ShardCore(
        range(VSHARDS),
        VSHARDS,
        journal,
        bot,
        github_for=github_for,
        breaker_wait=breaker_wait,
        retry=retry or RetryPolicy(base=60.0),
        write_turns=write_turns,
    )


# --- the ingress without Ray ------------------------------------------------------

WEBHOOK_SECRET = "the-webhook-secret"


class AcceptingBatcher:
    """Keeps what the ingress sends its shard, and answers as a shard that journaled it
    (`status`: `DUPLICATE` as one that had it already)."""

    def __init__(self, status: Status = Status.ACCEPTED) -> None:
        self.items: list[Inbound] = []
        self.status = status

    def submit(self, item: Inbound) -> asyncio.Future[Status]:
        self.items.append(item)
        future: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
        future.set_result(self.status)
        return future


def bare_ingress(
    bot: type[InstallationActor] | None = None, batcher: AcceptingBatcher | None = None
) -> WebhookIngress:
    """Return an ingress replica without Ray: `__init__`, which joins Ray, is skipped.

    `webhook` reads the secrets; past verification it also reads the bot, the settings'
    shard map and the batchers (a refusal needs no `bot`).
    """
    replica = WebhookIngress.__new__(WebhookIngress)
    replica.secrets = (WEBHOOK_SECRET,)
    replica.received_logged = None
    if bot is not None:
        replica.bot = bot
        replica.settings = SimpleNamespace(vshards=VSHARDS, shards=1, version="")  # type: ignore[assignment]
        replica.batchers = [batcher or AcceptingBatcher()]  # type: ignore[list-item]
    return replica


def webhook_request(body: bytes, **headers: str) -> Request:
    """Return the Starlette request of a delivery of `body`, signed with `WEBHOOK_SECRET`.

    `headers` override the defaults (`x_github_event="push"`); an empty value drops one.
    """
    sent = {
        "content-type": "application/json",
        "x-github-event": "issues",
        "x-github-delivery": f"guid-{time.monotonic_ns()}",
        "x-hub-signature-256": sign(body, WEBHOOK_SECRET),
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in sent.items() if v],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


@pytest.fixture
def bare_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Skip `set_up_process`: Ray's meter provider and ghbot's log handler stay out of
    the test process (the records still reach pytest's `caplog`)."""
    monkeypatch.setattr(shard_actor, "set_up_process", lambda settings: None)
    monkeypatch.setattr(app_auth_actor, "set_up_process", lambda settings: None)
    yield
