"""The history checker of the fault suites (docs/reliability.md, issue 15).

A suite sends a steady stream of deliveries while it injects a fault, and notes in a
`History` what it sent, what each attempt was answered (accepted, duplicate, refused,
or unavailable: the ingress's 503, which GitHub redelivers), and every effect a
handler had (a comment at the fake GitHub, or a run the handler recorded), in the
order the effects happened. `check` then holds the history against the journal:

- every acknowledged delivery (answered accepted or duplicate) is journaled once and
  completed;
- every journaled delivery was handled exactly once in effect, but for the ones the
  suite expects dead-lettered, which were dead-lettered and had no effect; no other
  delivery was dead-lettered;
- no effect without a journaled delivery;
- per ordering key, the effects happened in journal order, and the journal order
  keeps real-time order: a delivery acknowledged before another was first sent was
  journaled before it.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from actors.runtime_events import DeadLettered, DeliveryReceived, decode_runtime, stream_name
from actors.shard import ShardCore
from actors.wire import Inbound, encode_batch
from ghbot.errors import JournalUnavailable
from ghbot.journal import Journal

__all__ = ["History", "Journaled", "Sender", "check", "journaled"]

ACKNOWLEDGED = frozenset({"accepted", "duplicate"})


@dataclass
class History:
    """What a suite sent, what it was answered, and what the handlers did."""

    #: guid -> ordering key, for every delivery sent at least once.
    keys: dict[str, str] = field(default_factory=dict)
    #: guid -> tick of its first send, and of its first acknowledgement.
    first_sent: dict[str, int] = field(default_factory=dict)
    first_acked: dict[str, int] = field(default_factory=dict)
    #: Every answer, by status ("accepted", "duplicate", "refused", "unavailable"; over
    #: HTTP also "connection error" and "http <status>"): only the first two acknowledge.
    answers: Counter[str] = field(default_factory=Counter)
    #: Each delivery's answers, in order.
    answers_of: dict[str, list[str]] = field(default_factory=dict)
    #: The guid of every effect, in the order they happened.
    effects: list[str] = field(default_factory=list)
    _ticks: itertools.count[int] = field(default_factory=itertools.count)

    def sending(self, deliveries: Iterable[tuple[str, str]]) -> None:
        """Note that `(guid, key)` deliveries are being sent (an attempt starts now)."""
        tick = next(self._ticks)
        for guid, key in deliveries:
            self.keys.setdefault(guid, key)
            self.first_sent.setdefault(guid, tick)

    def answered(self, guids: Sequence[str], statuses: Sequence[str]) -> None:
        """Note the answer to each of `guids` (one attempt each)."""
        tick = next(self._ticks)
        for guid, status in zip(guids, statuses, strict=True):
            self.answers[status] += 1
            self.answers_of.setdefault(guid, []).append(status)
            if status in ACKNOWLEDGED:
                self.first_acked.setdefault(guid, tick)

    def unavailable(self, guids: Sequence[str]) -> None:
        """Note an attempt answered 503 (the journal was unavailable) for every guid."""
        self.answered(guids, ["unavailable"] * len(guids))

    def effect(self, guid: str) -> None:
        """Note one effect of the delivery `guid` (call it where the effect happens)."""
        self.effects.append(guid)

    @property
    def acknowledged(self) -> set[str]:
        return set(self.first_acked)

    @property
    def unacknowledged(self) -> list[str]:
        """The deliveries sent but never acknowledged: what GitHub would redeliver."""
        return [g for g in self.keys if g not in self.first_acked]


@dataclass
class Journaled:
    """What the journal holds of the deliveries: where, and what became of them."""

    #: guid -> (stream, seq) of each DeliveryReceived; a guid twice is a failure.
    received: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    completed: Counter[str] = field(default_factory=Counter)
    dead: set[str] = field(default_factory=set)


async def journaled(journal: Journal, installations: Iterable[int], *, vshards: int) -> Journaled:
    """Read the deliveries of the installations' streams out of `journal`."""
    found = Journaled()
    for installation_id in installations:
        stream = stream_name(installation_id)
        for record in await journal.read(stream, shard=installation_id % vshards):
            event = decode_runtime(record.type, record.data)
            if isinstance(event, DeliveryReceived):
                found.received.setdefault(event.delivery_id, []).append((stream, record.seq))
            elif record.type == "DeliveryCompleted":
                guid = str(record.delivery_guid or getattr(event, "delivery_id", ""))
                found.completed[guid] += 1
            elif isinstance(event, DeadLettered):
                found.dead.add(event.delivery_id)
    return found


