"""`ghbot dev`: a bot in one process, without Ray, taking real webhooks.

`DevServer` is an aiohttp server with `POST /webhooks` in front of the same code a
deployment runs: the ingress's checks (`ghbot.webhooks.parse_delivery`: size, content
type, signature, headers), one shard (`ShardCore`) with a SQLite journal, and the real
GitHub client with the app's credentials. What it answered 2xx is journaled, and a
restart resumes what was pending, as in the cluster.

`relay` pulls deliveries from a webhook proxy channel (smee.io's event stream; GitHub
cannot reach a laptop) and posts each to the server. A smee event carries the delivery's
headers and its body as a JSON value inside the event's own JSON: `relay` forwards that
value's bytes exactly as they came (`msgspec.Raw`), never re-encoded, so the
signature GitHub made over them still matches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgspec
from aiohttp import web

from actors.bot import InstallationActor
from actors.local import LocalShard
from actors.settings import dedup_window as dedup_window_for
from actors.shard import ShardCore
from actors.wire import Status, encode_batch, to_inbound
from ghbot import metrics
from ghbot.config import Settings
from ghbot.errors import ConfigError, GhBotError, PayloadTooLarge, WebhookError
from ghbot.journal import Journal, open_journal
from ghbot.retry import describe
from ghbot.webhooks import MAX_PAYLOAD_BYTES, RETRY_AFTER, parse_delivery

__all__ = ["DevServer", "load_env_file", "relay"]

log = logging.getLogger("ghbot.dev")

VSHARDS = 1
#: The headers a relayed delivery keeps (GitHub's, lower-cased, as smee sends them).
_FORWARDED = ("content-type", "user-agent", "x-hub-signature-256", "x-hub-signature")


class DevServer:
    """`POST /webhooks` and `GET /healthz` for one bot, in this process."""

    def __init__(
        self,
        bot: type[InstallationActor],
        settings: Settings,
        *,
        journal_dir: Path,
        host: str = "127.0.0.1",
        port: int = 3000,
        dedup_window: float | None = None,
        pace_writes: float | None = 1.0,
        max_concurrent_requests: int = 100,
    ) -> None:
        self.bot = bot
        #: Seconds a delivery GUID stays deduplicated: by default GitHub's redelivery
        #: window for `settings.api_url` (`actors.settings.dedup_window`), as deployed.
        self.dedup_window = (
            dedup_window_for(settings.api_url) if dedup_window is None else dedup_window
        )
        self.settings = settings
        #: As a deployment's `GHBOT_PACE_WRITES` and `GHBOT_MAX_CONCURRENT_REQUESTS`
        #: (`actors.settings.pace_writes`, `max_concurrent_requests`), for one shard.
        self.pace_writes = pace_writes
        self.max_concurrent_requests = max_concurrent_requests
        self.journal_dir = journal_dir
        self.host, self.port = host, port
        self.url = ""
        self.shard: ShardCore | None = None
        self._journal: Journal | None = None
        self._local: LocalShard | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> DevServer:
        """Open the journal, resume pending work, and listen; `url` is set.

        What was opened is closed again if a step fails (a port in use, say).
        """
        try:
            return await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> DevServer:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        journal_url = f"sqlite://{self.journal_dir.resolve()}"
        self._journal = await open_journal(journal_url, shard_count=VSHARDS)
        self._local = LocalShard(
            self.bot,
            self.settings,
            self._journal,
            vshards=VSHARDS,
            dedup_window=self.dedup_window,
            pace_writes=self.pace_writes,
            max_concurrent_requests=self.max_concurrent_requests,
            tracebacks=True,  # a handler's failure shows where it failed
            activation_hint=_start_afresh(self.journal_dir),
        )
        self.shard = self._local.shard
        await self._local.start()
        app = web.Application(client_max_size=MAX_PAYLOAD_BYTES)
        app.router.add_post("/webhooks", self._webhook)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self._runner.addresses[0][1] if self.port == 0 else self.port
        self.url = f"http://{self.host}:{port}"
        return self

    async def close(self) -> None:
        """Stop listening, cancel running handlers (journaled, they run at the next
        start), close the journal."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._local is not None:
            await self._local.close()
        if self._journal is not None:
            await self._journal.close()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "pid": os.getpid()})

    async def _webhook(self, request: web.Request) -> web.Response:
        assert self.shard is not None
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                refused = PayloadTooLarge(
                    f"payload over the {MAX_PAYLOAD_BYTES}-byte cap", delivery_id=None
                )
                metrics.parse_error(refused)  # `parse_delivery` counts the others
                raise refused from None
            delivery = parse_delivery(request.headers, body, self.settings.webhook_secrets)
        except WebhookError as exc:
            log.warning("refused a delivery: %s", exc, extra={"http_status": exc.http_status})
            return web.json_response(
                {"error": str(exc), "delivery": exc.delivery_id}, status=exc.http_status
            )
        inbound = to_inbound(self.bot, delivery, VSHARDS, received_at=time.time())
        try:
            [status] = await self.shard.ingest(encode_batch([inbound]))
        except GhBotError as exc:  # the journal failed: not known to be journaled
            log.warning("could not journal %s: %s", delivery.delivery_id, type(exc).__name__)
            metrics.webhook_unavailable("shard_failed")
            return _unavailable(f"the journal could not take it ({type(exc).__name__})")
        answer = {"delivery": delivery.delivery_id, "status": status}
        if status == Status.ACCEPTED:
            log.info("received %s %s", delivery.event, delivery.delivery_id)
            if self.shard.activation_failed(inbound.installation_id):
                # Journaled, and pending until the code reads the installation back (a
                # deployment answers 202 and keeps it so too): not handled, so not a 2xx.
                why = f"installation {inbound.installation_id} could not be activated"
                error = f"journaled, but not run: {why} (see the dev server's log)"
                return web.json_response({**answer, "error": error}, status=500)
            return web.json_response(answer, status=202)
        if status == Status.DUPLICATE:
            # GitHub's "Redeliver" after a fix: the handlers it dead-lettered run again
            # (a deployment answers it as a duplicate; `ghbot dead-letters replay`).
            try:
                replayed = await self.shard.replay(
                    inbound.installation_id, delivery.delivery_id, None
                )
            except Exception as exc:  # not activated, or the journal failing: say so, no 500
                # (a handler queued before the failure still runs; the answer says none)
                log.warning(
                    "redelivered %s: its dead letters could not be replayed (%s)",
                    delivery.delivery_id,
                    type(exc).__name__,
                    exc_info=exc,
                )
                replayed = 0
            if replayed:
                log.info(
                    "redelivered %s: its %d dead-lettered handler(s) run again",
                    delivery.delivery_id,
                    replayed,
                )
                return web.json_response({**answer, "replayed": replayed}, status=202)
            return web.json_response(answer, status=200)
        metrics.webhook_unavailable(status)
        return _unavailable(f"the journal refused it ({status})")


