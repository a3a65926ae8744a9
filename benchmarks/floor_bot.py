"""The floor of bench_e2e.py: a hand-rolled single-process aiohttp GitHub App bot.

What teams write today on top of aiohttp: verify the signature, `json.loads` the body,
answer 202, and comment through the API in a background task, with the app's JWT
exchanged for installation tokens and cached. No journal, no ordering, no retries: a
crash loses whatever it acknowledged and had not done.

    python benchmarks/floor_bot.py --port P --api URL --app-id ID --key PEM --secret S
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp
import jwt
from aiohttp import web


class Bot:
    def __init__(self, api: str, app_id: str, key: bytes, secret: str) -> None:
        self.api = api
        self.app_id = app_id
        self.key = key
        self.secret = secret.encode()
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

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            return web.Response(status=401)
        data = json.loads(body)
        if request.headers.get("X-GitHub-Event") == "issues" and data.get("action") == "opened":
            task = asyncio.create_task(self.comment(data, request.headers["X-GitHub-Delivery"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return web.Response(status=202)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    with open(args.key, "rb") as f:
        bot = Bot(args.api, args.app_id, f.read(), args.secret)
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
