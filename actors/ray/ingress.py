"""The ingress: a stateless Ray Serve deployment that takes GitHub's webhooks.

It verifies each delivery (size, content type, signature, headers, envelope), hands it
to the shard that owns its installation, and answers only once the shard has journaled
it durably: 202 for a new delivery, 200 for a duplicate GUID, 4xx for bad input
(nothing recorded), 503 when the shard or journal cannot take it (GitHub logs the
failure and the redelivery sweeper has it sent again; a shard draining or not reached
is waited for first, `HOLD_FOR`). It never waits for handlers.

Deliveries for one shard go in batches (`actors.ray.batcher.ShardBatcher`), over the
shard's channel (`actors.ray.channel`) or as Ray calls.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from opentelemetry.trace import Span, SpanKind, StatusCode
from ray import serve
from ray.exceptions import RayActorError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from actors.ray.batcher import HOLD_FOR, ShardBatcher, ShardUnavailable
from actors.ray.lifecycle import get_or_create_actors
from actors.ray.names import find_shard
from actors.ray.process import set_up_process
from actors.runtime_events import NO_INSTALLATION
from actors.settings import RuntimeSettings, held_secrets, load_bot
from actors.wire import Status, shard_of, to_inbound
from ghbot import metrics, telemetry
from ghbot.errors import MalformedPayload, PayloadTooLarge, WebhookError
from ghbot.logs import LogLimiter
from ghbot.webhooks import (
    MAX_PAYLOAD_BYTES,
    RETRY_AFTER,
    check_content_length,
    parse_delivery,
)

__all__ = [
    "GRACEFUL_WAIT_LOOP_S",
    "HEALTH_CHECK_PERIOD_S",
    "MAX_SURGE_PERCENT",
    "READY_WHILE_REPLACED",
    "WebhookDeployment",
    "WebhookIngress",
    "counts_as_ready",
]

log = logging.getLogger("ghbot.ingress")
_json = msgspec.json.Encoder()

#: Seconds a shard may say it is draining or starting and still count as ready in
#: `/readyz` (`counts_as_ready`): the hold, since what arrives for it meanwhile is held
#: and answered once its successor takes it. Past it, what arrived at the state's start
#: was answered 503 (a shard stuck): not ready. Not 0: every replica asks the same
#: shards, replaced one after another in an upgrade, so every replica would answer 503
#: for all of it and a load balancer take them all out. Each state is bounded alone: a
#: drain and a start of up to 6 s each read ready throughout, though a delivery held
#: through both was answered 503 (`ghbot_held_deliveries_total{outcome="expired"}`).
READY_WHILE_REPLACED: Final = HOLD_FOR
#: The shard's `why` of the states `READY_WHILE_REPLACED` covers (`ShardActor.ready`).
_REPLACED_STATES: Final = ("draining", "starting")


def counts_as_ready(shard: Mapping[str, Any]) -> bool:
    """Tell whether a shard's `ready` answer counts as ready for `/readyz`: ready, or
    draining or starting for at most `READY_WHILE_REPLACED` seconds. Not a failed
    start, nor an answer without `for` (a shard of a version before it)."""
    if shard["ready"]:
        return True
    seconds = shard.get("for")
    if shard.get("why") not in _REPLACED_STATES or not isinstance(seconds, int | float):
        return False
    return seconds <= READY_WHILE_REPLACED


async def read_body(request: Request, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """Read the request's body, refusing it as soon as it is known to pass `limit`.

    A declared `Content-Length` over the limit is refused before any byte is read; a
    body without one (chunked) is refused once the bytes read pass the limit, so a
    sender cannot make the replica hold more than `limit` bytes. Raises
    `PayloadTooLarge` (413), or `MalformedPayload` (400) when the sender goes away
    before the body ends.
    """
    check_content_length(request.headers, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"payload passed the {limit}-byte cap while being read")
            chunks.append(chunk)
    except ClientDisconnect:
        raise MalformedPayload("the connection closed before the body ended") from None
    return b"".join(chunks)


#: The paths the ingress answers, each with the one method it takes.
_ROUTES = (("/webhooks", "POST"), ("/healthz", "GET"), ("/readyz", "GET"))


def _answer(status: int, body: dict[str, Any]) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


def _unavailable(reason: str) -> Response:
    """Answer 503 with `reason` and a `Retry-After`: not known to be journaled, send it
    again (what was is answered as a duplicate)."""
    response = _answer(503, {"error": f"{reason}; retry"})
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


#: Refusals logged per kind (error type), per minute and replica; the next line logged
#: counts those held back. Enough to see an attack or a wrong secret, not a flood.
_REFUSALS_LOGGED = LogLimiter(burst=10, per=60.0)
_REASON_SHOWN, _GUID_SHOWN = 200, 64  # characters of each a line shows


def _log_refusal(exc: WebhookError, headers: Mapping[str, str]) -> None:
    """Log a refused delivery at WARNING: its GUID, the reason and the status answered.

    Rate-limited per error type (`_REFUSALS_LOGGED`). The GUID is the header's when
    the refusal came before it was read (a bad signature), so it is only what the
    sender claimed. The reason is the error's message, which never holds the
    signature; the GUID and the reason are cut short and kept printable, since a
    sender chooses them.
    """
    error_type = type(exc).__name__
    held = _REFUSALS_LOGGED.allow(error_type)
    if held is None:
        return
    claimed = exc.delivery_id or headers.get("x-github-delivery") or ""
    guid = _printable(claimed, _GUID_SHOWN) or None
    log.warning(
        "refused delivery %s with %d: %s%s",
        guid or "(no GUID)",
        exc.http_status,
        _printable(str(exc), _REASON_SHOWN),
        f" ({held} more {error_type} refusals were not logged)" if held else "",
        extra={
            "event_id": guid,
            "error_type": error_type,
            "http_status": exc.http_status,
            "suppressed": held or None,
        },
    )


def _refused(exc: WebhookError, headers: Mapping[str, str]) -> Response:
    """Log a refused delivery (`_log_refusal`) and answer it the error's status."""
    _log_refusal(exc, headers)
    return _answer(exc.http_status, {"error": str(exc), "delivery": exc.delivery_id})


