"""The runtime's journal events and the fold that tracks each installation's progress.

Every delivery an installation receives, and every outcome of its handlers, is an
event in the installation's stream (`inst-<id>`). `Progress` is their fold: which
deliveries are still pending (and which of their handlers already finished), and
which were dead-lettered. It is a pure function of the stream, so an installation
rebuilt from the journal after a crash knows exactly what is left to do.

Schema evolution follows `ghbot.journal.records`: new fields at the end, with a
default; no field changes type.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ghbot.digits import whole_number

__all__ = [
    "NO_INSTALLATION",
    "ClientHeld",
    "DeadLetter",
    "DeadLetterReplayed",
    "DeadLettered",
    "DeliveryCompleted",
    "DeliveryReceived",
    "HandlerFailed",
    "HandlerSucceeded",
    "Pending",
    "Progress",
    "decode_runtime",
    "evolve_progress",
    "installation_of",
    "stream_name",
]

DOMAIN_PREFIX: Final = "domain:"

#: The installation id of deliveries that carry none (a repository or organization
#: webhook pointed at the App's URL, or an app-level event): they share stream `inst-0`.
NO_INSTALLATION: Final = 0


_STREAM_PREFIX: Final = "inst-"


def stream_name(installation_id: int) -> str:
    """Return the journal stream of one installation."""
    return f"{_STREAM_PREFIX}{installation_id}"


def installation_of(stream: str) -> int | None:
    """Return the installation whose stream this is (None for any other stream, such as
    `inst-x` or `inst-+5`, which no installation has)."""
    if not stream.startswith(_STREAM_PREFIX):
        return None
    return whole_number(stream[len(_STREAM_PREFIX) :])


class DeliveryReceived(msgspec.Struct, frozen=True, kw_only=True):
    """A verified delivery, journaled before GitHub got its 202. No signature, no secret."""

    delivery_id: str
    event: str
    body: bytes
    received_at: float
    hook_id: str | None = None
    key: str = ""
    #: The ingress span's W3C `traceparent` ("" when tracing is off): the delivery's
    #: spans, even after a restart, join the trace its webhook started.
    trace: str = ""
    #: The app the delivery was sent to (`X-GitHub-Hook-Installation-Target-ID` when
    #: the target type is `integration`): how a handler's event knows its own app.
    app_id: int | None = None


class HandlerSucceeded(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    handler: str
    attempt: int
    duration_ms: float


class HandlerFailed(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    handler: str
    attempt: int
    error_type: str
    error: str
    retry_in: float
    #: When the next attempt is due (`time.time()`; 0 in records written before it
    #: was kept): a shard that resumes the delivery waits out what is left of it.
    retry_at: float = 0.0


class DeadLettered(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    handler: str
    attempts: int
    error_type: str
    error: str
    at: float


class DeliveryCompleted(msgspec.Struct, frozen=True, kw_only=True):
    """Every handler of the delivery succeeded or was dead-lettered."""

    delivery_id: str


class DeadLetterReplayed(msgspec.Struct, frozen=True, kw_only=True):
    """An operator asked to run a dead-lettered handler again, from attempt 1."""

    delivery_id: str
    handler: str


class ClientHeld(msgspec.Struct, frozen=True, kw_only=True):
    """When its shard handed the installation over (a drain), its GitHub client held
    what the other events do not say and a successor's new client would not know.

    `writes_after`: no write before then (the write lane's pacing, and a turn given to
    a quota lease's task); `paused_until`: no request before then (a
    secondary-limit pause); `breaker_until`: its circuit breaker open until then;
    `at`: when it was written. Epoch seconds of the clock of
    the node that wrote it (0 for none): nodes' clocks are assumed to agree (NTP).
    Older code skips the event (an unknown runtime type), as it did before the event
    existed.
    """

    writes_after: float = 0.0
    paused_until: float = 0.0
    breaker_until: float = 0.0
    at: float = 0.0


RUNTIME_TYPES: Final[dict[str, type[msgspec.Struct]]] = {
    cls.__name__: cls
    for cls in (
        DeliveryReceived,
        HandlerSucceeded,
        HandlerFailed,
        DeadLettered,
        DeliveryCompleted,
        DeadLetterReplayed,
        ClientHeld,
    )
}
_DECODERS: Final = {name: msgspec.msgpack.Decoder(cls) for name, cls in RUNTIME_TYPES.items()}


def decode_runtime(type_name: str, data: bytes) -> msgspec.Struct | None:
    """Decode a runtime event; None for a type this runtime does not know (a domain event)."""
    decoder = _DECODERS.get(type_name)
    return None if decoder is None else decoder.decode(data)


class Pending(msgspec.Struct, kw_only=True):
    """A delivery not yet completed: the handlers done and the attempts made so far.

    `only`, when set, limits the handlers to run (a replayed dead letter runs just its
    own handler again). `retry_at` holds, per handler whose last attempt failed, when
    its next attempt is due and the backoff it waits (`HandlerFailed.retry_at`,
    `retry_in`).
    """

    received: DeliveryReceived
    done: list[str] = msgspec.field(default_factory=list)
    attempts: dict[str, int] = msgspec.field(default_factory=dict)
    only: list[str] | None = None
    retry_at: dict[str, tuple[float, float]] = msgspec.field(default_factory=dict)


class DeadLetter(msgspec.Struct, kw_only=True):
    """A handler that gave up on a delivery, with the delivery kept for a replay."""

    record: DeadLettered
    received: DeliveryReceived


class Progress(msgspec.Struct, kw_only=True):
    """The fold of an installation's runtime events."""

    pending: dict[str, Pending] = msgspec.field(default_factory=dict)
    dead: dict[str, DeadLetter] = msgspec.field(default_factory=dict)
    received: int = 0
    completed: int = 0
    #: What the client held when the installation was last handed over (`ClientHeld`);
    #: the shard that takes it over starts its client from there.
    held: ClientHeld | None = None


