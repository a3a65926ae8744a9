"""floor_bot.py's work behind Serve's ingress: the best any bot behind Serve can do here.

It verifies, `json.loads`, answers 202 and comments through the API in a background
task, like the floor, but as a Ray Serve deployment on the same HAProxy ingress ghbot
uses: no journal, no shard, no Ray call. `bench_e2e.py` runs it as the Serve ceiling.
What it reaches is a ceiling for any layout with Serve's HTTP ingress in front,
ghbot's included, on the machine it runs on.

With `durable` (a SQLite file's path), the durable Serve ceiling: the same, committing
each delivery to SQLite before its 202 as the durable floor does (`floor_bot.Journal`:
WAL, `synchronous=FULL`, group commit). What it reaches is a ceiling for any bot behind
Serve's ingress that gives ghbot's guarantee, an acknowledged delivery on disk.
"""

from __future__ import annotations

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from benchmarks.floor_bot import Bot, Journal


class ServeFloor:
    def __init__(
        self, api: str, app_id: str, key: bytes, secret: str, durable: str | None = None
    ) -> None:
        self.bot = Bot(api, app_id, key, secret, Journal(durable) if durable else None)

    async def __call__(self, request: Request) -> Response:
        if self.bot.session is None:
            self.bot.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        status = await self.bot.receive(await request.body(), request.headers)
        return Response(status_code=status)