def _received_limiter(per_second: int) -> LogLimiter | None:
    """The limiter of received-webhook lines: `per_second` lines a second (0: none)."""
    return LogLimiter(burst=per_second, per=1.0) if per_second else None


def _log_received(
    limiter: LogLimiter | None, delivery_id: str, event: str, installation_id: int, repo: str | None
) -> None:
    """Log a received webhook at INFO, at most the limiter's lines a second.

    Checks the level first, so a replica above INFO pays one comparison per delivery.
    """
    if limiter is None or not log.isEnabledFor(logging.INFO):
        return
    held = limiter.allow("received")
    if held is None:
        return
    log.info(
        "received %s%s",
        event,
        f" ({held} more received webhooks were not logged)" if held else "",
        extra={
            "event_id": delivery_id,
            "installation_id": installation_id or None,
            "repository": repo,
            "suppressed": held or None,
        },
    )


def _printable(text: str, limit: int) -> str:
    """Return `text` on one line of printable characters, at most `limit` of them."""
    flat = re.sub(r"[^\x20-\x7e]", "?", text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class WebhookIngress:
    """`POST /webhooks`, `GET /healthz`, `GET /readyz`."""

    def __init__(self, settings: RuntimeSettings) -> None:
        set_up_process(settings)
        self.settings = settings
        self.secrets = settings.settings.webhook_secrets
        self.bot = load_bot(settings.bot)
        shards = get_or_create_actors(settings)
        # The app-auth actor exists now: the replica's own settings drop the key. (A key
        # given as PEM text stays in Serve's copy of the deployment's arguments, which
        # this process cannot drop: give GITHUB_PRIVATE_KEY as a path.)
        self.settings = settings = settings.for_ingress()
        #: Received webhooks logged at INFO a second by this replica (None: none).
        self.received_logged = _received_limiter(settings.log_received_per_second)
        self.batchers = [
            ShardBatcher(
                shard,
                limit=settings.batch_max,
                max_inflight=settings.batch_inflight,
                direct=settings.shard_channel,
                resolve=functools.partial(find_shard, index, settings.namespace),
            )
            for index, shard in enumerate(shards)
        ]

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if request.method == "POST" and path.endswith("/webhooks"):
            return await self.webhook(request)
        if request.method == "GET" and path.endswith("/healthz"):
            return _answer(200, {"status": "alive"})
        if request.method == "GET" and path.endswith("/readyz"):
            return await self.ready()
        for route, method in _ROUTES:
            if path.endswith(route):  # a route this server has, asked the wrong way
                answer = _answer(405, {"error": f"{route} takes {method} only"})
                answer.headers["Allow"] = method
                return answer
        return _answer(404, {"error": "not found; GitHub's webhooks go to POST /webhooks"})

    async def webhook(self, request: Request) -> Response:
        """Verify, journal through the owning shard, and answer: the delivery's root span."""
        with telemetry.span("webhook", kind=SpanKind.SERVER) as span:
            response = await self._webhook(request, span)
            if span.is_recording():
                span.set_attribute(telemetry.STATUS_CODE, response.status_code)
                if response.status_code >= 500:  # not journaled: an error of this server's
                    span.set_status(StatusCode.ERROR, f"HTTP {response.status_code}")
            return response

    async def _webhook(self, request: Request, span: Span) -> Response:
        try:
            body = await read_body(request)
        except WebhookError as exc:
            metrics.parse_error(exc)  # `parse_delivery` counts the rest, and what it takes
            return _refused(exc, request.headers)
        try:
            delivery = parse_delivery(request.headers, body, self.secrets)
        except WebhookError as exc:
            return _refused(exc, request.headers)
        envelope = delivery.envelope
        installation_id = envelope.installation_id or NO_INSTALLATION
        if span.is_recording():
            span.update_name(f"webhook {delivery.event}")
            span.set_attributes(
                {
                    telemetry.EVENT_TYPE: delivery.event,
                    telemetry.DELIVERY_ID: delivery.delivery_id,
                    telemetry.INSTALLATION_ID: installation_id,
                }
            )
        item = to_inbound(
            self.bot,
            delivery,
            self.settings.vshards,
            received_at=time.time(),
            trace=telemetry.traceparent(span),
            version=self.settings.version,
        )
        vshard = item.vshard
        qualified = f"{delivery.event}.{envelope.action}" if envelope.action else delivery.event
        batcher = self.batchers[shard_of(vshard, self.settings.shards)]
        try:
            status = await batcher.submit(item)
        except ShardUnavailable as exc:
            metrics.webhook_unavailable("shard_failed")
            return _unavailable(f"the shard or its journal could not take the delivery ({exc})")
        if status in (Status.ACCEPTED, Status.DUPLICATE):
            repo = envelope.repository.full_name if envelope.repository else None
            limiter = self.received_logged
            _log_received(limiter, delivery.delivery_id, qualified, installation_id, repo)
        if status == Status.ACCEPTED:
            return _answer(202, {"delivery": delivery.delivery_id, "status": "accepted"})
        if status == Status.DUPLICATE:
            return _answer(200, {"delivery": delivery.delivery_id, "status": "duplicate"})
        metrics.webhook_unavailable(status)  # draining past the hold, or refused
        return _unavailable(f"the shard refused the delivery ({status})")

    def secrets_held(self) -> dict[str, bool]:
        """Tell which secrets this replica holds: the webhook secrets, never the key."""
        return held_secrets(self.settings)

    def pid(self) -> int:
        """Return the replica's process id (tests send it SIGTERM)."""
        return os.getpid()

    @staticmethod
    async def _shard_ready(batcher: ShardBatcher) -> dict[str, Any]:
        """Ask the batcher's shard whether it is ready; a shard gone is looked up by
        name first (replaced: its successor answers)."""
        try:
            answer: dict[str, Any] = await batcher.actor.ready.remote()
        except RayActorError:
            if batcher.resolve is None:
                raise
            answer = await (await batcher.find()).ready.remote()
        return answer

    async def ready(self) -> Response:
        """Answer 200 when every shard has started and its journal answers now, or is
        being replaced within the hold (`counts_as_ready`).

        Asked anew on each request (a load balancer's probe every few seconds): a
        journal that goes away turns the answer 503 at the next probe, and 200 again
        once it is back. Every replica asks the same shards: a shard's upgrade counted
        not ready would take every replica out of a load balancer at once.
        """
        try:
            shards = await asyncio.wait_for(
                asyncio.gather(*(self._shard_ready(batcher) for batcher in self.batchers)),
                5.0,
            )
        except Exception as exc:
            return _answer(503, {"status": "not ready", "error": type(exc).__name__})
        if not all(counts_as_ready(shard) for shard in shards):
            return _answer(503, {"status": "not ready", "shards": shards})
        return _answer(200, {"status": "ready", "shards": shards})


#: Seconds between Serve's health checks of an ingress replica (Serve's default is 10).
#: Serve notices a replica whose process died at its next check, and only then starts
#: another; with one replica, HAProxy holds new deliveries until that one answers
#: (`benchmarks/bench_replica_loss.py`).
HEALTH_CHECK_PERIOD_S: Final = 2.0
#: How many replicas Serve's rolling update (a redeploy with new code or settings) may
#: start above the ingress's replica count, in percent of it, rounded up: 25 starts one
#: more (for up to four) before it stops an old one. Serve's default, 0, stops an old
#: replica first, and with one replica HAProxy then holds every delivery until the new
#: one has started (and, in an upgrade, replaced the shards). With the surge the old
#: replica answers meanwhile, holding what goes to a shard being replaced until its
#: successor takes it (`ShardBatcher`). On 2 cores, 40 deliveries a second, one
#: replica: an upgrade's slowest 202 came after 2.0-2.2 s against 3.7 s, a redeploy of
#: the ingress's own settings after 0.01 s against 1.6 s; none failed
#: (`benchmarks/bench_replica_loss.py --event upgrade|redeploy --surges 0,25`).
MAX_SURGE_PERCENT: Final = 25
#: Seconds between a stopping replica's checks that the requests it holds are done
#: (Serve's `graceful_shutdown_wait_loop_s`, 2 by default): an ingress request takes
#: milliseconds (or a hold of at most `HOLD_FOR`), so a replica stopped by a redeploy
#: or a scale-down exits within about this long of its last answer, not 2 s later.
#: Behind Serve's HAProxy it first stays reachable for HAProxy's draining window
#: (`RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`, 30 s), as before.
GRACEFUL_WAIT_LOOP_S: Final = 0.5

# Serve's decorator is untyped; the class above stays plain so mypy checks its body.
# No per-request access log: at a thousand webhooks a second it costs a tenth of the
# replica's CPU; ghbot logs what matters (refusals, shard failures) itself.
WebhookDeployment: Any = serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=2000,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
    max_surge_percent=MAX_SURGE_PERCENT,
    graceful_shutdown_wait_loop_s=GRACEFUL_WAIT_LOOP_S,
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
)(WebhookIngress)