def dead_key(delivery_id: str, handler: str) -> str:
    return f"{delivery_id}/{handler}"


def evolve_progress(progress: Progress, event: msgspec.Struct) -> Progress:
    """Apply one runtime event to `progress` (in place, for speed) and return it."""
    if isinstance(event, DeliveryReceived):
        progress.pending[event.delivery_id] = Pending(received=event)
        progress.received += 1
    elif isinstance(event, HandlerSucceeded):
        pending = progress.pending.get(event.delivery_id)
        if pending is not None and event.handler not in pending.done:
            pending.done.append(event.handler)
            pending.attempts[event.handler] = event.attempt
            pending.retry_at.pop(event.handler, None)
    elif isinstance(event, HandlerFailed):
        pending = progress.pending.get(event.delivery_id)
        if pending is not None:
            pending.attempts[event.handler] = event.attempt
            if event.retry_at:
                pending.retry_at[event.handler] = (event.retry_at, event.retry_in)
            else:  # written by older code: retried at once
                pending.retry_at.pop(event.handler, None)
    elif isinstance(event, DeadLettered):
        pending = progress.pending.get(event.delivery_id)
        if pending is not None:
            key = dead_key(event.delivery_id, event.handler)
            progress.dead[key] = DeadLetter(record=event, received=pending.received)
            if event.handler not in pending.done:
                pending.done.append(event.handler)
            pending.retry_at.pop(event.handler, None)
    elif isinstance(event, DeliveryCompleted):
        if progress.pending.pop(event.delivery_id, None) is not None:
            progress.completed += 1
    elif isinstance(event, ClientHeld):
        progress.held = event
    elif isinstance(event, DeadLetterReplayed):
        dead = progress.dead.pop(dead_key(event.delivery_id, event.handler), None)
        pending = progress.pending.get(event.delivery_id)
        if pending is not None:
            if event.handler in pending.done:
                pending.done.remove(event.handler)
            pending.attempts.pop(event.handler, None)
            pending.retry_at.pop(event.handler, None)
        elif dead is not None:
            progress.pending[event.delivery_id] = Pending(
                received=dead.received, only=[event.handler]
            )
    return progress
