"""The load side of soak.py: FakeGitHub, a paced mixed load, and the history checker.

Runs at nice 19 in its own process (so the system under test is not starved by its
load). Protocol on stdin/stdout, one JSON object per line, one answer per command:

1. it prints ``{"fake": URL}`` once the fake listens;
2. ``{"run": {...}}`` starts sending (answered at once); ``{"stats": true}`` answers the
   tokens the fake has minted and the effects so far, while a run goes on;
   ``{"wait": true}`` answers the run's figures when it is over; ``{"check": URL,
   "vshards": V}`` holds the whole history against the journal at URL (`tests/history.py`).

Deliveries are GitHub's published example payloads, made to name one of
`installations` installations (drawn with weight ``1 / (rank + 20)``: the top one gets
about 2 %, ten times the last one's share), signed, and sent over keep-alive
connections. A share of the sends are redeliveries of a recent delivery (same GUID,
same body). Every comment the bot makes at the fake is an effect of the delivery whose
GUID ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from e2e_harness import FIXTURE, Harness, _host_port, _read_response  # noqa: E402

from actors.bot import ordering_key  # noqa: E402
from benchmarks.soak_bot import Soak  # noqa: E402
from ghbot.events import decode_envelope  # noqa: E402
from ghbot.journal import open_journal  # noqa: E402
from ghbot.webhooks import sign  # noqa: E402
from tests.history import History, Journaled, check, journaled  # noqa: E402

#: The mix: (event and action, weight, handled by `soak_bot.Soak`).
MIX = (
    ("issues.opened", 20, True),
    ("issue_comment.created", 30, True),
    ("pull_request.opened", 6, True),
    ("pull_request.synchronize", 12, True),
    ("push", 15, True),
    ("issues.labeled", 7, False),
    ("label.created", 3, False),
    ("check_suite.completed", 4, False),
    ("workflow_run.completed", 3, False),
)
ISSUE, PULL = 3, 2  # each repository's issues: 1 tracks pushes, 2 is a PR, 3 an issue
ANSWERS = {202: "accepted", 200: "duplicate", 503: "unavailable"}


class SoakLoad(Harness):
    """The e2e harness's fake GitHub, a mixed paced load, and its `History`."""

    def __init__(self, public_key: bytes, args: argparse.Namespace) -> None:
        super().__init__(
            public_key, args.installations, args.secret, token_lifetime=args.token_lifetime
        )
        self.expected = 10**9  # never "done": the soak counts effects, it does not wait
        self.rng = random.Random(args.seed)
        self.templates = {name: (FIXTURE / f"{name}.json").read_text() for name, _, _ in MIX}
        self.weights = [1 / (rank + 20) for rank in range(1, args.installations + 1)]
        self.history = History()
        self.unhandled: set[str] = set()
        self.first_sent: dict[str, float] = {}
        self.effect_at: dict[str, float] = {}
        self.acks: list[tuple[float, float]] = []
        self.recent: collections.deque[tuple[bytes, str]] = collections.deque(maxlen=500)
        self.task: asyncio.Task[dict[str, Any]] | None = None
        make_comment = self.fake.store.make_comment

        def effect(repo: Any, issue: Any, body: str, user: Any) -> Any:
            guid = body.rsplit(" ", 1)[-1]
            self.history.effect(guid)
            self.effect_at.setdefault(guid, time.monotonic())
            return make_comment(repo, issue, body, user)

        self.fake.store.make_comment = effect  # type: ignore[method-assign]

    async def start(self) -> str:
        await self.fake.start()
        for n in range(1, self.installations + 1):
            self.fake.add_installation(n, f"org{n}", ["repo"])
            for title in ("pushes", "a change", "a question"):
                self.fake.add_issue(f"org{n}/repo", title)
        return self.fake.url

    def delivery(self, name: str, installation: int) -> tuple[str, bytes, str]:
        """Return (event header, body, GUID) of one `name` delivery for `installation`."""
        data = json.loads(self.templates[name])
        data["installation"] = {"id": installation}
        repo = data["repository"]
        repo.update(id=installation, name="repo", full_name=f"org{installation}/repo")
        repo["owner"]["login"] = f"org{installation}"
        if "issue" in data:
            data["issue"]["number"] = ISSUE
        if "pull_request" in data:
            data["number"] = data["pull_request"]["number"] = PULL
        return name.split(".")[0], json.dumps(data).encode(), str(uuid.uuid4())

    def request(self, host: str, port: int, event: str, body: bytes, guid: str) -> bytes:
        head = (
            f"POST /webhooks HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "User-Agent: GitHub-Hookshot/soak\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-GitHub-Event: {event}\r\n"
            f"X-GitHub-Delivery: {guid}\r\nX-GitHub-Hook-ID: 1\r\n"
            f"X-Hub-Signature-256: {sign(body, self.secret)}\r\n\r\n"
        )
        return head.encode() + body

    def draw(self, host: str, port: int, redeliver_share: float) -> tuple[bytes, str]:
        """Return the next request: a redelivery of a recent one, or a new delivery."""
        if self.recent and self.rng.random() < redeliver_share:
            return self.rng.choice(self.recent)
        installation = self.rng.choices(range(1, self.installations + 1), self.weights)[0]
        name, _, handled = self.rng.choices(MIX, [w for _, w, _ in MIX])[0]
        return self.prepared(host, port, name, installation, handled)

    def prepared(
        self, host: str, port: int, name: str, installation: int, handled: bool
    ) -> tuple[bytes, str]:
        event, body, guid = self.delivery(name, installation)
        self.history.keys[guid] = ordering_key(Soak.ordering, event, decode_envelope(body))
        if not handled:
            self.unhandled.add(guid)
        item = (self.request(host, port, event, body, guid), guid)
        self.recent.append(item)
        return item

    async def paced(self, target: str, rate: float, seconds: float, **run: Any) -> dict[str, Any]:
        """Send `rate` a second for `seconds` (after one delivery to each installation,
        if `warmup`); return the counts."""
        host, port = _host_port(target)
        queue: asyncio.Queue[tuple[bytes, str] | None] = asyncio.Queue()
        statuses: collections.Counter[int] = collections.Counter()

        async def worker() -> None:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                while (item := await queue.get()) is not None:
                    request, guid = item
                    self.history.sending([(guid, self.history.keys[guid])])
                    started = time.monotonic()
                    self.first_sent.setdefault(guid, started)
                    writer.write(request)
                    status, close = await _read_response(reader)
                    self.acks.append((started, time.monotonic() - started))
                    statuses[status] += 1
                    self.history.answered([guid], [ANSWERS.get(status, "refused")])
                    if close:
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
            finally:
                writer.close()

        workers = [asyncio.ensure_future(worker()) for _ in range(32)]
        if run.get("warmup"):
            for n in range(1, self.installations + 1):
                queue.put_nowait(self.prepared(host, port, "issues.opened", n, True))
        began, sent, most_queued = time.monotonic(), 0, 0
        total = int(rate * seconds)
        while sent < total:
            due = min(int((time.monotonic() - began) * rate) + 1, total)
            while sent < due:
                queue.put_nowait(self.draw(host, port, run.get("redeliver_share", 0.0)))
                sent += 1
            most_queued = max(most_queued, queue.qsize())
            await asyncio.sleep(0.01)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        return {"sent": sent, "statuses": dict(statuses), "most_queued": most_queued}

    def figures(self) -> dict[str, Any]:
        """Return every send's (time, ack latency), every handled delivery's (first send,
        latency to its first effect), and the counts so far."""
        e2e = [(self.first_sent[g], t - self.first_sent[g]) for g, t in self.effect_at.items()]
        return {
            "acks": self.acks,
            "e2e": e2e,
            "answers": dict(self.history.answers),
            "deliveries": len(self.history.keys),
            "unhandled": len(self.unhandled),
            **self.stats(),
        }

    def stats(self) -> dict[str, Any]:
        grants = self.fake.identities.grants.values()
        expired = sum(g.expires_at <= self.fake.clock() for g in grants)
        return {
            "tokens_minted": len(self.fake.identities.grants),
            "tokens_expired": expired,
            "effects": len(self.history.effects),
        }

    async def check(self, journal_url: str, vshards: int) -> dict[str, Any]:
        """Hold the history against the journal; return the figures or the problems."""
        journal = await open_journal(journal_url, shard_count=vshards)
        try:
            found = await journaled(journal, range(1, self.installations + 1), vshards=vshards)
        finally:
            await journal.close()
        try:
            figures = check(without(self.history, self.unhandled), only(found, self.unhandled))
            figures.update(check_unhandled(self.history, found, self.unhandled))
        except AssertionError as exc:
            return {"ok": False, "problems": str(exc)}
        return {"ok": True, "figures": figures}


