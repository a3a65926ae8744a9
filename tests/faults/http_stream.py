"""A steady stream of signed deliveries over HTTP, noted in a `History`: for the suites
that kill ghbot's processes (tests/faults/test_process_kills.py, kills_job.py).

Each delivery is a real `issues.opened` payload for one of a few installations (one
repository each, `ISSUES` issues), its ordering key the installation and issue. Every
answer is noted: 202 accepted, 200 duplicate (both acknowledged), 503 unavailable, and,
not acknowledged either, ``connection error`` (refused, reset, or no answer within
`TIMEOUT`) and ``http <status>`` for any other status. What was not acknowledged is sent
again later with `resend`, as GitHub's redelivery (or `ghbot redeliver`) would.

The effect of a delivery is the label `tests.faults.labeler.Labeler` adds to its issue
at the fake GitHub; `effects` reads them back, in the order each issue got them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ghbot.testing.payloads import EXAMPLES
from ghbot.webhooks import sign
from tests.history import ACKNOWLEDGED, History

ISSUES = 4
TIMEOUT = 10.0
BOT = "tests.faults.labeler:Labeler"


def repo_of(installation: int) -> str:
    return f"kills/repo-{installation}"


def install_all(fake: Any, installations: Iterable[int]) -> None:
    """Install the app on each installation's repository, with `ISSUES` issues."""

    async def add() -> None:
        for installation in installations:
            owner, _, name = repo_of(installation).partition("/")
            fake.fake.add_installation(installation, owner, [name])
            for n in range(ISSUES):
                fake.fake.add_issue(repo_of(installation), f"issue {n + 1}")

    fake.run(add())


@dataclass(frozen=True)
class Delivery:
    guid: str
    key: str
    body: bytes


_TEMPLATE = (EXAMPLES / "issues.opened.json").read_text()


def delivery(installation: int, n: int) -> Delivery:
    """The `n`th delivery of a stream to `installation`: issue `n % ISSUES + 1`."""
    data = json.loads(_TEMPLATE)
    owner, _, name = repo_of(installation).partition("/")
    issue = n % ISSUES + 1
    data["installation"] = {"id": installation}
    data["repository"].update(full_name=repo_of(installation), name=name)
    data["repository"]["owner"]["login"] = owner
    data["issue"]["number"] = issue
    guid = str(uuid.uuid4())
    return Delivery(guid, f"{installation}/{issue}", json.dumps(data).encode())


@dataclass
class HttpSender:
    """POST deliveries to `url` signed with `secret`, noting each answer in `history`."""

    url: str
    secret: str
    history: History
    #: (monotonic time answered, status) of every answer, in order.
    log: list[tuple[float, str]] = field(default_factory=list)
    _by_guid: dict[str, Delivery] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpSender:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, item: Delivery) -> str:
        """Send one delivery; return the status noted for its answer."""
        assert self._session is not None
        self._by_guid[item.guid] = item
        self.history.sending([(item.guid, item.key)])
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/test",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": item.guid,
            "X-GitHub-Hook-ID": "1",
            "X-Hub-Signature-256": sign(item.body, self.secret),
        }
        try:
            async with self._session.post(
                f"{self.url}/webhooks", data=item.body, headers=headers
            ) as answer:
                await answer.read()
                code = answer.status
        except (aiohttp.ClientError, TimeoutError):
            status = "connection error"
        else:
            status = {202: "accepted", 200: "duplicate", 503: "unavailable"}.get(
                code, f"http {code}"
            )
        self.history.answered([item.guid], [status])
        self.log.append((time.monotonic(), status))
        return status

    async def stream(
        self, make: Callable[[], Delivery], *, rate: float, until: Callable[[], bool]
    ) -> int:
        """Send `rate` deliveries a second, each on its own, until `until()`; return how
        many were sent. Answers are not waited for between sends."""
        tasks: set[asyncio.Task[str]] = set()
        sent = 0
        next_at = time.monotonic()
        while not until():
            task = asyncio.create_task(self.send(make()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*tasks)
        return sent

    def unacknowledged(self) -> list[Delivery]:
        return [self._by_guid[g] for g in self.history.unacknowledged if g in self._by_guid]

    async def resend(self, *, rounds: int = 30, pause: float = 1.0) -> int:
        """Send every unacknowledged delivery again, a round at a time, until none is
        left or `rounds` passed; return how many were sent again."""
        again = 0
        for _ in range(rounds):
            waiting = self.unacknowledged()
            if not waiting:
                break
            again += len(waiting)
            await asyncio.gather(*(self.send(d) for d in waiting))
            if self.unacknowledged():
                await asyncio.sleep(pause)
        return again

    def failed_since(self, since: float) -> list[tuple[float, str]]:
        """The answers after `since` that did not acknowledge."""
        return [(t, s) for t, s in self.log if t >= since and s not in ACKNOWLEDGED]

    def steady_since(self, since: float, within: float) -> bool:
        """True when the answers of the last `within` s (after `since`) were all 2xx."""
        now = time.monotonic()
        recent = [s for t, s in self.log if t >= max(since, now - within)]
        return bool(recent) and all(s in ACKNOWLEDGED for s in recent)


def effects(fake: Any, installations: Iterable[int]) -> list[str]:
    """The labels of every issue of the installations' repositories: the effects, each
    issue's in the order they were added (issues one after another)."""

    async def read() -> list[str]:
        found: list[str] = []
        for installation in installations:
            owner, _, name = repo_of(installation).partition("/")
            repo = fake.fake.store.repo(owner, name)
            for number in sorted(repo.issues):
                found += [label["name"] for label in repo.issues[number]["labels"]]
        return found

    result: list[str] = fake.run(read())
    return result


def label_requests(fake: Any) -> Counter[str]:
    """How many times a handler asked for each delivery's label (repeated runs show)."""

    async def count() -> Counter[str]:
        asked: Counter[str] = Counter()
        for request in fake.fake.requests:
            if request.method == "POST" and request.path.endswith("/labels"):
                for name in (request.json or {}).get("labels", []):
                    asked[name] += 1
        return asked

    result: Counter[str] = fake.run(count())
    return result
