"""The floors of bench_e2e.py: a hand-rolled single-process aiohttp GitHub App bot.

What teams write today on top of aiohttp: verify the signature, `json.loads` the body,
answer 202, and comment through the API in a background task, with the app's JWT
exchanged for installation tokens and cached. No journal, no ordering, no retries: a
crash loses whatever it acknowledged and had not done.

With `--durable PATH`, the durable floor: the cheapest way to give ghbot's guarantee
that an acknowledged delivery is on disk. Each delivery is committed to a SQLite file
(WAL, `synchronous=FULL`) before its 202, by group commit: one writer thread, and the
deliveries arriving while it commits go into its next commit. The delivery's GUID is
the key, so a redelivery is acknowledged and not handled again. It records only
receipt (ghbot also journals each delivery's completion) and replays nothing.

    python benchmarks/floor_bot.py --port P --api URL --app-id ID --key PEM --secret S
        [--durable PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import jwt
from aiohttp import web


class Journal:
    """Deliveries committed to SQLite by group commit, keyed by their GUID."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS deliveries (guid TEXT PRIMARY KEY, body BLOB)")
        self.writer = ThreadPoolExecutor(1)
        self.waiting: list[tuple[str, bytes, asyncio.Future[bool]]] = []
        self.committing: asyncio.Task[None] | None = None

    async def append(self, guid: str, body: bytes) -> bool:
        """Return once the delivery is on disk: True if it is new, False if a redelivery."""
        new: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting.append((guid, body, new))
        if self.committing is None:
            self.committing = asyncio.create_task(self._commit_all())
        return await new

    async def _commit_all(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            group, self.waiting = self.waiting, []
            try:
                fresh = await loop.run_in_executor(self.writer, self._commit, group)
            except Exception as error:  # every waiter of the group gets it
                for *_, new in group:
                    new.set_exception(error)
                continue
            for (*_, new), is_new in zip(group, fresh, strict=True):
                new.set_result(is_new)
        self.committing = None

    def _commit(self, group: list[tuple[str, bytes, Any]]) -> list[bool]:
        """In the writer thread: one transaction for the group, one fsync."""
        with self.db:
            self.db.execute("BEGIN")
            insert = "INSERT OR IGNORE INTO deliveries VALUES (?, ?)"
            return [self.db.execute(insert, (guid, body)).rowcount == 1 for guid, body, _ in group]


def signed(secret: bytes, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether `X-Hub-Signature-256` is `body`'s HMAC-SHA256 under `secret`."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("X-Hub-Signature-256", ""))


class Bot:
    def __init__(
        self, api: str, app_id: str, key: bytes, secret: str, journal: Journal | None = None
    ) -> None:
        self.api = api
        self.app_id = app_id
        self.key = key
        self.secret = secret.encode()
        self.journal = journal
        self.tokens: dict[int, str] = {}
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def token(self, installation: int) -> str:
        if installation not in self.tokens:
            now = int(time.time())
            app_jwt = jwt.encode(
                {"iat": now - 60, "exp": now + 540, "iss": self.app_id}, self.key, "RS256"
            )
            assert self.session is not None
            async with self.session.post(
                f"{self.api}/app/installations/{installation}/access_tokens",
                headers={
                    "Authorization": f"Bearer {app_jwt}",
                    "Accept": "application/vnd.github+json",
                },
            ) as answer:
                self.tokens[installation] = (await answer.json())["token"]
        return self.tokens[installation]

    async def comment(self, data: dict[str, Any], guid: str) -> None:
        token = await self.token(data["installation"]["id"])
        assert self.session is not None
        repo, number = data["repository"]["full_name"], data["issue"]["number"]
        url = f"{self.api}/repos/{repo}/issues/{number}/comments"
        async with self.session.post(
            url,
            json={"body": f"Thanks for opening this issue! {guid}"},
            headers={"Authorization": f"token {token}", "Accept": "application/vnd.github+json"},
        ) as answer:
            await answer.read()

    async def receive(self, body: bytes, headers: Mapping[str, str]) -> int:
        """Verify, decode, commit (durable), start the comment; return the status to answer."""
        if not signed(self.secret, body, headers):
            return 401
        data = json.loads(body)
        guid = headers.get("X-GitHub-Delivery", "")
        if self.journal is not None and not await self.journal.append(guid, body):
            return 202  # a redelivery: handled already
        if headers.get("X-GitHub-Event") == "issues" and data.get("action") == "opened":
            task = asyncio.create_task(self.comment(data, guid))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return 202

    async def webhook(self, request: web.Request) -> web.Response:
        return web.Response(status=await self.receive(await request.read(), request.headers))


def bot_arguments() -> argparse.ArgumentParser:
    """The options every bot of the benchmark takes: where to listen, the API, the app."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--key", required=True)
    return parser


async def main() -> None:
    parser = bot_arguments()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--durable", metavar="PATH", help="commit deliveries to this SQLite file")
    args = parser.parse_args()
    journal = Journal(args.durable) if args.durable else None
    with open(args.key, "rb") as f:
        bot = Bot(args.api, args.app_id, f.read(), args.secret, journal)
    bot.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    app = web.Application()
    app.router.add_post("/webhooks", bot.webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
