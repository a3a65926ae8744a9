"""floor_bot.py's work behind Serve's ingress: the best any bot behind Serve can do here.

It verifies, `json.loads`, answers 202 and comments through the API in a background
task, like the floor, but as a Ray Serve deployment on the same HAProxy ingress ghbot
uses: no journal, no shard, no Ray call. `bench_e2e.py --serve-floor` runs it. What it
reaches is a ceiling for any layout with Serve's HTTP ingress in front, ghbot's
included, on the machine it runs on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from benchmarks.floor_bot import Bot


class ServeFloor:
    def __init__(self, api: str, app_id: str, key: bytes, secret: str) -> None:
        self.bot = Bot(api, app_id, key, secret)

    async def __call__(self, request: Request) -> Response:
        if self.bot.session is None:
            self.bot.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        body = await request.body()
        expected = "sha256=" + hmac.new(self.bot.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            return Response(status_code=401)
        data: dict[str, Any] = json.loads(body)
        if request.headers.get("X-GitHub-Event") == "issues" and data.get("action") == "opened":
            guid = request.headers["X-GitHub-Delivery"]
            task = asyncio.get_running_loop().create_task(self.bot.comment(data, guid))
            self.bot.tasks.add(task)
            task.add_done_callback(self.bot.tasks.discard)
        return Response(status_code=202)