def _start_afresh(journal_dir: Path) -> str:
    """Return what to do when the dev journal holds what the bot's code cannot read back
    (a domain event with a new required field, say)."""
    path = journal_dir.resolve()
    return (
        f"The dev journal {path} holds what this code cannot read back: fix the code "
        "(a field added to a domain event or to the state needs a default), or start "
        f"afresh: stop ghbot dev and delete {path}, or pass another --journal"
    )


def _unavailable(reason: str) -> web.Response:
    """Answer 503 with a `Retry-After`, as the deployment's ingress does: send it again
    (what was journaled is answered as a duplicate)."""
    return web.json_response(
        {"error": f"{reason}; retry"}, status=503, headers={"Retry-After": str(RETRY_AFTER)}
    )


# --- a webhook proxy channel (smee.io) --------------------------------------------------


class _Relayed(msgspec.Struct):
    """A smee event's data: GitHub's headers at the top level, the body as raw JSON."""

    body: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b""))


async def relay(
    source: str,
    target: str,
    *,
    retry_after: float = 2.0,
    max_events: int | None = None,
    idle_timeout: float = 120.0,
) -> int:
    """Post every delivery the event stream at `source` sends to `target`; return the count.

    Runs until cancelled (or `max_events` deliveries). Reconnects after `retry_after`
    seconds when the stream ends, fails, answers anything but an event stream, or
    stays silent for `idle_timeout` seconds (smee pings far more often: a silent stream
    is a dead connection, after a laptop's sleep say). A delivery the local server
    cannot take (no answer, or a 5xx) is posted again, with backoff, before the next is
    read; one it refuses (a 4xx: a wrong secret, say) is logged and not. Events other
    than messages (smee's `ready` and `ping`) are skipped.
    """
    forwarded = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_read=idle_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while max_events is None or forwarded < max_events:
            try:
                async with session.get(source, headers={"Accept": "text/event-stream"}) as got:
                    if got.status != 200 or got.content_type != "text/event-stream":
                        raise ValueError(f"answered {got.status} {got.content_type}")
                    async for kind, data in _events(got.content):
                        if kind not in ("", "message"):
                            continue
                        await _forward_until_taken(session, target, data, retry_after)
                        forwarded += 1
                        if max_events is not None and forwarded >= max_events:
                            return forwarded
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it was, the relay goes on
                why = f"{describe(exc)} ({type(exc).__name__})"
                log.warning("webhook proxy %s: %s; reconnecting", source, why)
            await asyncio.sleep(retry_after)
    return forwarded


