"""Helpers for driving `ShardCore` without Ray: deliveries built from real payloads."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.bot import InstallationActor, ordering_key
from actors.records import DeliveryReceived, Inbound, encode_batch
from actors.shard import vshard_of
from ghbot.events import decode_envelope
from ghbot.journal import Journal, open_journal

FIXTURES = Path(__file__).parent.parent / "fixtures" / "webhooks"
VSHARDS = 4


INSTALLATION = 234


def payload(name: str, *, installation: int | None = INSTALLATION, **changes: Any) -> bytes:
    """Return a real payload for `installation`, with fields changed (`issue__number=5`).

    Most of GitHub's published examples come from repository webhooks, without the
    `installation` object that an app's deliveries carry; it is added here.
    """
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    if installation is not None:
        data["installation"] = {
            "id": installation,
            "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMjM0",
        }
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return json.dumps(data).encode()


def inbound(
    bot: type[InstallationActor],
    event: str,
    body: bytes,
    *,
    delivery_id: str | None = None,
) -> Inbound:
    """Build what the ingress sends a shard for one delivery."""
    envelope = decode_envelope(body)
    installation_id = envelope.installation_id or 0
    qualified = f"{event}.{envelope.action}" if envelope.action else event
    return Inbound(
        installation_id=installation_id,
        vshard=vshard_of(installation_id, VSHARDS),
        received=DeliveryReceived(
            delivery_id=delivery_id or str(uuid.uuid4()),
            event=event,
            body=body,
            received_at=time.time(),
            key=ordering_key(bot.ordering, event, envelope),
        ),
        completed=not bot.handlers_for(qualified, event),
    )


def batch(*items: Inbound) -> bytes:
    return encode_batch(list(items))


def shard_of(installation_id: int = INSTALLATION) -> int:
    return installation_id % VSHARDS


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = await open_journal(f"sqlite://{tmp_path}/journal", shard_count=VSHARDS)
    yield journal
    await journal.close()
