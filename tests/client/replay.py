"""A server that answers recorded GitHub exchanges in order and checks each request.

The recordings are `@octokit/fixtures` scenarios (tests/fixtures/api): each exchange has
the request (`method`, `path` with query, `body`, `reqheaders`) and the answer
(`status`, `headers`, `response`). A request that does not match the next exchange is
kept in `mismatches` and answered 418, which the client does not retry.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent.parent / "fixtures" / "api"
#: Recorded headers that describe the recorded connection, not the answer.
HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "content-encoding"}
#: `application/vnd.github.v3+json` (octokit's) and `…github+json` (ours) are one type.
JSON_TYPES = {"application/vnd.github.v3+json", "application/vnd.github+json"}


def load(name: str) -> list[dict[str, Any]]:
    exchanges: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text())
    return exchanges


class Replay:
    """Serve `exchanges` in order on 127.0.0.1; `url` is the base URL once started."""

    def __init__(self, exchanges: list[dict[str, Any]]) -> None:
        self.exchanges = exchanges
        self.served = 0
        self.mismatches: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Replay:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        if self.served >= len(self.exchanges):
            self.mismatches.append(f"unexpected {request.method} {request.path_qs}")
            return web.Response(status=418)
        exchange = self.exchanges[self.served]
        self.served += 1
        problems = self._compare(exchange, request, await request.read())
        if problems:
            self.mismatches.extend(problems)
            return web.Response(status=418, text="; ".join(problems))
        headers = {k: str(v) for k, v in exchange["headers"].items() if k.lower() not in HOP_BY_HOP}
        recorded = exchange["response"]
        body = (
            json.dumps(recorded).encode()
            if isinstance(recorded, dict | list)
            else str(recorded).encode()
        )
        return web.Response(status=exchange["status"], body=body, headers=headers)

    @staticmethod
    def _compare(exchange: dict[str, Any], request: web.Request, body: bytes) -> list[str]:
        where = f"exchange {exchange['method'].upper()} {exchange['path']}"
        problems = []
        if request.method != exchange["method"].upper():
            problems.append(f"{where}: method {request.method}")
        if request.path_qs != exchange["path"]:
            problems.append(f"{where}: path {request.path_qs}")
        recorded = exchange.get("body", "")
        if isinstance(recorded, dict | list):
            if not body or json.loads(body) != recorded:
                problems.append(f"{where}: body {body!r}")
        elif body.decode() != (recorded or ""):
            problems.append(f"{where}: body {body!r}")
        wanted = exchange["reqheaders"]
        if request.headers.get("Authorization") != wanted.get("authorization"):
            problems.append(f"{where}: wrong or missing authorization")
        accept = request.headers.get("Accept", "")
        if accept != wanted.get("accept") and not {accept, wanted.get("accept")} <= JSON_TYPES:
            problems.append(f"{where}: accept {accept}")
        if (
            "content-type" in wanted
            and request.headers.get("Content-Type") != wanted["content-type"]
        ):
            problems.append(f"{where}: content-type {request.headers.get('Content-Type')}")
        return problems
