"""The journal's records: msgspec Structs, encoded as MessagePack on the wire.

Schema evolution rules (every Struct in this module follows them):

1. A new field is added at the end of the class and always has a default, so a
   newer reader decodes an older record.
2. A field never changes type, is never renamed and is never removed; a field no
   longer used keeps its default and is ignored.
3. Unknown fields are *ignored* on decode (msgspec's default, no
   ``forbid_unknown_fields``): during a rolling deploy or a rollback an older reader
   must still read a record written by newer code. Types are still checked strictly
   (msgspec never coerces a ``str`` into an ``int``), so a malformed record is
   refused, not guessed at.
4. ``version`` says how to interpret the record's meaning, not its shape; it is
   bumped only when a field's meaning changes, and readers branch on it.

Records are encoded as maps (not ``array_like``) so field order never matters.
The backends store the same fields as table columns; `data` is opaque bytes that
the layers above encode (usually with `encode` and a `Codec`).
"""

from __future__ import annotations

from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "FENCED",
    "OK",
    "AppendRequest",
    "AppendResult",
    "AppendStatus",
    "Codec",
    "EventRecord",
    "NewEvent",
    "Snapshot",
    "decode_event",
    "decode_snapshot",
    "encode",
]

T = TypeVar("T")

AppendStatus = Literal["ok", "duplicate", "conflict", "fenced"]
OK: Final = "ok"
DUPLICATE: Final = "duplicate"
CONFLICT: Final = "conflict"
FENCED: Final = "fenced"


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append: its `type` name and its already-encoded `data`."""

    type: str
    data: bytes
    version: int = 1


class EventRecord(msgspec.Struct, frozen=True):
    """An event as stored: `seq` is 1-based and gap-free within its `stream`.

    `delivery_guid` is the GitHub delivery the append was deduplicated on (set on
    every event of that append), `recorded_at` the writer's wall clock (Unix s).
    """

    stream: str
    seq: int
    type: str
    data: bytes
    delivery_guid: str | None
    recorded_at: float
    version: int = 1


class Snapshot(msgspec.Struct, frozen=True):
    """A stream's encoded state after its event `seq` (the fold of events 1..seq)."""

    stream: str
    seq: int
    data: bytes
    recorded_at: float
    version: int = 1


class AppendRequest(msgspec.Struct, frozen=True):
    """Append `events` to `stream` as one all-or-nothing unit.

    `expected_seq` is the stream's last sequence number the writer has seen (0 for a
    new stream); ``None`` appends whatever the stream is at. `delivery_guid`, when
    given, makes the append idempotent per stream. `shard` picks the shard (and, for
    SQLite, the file) the stream lives in; ``None`` derives it from the stream name.
    `epoch`, when given, must be the shard's current epoch or the append is fenced.
    """

    stream: str
    events: tuple[NewEvent, ...]
    expected_seq: int | None = None
    delivery_guid: str | None = None
    shard: int | None = None
    epoch: int | None = None


class AppendResult(msgspec.Struct, frozen=True):
    """What became of one `AppendRequest`.

    - ``ok``: written as `first_seq`..`last_seq`.
    - ``duplicate``: nothing written; the delivery was appended earlier as
      `first_seq`..`last_seq`.
    - ``conflict``: nothing written; the stream is at `last_seq`, not the expected one.
    - ``fenced``: nothing written; the shard's current epoch is `epoch`.
    """

    status: AppendStatus
    first_seq: int = 0
    last_seq: int = 0
    epoch: int = 0

    @property
    def ok(self) -> bool:
        """Return whether this append wrote its events."""
        return self.status == OK


_encoder: Final = msgspec.msgpack.Encoder()
_event_decoder: Final = msgspec.msgpack.Decoder(EventRecord)
_snapshot_decoder: Final = msgspec.msgpack.Decoder(Snapshot)


def encode(obj: Any) -> bytes:
    """Encode a Struct (or any msgspec-supported value) as MessagePack."""
    return _encoder.encode(obj)


def decode_event(buf: bytes) -> EventRecord:
    """Decode an `EventRecord`; raise `msgspec.ValidationError` if it is malformed."""
    return _event_decoder.decode(buf)


def decode_snapshot(buf: bytes) -> Snapshot:
    """Decode a `Snapshot`; raise `msgspec.ValidationError` if it is malformed."""
    return _snapshot_decoder.decode(buf)


class Codec(Generic[T]):
    """Encode and decode one payload type, with its decoder built once.

    Build codecs at module level in installed modules only (a decoder does not
    pickle, see DESIGN "Ray notes").
    """

    __slots__ = ("_decoder", "type")

    def __init__(self, type: type[T]) -> None:
        self.type = type
        self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(type)

    def encode(self, obj: T) -> bytes:
        """Encode `obj` as MessagePack."""
        return _encoder.encode(obj)

    def decode(self, buf: bytes) -> T:
        """Decode `buf`; raise `msgspec.ValidationError` if it does not fit the type."""
        return self._decoder.decode(buf)
