"""`actors.wire`: what the ingress, `ghbot dev` and the harness make of a delivery, and
where it goes."""

from __future__ import annotations

from typing import ClassVar

from actors.bot import InstallationActor, Ordering, on
from actors.runtime_events import DeliveryReceived
from actors.wire import (
    completes_at_once,
    decode_batch,
    encode_parts,
    shard_of,
    stream_vshard,
    to_inbound,
    vshard_of,
    vshards_of,
)
from ghbot.events import Envelope, Event
from ghbot.journal.plan import shard_for
from ghbot.webhooks import Delivery, parse_delivery, sign
from tests.runtime.conftest import INSTALLATION, item, payload


class ByRepository(InstallationActor):
    """A bot subscribed to a whole event (no action), its deliveries ordered per repository."""

    ordering: ClassVar[Ordering] = "repository"

    @on("issues")
    async def any_issue(self, event: Event) -> None:
        return None


def issue_opened(guid: str, **headers: str) -> Delivery:
    """Return a verified `issues.opened` delivery of `INSTALLATION`, with more `headers`."""
    body = payload("issues.opened")
    sent = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": guid} | headers
    return parse_delivery(sent | {"X-Hub-Signature-256": sign(body, "s")}, body, ["s"])


def test_to_inbound_carries_what_the_shard_journals() -> None:
    delivery = issue_opened(
        "g-1",
        **{
            "X-GitHub-Hook-ID": "292430182",
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": "79929171",
        },
    )
    got = to_inbound(ByRepository, delivery, 8, received_at=12.5, trace="00-ab-cd-01", version="v2")
    repository_id = str(delivery.envelope.repository.id)  # type: ignore[union-attr]
    assert got.installation_id == INSTALLATION and got.vshard == vshard_of(INSTALLATION, 8)
    assert got.received == DeliveryReceived(
        delivery_id="g-1",
        event="issues",
        body=payload("issues.opened"),
        received_at=12.5,
        hook_id="292430182",
        key=repository_id,  # the bot's ordering, not the default per issue
        trace="00-ab-cd-01",
        app_id=79929171,
    )
    assert (got.completed, got.version) == (False, "v2")
    bare = to_inbound(ByRepository, delivery, 8, received_at=0.0)
    assert (bare.received.trace, bare.version) == ("", "")


def by_event_and_action(event: str, envelope: Envelope) -> str:
    return f"{event}:{envelope.action}"


class ByEventAndAction(InstallationActor):
    ordering: ClassVar[Ordering] = staticmethod(by_event_and_action)


def test_an_ordering_function_gets_the_event_s_name() -> None:
    got = to_inbound(ByEventAndAction, issue_opened("g-2"), 8, received_at=0.0)
    assert got.received.key == "issues:opened"


def test_a_handler_of_the_whole_event_takes_each_of_its_actions() -> None:
    assert not completes_at_once(ByRepository, "issues", "opened")
    assert not completes_at_once(ByRepository, "issues", None)
    assert completes_at_once(ByRepository, "push", None)


def test_each_virtual_shard_is_hosted_by_exactly_one_shard_actor() -> None:
    for shards, vshards in [(1, 1), (2, 8), (3, 8), (8, 8)]:
        hosted = [vshards_of(shard, shards, vshards) for shard in range(shards)]
        assert sorted(v for vs in hosted for v in vs) == list(range(vshards))
        for shard, vs in enumerate(hosted):
            assert vs and all(shard_of(v, shards) == shard for v in vs)


def test_a_stream_of_no_installation_lies_where_the_journal_puts_it() -> None:
    for name in ("audit", "inst-x", "inst-+5", "inst- 5", "inst-", "installation-5"):
        assert stream_vshard(name, 8) == shard_for(name, 8)
    assert stream_vshard("inst-234", 8) == vshard_of(234, 8)


def test_parts_stay_under_the_limit_and_none_is_empty() -> None:
    # The first delivery alone is over the smaller limits: it travels alone, first.
    batch = [item(99, b"y" * 5000)] + [item(n, b"x" * (700 + 150 * (n % 5))) for n in range(40)]
    for limit in (1000, 4096, 10_000):
        parts = encode_parts(batch, limit)
        assert [i for part in parts for i in decode_batch(part)] == batch
        assert all(decode_batch(part) for part in parts)
        for part in parts:
            assert len(decode_batch(part)) == 1 or len(part) <= limit
