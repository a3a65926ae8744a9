"""The runtime's metrics without Ray: the ingress's `webhook`, a shard's deliveries."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.requests import Request

from actors.bot import InstallationActor, on
from actors.ray.batcher import ShardUnavailable
from actors.shard import ShardCore
from actors.wire import Inbound, Status
from ghbot.events import Event
from ghbot.journal import Journal
from ghbot.retry import RetryPolicy
from ghbot.webhooks import sign
from tests.metering import Metered, assert_bounded, metered
from tests.runtime.conftest import (
    VSHARDS,
    WEBHOOK_SECRET,
    AcceptingBatcher,
    bare_ingress,
    batch,
    inbound,
    payload,
    webhook_request,
)


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


class Gated(InstallationActor):
    gate: asyncio.Event | None = None

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        gate = type(self).gate
        if gate is not None:
            await gate.wait()


class Failing(InstallationActor):
    max_attempts = 2

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        raise RuntimeError("GitHub was down")


def pending_now(m: Metered) -> float:
    gc.collect()  # shards of earlier tests, closed, drop out of the gauge
    return m.count("ghbot_pending_deliveries")


async def test_pending_deliveries_and_processing_time(journal: Journal) -> None:
    m = metered()
    Gated.gate = asyncio.Event()
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Gated, sleep=_no_sleep)
    try:
        await shard.start()
        before = pending_now(m)
        items = [
            inbound(Gated, "issues", payload("issues.opened", issue__number=n)) for n in range(3)
        ]
        # A second event with no handler is completed at once: never pending, not timed.
        items.append(inbound(Gated, "issues", payload("issues.labeled")))
        assert await shard.ingest(batch(*items)) == [Status.ACCEPTED] * 4
        await asyncio.sleep(0.01)
        assert pending_now(m) == before + 3 == shard.pending() + before
        Gated.gate.set()
        await shard.wait_idle()
        assert pending_now(m) == before
    finally:
        await shard.close()
    assert m.count("ghbot_webhook_processing_seconds", event="issues") == 3
    assert 0 < m.seconds("ghbot_webhook_processing_seconds", event="issues") < 30
    assert m.count("ghbot_dead_letters_total") == 0
    # The batch's journal commit and the handlers' outcomes: at least two journal calls.
    assert m.count("ghbot_journal_append_duration_seconds", outcome="ok") >= 2
    assert 0 < m.seconds("ghbot_journal_append_duration_seconds", outcome="ok") < 30
    assert_bounded()


async def test_dead_letters_are_counted_and_their_delivery_timed(journal: Journal) -> None:
    m = metered()
    shard = ShardCore(
        range(VSHARDS),
        VSHARDS,
        journal,
        Failing,
        sleep=_no_sleep,
        retry=RetryPolicy(base=0.0, cap=0.0),
    )
    try:
        await shard.start()
        await shard.ingest(batch(inbound(Failing, "issues", payload("issues.opened"))))
        # A body that does not decode is dead-lettered at once, with no retries.
        broken = inbound(Failing, "issues", payload("issues.opened", issue__title=5))
        await shard.ingest(batch(broken))
        await shard.wait_idle()
    finally:
        await shard.close()
    assert m.count("ghbot_dead_letters_total") == 2
    assert m.count("ghbot_webhook_processing_seconds", event="issues") == 2


# --- the ingress ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"x_hub_signature_256": "sha256=" + "0" * 64}, None, "signature"),
        ({"x_hub_signature_256": ""}, None, "signature"),
        ({}, b"{not json", "malformed"),
        ({"x_github_event": ""}, None, "missing_header"),
        ({"content_type": "application/x-www-form-urlencoded"}, None, "content_type"),
        ({"content_length": str(26 * 1024 * 1024)}, None, "too_large"),
        ({"X_GitHub_Event": "issues"}, None, "other"),  # the header twice: DuplicateHeader
    ],
)
async def test_refused_deliveries_by_reason(
    headers: dict[str, str], body: bytes | None, reason: str
) -> None:
    m = metered()
    sent = body if body is not None else payload("issues.opened")
    if body is not None:
        headers = {**headers, "x_hub_signature_256": sign(body, WEBHOOK_SECRET)}
    answer = await bare_ingress(Gated).webhook(webhook_request(sent, **headers))
    assert answer.status_code >= 400
    if reason == "signature":
        assert m.count("ghbot_webhook_signature_failures_total") == 1
        assert m.delta("ghbot_webhook_parse_errors_total") == {}
    else:
        assert m.count("ghbot_webhook_signature_failures_total") == 0
        assert m.delta("ghbot_webhook_parse_errors_total") == {frozenset({("reason", reason)}): 1}
    assert m.delta("ghbot_webhooks_received_total") == {}


async def test_a_sender_gone_mid_body_is_counted_malformed_before_its_signature() -> None:
    """docs/operations.md, GhbotParseErrorRateHigh: a sender that closes the connection
    before its body ends is refused while the body is read, before any signature
    check, and counted as `malformed`: unsigned senders can produce it."""
    m = metered()
    messages: Iterator[dict[str, Any]] = iter(
        [
            {"type": "http.request", "body": b'{"action": "ope', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    unsigned = webhook_request(b"", x_hub_signature_256="sha256=" + "0" * 64)
    answer = await bare_ingress(Gated).webhook(Request(unsigned.scope, receive))
    assert answer.status_code == 400
    assert m.delta("ghbot_webhook_parse_errors_total") == {frozenset({("reason", "malformed")}): 1}
    assert m.count("ghbot_webhook_signature_failures_total") == 0
    assert m.delta("ghbot_webhooks_received_total") == {}


class _FailingBatcher(AcceptingBatcher):
    """A shard call that failed (not reached, raising, its journal failing)."""

    def submit(self, item: Inbound) -> asyncio.Future[Status]:
        future: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
        future.set_exception(ShardUnavailable("RemoteError"))
        return future


@pytest.mark.parametrize(
    ("batcher", "reason"),
    [
        (_FailingBatcher(), "shard_failed"),
        (AcceptingBatcher(Status.DRAINING), "draining"),  # past the hold
        (AcceptingBatcher(Status.REFUSED), "refused"),  # fenced, or not the shard's
    ],
)
async def test_deliveries_answered_503_are_counted_by_why(
    batcher: AcceptingBatcher, reason: str
) -> None:
    """Nothing else counted them (Serve's access log and HAProxy's metrics are off)."""
    m = metered()
    answer = await bare_ingress(Gated, batcher).webhook(webhook_request(payload("issues.opened")))
    assert answer.status_code == 503
    assert m.delta("ghbot_webhooks_unavailable_total") == {frozenset({("reason", reason)}): 1}
    assert_bounded()


async def test_verified_deliveries_are_counted_by_event_and_unknown_events_as_other() -> None:
    m = metered()
    replica = bare_ingress(Gated)
    body = payload("issues.opened")
    assert (await replica.webhook(webhook_request(body))).status_code == 202
    assert (await replica.webhook(webhook_request(body))).status_code == 202
    other = json.dumps({"action": "done", "installation": {"id": 5}}).encode()
    assert (
        await replica.webhook(webhook_request(other, x_github_event="made_up_event"))
    ).status_code == 202
    assert m.delta("ghbot_webhooks_received_total") == {
        frozenset({("event", "issues")}): 2,
        frozenset({("event", "other")}): 1,
    }
    assert_bounded()
