"""A verified delivery, as its shard takes it: the one place an `Inbound` is made.

The ingress (Serve), `ghbot dev` (aiohttp, one process) and the test harness all turn
a `ghbot.webhooks.Delivery` (signature checked, envelope decoded) into the `Inbound`
that `ShardCore.ingest` journals, here, so the routing (installation → virtual
shard), the ordering key and the "no handler: complete at once" rule are the same
wherever a delivery comes in.
"""

from __future__ import annotations

from actors.bot import InstallationActor, ordering_key
from actors.records import NO_INSTALLATION, DeliveryReceived, Inbound
from actors.schedule import SCHEDULE_EVENT
from ghbot.webhooks import Delivery

__all__ = ["to_inbound", "vshard_of"]


def vshard_of(installation_id: int, vshards: int) -> int:
    """Return the virtual shard that owns an installation (stable across processes)."""
    return installation_id % vshards


def to_inbound(
    bot: type[InstallationActor],
    delivery: Delivery,
    vshards: int,
    *,
    received_at: float,
    trace: str = "",
) -> Inbound:
    """Return what the shard owning `delivery`'s installation journals for it."""
    envelope = delivery.envelope
    installation_id = envelope.installation_id or NO_INSTALLATION
    event = delivery.event
    qualified = f"{event}.{envelope.action}" if envelope.action else event
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
        # A webhook claiming to be a scheduled run runs nothing (`actors.schedule`).
        completed=event == SCHEDULE_EVENT or not bot.handlers_for(qualified, event),
    )
