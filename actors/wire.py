"""The protocol between where deliveries come in and the shards that journal them.

The ingress (Serve), `ghbot dev` (aiohttp, one process) and the test harness all turn
a `ghbot.webhooks.Delivery` (signature checked, envelope decoded) into an `Inbound`
here (`to_inbound`), send it to the shard that owns its installation (`vshard_of`,
`shard_of`) in a batch (`encode_batch`), and read one `Status` back per delivery. So
the routing, the ordering key and the "no handler: complete at once" rule are the
same wherever a delivery comes in.

Routing has two steps: an installation belongs to a virtual shard for the journal's
life (`vshard_of`: the journal's streams are partitioned, and fenced, by it); a
virtual shard is hosted by one shard actor of the deployment (`shard_of`), which can
change when the number of shard actors does.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import msgspec

from actors.bot import InstallationActor, ordering_key
from actors.runtime_events import NO_INSTALLATION, DeliveryReceived, installation_of
from actors.schedule import SCHEDULE_EVENT
from ghbot.journal.plan import shard_for
from ghbot.webhooks import Delivery

__all__ = [
    "Inbound",
    "Status",
    "completes_at_once",
    "decode_batch",
    "encode_batch",
    "encode_parts",
    "shard_of",
    "stream_vshard",
    "to_inbound",
    "vshard_of",
    "vshards_of",
]


class Status(StrEnum):
    """What a shard answers for each delivery of a batch."""

    ACCEPTED = "accepted"
    """Journaled now, durably: the ingress answers 202."""
    DUPLICATE = "duplicate"
    """Journaled before (the same GUID): the ingress answers 200."""
    REFUSED = "refused"
    """Not written (a newer shard fenced this one, or it is not this shard's): 503."""
    DRAINING = "draining"
    """Not written: the shard is draining, to be replaced. The ingress tries again for a
    few seconds (`actors.ray.batcher.HOLD_FOR`), then answers 503."""


class Inbound(msgspec.Struct, frozen=True, array_like=True):
    """One delivery on its way from the ingress to its shard.

    `completed` says the bot has no handler for it, so it is journaled as received and
    completed at once. `version` is the deployment version of the code that judged
    that (`RuntimeSettings.version`): a shard of another version, during an upgrade,
    judges again with its own bot (`completes_at_once`).
    """

    installation_id: int
    vshard: int
    received: DeliveryReceived
    completed: bool = False
    version: str = ""


_inbound_encoder: Final = msgspec.msgpack.Encoder()
_inbound_decoder: Final = msgspec.msgpack.Decoder(list[Inbound])


def encode_batch(batch: list[Inbound]) -> bytes:
    """Encode deliveries bound for one shard as one MessagePack message."""
    return _inbound_encoder.encode(batch)


def decode_batch(data: bytes) -> list[Inbound]:
    """Decode what `encode_batch` made."""
    return _inbound_decoder.decode(data)


#: The most bytes of deliveries in one part of a batch (`encode_parts`): under Ray's
#: limit for passing an argument inline (100 KiB, `max_direct_call_object_size`),
#: past which it goes through the object store instead, a round trip more.
PART_BYTES: Final = 90 * 1024


def encode_parts(batch: list[Inbound], limit: int = PART_BYTES) -> list[bytes]:
    """Encode a batch as parts of at most about `limit` bytes each, in order.

    A delivery bigger than `limit` travels alone in its part. The shard's `ingest`
    takes the parts as separate arguments, so each stays inline in a Ray call.
    """
    parts: list[bytes] = []
    start, size = 0, 0
    for index, item in enumerate(batch):
        weight = len(item.received.body) + 256  # the body, and the fields around it
        if index > start and size + weight > limit:
            parts.append(encode_batch(batch[start:index]))
            start, size = index, 0
        size += weight
    if start < len(batch):
        parts.append(encode_batch(batch[start:]))
    return parts


def vshard_of(installation_id: int, vshards: int) -> int:
    """Return the virtual shard that owns an installation (stable across processes)."""
    return installation_id % vshards


def stream_vshard(stream: str, vshards: int) -> int:
    """Return the virtual shard a journal stream belongs in (what `ghbot journal reshard`
    moves it to): its installation's (`vshard_of`), or for a stream of no installation
    the journal's own choice (`ghbot.journal.shard_for`)."""
    installation_id = installation_of(stream)
    if installation_id is None:
        return shard_for(stream, vshards)
    return vshard_of(installation_id, vshards)


def shard_of(vshard: int, shards: int) -> int:
    """Return the index of the shard actor, of `shards`, that hosts `vshard`."""
    return vshard % shards


def vshards_of(shard: int, shards: int, vshards: int) -> list[int]:
    """Return the virtual shards, of `vshards`, that shard actor `shard` hosts."""
    return [v for v in range(vshards) if shard_of(v, shards) == shard]


def completes_at_once(bot: type[InstallationActor], event: str, action: str | None) -> bool:
    """Tell whether a delivery of `event` (and `action`) runs none of `bot`'s handlers,
    so its shard journals it as received and completed at once. A webhook claiming to
    be a scheduled run runs nothing (`actors.schedule`)."""
    qualified = f"{event}.{action}" if action else event
    return event == SCHEDULE_EVENT or not bot.handlers_for(qualified, event)


def to_inbound(
    bot: type[InstallationActor],
    delivery: Delivery,
    vshards: int,
    *,
    received_at: float,
    trace: str = "",
    version: str = "",
) -> Inbound:
    """Return what the shard owning `delivery`'s installation journals for it; `version`
    is the deployment version `bot` belongs to."""
    envelope = delivery.envelope
    installation_id = envelope.installation_id or NO_INSTALLATION
    event = delivery.event
    return Inbound(
        installation_id=installation_id,
        vshard=vshard_of(installation_id, vshards),
        received=DeliveryReceived(
            delivery_id=delivery.delivery_id,
            event=event,
            body=delivery.body,
            received_at=received_at,
            hook_id=delivery.hook_id,
            key=ordering_key(bot.ordering, event, envelope),
            trace=trace,
            app_id=delivery.app_id,
        ),
        completed=completes_at_once(bot, event, envelope.action),
        version=version,
    )