async def _forward_until_taken(
    session: aiohttp.ClientSession, target: str, data: bytes, retry_after: float
) -> None:
    """Post one delivery until the local server answers it with anything but a 5xx, with
    backoff."""
    delay = retry_after
    while True:
        try:
            await _forward(session, target, data)
            return
        except (TimeoutError, aiohttp.ClientError, OSError, _NotTaken) as exc:
            log.warning("posting a relayed delivery failed (%s); again in %g s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def _events(stream: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """Yield `(event, data)` of each server-sent event (`data` lines joined by newlines)."""
    kind, data = "", b""
    async for raw in _lines(stream):
        line = raw.rstrip(b"\r")
        if not line:
            if data:
                yield kind, data
            kind, data = "", b""
        elif line.startswith(b"event:"):
            kind = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            chunk = line[5:]
            chunk = chunk[1:] if chunk.startswith(b" ") else chunk
            data = data + b"\n" + chunk if data else chunk


#: The longest line of an event stream read: a delivery at the ingress's cap, escaped.
MAX_LINE: Final = 2 * MAX_PAYLOAD_BYTES + 65_536


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Yield the lines of `stream` without their `\n`, up to `MAX_LINE` bytes each.

    aiohttp's own line reader stops at about 512 KiB, and a smee event is one line
    holding the whole delivery.
    """
    buffer = bytearray()
    async for chunk in stream.iter_any():
        start = len(buffer)
        buffer += chunk
        while (end := buffer.find(b"\n", start)) >= 0:
            yield bytes(buffer[:end])
            del buffer[: end + 1]
            start = 0
        if len(buffer) > MAX_LINE:
            raise ValueError(f"an event stream line over {MAX_LINE} bytes")
    if buffer:
        yield bytes(buffer)


class _NotTaken(Exception):
    """The local server answered a relayed delivery with a 5xx: it did not take it."""


async def _forward(session: aiohttp.ClientSession, target: str, data: bytes) -> None:
    try:
        relayed = msgspec.json.decode(data, type=_Relayed)
        fields = msgspec.json.decode(data, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        log.warning("webhook proxy: an event that is not a delivery (%s)", exc)
        return
    headers = {
        name: str(value)
        for name, value in fields.items()
        if isinstance(value, str) and (name.startswith("x-github-") or name in _FORWARDED)
    }
    headers.setdefault("content-type", "application/json")
    async with session.post(target, data=bytes(relayed.body), headers=headers) as answer:
        text = await answer.text()
        level = logging.INFO if answer.status < 300 else logging.WARNING
        log.log(level, "relayed %s: %d %s", headers.get("x-github-event"), answer.status, text)
        if answer.status >= 500:
            raise _NotTaken(f"answered {answer.status}")


# --- .env --------------------------------------------------------------------------------


def load_env_file(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the `KEY=VALUE` lines of `path` whose keys `environ` lacks.

    The subset of the dotenv format that GitHub App settings need: `#` comments (also
    after a value, after a space), blank lines, an optional `export `,
    values optionally in single or double quotes (kept as written inside them; no
    escapes, no variable expansion, no multi-line values — give the private key as a
    path). A variable already set wins over the file.
    """
    environ = os.environ if environ is None else environ
    found: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        quoted = re.match(r"""(['"])(.*?)\1\s*(?:#.*)?$""", value)
        if quoted:  # a quoted value, with a comment after it or not
            value = quoted[2]
        elif " #" in value:  # an unquoted value ends where a comment starts
            value = value.split(" #", 1)[0].rstrip()
        if key not in environ:
            found[key] = value
    return found