def without(history: History, guids: set[str]) -> History:
    """Return `history` less the deliveries `guids` (their answers and effects)."""
    kept = History()
    kept.keys = {g: k for g, k in history.keys.items() if g not in guids}
    kept.first_sent = {g: t for g, t in history.first_sent.items() if g not in guids}
    kept.first_acked = {g: t for g, t in history.first_acked.items() if g not in guids}
    kept.answers_of = {g: a for g, a in history.answers_of.items() if g not in guids}
    kept.answers = collections.Counter(a for answers in kept.answers_of.values() for a in answers)
    kept.effects = [g for g in history.effects if g not in guids]
    return kept


def only(found: Journaled, guids: set[str]) -> Journaled:
    """Return what the journal holds less the deliveries `guids`."""
    return Journaled(
        received={g: at for g, at in found.received.items() if g not in guids},
        completed=collections.Counter({g: n for g, n in found.completed.items() if g not in guids}),
        dead=found.dead - guids,
    )


def check_unhandled(history: History, found: Journaled, guids: set[str]) -> dict[str, int]:
    """Assert every acknowledged delivery with no handler is journaled once, completed,
    and had no effect; return how many there were."""
    acked = history.acknowledged & guids
    problems = [
        f"{what}: {sorted(bad)[:5]}"
        for what, bad in (
            ("no handler, acknowledged, not journaled", acked - found.received.keys()),
            ("no handler, journaled twice", {g for g in acked if len(found.received[g]) > 1}),
            ("no handler, not completed", {g for g in acked if found.completed[g] < 1}),
            ("no handler, yet an effect", guids & set(history.effects)),
        )
        if bad
    ]
    assert not problems, "history broken:\n  " + "\n  ".join(problems)
    return {"no handler": len(acked)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--installations", type=int, default=200)
    parser.add_argument("--token-lifetime", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    load = SoakLoad(Path(args.public_key).read_bytes(), args)
    print(json.dumps({"fake": await load.start()}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = json.loads(line)
        if "run" in command:
            load.task = asyncio.ensure_future(load.paced(**command["run"]))
            answer: dict[str, Any] = {"started": True}
        elif "stats" in command:
            answer = load.stats()
        elif "wait" in command:
            assert load.task is not None
            answer = {**await load.task, **load.figures()}
        else:
            answer = await load.check(command["check"], command["vshards"])
        print(json.dumps(answer), flush=True)
    await load.fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
