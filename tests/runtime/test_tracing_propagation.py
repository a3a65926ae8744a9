"""One trace per delivery: ingress → shard → handler → GitHub, across the process boundary.

The ingress runs for real on a Starlette request, without Ray (as in test_metrics.py);
what it hands its shard goes through `encode_batch` to a `ShardCore`, as over Ray. The
spans are recorded by an in-memory SDK exporter (tests/tracing.py).
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from actors.runtime_events import DeliveryReceived, decode_runtime
from actors.shard import ShardCore
from actors.wire import Inbound, Status, decode_batch, encode_batch
from ghbot import telemetry
from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHubApp
from ghbot.journal import Journal
from ghbot.testing import FakeClock, FakeGitHub
from tests.runtime.conftest import COMMENTER_INSTALLATION as INSTALLATION
from tests.runtime.conftest import (
    VSHARDS,
    AcceptingBatcher,
    Commenter,
    bare_ingress,
    payload,
    webhook_request,
)
from tests.tracing import recorder


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def commenter_shard(
    journal: Journal, fake: FakeGitHub, pem_pkcs8: bytes
) -> tuple[GitHubApp, ShardCore]:
    """A shard running `Commenter` with an app whose API is `fake`, on a fake clock."""
    clock = FakeClock()
    app = GitHubApp(
        AppAuth(1, pem_pkcs8, clock=clock),
        options=ClientOptions(base_url=fake.url, clock=clock, sleep=clock.sleep),
    )
    shard = ShardCore(
        range(VSHARDS), VSHARDS, journal, Commenter, github_for=app.installation, clock=clock
    )
    return app, shard


async def through_the_ingress(guid: str) -> Inbound:
    """Post an `issues.opened` for `guid` to a bare ingress; return what it hands its shard."""
    batcher = AcceptingBatcher()
    answer = await bare_ingress(Commenter, batcher).webhook(
        webhook_request(payload("issues.opened", installation=INSTALLATION), x_github_delivery=guid)
    )
    assert answer.status_code == 202
    [item] = batcher.items
    return item


def assert_commented_in_the_trace_of(root: ReadableSpan, finished: list[ReadableSpan]) -> None:
    handler = one(finished, "handler opened")
    assert [s for s in finished if s.name == "GitHub POST"]  # it commented, this time
    assert handler.context.trace_id == root.context.trace_id
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}


async def test_a_delivery_is_one_trace_from_the_ingress_to_github(
    journal: Journal, fake: FakeGitHub, pem_pkcs8: bytes
) -> None:
    spans = recorder()
    guid = f"guid-{time.monotonic_ns()}"
    item = await through_the_ingress(guid)
    assert item.received.trace.startswith("00-")

    _, shard = commenter_shard(journal, fake, pem_pkcs8)
    await shard.start()
    try:
        # Over Ray the batch travels as bytes: the trace context goes with it.
        assert await shard.ingest(encode_batch(decode_batch(encode_batch([item])))) == [
            Status.ACCEPTED
        ]
        await shard.wait_idle()
    finally:
        await shard.close()

    finished = list(spans.get_finished_spans())
    root = one(finished, "webhook issues")
    assert root.parent is None and root.kind == trace.SpanKind.SERVER
    attributes = root.attributes or {}
    assert attributes["github.event_type"] == "issues"
    assert attributes["github.delivery_id"] == guid
    assert attributes["github.installation_id"] == INSTALLATION
    assert attributes["http.response.status_code"] == 202

    delivery = one(finished, "issues.opened")
    handler = one(finished, "handler opened")
    assert parent_of(delivery) == root.context.span_id
    assert parent_of(handler) == delivery.context.span_id
    # Two requests: the comment, and inside its token lookup the token exchange.
    posts = [s for s in finished if s.name == "GitHub POST"]
    [comment] = [s for s in posts if parent_of(s) == handler.context.span_id]
    token = one(finished, "GitHub installation token")
    jwt = one(finished, "jwt sign")
    assert (token.attributes or {})["auth.token_type"] == "installation_token"
    assert (jwt.attributes or {})["auth.token_type"] == "jwt"
    assert parent_of(token) == comment.context.span_id
    # The JWT is signed for the exchange, a request inside the token lookup.
    [exchange] = [s for s in posts if parent_of(s) == token.context.span_id]
    assert parent_of(jwt) == exchange.context.span_id
    # Every span, on both sides of the boundary, is in the ingress's trace.
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}


async def test_a_delivery_not_journaled_is_an_error_of_its_webhook_span() -> None:
    """Answered 503 (the shard refused it: not journaled, GitHub must send it again),
    the root span said nothing of it: filtering traces by error missed every delivery
    that failed to be acknowledged."""
    spans = recorder()
    ingress = bare_ingress(Commenter, AcceptingBatcher(Status.REFUSED))
    answer = await ingress.webhook(
        webhook_request(payload("issues.opened", installation=INSTALLATION))
    )
    assert answer.status_code == 503
    root = one(list(spans.get_finished_spans()), "webhook issues")
    assert root.status.status_code is trace.StatusCode.ERROR
    assert root.status.description == "HTTP 503"


async def test_without_a_tracer_provider_the_delivery_carries_no_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The process as it starts, before any SDK (tests/tracing.py sets one for others).
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    batcher = AcceptingBatcher()
    answer = await bare_ingress(Commenter, batcher).webhook(
        webhook_request(
            payload("issues.opened", installation=INSTALLATION), x_github_delivery="guid-untraced"
        )
    )
    assert answer.status_code == 202
    [item] = batcher.items
    assert item.received.trace == ""
    with telemetry.span("handler opened") as span:
        assert span is trace.INVALID_SPAN


async def test_without_a_tracer_provider_the_hot_path_starts_no_span_at_all(
    monkeypatch: pytest.MonkeyPatch, journal: Journal, fake: FakeGitHub, pem_pkcs8: bytes
) -> None:
    """The ingress, the delivery, its handler, its GitHub request and token lookup go
    through `telemetry.span`, which skips the API's no-op span (`jwt sign`, once per
    token exchange, does not)."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    app, shard = commenter_shard(journal, fake, pem_pkcs8)

    def no_span(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a span was started without a tracer provider: {args[1:]}")

    def comments() -> int:
        return sum(r.method == "POST" and r.path.endswith("/comments") for r in fake.requests)

    await shard.start()
    try:
        await app.installation(INSTALLATION).request("GET", "/rate_limit")  # token exchanged
        before = comments()
        # The tracer object every ghbot module holds (imported by name), by its class.
        monkeypatch.setattr(type(telemetry.tracer), "start_as_current_span", no_span)
        batcher = AcceptingBatcher()
        answer = await bare_ingress(Commenter, batcher).webhook(
            webhook_request(
                payload("issues.opened", installation=INSTALLATION), x_github_delivery="guid-bare"
            )
        )
        assert answer.status_code == 202
        assert await shard.ingest(encode_batch(batcher.items)) == [Status.ACCEPTED]
        await shard.wait_idle()
    finally:
        await shard.close()
    assert comments() == before + 1  # the handler ran, its request went through


async def test_a_no_op_provider_adds_no_trace_either(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = trace.NoOpTracerProvider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    monkeypatch.setattr(telemetry, "tracer", provider.get_tracer("ghbot"))
    batcher = AcceptingBatcher()
    answer = await bare_ingress(Commenter, batcher).webhook(
        webhook_request(
            payload("issues.opened", installation=INSTALLATION), x_github_delivery="guid-no-op"
        )
    )
    assert answer.status_code == 202
    assert batcher.items[0].received.trace == ""


def test_a_delivery_journaled_before_traces_reads_with_no_trace() -> None:
    class Before(msgspec.Struct, frozen=True, kw_only=True):  # DeliveryReceived until now
        delivery_id: str
        event: str
        body: bytes
        received_at: float
        hook_id: str | None = None
        key: str = ""

    old = msgspec.msgpack.encode(
        Before(delivery_id="d", event="issues", body=b"{}", received_at=1.0)
    )
    received = decode_runtime("DeliveryReceived", old)
    assert isinstance(received, DeliveryReceived) and received.trace == ""


async def test_a_delivery_resumed_by_another_shard_joins_its_webhooks_trace(
    journal: Journal, fake: FakeGitHub, pem_pkcs8: bytes
) -> None:
    """The trace context is journaled with the delivery: a shard that resumes it after
    a restart runs it in the trace the ingress began."""
    spans = recorder()
    item = await through_the_ingress(f"guid-{time.monotonic_ns()}")
    root = one(list(spans.get_finished_spans()), "webhook issues")

    # The first shard journals it, and is gone while its comment is still being sent.
    fake.faults.add(r"/comments$", "slow", 1, delay=2.0)
    _, first = commenter_shard(journal, fake, pem_pkcs8)
    await first.start()
    assert await first.ingest(encode_batch([item])) == [Status.ACCEPTED]
    for _ in range(200):
        if any(r.path.endswith("/comments") for r in list(fake.requests)):
            break
        await asyncio.sleep(0.01)
    await first.close()
    fake.faults.clear()
    spans.clear()

    _, second = commenter_shard(journal, fake, pem_pkcs8)
    await second.start()
    try:
        await second.wait_idle()
    finally:
        await second.close()
    assert_commented_in_the_trace_of(root, list(spans.get_finished_spans()))


async def test_a_dead_letter_replayed_joins_its_webhooks_trace(
    journal: Journal, fake: FakeGitHub, pem_pkcs8: bytes
) -> None:
    spans = recorder()
    guid = f"guid-{time.monotonic_ns()}"
    item = await through_the_ingress(guid)
    root = one(list(spans.get_finished_spans()), "webhook issues")

    # GitHub refuses the comment (422: no attempt would do better): dead-lettered.
    fake.faults.add(r"/comments$", "status", None, status=422)
    _, shard = commenter_shard(journal, fake, pem_pkcs8)
    await shard.start()
    try:
        assert await shard.ingest(encode_batch([item])) == [Status.ACCEPTED]
        await shard.wait_idle()
        [dead] = await shard.dead_letters()
        assert dead["delivery_id"] == guid
        # The handler's span says what failed by its type: not GitHub's message, nor
        # the handler's traceback (either may quote the payload).
        runs = [s for s in spans.get_finished_spans() if s.name == "handler opened"]
        assert runs and {(s.status.description, s.events) for s in runs} == {
            ("ValidationFailed", ())
        }
        fake.faults.clear()
        spans.clear()
        assert await shard.replay(INSTALLATION, guid, None) == 1
        await shard.wait_idle()
        assert await shard.dead_letters() == []
    finally:
        await shard.close()
    assert_commented_in_the_trace_of(root, list(spans.get_finished_spans()))