def check(history: History, journal: Journaled, *, dead: Iterable[str] = ()) -> dict[str, int]:
    """Assert the history holds (see the module); return its figures.

    `dead` are the deliveries the suite expects dead-lettered (and only those).
    """
    expected_dead = set(dead)
    acked = history.acknowledged
    received = journal.received
    problems: list[str] = []

    def fail(what: str, guids: Iterable[str]) -> None:
        listed = sorted(guids)
        if listed:
            shown = {g: history.answers_of.get(g, []) for g in listed[:5]}
            problems.append(f"{what} ({len(listed)}), answered: {shown}")

    fail("acknowledged but not journaled", acked - received.keys())
    fail("journaled more than once", (g for g, at in received.items() if len(at) > 1))
    fail("journaled but never sent", received.keys() - history.keys.keys())
    fail("journaled but not completed", (g for g in received if journal.completed[g] < 1))
    fail("dead-lettered but not expected to be", journal.dead - expected_dead)
    fail("expected dead-lettered but not", expected_dead - journal.dead)

    effects = Counter(history.effects)
    fail("an effect without a journaled delivery", effects.keys() - received.keys())
    handled = received.keys() - expected_dead
    fail("journaled but no effect", (g for g in handled if effects[g] == 0))
    fail("more than one effect", (g for g in handled if effects[g] > 1))
    fail("an effect of a dead-lettered delivery", (g for g in expected_dead if effects[g]))

    # Per key: effects in journal order, and journal order keeps real-time order.
    # A key is an installation's (its stream's): two may share a repository's key.
    by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    for guid in sorted(received, key=lambda g: received[g][0]):
        by_key[received[guid][0][0], history.keys.get(guid, "")].append(guid)
    for key, in_journal in by_key.items():
        wanted = [g for g in in_journal if g not in expected_dead]
        members = set(in_journal)
        seen: set[str] = set()
        happened = []
        for guid in history.effects:
            if guid in members and guid not in seen:
                seen.add(guid)
                happened.append(guid)
        expected = [g for g in wanted if g in seen]
        if happened != expected:
            at = next(i for i, (a, b) in enumerate(zip(happened, expected, strict=True)) if a != b)
            shown = {g: history.answers_of.get(g, []) for g in (happened[at], expected[at])}
            problems.append(f"key {key!r}: effects out of journal order at {at}: {shown}")
        latest_send = -1
        for guid in in_journal:
            ack = history.first_acked.get(guid)
            if ack is not None and ack < latest_send:
                problems.append(f"key {key!r}: {guid} journaled after a later-sent delivery")
            latest_send = max(latest_send, history.first_sent.get(guid, -1))
    assert not problems, "history broken:\n  " + "\n  ".join(problems)
    return {
        "sent": len(history.keys),
        "acknowledged": len(acked),
        "journaled": len(received),
        "effects": len(history.effects),
        "dead": len(journal.dead),
        **{f"answered {status}": n for status, n in sorted(history.answers.items())},
    }


class Sender:
    """Send batches of deliveries to a shard as the ingress does, noting each answer.

    A batch the journal could not take (`JournalUnavailable`: the ingress answers 503)
    or a refused delivery is kept in `undelivered`, for `redeliver` to send again
    later, as GitHub's redelivery (or ghbot's sweeper asking for it) would.
    """

    def __init__(self, shard: ShardCore, history: History) -> None:
        self.shard = shard
        self.history = history
        self.undelivered: list[Inbound] = []
        #: Why batches were answered 503, and how often.
        self.errors: Counter[str] = Counter()

    async def send(self, items: Sequence[Inbound]) -> list[str] | None:
        """Send one batch; return its statuses, or None when it was answered 503."""
        guids = [item.received.delivery_id for item in items]
        self.history.sending((item.received.delivery_id, item.received.key) for item in items)
        try:
            statuses = [str(s) for s in await self.shard.ingest(encode_batch(list(items)))]
        except JournalUnavailable as exc:
            self.errors[str(exc)[:120]] += 1
            self.history.unavailable(guids)
            self.undelivered.extend(items)
            return None
        self.history.answered(guids, statuses)
        self.undelivered += [i for i, s in zip(items, statuses, strict=True) if s == "refused"]
        return statuses

    async def redeliver(self, *, batch: int = 20) -> int:
        """Send every undelivered delivery again, `batch` at a time; return how many
        were still not acknowledged after this pass."""
        waiting, self.undelivered = self.undelivered, []
        for start in range(0, len(waiting), batch):
            await self.send(waiting[start : start + batch])
        return len(self.undelivered)
