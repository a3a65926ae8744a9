"""Journal records round-trip and evolve: older and newer readers read each other."""

from __future__ import annotations

import msgspec
import pytest

from ghbot.journal import Codec, EventRecord, Snapshot, decode_event, decode_snapshot, encode


def test_event_record_round_trips() -> None:
    record = EventRecord("inst-1", 3, "DeliveryReceived", b"\x81\xa1k\x01", "guid", 1.5)
    assert decode_event(encode(record)) == record
    snapshot = Snapshot("inst-1", 3, b"state", 2.0, version=2)
    assert decode_snapshot(encode(snapshot)) == snapshot


def test_an_older_reader_ignores_a_newer_records_extra_field() -> None:
    class NewerEventRecord(msgspec.Struct):
        stream: str
        seq: int
        type: str
        data: bytes
        delivery_guid: str | None
        recorded_at: float
        version: int = 1
        trace_id: str = ""  # added later, with a default

    newer = NewerEventRecord("s", 1, "t", b"", None, 0.0, 2, trace_id="abc")
    assert decode_event(encode(newer)) == EventRecord("s", 1, "t", b"", None, 0.0, 2)


def test_a_newer_reader_defaults_a_field_an_older_record_lacks() -> None:
    old = {"stream": "s", "seq": 1, "type": "t", "data": b"", "delivery_guid": None,
           "recorded_at": 0.0}  # fmt: skip
    assert decode_event(encode(old)).version == 1


def test_types_are_checked_strictly() -> None:
    bad = {"stream": "s", "seq": "1", "type": "t", "data": b"", "delivery_guid": None,
           "recorded_at": 0.0}  # fmt: skip
    with pytest.raises(msgspec.ValidationError):
        decode_event(encode(bad))


def test_codec_encodes_and_decodes_one_type() -> None:
    class Opened(msgspec.Struct):
        number: int
        title: str

    codec = Codec(Opened)
    assert codec.decode(codec.encode(Opened(7, "bug"))) == Opened(7, "bug")
    with pytest.raises(msgspec.ValidationError):
        codec.decode(encode({"number": "7", "title": "bug"}))
