"""The ingress: a stateless Ray Serve deployment that takes GitHub's webhooks.

It verifies each delivery (size, content type, signature, headers, envelope), hands it
to the shard that owns its installation, and answers only once the shard has journaled
it durably: 202 for a new delivery, 200 for a duplicate GUID, 4xx for bad input
(nothing recorded), 503 when the shard or journal cannot take it (GitHub logs the
failure and the redelivery sweeper has it sent again; a shard draining or not reached
is waited for first, `HOLD_FOR`). It never waits for handlers.

Deliveries for one shard are batched (`ShardBatcher`: while calls to the shard are in
flight, new deliveries gather for the next) so that one call and one journal commit
carry many of them. Batches travel over the shard's channel, a TCP connection
between the two event loops (`actors.ray.channel`), or as Ray calls where it cannot be
reached or `GHBOT_SHARD_CHANNEL=ray`.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import msgspec
from opentelemetry.trace import Span, SpanKind, StatusCode
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from actors.ray.channel import RemoteError, ShardChannel
from actors.ray.lifecycle import get_or_create_actors
from actors.ray.names import find_shard
from actors.ray.process import set_up_process
from actors.runtime_events import NO_INSTALLATION
from actors.settings import RuntimeSettings, held_secrets, load_bot
from actors.wire import Inbound, Status, encode_parts, shard_of, to_inbound
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
    "HOLD_FOR",
    "MAX_SURGE_PERCENT",
    "READY_WHILE_REPLACED",
    "ShardBatcher",
    "WebhookDeployment",
    "WebhookIngress",
    "counts_as_ready",
]

log = logging.getLogger("ghbot.ingress")
_json = msgspec.json.Encoder()


class ShardUnavailable(Exception):
    """The shard did not answer that it journaled the batch (it failed, restarted, or the
    journal is down); some of it may be journaled all the same, and a redelivery of
    that part is answered as a duplicate."""


#: Seconds from a batch's first arrival during which the ingress may hold it, its
#: shard draining or not reached (its process gone, or replaced in an upgrade), trying
#: it again on the actor named as that shard now (`ShardBatcher`); then it answers 503.
#: A replaced shard whose handlers finish at once was back within it (the slowest 202
#: of an upgrade came after 2.0-2.6 s: `benchmarks/bench_replica_loss.py --event
#: upgrade`); GitHub waits 10 s for an answer.
HOLD_FOR: Final = 6.0
#: Seconds between two tries of a held batch.
RETRY_EVERY: Final = 0.25
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

#: Why a held batch is tried again: the shard not reached (Ray's errors for an actor
#: gone or restarting; the channel broken or refused). Not an error the shard raised
#: (`RemoteError` over the channel, `RayTaskError` over Ray: its journal could not
#: commit), which is answered 503 at once.
_UNREACHED: Final = (RayActorError, ConnectionError)

#: Holds logged, per replica: one line each 10 s (a shard's replacement).
_HOLDS_LOGGED = LogLimiter(burst=1, per=10.0)


def _now() -> float:
    """The running event loop's clock, the one `asyncio.timeout` and `asyncio.sleep`
    count in: holds are measured in it, so they end when their timeouts do."""
    return asyncio.get_running_loop().time()


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


def _unreached(exc: BaseException) -> bool:
    return isinstance(exc, _UNREACHED) and not isinstance(exc, RayTaskError)


class ShardBatcher:
    """Gather deliveries bound for one shard actor and send them in few calls.

    Group commit across the process boundary: at most `max_inflight` calls to the
    shard are outstanding; deliveries that arrive meanwhile wait and go together in
    the next call (at most `limit` per call). Under light load a delivery is sent at
    once; under heavy load batches grow, and so one call and one journal commit
    carry many deliveries.

    With `resolve` (which returns the handle of the actor named as the shard now), a
    batch the shard did not take because it is draining (`Status.DRAINING`) or was
    not reached is held and tried again every `retry_every` seconds, each time on the
    actor `resolve` returns, until `hold_for` seconds after its first delivery
    arrived: an upgrade replaces a shard by another of the same name, which takes what
    the old one refused, and Ray restarts one whose process died. What was journaled
    before a connection broke is then answered duplicate (200). Without `resolve`,
    or once the hold is over, the deliveries are answered `DRAINING` or fail
    (`ShardUnavailable`): 503. Held batches are tried in the order they were sent:
    only the oldest is tried, and a batch sent while any is held waits behind them
    (sent as a first try once those before it are through), so the successor journals
    them in the order this replica sent them (unless a batch released from waiting is
    refused while the one released after it is taken).
    """

    def __init__(
        self,
        actor: Any,
        *,
        limit: int,
        max_inflight: int = 2,
        direct: bool = False,
        resolve: Callable[[], Awaitable[Any]] | None = None,
        hold_for: float = HOLD_FOR,
        retry_every: float = RETRY_EVERY,
    ) -> None:
        #: The shard's actor, the one `resolve` last returned.
        self.actor = actor
        #: Batches go over the shard's channel (`actors.ray.channel`) when `direct`,
        #: else as Ray calls.
        self.channel = ShardChannel(actor, direct=direct)
        self.limit = limit
        self.max_inflight = max_inflight
        self.resolve = resolve
        self.hold_for = hold_for
        self.retry_every = retry_every
        #: Tries of held batches, and holds that ended in 503s, for tests; the
        #: deliveries held are counted in `ghbot_held_deliveries_total`.
        self.retries = 0
        self.expired = 0
        self._items: list[Inbound] = []
        self._futures: list[asyncio.Future[Status]] = []
        self._arrived: list[float] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving = asyncio.Lock()
        #: Batches numbered as they are sent; those held now, oldest first (only the
        #: first is tried), and an event set each time one leaves the hold.
        self._sent_count = 0
        self._holding: list[int] = []
        self._hold_moved = asyncio.Event()

    def submit(self, item: Inbound) -> asyncio.Future[Status]:
        """Queue `item`; the future gives the shard's status for it."""
        future: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._futures.append(future)
        self._arrived.append(_now())
        if self._inflight < self.max_inflight:
            self._flush()
        return future

    def _flush(self) -> None:
        items, futures = self._items[: self.limit], self._futures[: self.limit]
        held_until = self._arrived[0] + self.hold_for  # the batch's first arrival
        del self._items[: self.limit], self._futures[: self.limit], self._arrived[: self.limit]
        self._inflight += 1
        seq = self._sent_count
        self._sent_count += 1
        task = asyncio.get_running_loop().create_task(self._send(items, futures, held_until, seq))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._items and self._inflight < self.max_inflight:
            self._flush()

    async def _send(
        self,
        items: list[Inbound],
        futures: list[asyncio.Future[Status]],
        held_until: float,
        seq: int,
    ) -> None:
        try:
            await self._deliver(items, futures, held_until, seq)
        except BaseException as exc:  # never leave a request without its answer
            self._fail(futures, exc, len(items))
            raise
        finally:
            if self._holding:
                self._unhold(seq)

    async def _deliver(
        self,
        items: list[Inbound],
        futures: list[asyncio.Future[Status]],
        held_until: float,
        seq: int,
    ) -> None:
        # Held: refused by the shard (or not reached) at least once. Waited: it waited
        # behind held batches first, so a 503 at the end of its hold counts as held.
        held = waited = False
        if self._holding and self.resolve is not None:
            # Batches sent before it are held: it waits behind them, not to reach the
            # successor before them, then goes as a first try.
            bisect.insort(self._holding, seq)
            waited = True
            if not await self._turn(seq, held_until):
                self._answer_draining(futures, True)  # held for all of its hold
                return
            self._unhold(seq)
        while True:
            started = time.perf_counter()
            # A try of a held batch ends with the hold; a first try is not bounded.
            try:
                async with asyncio.timeout_at(held_until if held else None):
                    statuses = await self.channel.ingest(encode_parts(items))
            except Exception as exc:
                if (held or _unreached(exc)) and await self._again(held_until, seq):
                    held = True
                    continue
                metrics.shard_call(False, time.perf_counter() - started)
                self._fail(futures, exc, len(items), held or waited)
                return
            metrics.shard_call(True, time.perf_counter() - started)
            again: list[tuple[Inbound, asyncio.Future[Status]]] = []
            for entry, status in zip(zip(items, futures, strict=True), statuses, strict=True):
                if status == Status.DRAINING:
                    again.append(entry)
                elif not entry[1].done():
                    entry[1].set_result(status)
            if held and len(again) < len(items):
                metrics.held("taken", len(items) - len(again))
            if not again:
                return
            items, futures = [i for i, _ in again], [f for _, f in again]
            if not await self._again(held_until, seq):
                self._answer_draining(futures, held or waited)
                return
            held = True

    async def _again(self, held_until: float, seq: int) -> bool:
        """Wait `retry_every`, find the shard anew, and wait for the batches held before
        this one (`seq`) to leave the hold; False once the hold is over."""
        if self.resolve is None or _now() + self.retry_every >= held_until:
            return False
        if seq not in self._holding:
            bisect.insort(self._holding, seq)
        self.retries += 1
        logged = _HOLDS_LOGGED.allow("hold")
        if logged is not None:
            log.warning(
                "holding deliveries: the shard is draining or not reached; trying again "
                "for up to %g s after a batch arrived%s",
                self.hold_for,
                f" ({logged} more tries were not logged)" if logged else "",
            )
        await asyncio.sleep(self.retry_every)
        try:
            async with asyncio.timeout_at(held_until):
                await self.find()
        except Exception as exc:  # none named yet (its successor is starting)
            log.debug("the shard is not found by name (%s)", type(exc).__name__)
        return await self._turn(seq, held_until)

    async def _turn(self, seq: int, held_until: float) -> bool:
        """Wait until batch `seq` is the oldest held; False if its hold ends first."""
        while self._holding[0] != seq:
            try:
                async with asyncio.timeout_at(held_until):
                    await self._hold_moved.wait()
            except TimeoutError:
                return False
        return True

    def _unhold(self, seq: int) -> None:
        """Batch `seq` left the hold (taken, answered or failed): wake the others."""
        if seq in self._holding:
            self._holding.remove(seq)
            self._hold_moved.set()
            self._hold_moved = asyncio.Event()

    async def find(self) -> Any:
        """Look the shard up by name (`resolve`) and send to what is found from now on;
        return it. Raises what `resolve` raises (none named now)."""
        assert self.resolve is not None
        async with self._resolving:
            actor = await self.resolve()
            if actor != self.actor:
                self.actor = actor
                self.channel.use(actor)
        return actor

    def _answer_draining(self, futures: list[asyncio.Future[Status]], held: bool) -> None:
        if held:
            self.expired += 1
            metrics.held("expired", len(futures))
        log.warning(
            "shard refused a batch of %d: draining%s",
            len(futures),
            f" for all of the {self.hold_for:g} s hold" if held else "",
            extra={"error_type": "draining"},
        )
        for future in futures:
            if not future.done():
                future.set_result(Status.DRAINING)

    def _fail(
        self,
        futures: list[asyncio.Future[Status]],
        exc: BaseException,
        count: int,
        held: bool = False,
    ) -> None:
        if all(future.done() for future in futures):
            return
        if held:
            self.expired += 1
            metrics.held("expired", sum(not future.done() for future in futures))
        # What the shard raised, or what broke on the way.
        error_type = str(exc) if isinstance(exc, RemoteError) else type(exc).__name__
        log.warning(
            "shard refused a batch of %d: %s%s",
            count,
            error_type,
            f" after a {self.hold_for:g} s hold" if held else "",
            extra={"error_type": error_type},
        )
        for future in futures:
            if not future.done():
                future.set_exception(ShardUnavailable(error_type))


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
